package teamkeys_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func detRand(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	s[31] = 0x7c // distinct from the seeds other packages use
	return rand.NewChaCha8(s)
}

// skipNoSeal skips, in a fieldmesh_noseal build (whose layers carry
// plaintext and open under any key), the tests that need the layers to
// authenticate: tampering, wrong keys, epochs told apart by their keys.
// The other tests run in both builds: the chains advance the same way.
func skipNoSeal(t testing.TB) {
	t.Helper()
	if envelope.NoSeal {
		t.Skip("fieldmesh_noseal build: the layers carry plaintext")
	}
}

// world is a team built by hand (no crdt.Log): devices by name, each with
// its Keys, and a clock for op times. It drives Keys the way a device does
// once it has judged an op (sync/device decides when; here every commit
// is taken as judged).
type world struct {
	t    testing.TB
	team crdt.TeamID
	devs map[string]*identity.Device
	keys map[string]*teamkeys.Keys
	now  time.Time
	seed uint64
}

func newWorld(t testing.TB, names ...string) *world { return newTeamWorld(t, 1, names...) }

// newTeamWorld is newWorld with another team id (the same devices).
func newTeamWorld(t testing.TB, teamSeed uint64, names ...string) *world {
	t.Helper()
	w := &world{t: t, devs: map[string]*identity.Device{}, keys: map[string]*teamkeys.Keys{},
		now: time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC), seed: 1000}
	var err error
	if w.team, err = crdt.NewTeamID(detRand(teamSeed)); err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		d, err := identity.Generate(detRand(uint64(100 + i)))
		if err != nil {
			t.Fatal(err)
		}
		w.devs[n] = d
		w.keys[n] = teamkeys.New(w.team, d)
	}
	return w
}

func (w *world) tick() crdt.HLC {
	w.now = w.now.Add(time.Second)
	return crdt.MakeHLC(w.now, 0)
}

func (w *world) rand() io.Reader {
	w.seed++
	return detRand(w.seed)
}

// create has name create the team: epoch 1.
func (w *world) create(name string) (*crdt.Op, *envelope.Envelope) {
	w.t.Helper()
	d := w.devs[name]
	body := crdt.Create{Name: "Ward 7", Kind: crdt.Clinical, Creator: crdt.MemberInfo{Device: d.ID(), Noise: d.NoisePublic(), Name: "Alice", Admin: true}}
	op := crdt.NewOp(d, w.team, w.tick(), nil, crdt.KindCreate, body.Marshal())
	e, err := w.keys[name].SealCommit(op, w.rand(), nil, nil)
	if err != nil {
		w.t.Fatalf("create: %v", err)
	}
	return op, e
}

// recipients lists the named devices with their Noise keys, ascending.
func (w *world) recipients(names ...string) []crdt.Recipient {
	var rs []crdt.Recipient
	for _, n := range names {
		rs = append(rs, crdt.Recipient{Device: w.devs[n].ID(), Noise: w.devs[n].NoisePublic()})
	}
	slices.SortFunc(rs, func(a, b crdt.Recipient) int { return bytes.Compare(a.Device[:], b.Device[:]) })
	return rs
}

// recipientIDs returns the device ids of recipients(names...), in order:
// the recipient list of an epoch those devices receive.
func (w *world) recipientIDs(names ...string) []identity.DeviceID {
	var out []identity.DeviceID
	for _, r := range w.recipients(names...) {
		out = append(out, r.Device)
	}
	return out
}

// commitOp is a re-key by author to the given recipients (not sealed in an
// envelope yet).
func (w *world) commitOp(author string, number uint32, rs []crdt.Recipient) *crdt.Op {
	w.t.Helper()
	body := crdt.Commit{Number: number, Recipients: rs}
	if err := body.Validate(); err != nil {
		w.t.Fatal(err)
	}
	return crdt.NewOp(w.devs[author], w.team, w.tick(), nil, crdt.KindMember, body.Marshal())
}

// commitWith has author commit a re-key to the named devices, handing on
// the prior keys include accepts.
func (w *world) commitWith(author string, number uint32, include func(teamkeys.EpochInfo) bool, to ...string) (*crdt.Op, *envelope.Envelope) {
	w.t.Helper()
	op := w.commitOp(author, number, w.recipients(to...))
	e, err := w.keys[author].SealCommit(op, w.rand(), include, nil)
	if err != nil {
		w.t.Fatalf("commit by %s: %v", author, err)
	}
	return op, e
}

func (w *world) commit(author string, number uint32, to ...string) (*crdt.Op, *envelope.Envelope) {
	w.t.Helper()
	return w.commitWith(author, number, nil, to...)
}

// msg has author send text in the epoch started by commit; it returns the
// sealed op and its envelope.
func (w *world) msg(author string, commit crdt.OpID, text string) (*crdt.Op, *envelope.Envelope) {
	w.t.Helper()
	op := crdt.NewOp(w.devs[author], w.team, w.tick(), nil, crdt.KindMessage, crdt.Message{Text: text}.Marshal())
	e, sealed, err := w.keys[author].Seal(op, commit)
	if err != nil {
		w.t.Fatalf("message by %s: %v", author, err)
	}
	return sealed, e
}

// wire passes e through its wire form (which carries no topic: the receiver knows it).
func (w *world) wire(e *envelope.Envelope) *envelope.Envelope {
	w.t.Helper()
	e2, err := envelope.Unmarshal(e.Topic, e.Marshal())
	if err != nil {
		w.t.Fatal(err)
	}
	return e2
}

// learn has name take in a commit envelope as a device does once the
// commit is judged: its own box if one opens (teamkeys.OpenBox), else the
// outer keys held; then Learn, and LearnPrior of each prior key.
func (w *world) learn(name string, e *envelope.Envelope) (*teamkeys.CommitOpened, error) {
	w.t.Helper()
	e = w.wire(e)
	box, err := teamkeys.OpenBox(w.keys[name].BoxKeys(), w.team, e)
	if err != nil && !errors.Is(err, envelope.ErrNotRecipient) {
		return nil, err
	}
	k := w.keys[name]
	before := k.Marshal()
	c, err := k.OpenCommit(e, box)
	if !bytes.Equal(before, k.Marshal()) {
		w.t.Errorf("%s: OpenCommit changed the state", name)
	}
	if err != nil {
		return nil, err
	}
	if err := k.Learn(c); err != nil {
		return c, err
	}
	for _, p := range c.Prior {
		if _, err := k.LearnPrior(p); err != nil {
			return c, err
		}
	}
	return c, nil
}

// mustLearn is learn that must succeed with the given op.
func (w *world) mustLearn(name string, e *envelope.Envelope, want *crdt.Op) *teamkeys.CommitOpened {
	w.t.Helper()
	c, err := w.learn(name, e)
	if err != nil {
		w.t.Fatalf("%s learns %v: %v", name, e.ID.Short(), err)
	}
	if want != nil && !reflect.DeepEqual(c.Op, want) {
		w.t.Fatalf("%s learns %v: got op %v; want %v", name, e.ID.Short(), c.Op.ID().Short(), want.ID().Short())
	}
	return c
}

// read has name read a chain envelope: OpenChain, then Consume.
func (w *world) read(name string, e *envelope.Envelope) (*teamkeys.Opened, error) {
	w.t.Helper()
	k := w.keys[name]
	o, err := k.OpenChain(w.wire(e))
	if err != nil {
		return o, err
	}
	return o, k.Consume(o)
}

// wantRead checks that name reads e as want (wantErr nil), or is refused
// with wantErr and its state unchanged.
func (w *world) wantRead(name string, e *envelope.Envelope, want *crdt.Op, wantErr error) {
	w.t.Helper()
	before := w.keys[name].Marshal()
	o, err := w.read(name, e)
	switch {
	case wantErr != nil:
		if !errors.Is(err, wantErr) || (o != nil && o.Op != nil) {
			w.t.Errorf("%s reads %v: got %v; want %v", name, e.ID.Short(), err, wantErr)
		}
		if !bytes.Equal(before, w.keys[name].Marshal()) {
			w.t.Errorf("%s reads %v: refused (%v) but the state changed", name, e.ID.Short(), err)
		}
	case err != nil:
		w.t.Errorf("%s reads %v: got %v; want nil", name, e.ID.Short(), err)
	case !reflect.DeepEqual(o.Op, want):
		w.t.Errorf("%s reads %v: got op %+v; want %+v", name, e.ID.Short(), o.Op, want)
	}
}

// unchanged runs f and fails if name's state changed.
func (w *world) unchanged(name, what string, f func()) {
	w.t.Helper()
	before := w.keys[name].Marshal()
	f()
	if !bytes.Equal(before, w.keys[name].Marshal()) {
		w.t.Errorf("%s: %s changed the state", name, what)
	}
}

func sorted(tags ...uint32) []uint32 { slices.Sort(tags); return tags }

func info(tag uint32, commit crdt.OpID, chains bool) teamkeys.EpochInfo {
	return teamkeys.EpochInfo{Tag: tag, Commit: commit, Chains: chains}
}

// wantEpochs checks k.Epochs() and k.Len() against want, which it sorts
// first as Epochs lists them (by tag, then commit id), so expectations can
// be written in any order.
func wantEpochs(t *testing.T, who string, k *teamkeys.Keys, want ...teamkeys.EpochInfo) {
	t.Helper()
	slices.SortStableFunc(want, func(a, b teamkeys.EpochInfo) int {
		if a.Tag != b.Tag {
			return int(int64(a.Tag) - int64(b.Tag))
		}
		return bytes.Compare(a.Commit[:], b.Commit[:])
	})
	if got := k.Epochs(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: Epochs %+v; want %+v", who, got, want)
	}
	if k.Len() != len(want) {
		t.Errorf("%s: Len %d; want %d", who, k.Len(), len(want))
	}
}

func TestEpochs(t *testing.T) {
	w := newWorld(t, "alice", "bob", "carol", "dave")
	alice, bob := w.keys["alice"], w.keys["bob"]
	create, createEnv := w.create("alice")
	c1, tag1 := create.ID(), crdt.TagOf(create.ID())
	if !alice.CanSend(c1) || !slices.Equal(alice.Tags(), []uint32{tag1}) || !alice.Held(tag1) {
		t.Fatalf("after create: CanSend %v, Tags %v; want true, [%08x]", alice.CanSend(c1), alice.Tags(), tag1)
	}
	wantEpochs(t, "alice after create", alice, info(tag1, c1, true))
	if rs, err := teamkeys.Recipients(create); err != nil || !reflect.DeepEqual(rs, w.recipients("alice")) {
		t.Errorf("Recipients(create): got %v, %v; want alice", rs, err)
	}
	m1, m1Env := w.msg("alice", c1, "before bob")
	// Her own envelope: outer layer and seal checked, no chain for herself.
	o, err := alice.OpenChain(m1Env)
	if !errors.Is(err, teamkeys.ErrNoChain) || o == nil || o.Op != nil || o.Sender != w.devs["alice"].ID() || o.Index != 0 || o.Epoch != c1 || !bytes.Equal(o.Sig, m1.Seal.Sig) {
		t.Errorf("alice opens her own message: got %+v, %v; want who and where, ErrNoChain", o, err)
	}
	w.wantRead("bob", m1Env, nil, teamkeys.ErrUnknownEpoch)
	if _, err := teamkeys.OpenBox(teamkeys.StaticOnly(w.devs["bob"]), w.team, createEnv); !errors.Is(err, envelope.ErrNotRecipient) {
		t.Errorf("bob opens the create's box: got %v; want ErrNotRecipient", err)
	}
	if _, err := bob.OpenCommit(createEnv, nil); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("bob opens the create: got %v; want ErrUnknownEpoch", err)
	}

	commit2, commit2Env := w.commit("alice", 2, "alice", "bob", "carol")
	c2, tag2 := commit2.ID(), crdt.TagOf(commit2.ID())
	if commit2Env.Boxes() != 3 || commit2Env.Epoch != tag2 {
		t.Errorf("commit: %d boxes, tag %08x; want 3, %08x", commit2Env.Boxes(), commit2Env.Epoch, tag2)
	}
	wantEpochs(t, "alice after commit 2", alice, info(tag1, c1, true), info(tag2, c2, true))
	for _, n := range []string{"bob", "carol"} {
		box, err := teamkeys.OpenBox(teamkeys.StaticOnly(w.devs[n]), w.team, commit2Env)
		if err != nil || box.Sender != w.devs["alice"].NoisePublic() {
			t.Fatalf("%s: OpenBox: %v (sender %v); want alice's box", n, err, box)
		}
		c := w.mustLearn(n, commit2Env, commit2)
		if c.Box == nil || len(c.Prior) != 1 || c.Prior[0].Tag != tag1 {
			t.Errorf("%s: opened with box %v and prior keys %v; want the box, epoch 1's outer key", n, c.Box, c.Prior)
		}
		k := w.keys[n]
		if !k.CanSend(c2) || k.CanSend(c1) || !slices.Equal(k.Tags(), sorted(tag1, tag2)) {
			t.Errorf("%s after commit 2: CanSend %v %v, Tags %v; want true false, both tags", n, k.CanSend(c2), k.CanSend(c1), k.Tags())
		}
		// Epoch 1 is known by its outer key only, not named yet.
		wantEpochs(t, n+" after commit 2", k, info(tag1, crdt.OpID{}, false), info(tag2, c2, true))
		// The create opens with the prior outer key, and names the epoch.
		c = w.mustLearn(n, createEnv, create)
		if c.Box != nil || c.Prior != nil {
			t.Errorf("%s: the create opened with a box %v or prior keys %v; want neither", n, c.Box, c.Prior)
		}
		wantEpochs(t, n+" after the create", k, info(tag1, c1, false), info(tag2, c2, true))
		// alice's earlier message: who and where, not what.
		o, err := k.OpenChain(m1Env)
		if !errors.Is(err, teamkeys.ErrNoChain) || o == nil || o.Op != nil || o.Sender != w.devs["alice"].ID() || o.Tag != tag1 || o.Epoch != c1 {
			t.Errorf("%s opens epoch 1's message: got %+v, %v; want who and where, ErrNoChain", n, o, err)
		}
	}
	if _, err := w.learn("dave", commit2Env); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("dave learns commit 2: got %v; want ErrUnknownEpoch", err)
	}
	// Everyone reads everyone in epoch 2; dave reads nothing.
	for _, from := range []string{"alice", "bob", "carol"} {
		op, e := w.msg(from, c2, "hello from "+from)
		for _, to := range []string{"alice", "bob", "carol"} {
			if to != from {
				w.wantRead(to, e, op, nil)
			}
		}
		w.wantRead(from, e, nil, teamkeys.ErrNoChain)
		w.wantRead("dave", e, nil, teamkeys.ErrUnknownEpoch)
	}
	// Replays: a chain envelope is ErrReplay; a commit learned again changes nothing.
	op, e := w.msg("bob", c2, "once")
	w.wantRead("carol", e, op, nil)
	w.unchanged("carol", "replays", func() {
		w.wantRead("carol", e, nil, teamkeys.ErrReplay)
		w.mustLearn("carol", commit2Env, commit2)
		w.mustLearn("carol", createEnv, create)
	})
	w.unchanged("alice", "learning her own commit again", func() { w.mustLearn("alice", commit2Env, commit2) })
}

// TestOpenChainConsume: OpenChain changes nothing (an envelope opens again
// and again until Consume), Consume spends the key once, and a replay is
// then refused, by OpenChain and Consume alike, with who and where.
func TestOpenChainConsume(t *testing.T) {
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob")
	c2 := commit2.ID()
	w.mustLearn("bob", c2Env, commit2)
	bob := w.keys["bob"]
	alice := w.devs["alice"].ID()
	var ops []*crdt.Op
	var envs []*envelope.Envelope
	for i := range 3 {
		op, e := w.msg("alice", c2, fmt.Sprint("m", i))
		ops, envs = append(ops, op), append(envs, e)
	}
	if ops[2].Seal.Index != 2 || ops[2].Seal.Epoch != crdt.TagOf(c2) || ops[2].Verify() != nil {
		t.Fatalf("the third sealed op: %+v; want index 2 of epoch 2, verified", ops[2].Seal)
	}
	want := &teamkeys.Opened{Op: ops[2], Sender: alice, Index: 2, Tag: crdt.TagOf(c2), Epoch: c2, Inner: ops[2].Seal.Inner, Sig: ops[2].Seal.Sig}
	w.unchanged("bob", "OpenChain", func() {
		for range 3 {
			o, err := bob.OpenChain(w.wire(envs[2]))
			if err != nil || !reflect.DeepEqual(o, want) {
				t.Fatalf("OpenChain: got %+v, %v; want %+v", o, err, want)
			}
		}
	})
	for i := range 3 {
		if !bob.CanOpen(c2, alice, uint32(i)) {
			t.Errorf("CanOpen(%d) before Consume: false", i)
		}
	}
	o, _ := bob.OpenChain(envs[2])
	if err := bob.Consume(o); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if bob.CanOpen(c2, alice, 2) || !bob.CanOpen(c2, alice, 0) || !bob.CanOpen(c2, alice, 1) || !bob.CanOpen(c2, alice, 3) {
		t.Errorf("CanOpen after consuming 2: %v %v %v %v; want true true false true", bob.CanOpen(c2, alice, 0), bob.CanOpen(c2, alice, 1), bob.CanOpen(c2, alice, 2), bob.CanOpen(c2, alice, 3))
	}
	w.unchanged("bob", "a replay", func() {
		o, err := bob.OpenChain(envs[2])
		if !errors.Is(err, teamkeys.ErrReplay) || !errors.Is(err, senderkey.ErrReplay) || o == nil || o.Op != nil || o.Sender != alice || o.Index != 2 || o.Epoch != c2 {
			t.Errorf("OpenChain of a replay: got %+v, %v; want who and where, ErrReplay", o, err)
		}
		if err := bob.Consume(want); !errors.Is(err, teamkeys.ErrReplay) {
			t.Errorf("Consume twice: got %v; want ErrReplay", err)
		}
	})
	// The skipped ones still open, in any order.
	w.wantRead("bob", envs[0], ops[0], nil)
	w.wantRead("bob", envs[1], ops[1], nil)
	// CanOpen of what is not held.
	for _, tt := range []struct {
		name   string
		epoch  crdt.OpID
		sender identity.DeviceID
	}{
		{"an unknown epoch", crdt.OpID{1}, alice},
		{"a sender not in the epoch", c2, w.devs["carol"].ID()},
		{"its own chain", c2, w.devs["bob"].ID()},
	} {
		if bob.CanOpen(tt.epoch, tt.sender, 5) {
			t.Errorf("CanOpen of %s: true; want false", tt.name)
		}
	}
	// Consume of an Opened that does not name a chain held.
	for _, tt := range []struct {
		name string
		o    *teamkeys.Opened
		want error
	}{
		{"an unknown epoch", &teamkeys.Opened{Sender: alice, Epoch: crdt.OpID{1}}, teamkeys.ErrUnknownEpoch},
		{"its own chain", &teamkeys.Opened{Sender: w.devs["bob"].ID(), Epoch: c2}, teamkeys.ErrNoChain},
		{"an index too far ahead", &teamkeys.Opened{Sender: alice, Epoch: c2, Index: 3 + senderkey.MaxSkipped + 1}, teamkeys.ErrTooFarAhead},
	} {
		w.unchanged("bob", "Consume of "+tt.name, func() {
			if err := bob.Consume(tt.o); !errors.Is(err, tt.want) {
				t.Errorf("Consume of %s: got %v; want %v", tt.name, err, tt.want)
			}
		})
	}
}

// TestEpoch: an Epoch made by NewEpoch opens envelopes without changing,
// and without being learned.
func TestEpoch(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob")
	c2 := commit2.ID()
	sealed, e := w.msg("alice", c2, "hi")
	box, err := teamkeys.OpenBox(teamkeys.StaticOnly(w.devs["bob"]), w.team, c2Env)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := teamkeys.Recipients(commit2)
	if err != nil {
		t.Fatal(err)
	}
	ep := teamkeys.NewEpoch(w.devs["bob"], box.Key, c2, rs)
	if ep.Tag() != crdt.TagOf(c2) || ep.Commit() != c2 || !ep.Chains() {
		t.Errorf("NewEpoch: tag %08x commit %v chains %v; want %08x %v true", ep.Tag(), ep.Commit().Short(), ep.Chains(), crdt.TagOf(c2), c2.Short())
	}
	for range 2 {
		o, err := ep.OpenChain(e, w.team)
		if err != nil || !reflect.DeepEqual(o.Op, sealed) || o.Epoch != c2 || o.Tag != ep.Tag() {
			t.Fatalf("Epoch.OpenChain: got %+v, %v; want the op", o, err)
		}
	}
	if w.keys["bob"].Len() != 0 {
		t.Errorf("an Epoch not learned is held")
	}
	if _, err := ep.OpenChain(e, crdt.TeamID{9}); !errors.Is(err, envelope.ErrWrongTopic) {
		t.Errorf("another team: got %v; want ErrWrongTopic", err)
	}
	// carol, not a recipient (or listed with another Noise key), gets the
	// outer key only.
	for name, list := range map[string][]crdt.Recipient{
		"not listed":              rs,
		"listed with another key": append(slices.Clone(rs), crdt.Recipient{Device: w.devs["carol"].ID(), Noise: w.devs["alice"].NoisePublic()}),
	} {
		ep := teamkeys.NewEpoch(w.devs["carol"], box.Key, c2, list)
		o, err := ep.OpenChain(e, w.team)
		if ep.Chains() || !errors.Is(err, teamkeys.ErrNoChain) || o == nil || o.Sender != w.devs["alice"].ID() || o.Op != nil {
			t.Errorf("carol %s: chains %v, got %+v, %v; want outer only, ErrNoChain with who", name, ep.Chains(), o, err)
		}
	}
	// A chain envelope of another epoch does not open: its outer layer
	// has no Poly1305 tag, so the signature refuses it.
	other, _ := seal.NewEpochKey(detRand(77))
	ep = teamkeys.NewEpoch(w.devs["bob"], other, c2, rs)
	if _, err := ep.OpenChain(e, w.team); !errors.Is(err, envelope.ErrBadSeal) {
		t.Errorf("another key: got %v; want ErrBadSeal", err)
	}
}

// TestRemoval: carol is left out of epoch 3; with her full epoch-2 state
// she opens nothing of epoch 3 or later, and nothing changes for her.
func TestRemoval(t *testing.T) {
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob", "carol")
	c2 := commit2.ID()
	w.mustLearn("bob", c2Env, commit2)
	w.mustLearn("carol", c2Env, commit2)
	commit3, c3Env := w.commit("alice", 3, "alice", "bob")
	w.mustLearn("bob", c3Env, commit3)
	var chains []*envelope.Envelope
	for i := range 20 {
		_, e := w.msg([]string{"alice", "bob"}[i%2], commit3.ID(), fmt.Sprintf("after carol %d", i))
		chains = append(chains, e)
	}
	// bob's re-key, with every prior key he holds.
	commit4, c4Env := w.commit("bob", 4, "alice", "bob")
	_, e := w.msg("bob", commit4.ID(), "later")
	chains = append(chains, e)
	w.unchanged("carol", "envelopes of later epochs", func() {
		for _, e := range chains {
			w.wantRead("carol", e, nil, teamkeys.ErrUnknownEpoch)
		}
		for _, e := range []*envelope.Envelope{c3Env, c4Env} {
			if _, err := w.learn("carol", e); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
				t.Errorf("carol learns %v: got %v; want ErrUnknownEpoch", e.ID.Short(), err)
			}
		}
	})
	// Carol, still holding epoch 2, seals as herself there: bob still opens
	// it (the partition window is epoch 2), but nobody sends there anymore.
	op, e2 := w.msg("carol", c2, "from the old epoch")
	w.wantRead("bob", e2, op, nil)
}

// TestConcurrentJoiner: dave is added in epoch 3a by alice while bob,
// apart, starts epoch 3b. After the merge alice re-keys to everyone: dave
// then opens the commit of 3b (prior keys) but none of its messages.
func TestConcurrentJoiner(t *testing.T) {
	w := newWorld(t, "alice", "bob", "dave")
	create, createEnv := w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob")
	w.mustLearn("bob", c2Env, commit2)
	// Partition: alice adds dave (3a); bob re-keys (3b).
	commit3a, c3aEnv := w.commit("alice", 3, "alice", "bob", "dave")
	commit3b, c3bEnv := w.commit("bob", 3, "alice", "bob")
	m3b, m3bEnv := w.msg("bob", commit3b.ID(), "on bob's side")
	w.mustLearn("dave", c3aEnv, commit3a)
	if _, err := w.learn("dave", c3bEnv); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("dave learns 3b before the merge: got %v; want ErrUnknownEpoch", err)
	}
	w.mustLearn("dave", createEnv, create) // prior keys of 3a
	w.mustLearn("dave", c2Env, commit2)
	// Merge: alice and bob exchange; alice re-keys to all three.
	w.mustLearn("alice", c3bEnv, commit3b)
	w.wantRead("alice", m3bEnv, m3b, nil)
	w.mustLearn("bob", c3aEnv, commit3a)
	commit4, c4Env := w.commit("alice", 4, "alice", "bob", "dave")
	w.mustLearn("dave", c4Env, commit4)
	w.mustLearn("dave", c3bEnv, commit3b)
	w.wantRead("dave", m3bEnv, nil, teamkeys.ErrNoChain)
	dave := w.keys["dave"]
	if dave.CanSend(commit3b.ID()) || !dave.CanSend(commit4.ID()) || !dave.CanSend(commit3a.ID()) {
		t.Errorf("dave: CanSend 3b %v 4 %v 3a %v; want false true true", dave.CanSend(commit3b.ID()), dave.CanSend(commit4.ID()), dave.CanSend(commit3a.ID()))
	}
	wantEpochs(t, "dave", dave,
		info(crdt.TagOf(create.ID()), create.ID(), false),
		info(crdt.TagOf(commit2.ID()), commit2.ID(), false),
		info(crdt.TagOf(commit3a.ID()), commit3a.ID(), true),
		info(crdt.TagOf(commit3b.ID()), commit3b.ID(), false),
		info(crdt.TagOf(commit4.ID()), commit4.ID(), true))
	op, e := w.msg("dave", commit4.ID(), "hi all")
	w.wantRead("alice", e, op, nil)
	w.mustLearn("bob", c4Env, commit4)
	w.wantRead("bob", e, op, nil)
}

// TestOutOfOrder: messages open in any order within senderkey.MaxSkipped
// of the first missing one; further ahead is ErrTooFarAhead, with who and
// where, and the state unchanged. It runs in both builds (the receiver
// chains are the same in a fieldmesh_noseal build).
func TestOutOfOrder(t *testing.T) {
	w := newWorld(t, "alice", "bob")
	w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob")
	w.mustLearn("bob", c2Env, commit2)
	const max = senderkey.MaxSkipped
	ops := make([]*crdt.Op, max+3)
	envs := make([]*envelope.Envelope, max+3)
	for i := range envs {
		ops[i], envs[i] = w.msg("alice", commit2.ID(), fmt.Sprintf("m%d", i))
	}
	// Index max+1 first would leave max+1 keys skipped: refused, with who
	// and where.
	w.unchanged("bob", "a message too far ahead", func() {
		o, err := w.keys["bob"].OpenChain(envs[max+1])
		if !errors.Is(err, teamkeys.ErrTooFarAhead) || o == nil || o.Op != nil || o.Index != max+1 {
			t.Errorf("too far ahead: got %+v, %v; want who and where, ErrTooFarAhead", o, err)
		}
	})
	w.wantRead("bob", envs[max], ops[max], nil) // exactly max skipped
	// With max keys stored, even one more skipped is too many.
	w.wantRead("bob", envs[max+2], nil, teamkeys.ErrTooFarAhead)
	for i := max - 1; i >= 0; i-- {
		w.wantRead("bob", envs[i], ops[i], nil)
	}
	w.wantRead("bob", envs[max+2], ops[max+2], nil)
	w.wantRead("bob", envs[max+1], ops[max+1], nil)
	w.unchanged("bob", "replays", func() {
		for _, i := range []int{0, 500, max, max + 1, max + 2} {
			w.wantRead("bob", envs[i], nil, teamkeys.ErrReplay)
		}
	})
}

// resealChain opens the outer layer of a chain-form envelope with the
// epoch's outer key, lets change rewrite its plaintext (sender slot
// uvarint ‖ index uvarint, 1 byte each below 128 ‖ signature 64 ‖ inner layer; sync/envelope's
// package documentation),
// and seals it again: what any holder of the outer key can do.
func resealChain(t *testing.T, e *envelope.Envelope, outer seal.EpochKey, change func(plain []byte) []byte) *envelope.Envelope {
	t.Helper()
	// The outer layer (format 8): ChaCha20 under the outer key, the op id's first 12 bytes as nonce,
	// no Poly1305 tag.
	nonce := [seal.NonceSize]byte(e.ID[:seal.NonceSize])
	plain := make([]byte, len(e.Ciphertext)-1)
	seal.Stream(outer, nonce, plain, e.Ciphertext[1:])
	p := change(plain)
	out := make([]byte, len(p))
	seal.Stream(outer, nonce, out, p)
	c := *e
	c.Ciphertext = append(bytes.Clone(e.Ciphertext[:1]), out...)
	return &c
}

func TestErrorsLeaveStateUnchanged(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol")
	create, createEnv := w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob", "carol")
	c1, c2 := create.ID(), commit2.ID()
	w.mustLearn("bob", c2Env, commit2)
	w.mustLearn("carol", c2Env, commit2)
	w.mustLearn("bob", createEnv, create)
	goodOp, good := w.msg("alice", c2, "genuine")
	other := newTeamWorld(t, 2, "alice")
	_, otherCreate := other.create("alice")
	// carol, a member, holds the outer key (her box) and rewrites the
	// outer layer of alice's genuine message.
	box, err := teamkeys.OpenBox(teamkeys.StaticOnly(w.devs["carol"]), w.team, c2Env)
	if err != nil {
		t.Fatal(err)
	}
	outer := envelope.OuterKey(box.Key)
	aliceID := w.devs["alice"].ID()
	seen, err := w.keys["carol"].OpenChain(good) // the inner hash that alice signed
	if err != nil {
		t.Fatal(err)
	}
	forged := resealChain(t, good, outer, func(p []byte) []byte {
		// her own signature of alice's position
		sig := w.devs["carol"].Sign(crdt.SignedBytes(w.team, good.Epoch, aliceID, 0, good.ID, seen.Inner))
		return append(append(bytes.Clone(p[:2]), sig...), p[66:]...)
	})
	slotOf := func(name string) byte {
		return byte(slices.IndexFunc(w.recipients("alice", "bob", "carol"), func(r crdt.Recipient) bool { return r.Device == w.devs[name].ID() }))
	}
	if p := resealChain(t, good, outer, func(p []byte) []byte { return p }); p == nil || slotOf("alice") > 2 {
		t.Fatal("fixture")
	}
	// carol at alice's slot, with her own signature of her own position.
	claimed := resealChain(t, good, outer, func(p []byte) []byte {
		sig := w.devs["carol"].Sign(crdt.SignedBytes(w.team, good.Epoch, w.devs["carol"].ID(), 0, good.ID, seen.Inner))
		return append(append([]byte{slotOf("alice"), 0}, sig...), p[66:]...)
	})
	// alice's genuine seal re-sealed at carol's slot, and past the list.
	reslotted := resealChain(t, good, outer, func(p []byte) []byte { p = bytes.Clone(p); p[0] = slotOf("carol"); return p })
	pastList := resealChain(t, good, outer, func(p []byte) []byte { p = bytes.Clone(p); p[0] = 3; return p })
	moved := resealChain(t, good, outer, func(p []byte) []byte { p = bytes.Clone(p); p[1] = 1; return p }) // index 1
	broken := resealChain(t, good, outer, func(p []byte) []byte { p = bytes.Clone(p); p[len(p)-1] ^= 1; return p })
	tampered := func(e *envelope.Envelope, i int) *envelope.Envelope {
		c := *e
		c.Ciphertext = bytes.Clone(e.Ciphertext)
		c.Ciphertext[i] ^= 1
		return &c
	}
	otherTag := *good
	otherTag.Epoch ^= 0xff
	w.unchanged("bob", "refused envelopes", func() {
		for _, tt := range []struct {
			name   string
			e      *envelope.Envelope
			want   error
			opened bool // the outer layer opened: not ErrUnknownEpoch
		}{
			{"a member's forged seal", forged, envelope.ErrBadSeal, true},
			{"a member claims another member's slot", claimed, envelope.ErrBadSeal, true},
			{"a seal re-sealed at another member's slot", reslotted, envelope.ErrBadSeal, true},
			{"a slot past the epoch's list", pastList, envelope.ErrBadSeal, true},
			{"a seal moved to another index", moved, envelope.ErrBadSeal, true},
			// The seal signs the inner layer's hash (envelope format 7).
			{"a broken inner layer under a genuine seal", broken, envelope.ErrBadSeal, true},
			// bob holds the epoch's chains: an honest peer of it could
			// have checked the signature.
			{"tampered outer layer", tampered(good, len(good.Ciphertext)-1), envelope.ErrBadSeal, true},
			{"another team's envelope", otherCreate, envelope.ErrMalformed, false}, // a commit form
			{"an unknown epoch", &otherTag, teamkeys.ErrUnknownEpoch, false},
			{"a commit-form envelope", c2Env, envelope.ErrMalformed, false},
		} {
			o, err := w.keys["bob"].OpenChain(tt.e)
			if !errors.Is(err, tt.want) || (o != nil && o.Op != nil) {
				t.Errorf("OpenChain of %s: got %+v, %v; want %v", tt.name, o, err, tt.want)
			}
			if tt.opened && errors.Is(err, teamkeys.ErrUnknownEpoch) {
				t.Errorf("OpenChain of %s: got %v; want not ErrUnknownEpoch (the epoch's outer key opened it)", tt.name, err)
			}
		}

		// bob's box in the ciphertext: after the form and the one-byte count.
		bobBox := 2 + slices.IndexFunc(w.recipients("alice", "bob", "carol"), func(r crdt.Recipient) bool { return r.Device == w.devs["bob"].ID() })*envelope.BoxSize
		for _, tt := range []struct {
			name string
			e    *envelope.Envelope
			box  bool
			want error
		}{
			{"tampered box of bob's", tampered(c2Env, bobBox+5), true, envelope.ErrNotRecipient},
			{"tampered outer layer, with the box", tampered(c2Env, len(c2Env.Ciphertext)-1), true, envelope.ErrOpen},
			{"tampered outer layer, without", tampered(c2Env, len(c2Env.Ciphertext)-1), false, teamkeys.ErrUnknownEpoch},
			{"another team's create", otherCreate, true, envelope.ErrWrongTopic},
			{"another team's create, without a box", otherCreate, false, teamkeys.ErrUnknownEpoch},
			{"a chain-form envelope", good, false, envelope.ErrMalformed},
		} {
			var err error
			var b *teamkeys.Box
			if tt.box {
				b, err = teamkeys.OpenBox(teamkeys.StaticOnly(w.devs["bob"]), w.team, tt.e)
			}
			if err == nil {
				_, err = w.keys["bob"].OpenCommit(tt.e, b)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
			}
		}
	})
	// The genuine message still opens after the forgeries.
	w.wantRead("bob", good, goodOp, nil)
	// Seal errors leave alice's state unchanged.
	w.unchanged("alice", "refused seals", func() {
		big := crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMessage, make([]byte, envelope.MaxSize))
		weak := w.recipients("alice", "bob")
		weak[1].Noise = identity.NoisePublic{} // of small order
		for _, tt := range []struct {
			name string
			f    func() error
			want error
		}{
			{"op too large", func() error { _, _, err := w.keys["alice"].Seal(big, c2); return err }, envelope.ErrTooLarge},
			{"bob's op", func() error {
				_, _, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["bob"], w.team, w.tick(), nil, crdt.KindMessage, nil), c2)
				return err
			}, teamkeys.ErrWrongOp},
			{"another team's op", func() error {
				_, _, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["alice"], other.team, w.tick(), nil, crdt.KindMessage, nil), c2)
				return err
			}, teamkeys.ErrWrongOp},
			{"a commit in chain form", func() error {
				_, _, err := w.keys["alice"].Seal(w.commitOp("alice", 3, w.recipients("alice")), c2)
				return err
			}, teamkeys.ErrWrongOp},
			{"a message in commit form", func() error {
				_, err := w.keys["alice"].SealCommit(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMessage, nil), nil, nil, nil)
				return err
			}, teamkeys.ErrWrongOp},
			{"another team's commit", func() error {
				_, err := w.keys["alice"].SealCommit(other.commitOp("alice", 3, other.recipients("alice")), nil, nil, nil)
				return err
			}, teamkeys.ErrWrongOp},
			{"a commit body that does not decode", func() error {
				_, err := w.keys["alice"].SealCommit(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMember, []byte{9}), nil, nil, nil)
				return err
			}, teamkeys.ErrWrongOp},
			{"a commit to a small-order Noise key", func() error {
				_, err := w.keys["alice"].SealCommit(w.commitOp("alice", 3, weak), w.rand(), nil, nil)
				return err
			}, epochkey.ErrSeal},
			{"unknown epoch", func() error {
				_, _, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMessage, nil), crdt.OpID{7})
				return err
			}, teamkeys.ErrCannotSend},
			{"randomness fails", func() error {
				_, err := w.keys["alice"].SealCommit(w.commitOp("alice", 3, w.recipients("alice")), bytes.NewReader(nil), nil, nil)
				return err
			}, io.EOF},
		} {
			if err := tt.f(); !errors.Is(err, tt.want) {
				t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
			}
		}
	})
	// An epoch known by its outer key only cannot be sent in.
	if w.keys["bob"].CanSend(c1) {
		t.Errorf("bob can send in epoch 1; want not")
	}
	w.unchanged("bob", "a seal in an outer-only epoch", func() {
		if _, _, err := w.keys["bob"].Seal(crdt.NewOp(w.devs["bob"], w.team, w.tick(), nil, crdt.KindMessage, nil), c1); !errors.Is(err, teamkeys.ErrCannotSend) {
			t.Errorf("bob seals in epoch 1: got %v; want ErrCannotSend", err)
		}
	})
}

// TestWeakNoiseKey: a commit that lists a device with a Noise key of small
// order cannot be sealed (every box to it would be readable by anyone),
// and nothing is learned.
func TestWeakNoiseKey(t *testing.T) {
	w := newWorld(t, "alice", "bob")
	w.create("alice")
	for _, weak := range []identity.NoisePublic{{}, {1}} { // 0 and 1: both of small order
		if weak.Check() == nil {
			t.Fatalf("%v is not of small order", weak.Short())
		}
		rs := w.recipients("alice", "bob")
		rs[0].Noise = weak
		w.unchanged("alice", "a commit to a weak key", func() {
			e, err := w.keys["alice"].SealCommit(w.commitOp("alice", 2, rs), w.rand(), nil, nil)
			if !errors.Is(err, epochkey.ErrSeal) || e != nil {
				t.Errorf("Noise key %v: got %v; want epochkey.ErrSeal", weak.Short(), err)
			}
		})
	}
}
