package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

func TestCreateJoinSend(t *testing.T) {
	h := newHarness(t, 1)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	c := h.join(a, "Cat", false)
	h.mesh(a, b, c)
	h.send(a, "hello from Ann")
	h.send(b, "hello from Ben")
	h.send(c, "hello from Cat")
	h.mesh(a, b, c)
	want := texts(a)
	if len(want) != 3 {
		t.Fatalf("Ann shows %v; want three messages", want)
	}
	for _, d := range []*hdev{b, c} {
		if got := texts(d); !slices.Equal(got, want) {
			t.Errorf("%s shows %v; Ann %v", d.name, got, want)
		}
		if got := members(d); !slices.Equal(got, []string{"Ann", "Ben", "Cat"}) {
			t.Errorf("%s members %v", d.name, got)
		}
	}
	// A restart from the store shows the same.
	for _, d := range []*hdev{a, b, c} {
		d.restart(h.tick(time.Second))
		if got := texts(d); !slices.Equal(got, want) {
			t.Errorf("%s after restart shows %v", d.name, got)
		}
	}
	h.send(c, "after the restart")
	h.mesh(a, b, c)
	if got := texts(a); len(got) != 4 || got[3] != "after the restart" {
		t.Errorf("Ann after restarts: %v", got)
	}
}

func TestGossipOutOfOrder(t *testing.T) {
	h := newHarness(t, 2)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	h.mesh(a, b)
	m1 := len(a.published)
	h.send(a, "one")
	h.send(a, "two")
	raws := a.published[m1:]
	// The second arrives first: it waits for its parent, then both count.
	if v := h.gossip(a, b, raws[1]); v[0] != Held {
		t.Fatalf("second message alone: %v; want held", v[0])
	}
	if len(b.synced) == 0 {
		t.Errorf("a message with a missing parent asked for no sync")
	}
	if v := h.gossip(a, b, raws[0]); v[0] != Accepted {
		t.Fatalf("first message: %v; want accepted", v[0])
	}
	if got := texts(b); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("Ben shows %v", got)
	}
	if v := h.gossip(a, b, raws[0]); v[0] != Duplicate {
		t.Errorf("a replayed envelope: %v; want duplicate", v[0])
	}
}

// TestRemovedDeviceLearnsAndIsIgnored: the case of a removed member with everyone connected. The
// removed device cannot read its removal, but a member's removal proof tells it; what it sends after
// its removal shows nowhere.
func TestRemovedDeviceLearnsAndIsIgnored(t *testing.T) {
	h := newHarness(t, 3)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	c := h.join(a, "Cat", false)
	h.mesh(a, b, c)
	_, eff, err := a.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActRemove, Target: c.dev.ID()})
	if err != nil {
		t.Fatal(err)
	}
	a.apply(eff)
	h.mesh(a, b)
	h.sync(a, c) // C gets the commit but cannot read it
	if c.team.Removed() {
		t.Fatalf("C knows of its removal without a proof")
	}
	// C goes on writing; its ops reach A and B by sync and gossip.
	before := len(c.published)
	h.send(c, "still here")
	for _, d := range []*hdev{a, b} {
		for _, v := range h.gossip(c, d, c.published[before:]...) {
			if v == Accepted {
				t.Errorf("%s accepted a removed device's message", d.name)
			}
		}
		h.sync(c, d)
		if slices.Contains(texts(d), "still here") {
			t.Errorf("%s shows the removed device's message", d.name)
		}
	}
	// A member refuses to sync with C and hands it the membership ops it may see.
	if a.team.MaySync(c.peer()) {
		t.Errorf("A may sync with the removed C")
	}
	proof := a.team.MembershipFor(c.dev.ID())
	if len(proof) == 0 {
		t.Fatal("no membership ops for C")
	}
	n, peff, err := c.team.AcceptMembership(h.tick(time.Second), proof)
	if err != nil || n == 0 {
		t.Fatalf("C takes %d ops: %v", n, err)
	}
	c.apply(peff)
	if !c.team.Removed() {
		t.Fatal("C does not know it was removed after the proof")
	}
	if _, _, err := c.team.Send(h.tick(time.Second), crdt.Message{Text: "x"}); !errors.Is(err, ErrRemoved) {
		t.Errorf("C sends after learning its removal: %v; want ErrRemoved", err)
	}
	c.restart(h.tick(time.Second))
	if !c.team.Removed() {
		t.Errorf("C forgot its removal across a restart")
	}
	// C's ops are no proof of anything to B, which holds them all already.
	if n, _, err := b.team.AcceptMembership(h.tick(time.Second), proof); err != nil || n != 0 {
		t.Errorf("B takes %d of C's ops: %v", n, err)
	}
	if b.team.Removed() {
		t.Errorf("B changed by ops that are not about it")
	}
}

// TestJunkPriorKeys: a member's commit carrying hundreds of junk prior keys does not fill anyone's
// epoch table, and the admin's later removal of that member works.
func TestJunkPriorKeys(t *testing.T) {
	h := newHarness(t, 4)
	a := h.create("Ann")
	m := h.join(a, "Mal", true)
	b := h.join(a, "Ben", false)
	h.mesh(a, m, b)
	// Mal commits a re-key whose envelope carries 500 junk prior keys, sealed by hand.
	s := m.team.State()
	body, err := s.NextCommit(m.dev.ID())
	if err != nil {
		t.Fatal(err)
	}
	op := m.team.commitOp(body.Marshal())
	var prior []envelope.PriorKey
	for i := range 500 {
		k, _ := seal.NewEpochKey(h.r)
		prior = append(prior, envelope.PriorKey{Tag: uint32(i*7919 + 1), Outer: k})
	}
	key, _ := seal.NewEpochKey(h.r)
	var noise []identity.NoisePublic
	for _, r := range body.Recipients {
		noise = append(noise, r.Noise)
	}
	e, err := envelope.SealCommit(op, m.dev, key, noise, prior, h.r)
	if err != nil {
		t.Fatal(err)
	}
	raw := e.Marshal()
	for _, d := range []*hdev{a, b} {
		before := d.team.keys.Len()
		v := h.gossip(m, d, raw)
		if v[0] != Accepted {
			t.Errorf("%s: the junk-laden commit: %v; want accepted (it is a valid re-key)", d.name, v[0])
		}
		if got := d.team.keys.Len(); got > before+1 {
			t.Errorf("%s holds %d epochs after it, %d before: junk prior keys were learned", d.name, got, before)
		}
	}
	// Ann removes Mal; Ben sees it.
	_, eff, err := a.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActRemove, Target: m.dev.ID()})
	if err != nil {
		t.Fatalf("the admin cannot remove the member: %v", err)
	}
	a.apply(eff)
	h.sync(a, b)
	if got := members(b); !slices.Equal(got, []string{"Ann", "Ben"}) {
		t.Errorf("Ben's members after the removal: %v", got)
	}
	if len(a.banned)+len(b.banned) != 0 {
		t.Errorf("honest peers banned: %v %v", a.banned, b.banned)
	}
}

// TestOutsiderCostsNothing: a 256-box commit envelope from a device that is not a member costs no
// X25519 multiplication, and neither does one from a member beyond its budget. Ann holds a prekey
// besides her static key, so each box costs her two trials: the budget counts trials, not boxes.
func TestOutsiderCostsNothing(t *testing.T) {
	h := newHarness(t, 5)
	a := h.create("Ann")
	m := h.join(a, "Mal", false)
	h.mesh(a, m)
	a.apply(a.team.Tick(h.tick(time.Second), TickOptions{})) // Ann publishes a prekey and holds it
	if _, ok := a.team.State().Prekeys[a.dev.ID()]; !ok {
		t.Fatal("Ann published no prekey")
	}
	outsider, err := identity.Generate(h.r)
	if err != nil {
		t.Fatal(err)
	}
	junk := junkCommit(t, h, outsider, 256)
	calls0, tried0 := epochkey.TrialCount()
	v, _ := a.team.Receive(h.tick(time.Millisecond), []Arrival{{Raw: junk, From: Peer{ID: "x", Device: outsider.ID()}}})
	calls, tried := epochkey.TrialCount()
	if v[0] != Refused || calls != calls0 || tried != tried0 {
		t.Errorf("junk from an outsider: %v, %d calls and %d boxes tried; want refused and none", v[0], calls-calls0, tried-tried0)
	}
	if a.team.Pending() != 0 {
		t.Errorf("junk from an outsider is held")
	}
	// A member's junk costs its budget; beyond it nothing is tried.
	spent := 0
	for i := range 8 {
		j := junkCommit(t, h, m.dev, 256)
		_, tried0 := epochkey.TrialCount()
		a.team.Receive(h.tick(time.Millisecond), []Arrival{{Raw: j, From: m.peer()}})
		_, tried := epochkey.TrialCount()
		spent += int(tried - tried0)
		if i >= boxBurst/256 && tried != tried0 {
			t.Errorf("junk %d beyond the budget tried %d boxes", i, tried-tried0)
		}
	}
	if spent > boxBurst+256 {
		t.Errorf("a member made Ann try %d boxes; the budget is %d", spent, boxBurst)
	}
	if st := a.team.PeerStats(m.peer().ID); st.BoxTrials > boxBurst {
		t.Errorf("PeerStats: %+v", st)
	}
}

// junkCommit returns a commit-form envelope of random boxes, signed by dev.
func junkCommit(t *testing.T, h *harness, dev *identity.Device, boxes int) []byte {
	t.Helper()
	var recips []crdt.Recipient
	var noise []identity.NoisePublic
	for range boxes {
		d, err := identity.Generate(h.r)
		if err != nil {
			t.Fatal(err)
		}
		recips = append(recips, crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()})
	}
	slices.SortFunc(recips, func(a, b crdt.Recipient) int { return compareIDs(a.Device, b.Device) })
	for _, r := range recips {
		noise = append(noise, r.Noise)
	}
	c := crdt.Commit{Number: 99, Recipients: recips}
	op := crdt.NewOp(dev, h.team, crdt.MakeHLC(h.now, 0), nil, crdt.KindMember, c.Marshal())
	key, _ := seal.NewEpochKey(h.r)
	e, err := envelope.SealCommit(op, dev, key, noise, nil, h.r)
	if err != nil {
		t.Fatal(err)
	}
	return e.Marshal()
}

func compareIDs(a, b identity.DeviceID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

var _ = teamkeys.MaxEpochs

// TestTamperedCopyDoesNotBlockGenuine: a member (or relay) that sees an envelope first sends a
// tampered copy with the same id (its epoch tag changed, so it cannot be opened or blamed) ahead of
// the genuine one. The genuine copy must still be kept at once, not turned away as a duplicate of
// the held copy.
func TestTamperedCopyDoesNotBlockGenuine(t *testing.T) {
	h := newHarness(t, 3)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	c := h.join(a, "Cat", false)
	h.mesh(a, b, c)
	n := len(a.published)
	op := h.send(a, "the genuine one")
	genuine := a.published[n]
	forged := slices.Clone(genuine)
	forged[17] ^= 0xff // the header's epoch tag
	if v := h.gossip(c, b, forged); v[0] == Accepted {
		t.Fatalf("the tampered copy: %v", v[0])
	}
	if v := h.gossip(a, b, genuine); v[0] != Accepted {
		t.Fatalf("the genuine copy after a tampered one: %v; want accepted", v[0])
	}
	if !b.team.Has(op.ID()) {
		t.Error("Ben does not hold the genuine message")
	}
}

// applyReopen applies effects to d as a node does: what they ask to reopen
// is read from d's store and given to Receive again, until nothing is.
func applyReopen(d *hdev, now time.Time, eff Effects) {
	for {
		d.apply(eff)
		if len(eff.Reopen) == 0 {
			return
		}
		_, eff = d.team.Receive(now, reopened(d.store, eff.Reopen))
	}
}

// TestReopenedEnvelopeNotLost: Ben meets a message of an epoch he has not learned yet (a later
// commit's prior key opens its outer layer first). Its sender is a slot in the epoch's recipient
// list (format version 6), which Ben does not have without the epoch's commit, so he holds it, as
// one of an unknown epoch, and does not store or pass it on. When he learns the epoch he reads it,
// but its parent has not reached him: it is held, and expires. It must still be read once its
// parent comes, and after a restart: his store does not hold it, so a reconciliation brings it back.
func TestReopenedEnvelopeNotLost(t *testing.T) {
	for _, restart := range []bool{false, true} {
		h := newHarness(t, 6)
		a := h.create("Ann")
		b := h.join(a, "Ben", false)
		h.mesh(a, b)
		n := len(a.published)
		_, eff, err := a.team.Change(h.tick(time.Second)) // re-key: epoch 1
		if err != nil {
			t.Fatal(err)
		}
		a.apply(eff)
		h.send(a, "parent")
		h.send(a, "child")
		_, eff, err = a.team.Change(h.tick(time.Second)) // re-key: epoch 2, with epoch 1's outer key
		if err != nil {
			t.Fatal(err)
		}
		a.apply(eff)
		raws := a.published[n:]
		e1, parent, child, e2 := raws[0], raws[1], raws[2], raws[3]
		// Epoch 2's commit, then the child: held (no list of epoch 1 names its sender).
		h.gossip(a, b, e2)
		if v := h.gossip(a, b, child); v[0] != Held || b.team.Has(idOf(t, child)) {
			t.Fatalf("the child before its epoch's commit: %v; want held", v[0])
		}
		if _, ok := b.store.envs[idOf(t, child)]; ok {
			t.Fatalf("the child before its epoch's commit is stored; want held only")
		}
		// Epoch 1's commit: Ben learns it and reads the child; its parent is missing.
		v, eff := b.team.Receive(h.tick(time.Millisecond), []Arrival{{Raw: e1, From: a.peer()}})
		if v[0] != Accepted {
			t.Fatalf("epoch 1's commit: %v; want accepted", v[0])
		}
		applyReopen(b, h.now, eff)
		if !b.team.Holding(idOf(t, child)) {
			t.Fatalf("the child is not held waiting for its parent")
		}
		if restart {
			b.restart(h.tick(time.Second))
		}
		// It expires; then its parent arrives by gossip, and a reconciliation brings the child back.
		applyReopen(b, h.now, b.team.Tick(h.tick(pendingTTL+time.Minute), TickOptions{NoAcks: true}))
		h.gossip(a, b, parent)
		applyReopen(b, h.now, b.team.Tick(h.tick(time.Minute), TickOptions{NoAcks: true}))
		reconcileAll(t, h, []*hdev{a, b}, ReconcileOptions{})
		if got := texts(b); !slices.Equal(got, []string{"parent", "child"}) {
			t.Errorf("restart %v: Ben shows %v; want parent, child", restart, got)
		}
		if _, ok := b.store.ops[idOf(t, child)]; !ok {
			t.Errorf("restart %v: Ben does not store the child's op", restart)
		}
	}
}

// idOf returns the id of a raw envelope.
func idOf(t *testing.T, raw []byte) crdt.OpID {
	t.Helper()
	e, err := envelope.Unmarshal(envelope.Topic{}, raw)
	if err != nil {
		t.Fatal(err)
	}
	return e.ID
}

// TestBoxBudgetTakesBigCommits: a commit whose trials exceed the whole budget (256 boxes tried with
// several prekeys) is allowed once the budget is full, and takes all of it; the next waits for a
// refill.
func TestBoxBudgetTakesBigCommits(t *testing.T) {
	h := newHarness(t, 6)
	a := h.create("Ann")
	p := Peer{ID: "m", Device: identity.DeviceID{7}}
	a.team.now = h.now
	if !a.team.chargeBoxes(p, 5*boxBurst) {
		t.Fatal("a commit costing more than the burst is refused on a full budget: it could never open")
	}
	if a.team.chargeBoxes(p, 1) {
		t.Error("the big commit did not take the whole budget")
	}
	a.team.now = h.tick(boxRefill)
	if !a.team.chargeBoxes(p, 5*boxBurst) {
		t.Error("after a full refill the next big commit is refused")
	}
}

// TestForgedHeldNotRetried: Ben joined after epoch 0, so he holds it by its outer key only. A
// member or a relay sends him envelopes of epoch 0's tag that no key opens (a genuine one with its
// id changed: the signature fails). He cannot tell them from envelopes of another epoch sharing the
// tag, so he holds them; but he does not check them again on every envelope that arrives after:
// only when what he holds of that tag changes.
func TestForgedHeldNotRetried(t *testing.T) {
	h := newHarness(t, 8)
	a := h.create("Ann")
	h.send(a, "before Ben")
	genuine := a.published[len(a.published)-1]
	b := h.join(a, "Ben", false)
	h.mesh(a, b)
	tag := binary.BigEndian.Uint32(genuine[1:5])
	if got := b.team.keys.TagState(tag); got[0] == 0 || got[2] != 0 {
		t.Fatalf("Ben holds epoch 0 as %v; want its outer key, without chains", got)
	}
	const forged = 40
	for i := range forged {
		raw := slices.Clone(genuine)
		raw[5], raw[6] = byte(i), 0xee // the op id in the header
		if v := h.gossip(a, b, raw); v[0] != Held {
			t.Fatalf("forged envelope %d: %v; want held (an envelope of an epoch Ben cannot tell)", i, v[0])
		}
	}
	before := b.team.chainTries
	const later = 10
	for i := range later {
		h.send(a, fmt.Sprintf("after Ben %c", 'a'+i))
		h.gossip(a, b, a.published[len(a.published)-1])
	}
	if got := len(texts(b)); got < later {
		t.Fatalf("Ben shows %d messages; want the %d sent after he joined", got, later)
	}
	if tries := b.team.chainTries - before; tries > forged {
		t.Errorf("%d held envelopes tried again over %d arrivals; want at most %d (each at most once)", tries, later, forged)
	}
}
