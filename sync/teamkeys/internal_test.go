package teamkeys

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

func chacha(seed byte) *rand.ChaCha8 { return rand.NewChaCha8([32]byte{seed, 0x7d}) }

func device(t *testing.T, seed byte) *identity.Device {
	t.Helper()
	d, err := identity.Generate(chacha(seed))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// commitOp is a re-key by author to the given devices.
func commitOp(t *testing.T, team crdt.TeamID, author *identity.Device, n uint32, to ...*identity.Device) *crdt.Op {
	t.Helper()
	var rs []crdt.Recipient
	for _, d := range to {
		rs = append(rs, crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()})
	}
	for i := 1; i < len(rs); i++ { // insertion sort: a handful
		for j := i; j > 0 && bytes.Compare(rs[j-1].Device[:], rs[j].Device[:]) > 0; j-- {
			rs[j-1], rs[j] = rs[j], rs[j-1]
		}
	}
	at := crdt.MakeHLC(time.Date(2025, 3, 1, 8, 0, int(n), 0, time.UTC), 0)
	return crdt.NewOp(author, team, at, nil, crdt.KindMember, crdt.Commit{Number: n, Recipients: rs}.Marshal())
}

func TestConflictsAndLimits(t *testing.T) {
	if envelope.NoSeal {
		t.Skip("fieldmesh_noseal build")
	}
	team := crdt.TeamID{7}
	alice, bob := device(t, 1), device(t, 2)
	ka, kb := New(team, alice), New(team, bob)
	op2 := commitOp(t, team, alice, 2, alice, bob)
	e2, err := ka.SealCommit(op2, chacha(9))
	if err != nil {
		t.Fatal(err)
	}
	tag2 := crdt.TagOf(op2.ID())
	before := ka.Marshal()
	if _, err := ka.SealCommit(op2, chacha(10)); !errors.Is(err, ErrEpochConflict) || !bytes.Equal(before, ka.Marshal()) {
		t.Errorf("SealCommit twice: got %v; want ErrEpochConflict, state unchanged", err)
	}

	// bob holds tag2's outer key from somewhere else, and it differs.
	other, _ := seal.NewEpochKey(chacha(11))
	kb.epochs[tag2] = &epoch{outer: other}
	before = kb.Marshal()
	if _, err := kb.Open(e2); !errors.Is(err, ErrEpochConflict) || !bytes.Equal(before, kb.Marshal()) {
		t.Errorf("box of another key than the one held: got %v; want ErrEpochConflict, state unchanged", err)
	}
	delete(kb.epochs, tag2)

	// bob holds MaxEpochs epochs: he can learn no more, but what he holds
	// still opens, and SealCommit refuses too.
	for i := range MaxEpochs {
		kb.epochs[uint32(i)<<20|0xabc] = &epoch{outer: other}
	}
	before = kb.Marshal()
	if _, err := kb.Open(e2); !errors.Is(err, ErrTooManyEpochs) || !bytes.Equal(before, kb.Marshal()) {
		t.Errorf("a full Keys learns a commit: got %v; want ErrTooManyEpochs, state unchanged", err)
	}
	if _, err := kb.SealCommit(commitOp(t, team, bob, 3, bob), nil); !errors.Is(err, ErrTooManyEpochs) {
		t.Errorf("a full Keys commits: got %v; want ErrTooManyEpochs", err)
	}
	kb.Forget(0xabc)
	if op, err := kb.Open(e2); err != nil || op.ID() != op2.ID() || !kb.CanSend(tag2) {
		t.Fatalf("after Forget: got %v; want the op, epoch learned", err)
	}
	// Prior keys beyond MaxEpochs are not learned: alice (who holds tag2)
	// commits again; bob, full, learns the commit only if room is made.
	for _, tag := range kb.Tags() {
		if tag != tag2 && len(kb.epochs) > MaxEpochs-1 {
			kb.Forget(tag)
		}
	}
	op3 := commitOp(t, team, alice, 3, alice, bob)
	e3, err := ka.SealCommit(op3, chacha(12))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kb.Open(e3); err != nil || len(kb.epochs) != MaxEpochs {
		t.Errorf("learning at the limit: got %v, %d epochs; want nil, %d", err, len(kb.epochs), MaxEpochs)
	}
	// Forgotten tags are bounded.
	k := New(team, alice)
	for i := range MaxForgotten + 10 {
		k.Forget(uint32(i) + 100)
	}
	if len(k.forgotten) != MaxForgotten {
		t.Errorf("forgotten: %d tags; want %d", len(k.forgotten), MaxForgotten)
	}
	if _, ok := k.forgotten[100]; ok {
		t.Errorf("the smallest tags were not the ones dropped")
	}
}
