//go:build fieldmesh_noseal

package envelope

import (
	"bytes"
	"errors"
	"testing"
)

// TestNoSeal: in a fieldmesh_noseal build, both layers carry plaintext in
// the normal layout (same sizes), which still opens in this build.
func TestNoSeal(t *testing.T) {
	f := newFixture(t)
	e := f.sealChain(t, f.msgA, 0)
	b := e.Marshal()
	if !bytes.Contains(b, []byte("Bed 4: review before noon")) || !bytes.Contains(b, []byte("MRN 0042")) {
		t.Errorf("chain form: want the message in plaintext on the wire")
	}
	if got, want := len(b), HeaderSize+ChainOverhead+len(f.msgA.Marshal()); got != want {
		t.Errorf("chain form: %d bytes; want %d, as in a normal build", got, want)
	}
	if op, err := f.openChain(e); err != nil || op.ID() != f.msgA.ID() {
		t.Errorf("chain form: got %v; want the op", err)
	}
	if !bytes.Contains(f.createEnv.Marshal(), []byte("Ward 7")) {
		t.Errorf("commit form: want the team name in plaintext on the wire")
	}
	if op, _, _, err := f.openCommit(f.commitE, f.bob); err != nil || op.ID() != f.commit.ID() {
		t.Errorf("commit form: got %v; want the op", err)
	}
	// A normal build's envelope does not open here either.
	c := *e
	c.Ciphertext = bytes.Clone(e.Ciphertext)
	c.Ciphertext[len(c.Ciphertext)-1] ^= 1
	if _, err := OpenChain(&c, OuterKey(f.k2), f.team); !errors.Is(err, ErrOpen) {
		t.Errorf("without the noseal mark: got %v; want ErrOpen", err)
	}
}
