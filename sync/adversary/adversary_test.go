package adversary

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// TestForgeChainLayout: with the genuine signature at the genuine
// position, ForgeChain builds byte for byte what envelope.SealChain seals,
// so a forgery the tests make differs from a genuine envelope only where
// the attacker chose to.
func TestForgeChainLayout(t *testing.T) {
	if envelope.NoSeal {
		t.Skip("the fieldmesh_noseal build lays out plaintext layers, which ForgeChain does not imitate")
	}
	var s [32]byte
	s[0] = 1
	r := rand.NewChaCha8(s)
	dev, err := identity.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	team, _ := crdt.NewTeamID(r)
	key, _ := seal.NewEpochKey(r)
	for i, index := range []uint32{0, 3, 200} {
		at := crdt.MakeHLC(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), uint16(i*300)) // counters 0, 300, 600: the longer header
		op := crdt.NewOp(dev, team, at, []crdt.OpID{{1}}, crdt.KindMessage, crdt.Message{Text: "ok"}.Marshal())
		sender := senderkey.NewSender(key, dev.ID())
		for range index {
			if _, _, err := sender.Seal([senderkey.NonceSize]byte{}, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		e, sealed, err := envelope.SealChain(op, dev, 0x0a0b0c0d, envelope.OuterKey(key), sender, 5)
		if err != nil {
			t.Fatal(err)
		}
		if got := ForgeChain(op, 0x0a0b0c0d, 5, index, Borrow(sealed.Seal.Sig), key); !bytes.Equal(got, e.Marshal()) {
			t.Errorf("index %d: ForgeChain differs from SealChain:\n got %x\nwant %x", index, got, e.Marshal())
		}
	}
}
