//go:build fieldmesh_noseal

package envelope

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
)

// TestNoSeal: in a fieldmesh_noseal build, both layers carry plaintext in
// the normal layout (same sizes), which still opens in this build; the
// seal is still checked, and the receiver chains advance as in a normal
// build.
func TestNoSeal(t *testing.T) {
	f := newFixture(t)
	e, sealed := f.sealChain(t, f.msgA, 0)
	b := e.Marshal()
	if !bytes.Contains(b, []byte("Bed 4: review before noon")) || !bytes.Contains(b, []byte("MRN 0042")) {
		t.Errorf("chain form: want the message in plaintext on the wire")
	}
	if got, want := len(b), HeaderSize+ChainOverhead-1-4+len(f.msgA.MarshalCompact()); got != want {
		t.Errorf("chain form: %d bytes; want %d, as in a normal build", got, want)
	}
	c, err := OpenChain(e, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	r := senderkey.NewReceiver(f.k2, c.Sender)
	for range 2 {
		if op, err := c.Peek(r); err != nil || !reflect.DeepEqual(op, sealed) || r.Next() != 0 {
			t.Errorf("chain form, Peek: got %v (receiver at %d); want the op, receiver unchanged", err, r.Next())
		}
	}
	if op, err := c.Open(r); err != nil || !reflect.DeepEqual(op, sealed) || r.Next() != 1 {
		t.Errorf("chain form, Open: got %v (receiver at %d); want the op, receiver at 1", err, r.Next())
	}
	if _, err := c.Peek(r); !errors.Is(err, senderkey.ErrReplay) {
		t.Errorf("chain form, replay: got %v; want ErrReplay", err)
	}
	// The seal is checked in this build too.
	forged := wrapChain(e, OuterKey(f.k2), c.Slot, 1, c.Sig, c.inner)
	if _, err := OpenChain(forged, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
		t.Errorf("a seal moved to another index: got %v; want ErrBadSeal", err)
	}
	if !bytes.Contains(f.createEnv.Marshal(), []byte("Ward 7")) {
		t.Errorf("commit form: want the team name in plaintext on the wire")
	}
	if op, _, _, err := f.openCommit(f.commitE, f.bob); err != nil || op.ID() != f.commit.ID() {
		t.Errorf("commit form: got %v; want the op", err)
	}
	// A normal build's envelope does not open here either.
	x := *e
	x.Ciphertext = bytes.Clone(e.Ciphertext)
	x.Ciphertext[len(x.Ciphertext)-1] ^= 1
	if _, err := OpenChain(&x, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
		t.Errorf("without the noseal mark: got %v; want ErrBadSeal (the signature covers the inner layer)", err)
	}
}
