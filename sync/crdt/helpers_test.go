package crdt

import (
	"flag"
	"io"
	"math/rand/v2"
	"slices"
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

// addCommit returns a commit that adds who as a new person, with epoch
// number 2 and who as its only recipient.
func addCommit(who MemberInfo) Commit {
	return Commit{
		Number:     2,
		Changes:    []Change{{Action: ActAdd, Info: who}},
		Recipients: []Recipient{{Device: who.Device, Noise: who.Noise}},
	}
}

// addBody returns addCommit(who).Marshal().
func addBody(who MemberInfo) []byte { return addCommit(who).Marshal() }

// memberOp returns a commit op that adds who, with who as the only
// recipient and an epoch number that grows with t (2 + the seconds since
// t0), so that ops made later in a test have greater numbers.
func memberOp(author *identity.Device, team TeamID, t HLC, parents []OpID, who MemberInfo) *Op {
	c := addCommit(who)
	c.Number = numberAt(t)
	return NewOp(author, team, t, parents, KindMember, c.Marshal())
}

// numberAt returns 2 + the whole seconds from t0 to t (2 before t0).
func numberAt(t HLC) uint32 {
	return 2 + uint32(max(0, t.Time().Sub(t0)/time.Second))
}

// commitOp returns a commit op of the given changes, whose recipients are
// recips (sorted here) and whose epoch number is numberAt(t).
func commitOp(author *identity.Device, team TeamID, t HLC, parents []OpID, recips []Recipient, changes ...Change) *Op {
	recips = slices.Clone(recips)
	slices.SortFunc(recips, func(a, b Recipient) int { return compareDevice(a.Device, b.Device) })
	c := Commit{Number: numberAt(t), Changes: changes, Recipients: recips}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return NewOp(author, team, t, parents, KindMember, c.Marshal())
}

func recipient(d *identity.Device) Recipient {
	return Recipient{Device: d.ID(), Noise: d.NoisePublic()}
}

func messageOp(author *identity.Device, team TeamID, t HLC, parents []OpID, text string) *Op {
	return newOp(author, team, t, parents, KindMessage, Message{Text: text}.Marshal())
}

// newOp is NewOp with an op of any other kind than create and commit signed at epoch 0, index 0,
// as if sealed there: the log's rules do not look at where a chain-form op was sealed.
func newOp(dev *identity.Device, team TeamID, t HLC, parents []OpID, kind Kind, body []byte) *Op {
	o := NewOp(dev, team, t, parents, kind, body)
	if !kind.StartsEpoch() {
		o.Sign(dev, 0, 0, InnerHash{})
	}
	return o
}
