package crdt

import (
	"flag"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// detRand returns a deterministic reader for the seed.
func detRand(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

func newDevice(t testing.TB, r io.Reader) *identity.Device {
	t.Helper()
	d, err := identity.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func info(d *identity.Device, name string, admin bool) MemberInfo {
	return MemberInfo{Device: d.ID(), Noise: d.NoisePublic(), Name: name, Admin: admin}
}

// t0 is a fixed time for deterministic ops.
var t0 = time.Date(2025, 3, 1, 8, 30, 0, 0, time.UTC)

func hlcAt(sec int, counter uint16) HLC {
	return MakeHLC(t0.Add(time.Duration(sec)*time.Second), counter)
}

func mustAdd(t testing.TB, l *Log, ops ...*Op) {
	t.Helper()
	for _, op := range ops {
		if _, err := l.Add(op); err != nil {
			t.Fatalf("Add(%v op %v): %v", op.Kind, op.ID().Short(), err)
		}
	}
}

func createOp(dev *identity.Device, team TeamID, t HLC, name string) *Op {
	body := Create{Name: name, Kind: Clinical, Creator: info(dev, dev.ID().Short(), true)}.Marshal()
	return NewOp(dev, team, t, nil, KindCreate, body)
}

func memberOp(author *identity.Device, team TeamID, t HLC, parents []OpID, who MemberInfo) *Op {
	return NewOp(author, team, t, parents, KindMember, Member{Add: who}.Marshal())
}

func messageOp(author *identity.Device, team TeamID, t HLC, parents []OpID, text string) *Op {
	return NewOp(author, team, t, parents, KindMessage, Message{Text: text}.Marshal())
}
