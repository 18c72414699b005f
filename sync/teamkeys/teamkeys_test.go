package teamkeys_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
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

// skipNoSeal skips tests of the cryptography in a fieldmesh_noseal build.
func skipNoSeal(t testing.TB) {
	t.Helper()
	if envelope.NoSeal {
		t.Skip("fieldmesh_noseal build: the layers carry plaintext")
	}
}

// world is a team built by hand (no crdt.Log): devices by name, each with
// its Keys, and a clock for op times.
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
func (w *world) create(name string) (*crdt.Op, *envelope.Envelope, uint32) {
	w.t.Helper()
	d := w.devs[name]
	body := crdt.Create{Name: "Ward 7", Kind: crdt.Clinical, Creator: crdt.MemberInfo{Device: d.ID(), Noise: d.NoisePublic(), Name: "Alice", Admin: true}}
	op := crdt.NewOp(d, w.team, w.tick(), nil, crdt.KindCreate, body.Marshal())
	e, err := w.keys[name].SealCommit(op, w.rand())
	if err != nil {
		w.t.Fatalf("create: %v", err)
	}
	return op, e, crdt.TagOf(op.ID())
}

// commit has author commit a re-key to the given recipients.
func (w *world) commit(author string, number uint32, to ...string) (*crdt.Op, *envelope.Envelope, uint32) {
	w.t.Helper()
	var rs []crdt.Recipient
	for _, n := range to {
		rs = append(rs, crdt.Recipient{Device: w.devs[n].ID(), Noise: w.devs[n].NoisePublic()})
	}
	slices.SortFunc(rs, func(a, b crdt.Recipient) int { return bytes.Compare(a.Device[:], b.Device[:]) })
	body := crdt.Commit{Number: number, Recipients: rs}
	if err := body.Validate(); err != nil {
		w.t.Fatal(err)
	}
	op := crdt.NewOp(w.devs[author], w.team, w.tick(), nil, crdt.KindMember, body.Marshal())
	e, err := w.keys[author].SealCommit(op, w.rand())
	if err != nil {
		w.t.Fatalf("commit by %s: %v", author, err)
	}
	return op, e, crdt.TagOf(op.ID())
}

// msg has author send text under tag.
func (w *world) msg(author string, tag uint32, text string) (*crdt.Op, *envelope.Envelope) {
	w.t.Helper()
	op := crdt.NewOp(w.devs[author], w.team, w.tick(), nil, crdt.KindMessage, crdt.Message{Text: text}.Marshal())
	e, err := w.keys[author].Seal(op, tag)
	if err != nil {
		w.t.Fatalf("message by %s: %v", author, err)
	}
	return op, e
}

// open has name open e (through the wire form) and checks the result.
func (w *world) open(name string, e *envelope.Envelope, want *crdt.Op, wantErr error) {
	w.t.Helper()
	e2, err := envelope.Unmarshal(e.Marshal())
	if err != nil {
		w.t.Fatal(err)
	}
	got, err := w.keys[name].Open(e2)
	switch {
	case wantErr != nil:
		if !errors.Is(err, wantErr) || got != nil {
			w.t.Errorf("%s opens %v: got %v, %v; want nil, %v", name, e.ID.Short(), got, err, wantErr)
		}
	case err != nil:
		w.t.Errorf("%s opens %v: got %v; want nil", name, e.ID.Short(), err)
	case want != nil && got.ID() != want.ID():
		w.t.Errorf("%s opens %v: got op %v; want %v", name, e.ID.Short(), got.ID().Short(), want.ID().Short())
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

func TestEpochs(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol", "dave")
	alice, bob, carol := w.keys["alice"], w.keys["bob"], w.keys["carol"]
	create, createEnv, tag1 := w.create("alice")
	if !alice.CanSend(tag1) || !slices.Equal(alice.Tags(), []uint32{tag1}) {
		t.Fatalf("after create: CanSend %v, Tags %v; want true, [%08x]", alice.CanSend(tag1), alice.Tags(), tag1)
	}
	m1, m1Env := w.msg("alice", tag1, "before bob")
	w.open("alice", m1Env, nil, teamkeys.ErrNoChain) // her own
	w.open("bob", createEnv, nil, teamkeys.ErrUnknownEpoch)
	w.open("bob", m1Env, nil, teamkeys.ErrUnknownEpoch)

	commit2, commit2Env, tag2 := w.commit("alice", 2, "alice", "bob", "carol")
	if commit2Env.Boxes() != 3 || commit2Env.Epoch != tag2 {
		t.Errorf("commit: %d boxes, tag %08x; want 3, %08x", commit2Env.Boxes(), commit2Env.Epoch, tag2)
	}
	for _, n := range []string{"bob", "carol"} {
		w.open(n, commit2Env, commit2, nil)
		k := w.keys[n]
		if !k.CanSend(tag2) || k.CanSend(tag1) || !slices.Equal(k.Tags(), sorted(tag1, tag2)) {
			t.Errorf("%s after commit 2: CanSend %v %v, Tags %v; want true false, both tags", n, k.CanSend(tag2), k.CanSend(tag1), k.Tags())
		}
		// The genesis opens with the prior outer key; alice's earlier message does not.
		w.open(n, createEnv, create, nil)
		w.open(n, m1Env, nil, teamkeys.ErrNoChain)
	}
	w.open("dave", commit2Env, nil, teamkeys.ErrUnknownEpoch)
	// Everyone reads everyone in epoch 2.
	for _, from := range []string{"alice", "bob", "carol"} {
		op, e := w.msg(from, tag2, "hello from "+from)
		for _, to := range []string{"alice", "bob", "carol"} {
			if to != from {
				w.open(to, e, op, nil)
			}
		}
		w.open("dave", e, nil, teamkeys.ErrUnknownEpoch)
	}
	_ = m1
	// Replays: a commit returns its op and changes nothing, a chain envelope is ErrReplay.
	op, e := w.msg("bob", tag2, "once")
	w.open("carol", e, op, nil)
	w.unchanged("carol", "replays", func() {
		w.open("carol", e, nil, teamkeys.ErrReplay)
		w.open("carol", commit2Env, commit2, nil)
		w.open("carol", createEnv, create, nil)
	})
	w.unchanged("alice", "replay of her own commit", func() { w.open("alice", commit2Env, commit2, nil) })
	if !bob.CanSend(tag2) || !carol.CanSend(tag2) {
		t.Errorf("CanSend lost")
	}
}

func sorted(tags ...uint32) []uint32 { slices.Sort(tags); return tags }

// TestRemoval: carol is left out of epoch 3; with her full epoch-2 state
// she opens nothing of epoch 3, and her epoch-2 forgeries do not open.
func TestRemoval(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol")
	_, createEnv, _ := w.create("alice")
	_ = createEnv
	_, c2, tag2 := w.commit("alice", 2, "alice", "bob", "carol")
	w.open("bob", c2, nil, nil)
	w.open("carol", c2, nil, nil)
	c3op, c3, tag3 := w.commit("alice", 3, "alice", "bob")
	w.open("bob", c3, c3op, nil)
	carolOld := w.keys["carol"].Marshal()
	var after []*envelope.Envelope
	after = append(after, c3)
	for i := range 20 {
		_, e := w.msg([]string{"alice", "bob"}[i%2], tag3, fmt.Sprintf("after carol %d", i))
		after = append(after, e)
	}
	// bob's re-key, with every prior key he holds.
	_, c4, tag4 := w.commit("bob", 4, "alice", "bob")
	after = append(after, c4)
	_, e := w.msg("bob", tag4, "later")
	after = append(after, e)
	w.unchanged("carol", "opening envelopes of later epochs", func() {
		for _, e := range after {
			if _, err := w.keys["carol"].Open(e); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
				t.Errorf("carol opens %v of epoch %08x: got %v; want ErrUnknownEpoch", e.ID.Short(), e.Epoch, err)
			}
			if err := w.keys["carol"].Check(e); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
				t.Errorf("carol checks %v: got %v; want ErrUnknownEpoch", e.ID.Short(), err)
			}
		}
	})
	if !bytes.Equal(carolOld, w.keys["carol"].Marshal()) {
		t.Errorf("carol's state changed")
	}
	// Carol, still holding epoch 2, seals as herself there: bob still opens
	// it (the partition window is epoch 2), but nobody sends there anymore.
	op, e2 := w.msg("carol", tag2, "from the old epoch")
	w.open("bob", e2, op, nil)
}

// TestConcurrentJoiner: dave is added in epoch 3a by alice while bob,
// apart, starts epoch 3b. After the merge alice re-keys to everyone: dave
// then opens the commit of 3b (prior keys) but none of its messages.
func TestConcurrentJoiner(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "dave")
	_, createEnv, _ := w.create("alice")
	_, c2, _ := w.commit("alice", 2, "alice", "bob")
	w.open("bob", c2, nil, nil)
	// Partition: alice adds dave (3a); bob re-keys (3b).
	_, c3a, tag3a := w.commit("alice", 3, "alice", "bob", "dave")
	c3bOp, c3b, tag3b := w.commit("bob", 3, "alice", "bob")
	m3bOp, m3b := w.msg("bob", tag3b, "on bob's side")
	w.open("dave", c3a, nil, nil)
	w.open("dave", c3b, nil, teamkeys.ErrUnknownEpoch)
	w.open("dave", createEnv, nil, nil) // prior keys of 3a
	// Merge: alice and bob exchange; alice re-keys to all three.
	w.open("alice", c3b, c3bOp, nil)
	w.open("alice", m3b, m3bOp, nil)
	w.open("bob", c3a, nil, nil)
	c4op, c4, tag4 := w.commit("alice", 4, "alice", "bob", "dave")
	w.open("dave", c4, c4op, nil)
	w.open("dave", c3b, c3bOp, nil)
	w.open("dave", m3b, nil, teamkeys.ErrNoChain)
	if w.keys["dave"].CanSend(tag3b) || !w.keys["dave"].CanSend(tag4) || !w.keys["dave"].CanSend(tag3a) {
		t.Errorf("dave: CanSend 3b %v 4 %v 3a %v; want false true true", w.keys["dave"].CanSend(tag3b), w.keys["dave"].CanSend(tag4), w.keys["dave"].CanSend(tag3a))
	}
	op, e := w.msg("dave", tag4, "hi all")
	w.open("alice", e, op, nil)
	w.open("bob", c4, c4op, nil)
	w.open("bob", e, op, nil)
}

func TestOutOfOrder(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob")
	w.create("alice")
	_, c2, tag := w.commit("alice", 2, "alice", "bob")
	w.open("bob", c2, nil, nil)
	const max = senderkey.MaxSkipped
	ops := make([]*crdt.Op, max+3)
	envs := make([]*envelope.Envelope, max+3)
	for i := range envs {
		ops[i], envs[i] = w.msg("alice", tag, fmt.Sprintf("m%d", i))
	}
	// Index max+1 first would leave max+1 keys skipped: refused.
	w.unchanged("bob", "a message too far ahead", func() { w.open("bob", envs[max+1], nil, teamkeys.ErrTooFarAhead) })
	w.open("bob", envs[max], ops[max], nil) // exactly max skipped
	// With max keys stored, even one more skipped is too many.
	w.unchanged("bob", "a message past a full skip window", func() { w.open("bob", envs[max+2], nil, teamkeys.ErrTooFarAhead) })
	for i := max - 1; i >= 0; i-- {
		w.open("bob", envs[i], ops[i], nil)
	}
	w.open("bob", envs[max+2], ops[max+2], nil)
	w.open("bob", envs[max+1], ops[max+1], nil)
	w.unchanged("bob", "replays", func() {
		for _, i := range []int{0, 500, max, max + 1, max + 2} {
			w.open("bob", envs[i], nil, teamkeys.ErrReplay)
		}
	})
}

func TestErrorsLeaveStateUnchanged(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol")
	_, createEnv, tag1 := w.create("alice")
	_, c2, tag2 := w.commit("alice", 2, "alice", "bob", "carol")
	w.open("bob", c2, nil, nil)
	w.open("carol", c2, nil, nil)
	aliceBefore := w.keys["alice"].Marshal()
	goodOp, good := w.msg("alice", tag2, "genuine")
	other := newTeamWorld(t, 2, "alice")
	_, otherCreate, _ := other.create("alice")
	// carol, a member, forges a message under alice's chain at the index
	// of the genuine one: it must not burn that index.
	forged := forgeUnder(t, w, aliceBefore, "carol", "alice", tag2, good.Time)
	w.open("bob", createEnv, nil, nil) // epoch 1 by its outer key: learns the create's id
	tampered := func(e *envelope.Envelope, i int) *envelope.Envelope {
		c := *e
		c.Ciphertext = bytes.Clone(e.Ciphertext)
		c.Ciphertext[i] ^= 1
		return &c
	}
	w.unchanged("bob", "refused envelopes", func() {
		for _, tt := range []struct {
			name string
			e    *envelope.Envelope
			want error
		}{
			{"forgery under alice's chain", forged, envelope.ErrBadOp},
			{"tampered chain", tampered(good, len(good.Ciphertext)-1), envelope.ErrOpen},
			{"tampered commit box", tampered(c2, 5), envelope.ErrOpen},
			{"tampered commit", tampered(c2, len(c2.Ciphertext)-1), envelope.ErrOpen},
			{"another team's create", otherCreate, envelope.ErrWrongTopic},
			{"unknown epoch", func() *envelope.Envelope { c := *good; c.Epoch ^= 0xff; return &c }(), teamkeys.ErrUnknownEpoch},
			{"replayed create (outer key held)", createEnv, nil},
		} {
			got, err := w.keys["bob"].Open(tt.e)
			if tt.want == nil {
				if err != nil {
					t.Errorf("%s: got %v; want nil", tt.name, err)
				}
				continue
			}
			if !errors.Is(err, tt.want) || got != nil {
				t.Errorf("%s: got %v, %v; want nil, %v", tt.name, got, err, tt.want)
			}
		}
	})
	// The genuine message still opens after the forgery.
	w.open("bob", good, goodOp, nil)
	// Seal errors leave alice's state unchanged.
	w.unchanged("alice", "refused seals", func() {
		big := crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMessage, make([]byte, envelope.MaxSize))
		for _, tt := range []struct {
			name string
			f    func() error
			want error
		}{
			{"op too large", func() error { _, err := w.keys["alice"].Seal(big, tag2); return err }, envelope.ErrTooLarge},
			{"bob's op", func() error {
				_, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["bob"], w.team, w.tick(), nil, crdt.KindMessage, nil), tag2)
				return err
			}, teamkeys.ErrWrongOp},
			{"another team's op", func() error {
				_, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["alice"], other.team, w.tick(), nil, crdt.KindMessage, nil), tag2)
				return err
			}, teamkeys.ErrWrongOp},
			{"a commit in chain form", func() error {
				_, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMember, nil), tag2)
				return err
			}, teamkeys.ErrWrongOp},
			{"a message in commit form", func() error {
				_, err := w.keys["alice"].SealCommit(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMessage, nil), nil)
				return err
			}, teamkeys.ErrWrongOp},
			{"a commit body that does not decode", func() error {
				_, err := w.keys["alice"].SealCommit(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMember, []byte{9}), nil)
				return err
			}, teamkeys.ErrWrongOp},
			{"unknown epoch", func() error {
				_, err := w.keys["alice"].Seal(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMessage, nil), 7)
				return err
			}, teamkeys.ErrCannotSend},
			{"randomness fails", func() error {
				body := crdt.Commit{Number: 3, Recipients: []crdt.Recipient{{Device: w.devs["alice"].ID(), Noise: w.devs["alice"].NoisePublic()}}}
				_, err := w.keys["alice"].SealCommit(crdt.NewOp(w.devs["alice"], w.team, w.tick(), nil, crdt.KindMember, body.Marshal()), bytes.NewReader(nil))
				return err
			}, io.EOF},
		} {
			if err := tt.f(); !errors.Is(err, tt.want) {
				t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
			}
		}
	})
	// An epoch known by its outer key only cannot be sent in.
	if w.keys["bob"].CanSend(tag1) {
		t.Errorf("bob can send in epoch 1; want not")
	}
	if _, err := w.keys["bob"].Seal(crdt.NewOp(w.devs["bob"], w.team, w.tick(), nil, crdt.KindMessage, nil), tag1); !errors.Is(err, teamkeys.ErrCannotSend) {
		t.Errorf("bob seals in epoch 1: got %v; want ErrCannotSend", err)
	}
}

// forgeUnder has member forge a message under victim's chain of epoch
// tag, at the index of victim's state snapshot (taken before the genuine
// message was sealed): every member can derive every chain, which the
// snapshot stands for here. The op claims victim as its author but is
// signed by member, so its signature does not verify.
func forgeUnder(t *testing.T, w *world, snapshot []byte, member, victim string, tag uint32, at crdt.HLC) *envelope.Envelope {
	t.Helper()
	op := crdt.NewOp(w.devs[member], w.team, at, nil, crdt.KindMessage, crdt.Message{Text: "forged"}.Marshal())
	op.Author = w.devs[victim].ID()
	victimKeys, err := teamkeys.Unmarshal(w.team, w.devs[victim], snapshot)
	if err != nil {
		t.Fatal(err)
	}
	e, err := victimKeys.Seal(op, tag)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestForget(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob")
	_, createEnv, tag1 := w.create("alice")
	_, c2, tag2 := w.commit("alice", 2, "alice", "bob")
	w.open("bob", c2, nil, nil)
	_, m := w.msg("alice", tag2, "before forgetting")
	w.keys["bob"].Forget(tag2)
	w.keys["bob"].Forget(tag2) // idempotent
	if slices.Contains(w.keys["bob"].Tags(), tag2) || w.keys["bob"].CanSend(tag2) {
		t.Errorf("after Forget: Tags %v, CanSend %v; want tag gone", w.keys["bob"].Tags(), w.keys["bob"].CanSend(tag2))
	}
	w.unchanged("bob", "envelopes of a forgotten epoch", func() {
		w.open("bob", m, nil, teamkeys.ErrUnknownEpoch)
		w.open("bob", c2, nil, teamkeys.ErrUnknownEpoch) // his box still opens: refused all the same
	})
	// A later commit's prior keys do not bring it back.
	c3op, c3, _ := w.commit("alice", 3, "alice", "bob")
	w.open("bob", c3, c3op, nil)
	if slices.Contains(w.keys["bob"].Tags(), tag2) || !slices.Contains(w.keys["bob"].Tags(), tag1) {
		t.Errorf("after commit 3: Tags %v; want tag 1 (prior key) and not the forgotten tag 2", w.keys["bob"].Tags())
	}
	// Forgetting survives Marshal.
	k, err := teamkeys.Unmarshal(w.team, w.devs["bob"], w.keys["bob"].Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open(c2); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("after Unmarshal: got %v; want ErrUnknownEpoch", err)
	}
	_ = createEnv
}

func TestCheck(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	_, c2, tag2 := w.commit("alice", 2, "alice", "bob")
	_, m := w.msg("alice", tag2, "x")
	w.unchanged("bob", "Check", func() {
		if err := w.keys["bob"].Check(c2); err != nil {
			t.Errorf("bob checks the commit he can open: got %v", err)
		}
		if err := w.keys["bob"].Check(m); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
			t.Errorf("bob checks a message of an epoch not learned yet: got %v", err)
		}
	})
	w.open("bob", c2, nil, nil)
	if err := w.keys["bob"].Check(m); err != nil {
		t.Errorf("after learning: got %v", err)
	}
	bad := *m
	bad.Ciphertext = bytes.Clone(m.Ciphertext)
	bad.Ciphertext[20] ^= 1
	if err := w.keys["bob"].Check(&bad); !errors.Is(err, envelope.ErrOpen) {
		t.Errorf("tampered: got %v; want ErrOpen", err)
	}
	if err := w.keys["carol"].Check(c2); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("carol, no box: got %v; want ErrUnknownEpoch", err)
	}
	if err := w.keys["bob"].Check(&envelope.Envelope{Ciphertext: []byte{9}}); !errors.Is(err, envelope.ErrShort) && !errors.Is(err, envelope.ErrMalformed) {
		t.Errorf("malformed: got %v", err)
	}
}

// TestMarshal: a state survives Marshal and Unmarshal (byte for byte, and
// in behaviour), and Unmarshal refuses another team's or device's state.
func TestMarshal(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	_, c2, tag2 := w.commit("alice", 2, "alice", "bob", "carol")
	w.open("bob", c2, nil, nil)
	var envs []*envelope.Envelope
	var ops []*crdt.Op
	for i := range 6 {
		op, e := w.msg("alice", tag2, fmt.Sprint(i))
		ops, envs = append(ops, op), append(envs, e)
	}
	w.open("bob", envs[3], ops[3], nil) // two skipped keys... three
	w.keys["bob"].Forget(12345)
	b := w.keys["bob"].Marshal()
	k, err := teamkeys.Unmarshal(w.team, w.devs["bob"], b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Marshal(), b) {
		t.Errorf("Marshal after Unmarshal differs")
	}
	for _, i := range []int{0, 1, 2, 4, 5} {
		if op, err := k.Open(envs[i]); err != nil || op.ID() != ops[i].ID() {
			t.Errorf("restored state, message %d: %v", i, err)
		}
	}
	if _, err := k.Open(envs[3]); !errors.Is(err, teamkeys.ErrReplay) {
		t.Errorf("restored state, replay: got %v", err)
	}
	if _, err := teamkeys.Unmarshal(w.team, w.devs["carol"], b); !errors.Is(err, teamkeys.ErrEncoding) {
		t.Errorf("another device: got %v; want ErrEncoding", err)
	}
	if _, err := teamkeys.Unmarshal(crdt.TeamID{1}, w.devs["bob"], b); !errors.Is(err, teamkeys.ErrEncoding) {
		t.Errorf("another team: got %v; want ErrEncoding", err)
	}
	for n := range len(b) {
		if _, err := teamkeys.Unmarshal(w.team, w.devs["bob"], b[:n]); !errors.Is(err, teamkeys.ErrEncoding) {
			t.Fatalf("truncated to %d: got %v; want ErrEncoding", n, err)
		}
	}
	if _, err := teamkeys.Unmarshal(w.team, w.devs["bob"], append(bytes.Clone(b), 0)); !errors.Is(err, teamkeys.ErrEncoding) {
		t.Errorf("trailing byte: got %v; want ErrEncoding", err)
	}
}

// goldenState is a small deterministic state: bob after epoch 2 and two
// of alice's messages, one skipped.
func goldenState(t testing.TB) (*world, []byte) {
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	_, c2, tag2 := w.commit("alice", 2, "alice", "bob", "carol")
	w.open("bob", c2, nil, nil)
	w.msg("alice", tag2, "skipped")
	_, e := w.msg("alice", tag2, "opened")
	w.open("bob", e, nil, nil)
	w.keys["bob"].Forget(7)
	return w, w.keys["bob"].Marshal()
}

func TestGolden(t *testing.T) {
	skipNoSeal(t)
	_, b := goldenState(t)
	path := filepath.Join("testdata", "state.golden")
	want := fmt.Appendf(nil, "# teamkeys state encoding (version 1) of a fixed history: go test -run TestGolden -update\n%x\n", b)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		writeCorpus(t, b)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the state made now (an encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
}

// writeCorpus rewrites the committed seed corpus of FuzzUnmarshal: the
// golden state, an empty state, and cuts and changes where the decoder
// checks something.
func writeCorpus(t *testing.T, b []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshal")
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, _ := goldenState(t)
	empty := teamkeys.New(w.team, w.devs["bob"]).Marshal()
	flags := bytes.Clone(b)
	flags[1+32+32+1+4] |= 0x80 // the first epoch's flags
	seeds := [][]byte{b, empty, b[:len(b)/2], b[:1+32+32+1+4+1+32], flags, append(bytes.Clone(b), 0)}
	for _, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		name := fmt.Sprintf("%x", sha256.Sum256(s))[:16]
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	w, b := goldenState(f)
	f.Add(b)
	f.Add(teamkeys.New(w.team, w.devs["bob"]).Marshal())
	f.Add(b[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := teamkeys.Unmarshal(w.team, w.devs["bob"], b)
		if err != nil {
			if k != nil {
				t.Fatalf("got a state and error %v", err)
			}
			return
		}
		if got := k.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity")
		}
	})
}
