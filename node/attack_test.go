package node

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/adversary"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// The attacks of docs/security.md, each made by a member, a removed member or an outsider with only
// its own keys, what it was given and the team id, against nodes on mocknet. Each test names what it
// checks; the device core's property test (sync/device TestAdversarial) tries the same attacks at
// random points of random histories.

// attackTeam is a team of an admin A, a member Mal who attacks and a member B, all joined.
func attackTeam(t *testing.T, names ...string) (*testNode, []*testNode, string) {
	t.Helper()
	_, ns := newMockNodes(t, append([]string{"Admin", "Mal"}, names...)...)
	team, err := ns[0].CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, ns[0], ref, ns[1:]...)
	for _, n := range ns {
		waitState(t, n, ref, func(s *crdt.State) bool { return len(s.Members) == len(ns) })
	}
	return ns[0], ns, ref
}

// commitBy is a commit op by n's device with body, parented on n's current epoch and dated now.
func commitBy(t *testing.T, n *testNode, ref string, body crdt.Commit) *crdt.Op {
	t.Helper()
	tm, err := n.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	s := tm.snapshot()
	return crdt.NewOp(n.id.Device, tm.id, crdt.MakeHLC(time.Now(), 0), []crdt.OpID{s.Epochs[s.Current].ID}, crdt.KindMember, body.Marshal())
}

// publishRaw gossips raw on the team's topic from n, as its own: n's validator passes its own
// envelopes, so the other nodes' validators are what judge it.
func publishRaw(t *testing.T, n *testNode, ref string, raw []byte) {
	t.Helper()
	tm, err := n.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.ptop.Publish(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
}

// epochKeyOf derives the key of n's current epoch from its stored commit envelope, as any recipient
// can.
func epochKeyOf(t *testing.T, n *testNode, ref string) (seal.EpochKey, crdt.OpID) {
	t.Helper()
	tm, err := n.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	s := tm.snapshot()
	id := s.Epochs[s.Current].ID
	rec, err := n.st.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	e, err := envelope.Unmarshal(tm.topic, rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	tm.mu.Lock()
	bk := tm.core.BoxKeys()
	tm.mu.Unlock()
	box, err := teamkeys.OpenBox(bk, tm.id, e)
	if err != nil {
		t.Fatal(err)
	}
	return box.Key, id
}

func noneBanned(t *testing.T, ns ...*testNode) {
	t.Helper()
	for _, a := range ns {
		for _, b := range ns {
			if a != b && a.isBanned(b.host.ID()) {
				t.Errorf("%s banned the honest %s", a.id.Name, b.id.Name)
			}
		}
	}
}

// TestAttackJunkPriorKeys: a member's valid re-key whose envelope carries 500 junk prior keys fills no
// one's epoch table; the admin then removes that member, every device sees it, and no honest peer is
// banned for passing the genuine commit on.
func TestAttackJunkPriorKeys(t *testing.T) {
	a, ns, ref := attackTeam(t, "Ben")
	mal, b := ns[1], ns[2]
	if err := a.Promote(ref, "Mal"); err != nil { // an admin may re-key
		t.Fatal(err)
	}
	waitState(t, mal, ref, func(s *crdt.State) bool { p, _ := s.PersonOf(mal.id.Device.ID()); return p.Admin })
	tm, _ := mal.teamByRef(ref)
	body, err := tm.snapshot().NextCommit(mal.id.Device.ID())
	if err != nil {
		t.Fatal(err)
	}
	op := commitBy(t, mal, ref, body)
	junk, err := adversary.JunkPrior(500, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := adversary.Commit(mal.id.Device, op, body.Recipients, junk, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyState := func(n *testNode) int {
		kb, err := n.st.Secret(keysSecret(tm.id))
		if err != nil {
			t.Fatal(err)
		}
		return len(kb)
	}
	before := map[*testNode]int{a: keyState(a), b: keyState(b)}
	publishRaw(t, mal, ref, raw)
	for _, n := range []*testNode{a, b} {
		waitState(t, n, ref, func(s *crdt.State) bool { return s.Counts(op.ID()) })
		// One epoch more is a few hundred bytes of key state; 500 junk prior keys would be 18 KB.
		t.Logf("%s key state %d -> %d", n.id.Name, before[n], keyState(n))
		if grew := keyState(n) - before[n]; grew > 2048 {
			t.Errorf("%s's key state grew by %d bytes with the junk commit: junk prior keys were learned", n.id.Name, grew)
		}
	}
	if err := a.RemoveMember(ref, "Mal"); err != nil {
		t.Fatalf("the admin cannot remove the member who sent junk prior keys: %v", err)
	}
	waitState(t, b, ref, func(s *crdt.State) bool { _, ok := s.Member(mal.id.Device.ID()); return !ok })
	id, _, err := a.Send(ref, crdt.Message{Text: "after Mal left"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, b, ref, func(s *crdt.State) bool { return s.Counts(id) })
	noneBanned(t, a, b)
}

// TestAttackRemovedMemberInventsEpoch: a removed member makes up an epoch of its own (a commit it
// signs, listing itself) and seals messages in it with parents from before its removal. No device
// keeps or shows any of it, whether it comes from the removed device or through an honest member.
func TestAttackRemovedMemberInventsEpoch(t *testing.T) {
	a, ns, ref := attackTeam(t, "Ben")
	mal, b := ns[1], ns[2]
	tm, _ := mal.teamByRef(ref)
	before := tm.snapshot()
	if err := a.RemoveMember(ref, "Mal"); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, ref, func(s *crdt.State) bool { _, ok := s.Member(mal.id.Device.ID()); return !ok })
	me := crdt.Recipient{Device: mal.id.Device.ID(), Noise: mal.id.Device.NoisePublic()}
	body := crdt.Commit{Number: before.Epochs[before.Current].Number + 10, Recipients: []crdt.Recipient{me}}
	op := crdt.NewOp(mal.id.Device, tm.id, crdt.MakeHLC(time.Now(), 0), []crdt.OpID{before.Epochs[before.Current].ID}, crdt.KindMember, body.Marshal())
	keys := teamkeys.New(tm.id, mal.id.Device)
	ce, err := keys.SealCommit(op, rand.Reader, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := crdt.NewOp(mal.id.Device, tm.id, crdt.MakeHLC(time.Now(), 1), []crdt.OpID{before.Epochs[before.Current].ID}, crdt.KindMessage, crdt.Message{Text: "in my own epoch"}.Marshal())
	me2, _, err := keys.Seal(msg, op.ID())
	if err != nil {
		t.Fatal(err)
	}
	raws := [][]byte{ce.Marshal(), me2.Marshal()}
	for _, n := range []*testNode{a, b} {
		nt, _ := n.teamByRef(ref)
		for _, from := range []*testNode{mal, a, b} {
			if from == n {
				continue
			}
			vs, err := n.receive(nt, from.host.ID(), raws)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vs {
				if v == device.Accepted {
					t.Errorf("%s accepted the invented epoch's envelope %d from %s", n.id.Name, i, from.id.Name)
				}
			}
		}
		if nt.has(op.ID()) || nt.has(msg.ID()) || slices.ContainsFunc(nt.snapshot().Messages, func(m crdt.MessageView) bool { return m.ID == msg.ID() }) {
			t.Errorf("%s keeps or shows the invented epoch", n.id.Name)
		}
	}
	noneBanned(t, a, b)
}

// TestAttackThrowawayClock: commits signed by keys that were never members, dated 2199, reach a device
// through a member: the device neither keeps them nor moves its clock.
func TestAttackThrowawayClock(t *testing.T) {
	a, ns, ref := attackTeam(t)
	mal := ns[1]
	ta, _ := a.teamByRef(ref)
	future := crdt.MakeHLC(time.Date(2199, 1, 1, 0, 0, 0, 0, time.UTC), 0)
	var raws [][]byte
	for range 2 {
		x, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		r := crdt.Recipient{Device: x.ID(), Noise: x.NoisePublic()}
		body := crdt.Commit{Number: 50, Recipients: []crdt.Recipient{r}}
		op := crdt.NewOp(x, ta.id, future, []crdt.OpID{ta.rec.Genesis}, crdt.KindMember, body.Marshal())
		e, err := teamkeys.New(ta.id, x).SealCommit(op, rand.Reader, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, e.Marshal())
	}
	vs, err := a.receive(ta, mal.host.ID(), raws)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v == device.Accepted {
			t.Errorf("a throwaway signer's commit %d was accepted", i)
		}
	}
	_, at, err := a.Send(ref, crdt.Message{Text: "what time is it"})
	if err != nil {
		t.Fatal(err)
	}
	if at.Time().After(time.Now().Add(time.Hour)) {
		t.Errorf("the admin's clock was moved to %v by throwaway signers", at.Time())
	}
}

// TestAttackLowOrderKey: a member links a device whose Noise key is all zeros (a low-order point, with
// which every X25519 gives zero). No device keeps the link, and the admin's later commits work.
func TestAttackLowOrderKey(t *testing.T) {
	a, ns, ref := attackTeam(t, "Ben")
	mal, b := ns[1], ns[2]
	tm, _ := mal.teamByRef(ref)
	s := tm.snapshot()
	body, err := s.NextCommit(mal.id.Device.ID())
	if err != nil {
		t.Fatal(err)
	}
	x, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	weak := crdt.MemberInfo{Device: x.ID(), Name: "weak"} // Noise key all zeros
	body.Changes = []crdt.Change{{Action: crdt.ActLink, Info: weak, Target: mal.id.Device.ID()}}
	body.Recipients = append(body.Recipients, crdt.Recipient{Device: x.ID()})
	slices.SortFunc(body.Recipients, func(p, q crdt.Recipient) int { return compareIDs(p.Device, q.Device) })
	op := commitBy(t, mal, ref, body)
	raw, err := adversary.Commit(mal.id.Device, op, body.Recipients, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{a, b} {
		nt, _ := n.teamByRef(ref)
		vs, err := n.receive(nt, mal.host.ID(), [][]byte{raw})
		if err != nil {
			t.Fatal(err)
		}
		if vs[0] == device.Accepted || nt.snapshot().Counts(op.ID()) {
			t.Errorf("%s accepted the link of a low-order key (%v)", n.id.Name, vs[0])
		}
	}
	if err := a.Promote(ref, "Ben"); err != nil {
		t.Fatalf("a commit after the low-order link: %v", err)
	}
	waitState(t, b, ref, func(s *crdt.State) bool { p, _ := s.PersonOf(b.id.Device.ID()); return p.Admin })
	noneBanned(t, a, b)
}

// TestAttackJunkBoxes: a commit envelope of 256 junk boxes from a peer that is not a member costs no
// X25519 multiplication at all; from a member, the boxes tried stay within its budget however many it
// sends.
func TestAttackJunkBoxes(t *testing.T) {
	a, ns, ref := attackTeam(t)
	mal := ns[1]
	_, outs := newMockNodes(t, "Outsider")
	out := outs[0]
	ta, _ := a.teamByRef(ref)
	validate := a.validator(ta)
	give := func(from *testNode, raw []byte) pubsub.ValidationResult {
		return validate(context.Background(), from.host.ID(), &pubsub.Message{Message: &pb.Message{Data: raw}})
	}
	junk, err := adversary.JunkCommit(out.id.Device, ta.id, crdt.MakeHLC(time.Now(), 0), 256, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	calls0, tried0 := epochkey.TrialCount()
	if got := give(out, junk); got == pubsub.ValidationAccept {
		t.Error("junk boxes from an outsider accepted")
	}
	if calls, tried := epochkey.TrialCount(); calls != calls0 || tried != tried0 {
		t.Errorf("junk boxes from an outsider cost %d trial calls and %d boxes; want none", calls-calls0, tried-tried0)
	}
	_, tried0 = epochkey.TrialCount()
	for range 12 {
		junk, err := adversary.JunkCommit(mal.id.Device, ta.id, crdt.MakeHLC(time.Now(), 0), 256, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		// Through receive, as the validator and sync sessions give it (the validator would also wait
		// a few seconds for a held envelope's commit).
		vs, err := a.receive(ta, mal.host.ID(), [][]byte{junk})
		if err != nil {
			t.Fatal(err)
		}
		if vs[0] == device.Accepted {
			t.Error("junk boxes from a member accepted")
		}
	}
	// A member's budget: 1,024 boxes at once (four 256-device commits), refilled over ten minutes.
	if _, tried := epochkey.TrialCount(); tried-tried0 > 1024+256 {
		t.Errorf("a member's 12 junk commits cost %d box trials; the budget is 1024", tried-tried0)
	}
}

// TestAttackOutsiderGetsNothing: a peer that was never a member learns nothing of the team: its sync
// hello is refused without an answer, no device starts a sync with it (an envelope of an unknown epoch
// from it included), and gossip does not take it as a peer of the topic.
func TestAttackOutsiderGetsNothing(t *testing.T) {
	mn, ns := newMockNodes(t, "Admin", "Outsider")
	a, out := ns[0], ns[1]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := a.teamByRef(team.ID.String())
	if _, err := mn.ConnectPeers(a.host.ID(), out.host.ID()); err != nil {
		t.Fatal(err)
	}
	asked := make(chan struct{}, 16)
	out.host.SetStreamHandler(SyncProtocol, func(s network.Stream) {
		asked <- struct{}{}
		s.Reset()
	})
	// Its hello gets no answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := out.host.NewStream(ctx, a.host.ID(), SyncProtocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = framing.Write(s, recon.Hello{Topic: ta.topic, Mode: recon.ModeSync}.Marshal())
	if ans, err := framing.Read(s, 1); err == nil {
		t.Errorf("an outsider's sync hello was answered %v", ans)
	}
	s.Reset()
	_ = framing.Write(s, nil)
	s2, err := out.host.NewStream(ctx, a.host.ID(), SyncProtocol)
	if err == nil {
		_ = framing.Write(s2, recon.Hello{Topic: ta.topic, Mode: recon.ModeMembership}.Marshal())
		if ans, err := framing.Read(s2, 1); err == nil {
			t.Errorf("an outsider's membership hello was answered %v", ans)
		}
		s2.Reset()
	}
	// An envelope of an epoch the admin does not know, from the outsider: refused, no sync asked.
	junk, err := adversary.JunkCommit(out.id.Device, ta.id, crdt.MakeHLC(time.Now(), 0), 3, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := a.receive(ta, out.host.ID(), [][]byte{junk})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0] != device.Refused {
		t.Errorf("an outsider's envelope: %v; want refused", vs[0])
	}
	if err := a.syncTeamErr(ctx, out.host.ID(), ta, true); err == nil {
		t.Error("the admin ran a sync with an outsider")
	}
	select {
	case <-asked:
		t.Error("the admin opened a sync stream to an outsider")
	default:
	}
	if a.peerFilter(out.host.ID(), ta.ptop.String()) {
		t.Error("gossip takes an outsider as a peer of the team's topic")
	}
}

// TestAttackReseal: a member re-seals another member's genuine message at a later index of that
// member's chain, with the genuine signature or its own, and gives it to a device before the genuine
// one. Neither forgery opens, and the genuine message and the sender's later ones are kept.
func TestAttackReseal(t *testing.T) {
	mn, ns, ref := wardWithMal(t)
	a, mal, b, c := ns[0], ns[1], ns[2], ns[3]
	// Cat is out of reach while Ben talks.
	cutOff(mn, c, a, mal, b)
	var ids []crdt.OpID
	for _, text := range []string{"one", "two", "three"} {
		id, _, err := b.Send(ref, crdt.Message{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	tmal, _ := mal.teamByRef(ref)
	waitState(t, mal, ref, func(s *crdt.State) bool { return s.Counts(ids[0]) })
	tmal.mu.Lock()
	genuine, ok := tmal.core.Op(ids[0])
	tmal.mu.Unlock()
	if !ok {
		t.Fatal("Mal does not hold Ben's message")
	}
	key, _ := epochKeyOf(t, mal, ref)
	j := genuine.Seal.Index + 2
	tmal.mu.Lock()
	slot := adversary.Slot(tmal.core.State(), genuine.Seal.Epoch, genuine.Author)
	tmal.mu.Unlock()
	borrowed := adversary.ForgeChain(genuine, genuine.Seal.Epoch, slot, j, adversary.Borrow(genuine.Seal.Sig), key)
	own := adversary.ForgeChain(genuine, genuine.Seal.Epoch, slot, j, adversary.SignAs(mal.id.Device, tmal.id, genuine.Seal.Epoch, genuine.Author, j, genuine.ID()), key)
	tc, _ := c.teamByRef(ref)
	vs, err := c.receive(tc, mal.host.ID(), [][]byte{borrowed, own})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v == device.Accepted {
			t.Errorf("re-sealed copy %d accepted", i)
		}
	}
	var real [][]byte
	for _, id := range ids {
		rec, err := b.st.Envelope(id)
		if err != nil {
			t.Fatal(err)
		}
		real = append(real, rec.Data)
	}
	vs, err = c.receive(tc, b.host.ID(), real)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v != device.Accepted {
			t.Errorf("Ben's genuine message %d after the re-sealed copies: %v; want accepted", i, v)
		}
	}
	noneBanned(t, a, b, c)
}

// TestAttackEquivocation: a member signs two different messages at one position of its chain and
// gives one to Ben and the other to Cat while they are apart. Once they meet, every device shows the
// same messages, neither of the two, and the same alert naming the member.
func TestAttackEquivocation(t *testing.T) {
	mn, ns, ref := wardWithMal(t)
	a, mal, b, c := ns[0], ns[1], ns[2], ns[3]
	// Mal is cut off from everyone, and Ben from Cat; Mal hands each its own version.
	cutOff(mn, mal, a, b, c)
	cutOff(mn, c, a, b)
	tmal, _ := mal.teamByRef(ref)
	tmal.mu.Lock()
	opA, eff, err := tmal.core.Send(time.Now(), crdt.Message{Text: "version A"})
	tmal.mu.Unlock()
	if err != nil || len(eff.Publish) != 1 {
		t.Fatalf("Mal's first version: %v", err)
	}
	key, _ := epochKeyOf(t, mal, ref)
	opB := crdt.NewOp(mal.id.Device, tmal.id, opA.Time+1, opA.Parents, crdt.KindMessage, crdt.Message{Text: "version B"}.Marshal())
	sigB := adversary.SignAs(mal.id.Device, tmal.id, opA.Seal.Epoch, mal.id.Device.ID(), opA.Seal.Index, opB.ID())
	tmal.mu.Lock()
	slot := adversary.Slot(tmal.core.State(), opA.Seal.Epoch, mal.id.Device.ID())
	tmal.mu.Unlock()
	rawB := adversary.ForgeChain(opB, opA.Seal.Epoch, slot, opA.Seal.Index, sigB, key)
	tb, _ := b.teamByRef(ref)
	tc, _ := c.teamByRef(ref)
	if vs, err := b.receive(tb, mal.host.ID(), eff.Publish); err != nil || vs[0] != device.Accepted {
		t.Fatalf("Ben takes version A: %v %v", vs, err)
	}
	if vs, err := c.receive(tc, mal.host.ID(), [][]byte{rawB}); err != nil || vs[0] != device.Accepted {
		t.Fatalf("Cat takes version B: %v %v", vs, err)
	}
	// The honest devices meet again.
	for _, p := range [][2]*testNode{{b, c}, {a, c}} {
		bringInReach(t, mn, p[0], p[1])
	}
	for _, n := range []*testNode{a, b, c} {
		waitState(t, n, ref, func(s *crdt.State) bool {
			return slices.ContainsFunc(s.Equivocations, func(q crdt.Equivocation) bool { return q.Device == mal.id.Device.ID() })
		})
	}
	want := ids(a.mustMessages(t, ref))
	for _, n := range []*testNode{b, c} {
		if got := ids(n.mustMessages(t, ref)); !slices.Equal(got, want) {
			t.Errorf("%s shows %v; the admin %v", n.id.Name, got, want)
		}
	}
	for _, id := range []crdt.OpID{opA.ID(), opB.ID()} {
		if slices.Contains(want, id) {
			t.Errorf("an equivocated message is shown")
		}
	}
	for _, n := range []*testNode{a, b, c} {
		ms, err := n.Members(ref)
		if err != nil {
			t.Fatal(err)
		}
		alerted := false
		for _, m := range ms {
			alerted = alerted || m.Name == "Mal" && slices.Contains(m.Equivocated, mal.id.Device.ID())
		}
		if !alerted {
			t.Errorf("%s's member list does not alert about Mal's device", n.id.Name)
		}
	}
	noneBanned(t, a, b, c)
}

// wardWithMal makes a team of four on mocknet, Admin, Mal, Ben and Cat, every one of them showing all
// four as members, and returns the mocknet, the nodes in that order and the team's reference.
func wardWithMal(t *testing.T) (mocknet.Mocknet, []*testNode, string) {
	t.Helper()
	mn, ns := newMockNodes(t, "Admin", "Mal", "Ben", "Cat")
	team, err := ns[0].CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, ns[0], ref, ns[1:]...)
	for _, n := range ns {
		waitState(t, n, ref, func(s *crdt.State) bool { return len(s.Members) == 4 })
	}
	return mn, ns, ref
}
