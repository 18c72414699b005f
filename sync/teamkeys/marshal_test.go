package teamkeys_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// richState is bob's state after a history that uses every part of the
// encoding: an epoch named by its commit but known by its outer key only
// (1), one known by a prior key only (2), one with chains (3) in which he
// skipped three of alice's messages, read one and peeked at another
// without consuming it, and sent two of his own; and two forgotten tags.
type richState struct {
	w                  *world
	create, c2, c3     *crdt.Op
	createEnv, c2Env   *envelope.Envelope
	ops                []*crdt.Op // alice's messages in epoch 3
	envs               []*envelope.Envelope
	read, peeked, sent int
}

func newRichState(t testing.TB) *richState {
	t.Helper()
	w := newWorld(t, "alice", "bob", "carol")
	s := &richState{w: w, read: 3, peeked: 4, sent: 2}
	s.create, s.createEnv = w.create("alice")
	s.c2, s.c2Env = w.commit("alice", 2, "alice", "bob", "carol")
	// Epoch 3 is boxed to a prekey of bob's, which he then holds as used, with a fresh one beside it.
	pk, err := w.keys["bob"].NewPrekey(w.rand())
	if err != nil {
		t.Fatal(err)
	}
	s.c3 = w.commitOp("alice", 3, w.recipients("alice", "bob"))
	c3Env, err := w.keys["alice"].SealCommit(s.c3, w.rand(), nil, map[identity.DeviceID]identity.NoisePublic{w.devs["bob"].ID(): pk})
	if err != nil {
		t.Fatal(err)
	}
	w.mustLearn("bob", c3Env, s.c3)
	if _, err := w.keys["bob"].NewPrekey(w.rand()); err != nil {
		t.Fatal(err)
	}
	w.mustLearn("bob", s.createEnv, s.create) // names epoch 1
	for i := range 6 {
		op, e := w.msg("alice", s.c3.ID(), fmt.Sprint("m", i))
		s.ops, s.envs = append(s.ops, op), append(s.envs, e)
	}
	if _, err := w.read("bob", s.envs[s.read]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.keys["bob"].OpenChain(s.envs[s.peeked]); err != nil {
		t.Fatal(err)
	}
	for i := range s.sent {
		w.msg("bob", s.c3.ID(), fmt.Sprint("b", i))
	}
	w.keys["bob"].Forget(12345)
	w.keys["bob"].Forget(7)
	return s
}

// TestMarshal: a state survives Marshal and Unmarshal byte for byte and in
// behaviour.
func TestMarshal(t *testing.T) {
	s := newRichState(t)
	w, bob := s.w, s.w.keys["bob"]
	c1, c3 := s.create.ID(), s.c3.ID()
	wantEpochs(t, "bob", bob, info(crdt.TagOf(c1), c1, false), info(crdt.TagOf(s.c2.ID()), crdt.OpID{}, false), info(crdt.TagOf(c3), c3, true))
	b := bob.Marshal()
	if b[0] != 5 {
		t.Errorf("version byte %d; want 5", b[0])
	}
	k, err := teamkeys.Unmarshal(w.team, w.devs["bob"], b)
	if err != nil {
		t.Fatal(err)
	}
	// The recipient lists (which name chain envelopes' senders) survive:
	// written for the epoch named by its commit without chains, derived
	// from the chains for the other.
	for _, ep := range bob.Epochs() {
		before, _ := bob.Epoch(ep.Commit)
		after, ok := k.Epoch(ep.Commit)
		if ep.Commit == (crdt.OpID{}) {
			continue
		}
		if !ok || len(before.List()) == 0 || !slices.Equal(before.List(), after.List()) {
			t.Errorf("epoch %08x: list %v after Unmarshal; want %v", ep.Tag, after.List(), before.List())
		}
	}
	if !bytes.Equal(k.Marshal(), b) {
		t.Errorf("Marshal after Unmarshal differs")
	}
	b[len(b)/2] ^= 0xff // Unmarshal does not alias its input
	if !reflect.DeepEqual(k.Epochs(), bob.Epochs()) || !reflect.DeepEqual(k.Tags(), bob.Tags()) || k.Len() != bob.Len() {
		t.Errorf("restored: Epochs %+v; want %+v", k.Epochs(), bob.Epochs())
	}
	for _, tag := range []uint32{7, 12345, crdt.TagOf(c3)} {
		if k.Forgotten(tag) != bob.Forgotten(tag) || k.Held(tag) != bob.Held(tag) {
			t.Errorf("restored: tag %08x forgotten %v held %v; want %v %v", tag, k.Forgotten(tag), k.Held(tag), bob.Forgotten(tag), bob.Held(tag))
		}
	}
	alice := w.devs["alice"].ID()
	for i := range uint32(8) {
		if k.CanOpen(c3, alice, i) != bob.CanOpen(c3, alice, i) {
			t.Errorf("restored: CanOpen(%d) %v; want %v", i, k.CanOpen(c3, alice, i), bob.CanOpen(c3, alice, i))
		}
	}
	if !k.CanSend(c3) || k.CanSend(c1) {
		t.Errorf("restored: CanSend 3 %v, 1 %v; want true false", k.CanSend(c3), k.CanSend(c1))
	}
	w.keys["bob"] = k // from here on, the restored state
	for i := range s.ops {
		if i == s.read {
			w.wantRead("bob", s.envs[i], nil, teamkeys.ErrReplay)
		} else {
			w.wantRead("bob", s.envs[i], s.ops[i], nil)
		}
	}
	// bob's sender chain goes on where it was.
	op, e := w.msg("bob", c3, "after the restart")
	if op.Seal.Index != uint32(s.sent) {
		t.Errorf("restored sender chain sealed at %d; want %d", op.Seal.Index, s.sent)
	}
	w.wantRead("alice", e, op, nil)
	// The outer-only epochs open what they opened.
	if c, err := k.OpenCommit(s.createEnv, nil); err != nil || c.Op.ID() != c1 {
		t.Errorf("restored: the create: %v", err)
	}
	c, err := k.OpenCommit(s.c2Env, nil)
	if err != nil || k.Learn(c) != nil {
		t.Fatalf("restored: commit 2 by its prior key: %v", err)
	}
	if ep, ok := k.Epoch(s.c2.ID()); !ok || ep.Chains() {
		t.Errorf("restored: commit 2 not named, or with chains")
	}
}

func TestUnmarshalErrors(t *testing.T) {
	s := newRichState(t)
	w := s.w
	team, bob := w.team, w.devs["bob"]
	rich := w.keys["bob"].Marshal()
	empty := teamkeys.New(team, bob).Marshal()
	if len(empty) != 1+32+32+1+1+1 {
		t.Fatalf("empty state of %d bytes; want 68", len(empty))
	}
	// Two outer-only epochs (tags 1 and 2) and forgotten tags 5 and 9.
	k := teamkeys.New(team, bob)
	for tag := range uint32(2) {
		if _, err := k.LearnPrior(envelope.PriorKey{Tag: tag + 1, Outer: mustKey(t, uint64(tag))}); err != nil {
			t.Fatal(err)
		}
	}
	k.Forget(5)
	k.Forget(9)
	two := k.Marshal()
	const (
		epochsAt = 1 + 32 + 32 + 1 // the first epoch (one-byte count)
		outerLen = 4 + 1 + 32      // an outer-only epoch
		forgotAt = epochsAt + 2*outerLen + 1
	)
	if len(two) != forgotAt+8+1 {
		t.Fatalf("two outer-only epochs and two forgotten tags: %d bytes; want %d", len(two), forgotAt+8+1)
	}
	// A state with one prekey: the count, the private key, the used byte.
	kp := teamkeys.New(team, bob)
	if _, err := kp.NewPrekey(w.rand()); err != nil {
		t.Fatal(err)
	}
	withPrekey := kp.Marshal()
	prekeysAt := len(empty) - 1
	if len(withPrekey) != prekeysAt+1+34 {
		t.Fatalf("a state with one prekey: %d bytes; want %d", len(withPrekey), prekeysAt+1+34)
	}
	with := func(b []byte, i int, v ...byte) []byte { c := bytes.Clone(b); copy(c[i:], v); return c }
	swapped := with(two, epochsAt, append(bytes.Clone(two[epochsAt+outerLen:epochsAt+2*outerLen]), two[epochsAt:epochsAt+outerLen]...)...)
	repeated := with(two, epochsAt+outerLen, two[epochsAt:epochsAt+outerLen]...)
	// A state of one epoch with its commit id and chains: bob's after he
	// creates a team of that id himself.
	kOne := teamkeys.New(team, bob)
	genesis := crdt.NewOp(bob, team, w.tick(), nil, crdt.KindCreate, crdt.Create{Name: "Ward 8", Kind: crdt.Clinical,
		Creator: crdt.MemberInfo{Device: bob.ID(), Noise: bob.NoisePublic(), Name: "Bob", Admin: true}}.Marshal())
	if _, err := kOne.SealCommit(genesis, w.rand(), nil, nil); err != nil {
		t.Fatal(err)
	}
	one := kOne.Marshal()
	firstFlags := epochsAt + 4
	if one[firstFlags] != 3 {
		t.Fatalf("alice's epoch has flags %#x; want 3 (commit id, chains)", one[firstFlags])
	}
	// alice's state, claimed to be bob's: her sender state is hers.
	aliceState := w.keys["alice"].Marshal()
	bobID := bob.ID()
	const flagChains = 2
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"empty input", nil},
		{"version 1", with(empty, 0, 1)},
		{"version 2", with(empty, 0, 2)},
		{"version 3", with(empty, 0, 3)},
		{"version 4", with(empty, 0, 4)},
		{"version 6", with(empty, 0, 6)},
		{"prekey used byte 2", with(withPrekey, prekeysAt+1+32, 2)},
		{"an unused prekey that opened an epoch", append(with(withPrekey, prekeysAt+1+33, 1), 0, 0, 0, 1)},
		{"prekey tags not ascending", append(with(with(withPrekey, prekeysAt+1+32, 1), prekeysAt+1+33, 2), 0, 0, 0, 2, 0, 0, 0, 1)},
		{"a prekey twice", append(with(withPrekey, prekeysAt, 2), withPrekey[prekeysAt+1:]...)},
		{"prekey count over what follows", with(withPrekey, prekeysAt, 2)},
		{"prekey count over MaxPrekeys", append(append(bytes.Clone(empty[:prekeysAt]), teamkeys.MaxPrekeys+1), bytes.Repeat(withPrekey[prekeysAt+1:], teamkeys.MaxPrekeys+1)...)},
		{"another team", with(empty, 1, 0xff)},
		{"another device", with(empty, 33, 0xff)},
		{"trailing byte", append(bytes.Clone(rich), 0)},
		{"epoch count not minimal", append(append(bytes.Clone(empty[:epochsAt-1]), 0x80, 0x00), 0)},
		{"epoch count over what follows", with(two, epochsAt-1, 3)},
		{"epoch count over MaxEpochs", append(append(bytes.Clone(empty[:epochsAt-1]), binary.AppendUvarint(nil, teamkeys.MaxEpochs+1)...), make([]byte, (teamkeys.MaxEpochs+1)*outerLen)...)},
		{"unknown epoch flags", with(one, firstFlags, 0x83)},
		{"zero commit id", with(one, firstFlags+1, make([]byte, 32)...)},
		{"zero commit id under tag 0", with(with(one, firstFlags+1, make([]byte, 32)...), epochsAt, 0, 0, 0, 0)},
		{"a commit id of another tag", with(one, epochsAt, one[epochsAt]^1)},
		{"no commit id but chains", with(two, epochsAt+4, flagChains)},
		{"epochs not ascending", swapped},
		{"an epoch twice", repeated},
		{"forgotten count over what follows", with(two, forgotAt-1, 3)},
		{"forgotten tags not ascending", with(two, forgotAt, 0, 0, 0, 9, 0, 0, 0, 5)},
		{"a forgotten tag twice", with(two, forgotAt, 0, 0, 0, 5, 0, 0, 0, 5)},
		{"a forgotten tag held", with(two, forgotAt, 0, 0, 0, 1)},
		{"a sender state of another device", with(aliceState, 33, bobID[:]...)},
	} {
		got, err := teamkeys.Unmarshal(team, bob, tt.in)
		if !errors.Is(err, teamkeys.ErrEncoding) || got != nil {
			t.Errorf("%s: got %v; want ErrEncoding", tt.name, err)
		}
	}
	for _, b := range [][]byte{rich, two, empty} {
		if _, err := teamkeys.Unmarshal(team, bob, b); err != nil {
			t.Fatalf("untouched: %v", err)
		}
		for n := range len(b) {
			if got, err := teamkeys.Unmarshal(team, bob, b[:n]); !errors.Is(err, teamkeys.ErrEncoding) || got != nil {
				t.Fatalf("cut to %d bytes: got %v; want ErrEncoding", n, err)
			}
		}
	}
	if _, err := teamkeys.Unmarshal(team, w.devs["carol"], rich); !errors.Is(err, teamkeys.ErrEncoding) {
		t.Errorf("another device's Unmarshal: got %v; want ErrEncoding", err)
	}
	if _, err := teamkeys.Unmarshal(crdt.TeamID{1}, bob, rich); !errors.Is(err, teamkeys.ErrEncoding) {
		t.Errorf("another team's Unmarshal: got %v; want ErrEncoding", err)
	}
}

// goldenState is the rich state's encoding.
func goldenState(t testing.TB) (*world, []byte) {
	s := newRichState(t)
	return s.w, s.w.keys["bob"].Marshal()
}

func TestGolden(t *testing.T) {
	w, b := goldenState(t)
	path := filepath.Join("testdata", "state.golden")
	want := fmt.Appendf(nil, "# teamkeys state encoding (version 5) of a fixed history: go test -run TestGolden -update\n%x\n", b)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		writeCorpus(t, w, b)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the state made now (an encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
}

// writeCorpus rewrites the seeds (files seed-*) of the committed corpus of
// FuzzUnmarshal: the golden state, an empty state, and cuts and changes
// where the decoder checks something. Inputs the fuzzer found (other
// names) are kept.
func writeCorpus(t *testing.T, w *world, b []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshal")
	old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	empty := teamkeys.New(w.team, w.devs["bob"]).Marshal()
	flags := bytes.Clone(b)
	flags[1+32+32+1+4] |= 0x80 // the first epoch's flags
	v1 := bytes.Clone(b)
	v1[0] = 1
	seeds := [][]byte{b, empty, v1, b[:len(b)/2], b[:1+32+32+1+4+1+32], flags, append(bytes.Clone(b), 0)}
	for _, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		name := fmt.Sprintf("seed-%x", sha256.Sum256(s))[:21]
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzUnmarshal: Unmarshal never panics, refuses with nothing, and what it
// accepts is canonical (Marshal gives back the input) and consistent.
func FuzzUnmarshal(f *testing.F) {
	w, b := goldenState(f)
	f.Add(b)
	f.Add(teamkeys.New(w.team, w.devs["bob"]).Marshal())
	f.Add(b[:100])
	bob := w.devs["bob"]
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := teamkeys.Unmarshal(w.team, bob, b)
		if err != nil {
			if k != nil || !errors.Is(err, teamkeys.ErrEncoding) {
				t.Fatalf("got a state and error %v, or an error that is not ErrEncoding", err)
			}
			return
		}
		if got := k.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity")
		}
		eps := k.Epochs()
		if len(eps) != k.Len() {
			t.Fatalf("Epochs lists %d, Len %d", len(eps), k.Len())
		}
		for _, ep := range eps {
			if !k.Held(ep.Tag) || k.Forgotten(ep.Tag) {
				t.Fatalf("epoch %08x listed but not held, or forgotten", ep.Tag)
			}
			if ep.Commit != (crdt.OpID{}) {
				if crdt.TagOf(ep.Commit) != ep.Tag {
					t.Fatalf("epoch %08x named by a commit of another tag", ep.Tag)
				}
				if got, ok := k.Epoch(ep.Commit); !ok || got.Chains() != ep.Chains {
					t.Fatalf("Epoch(%v) does not match Epochs", ep.Commit.Short())
				}
			}
			if ep.Chains && ep.Commit == (crdt.OpID{}) {
				t.Fatalf("chains of an unnamed epoch")
			}
			_ = k.CanSend(ep.Commit)
			_ = k.CanOpen(ep.Commit, identity.DeviceID{}, 0)
		}
		if len(b) > 0 && b[0] != 5 {
			t.Fatalf("accepted version %d", b[0])
		}
	})
}
