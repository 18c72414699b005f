package teamkeys_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// TestPrekeys: a commit boxes a device's key to the prekey it published,
// which its static key does not open; learning the epoch marks the prekey
// used (a new one is wanted) and keeps it, so that a concurrent commit
// boxed to it still opens; the state survives Marshal; forgetting the
// epoch destroys the prekey, after which no key the device holds opens
// the box again.
func TestPrekeys(t *testing.T) {
	w := newWorld(t, "alice", "bob")
	w.create("alice")
	_, e2 := w.commit("alice", 2, "alice", "bob")
	w.mustLearn("bob", e2, nil)
	bob := w.keys["bob"]
	if !bob.WantsPrekey() {
		t.Fatal("bob holds no prekey and does not want one")
	}
	pk1, err := bob.NewPrekey(w.rand())
	if err != nil {
		t.Fatal(err)
	}
	if bob.WantsPrekey() {
		t.Error("bob wants a prekey with a fresh one held")
	}
	commitTo := func(number uint32, pk identity.NoisePublic) (*crdt.Op, *envelope.Envelope) {
		t.Helper()
		op := w.commitOp("alice", number, w.recipients("alice", "bob"))
		e, err := w.keys["alice"].SealCommit(op, w.rand(), nil, map[identity.DeviceID]identity.NoisePublic{w.devs["bob"].ID(): pk})
		if err != nil {
			t.Fatal(err)
		}
		return op, e
	}
	c3, e3 := commitTo(3, pk1)
	if _, err := teamkeys.OpenBox(teamkeys.StaticOnly(w.devs["bob"]), w.team, e3); !errors.Is(err, envelope.ErrNotRecipient) {
		t.Fatalf("bob's static key opens a box sealed to his prekey: %v", err)
	}
	box, err := teamkeys.OpenBox(bob.BoxKeys(), w.team, e3)
	if err != nil || box.Prekey != pk1 {
		t.Fatalf("bob's prekey does not open his box: %v", err)
	}
	w.mustLearn("bob", e3, c3)
	if !bob.WantsPrekey() {
		t.Error("bob's only prekey is used and he does not want a new one")
	}
	// The state keeps the prekey and what it opened.
	re, err := teamkeys.Unmarshal(w.team, w.devs["bob"], bob.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(re.Prekeys(), []identity.NoisePublic{pk1}) || !re.WantsPrekey() {
		t.Errorf("after Marshal: prekeys %v, wants %v", re.Prekeys(), re.WantsPrekey())
	}
	pk2, err := bob.NewPrekey(w.rand())
	if err != nil {
		t.Fatal(err)
	}
	c4, e4 := commitTo(4, pk2)
	w.mustLearn("bob", e4, c4)
	// A commit concurrent with c3, by an admin who had not seen pk2: pk1 still opens it.
	_, e4b := commitTo(4, pk1)
	if b, err := teamkeys.OpenBox(bob.BoxKeys(), w.team, e4b); err != nil || b.Prekey != pk1 {
		t.Errorf("a concurrent commit boxed to the used prekey does not open while its epoch is held: %v", err)
	}
	bob.Forget(crdt.TagOf(c3.ID()))
	if slices.Contains(bob.Prekeys(), pk1) {
		t.Errorf("bob still holds the prekey of a forgotten epoch")
	}
	if _, err := teamkeys.OpenBox(bob.BoxKeys(), w.team, e3); !errors.Is(err, envelope.ErrNotRecipient) {
		t.Errorf("after the epoch is forgotten, bob's keys still open its box: %v", err)
	}
	if !slices.Contains(bob.Prekeys(), pk2) {
		t.Errorf("bob lost the prekey of the epoch he holds")
	}
}
