package teamkeys_test

import (
	"errors"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// Wipe leaves a state that holds no epoch, overwrote the keys of those it held, and can neither open
// nor seal: what the node relies on when the device locks.
func TestWipe(t *testing.T) {
	skipNoSeal(t)
	w := newWorld(t, "alice", "bob")
	alice := w.keys["alice"]
	w.create("alice")
	commit2, commit2Env := w.commit("alice", 2, "alice", "bob")
	w.mustLearn("alice", commit2Env, commit2)
	w.mustLearn("bob", commit2Env, commit2)
	_, msgEnv := w.msg("alice", commit2.ID(), "before the lock")
	var held []*teamkeys.Epoch
	for _, e := range w.keys["bob"].Epochs() {
		if ep, ok := w.keys["bob"].Epoch(e.Commit); ok {
			held = append(held, ep)
		}
	}
	if len(held) == 0 || held[0].Wiped() {
		t.Fatal("bob holds no epoch, or it reads as wiped before Wipe: the check cannot fail")
	}
	bob := w.keys["bob"]
	bob.Wipe()
	for i, ep := range held {
		if !ep.Wiped() {
			t.Errorf("epoch %d still holds keys", i)
		}
	}
	if bob.Len() != 0 {
		t.Errorf("bob holds %d epochs after Wipe", bob.Len())
	}
	if _, err := bob.OpenChain(w.wire(msgEnv)); !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("bob opens a message after Wipe: %v; want ErrUnknownEpoch", err)
	}
	alice.Wipe()
	if alice.CanSend(commit2.ID()) {
		t.Error("alice can still send after Wipe")
	}
}
