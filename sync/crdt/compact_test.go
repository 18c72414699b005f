package crdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// TestCompact: the compact encoding is the content encoding without its
// version, team, author, time and body length, and it decodes, with those
// given, to the op with the same id.
func TestCompact(t *testing.T) {
	r := detRand(60)
	dev := newDevice(t, r)
	team, _ := NewTeamID(r)
	for _, parents := range [][]OpID{nil, {{1}}, {{1}, {2}}} {
		for _, body := range [][]byte{nil, Message{Text: "ok"}.Marshal(), bytes.Repeat([]byte{7}, 300)} {
			op := NewOp(dev, team, 42, parents, KindMessage, body)
			c := op.MarshalCompact()
			content := op.MarshalContent()
			// content: version 1, team 32, author 32, time 8, kind 1, parent count, parents, body
			// length, body; compact: kind | count<<5, parents, body
			parentsAt := 1 + 32 + 32 + 8 + 1 + 1
			want := append([]byte{byte(KindMessage) | byte(len(parents))<<5}, content[parentsAt:len(content)-len(body)-binary.PutUvarint(make([]byte, 10), uint64(len(body)))]...)
			want = append(want, body...)
			if !bytes.Equal(c, want) {
				t.Errorf("MarshalCompact = %x; want %x", c, want)
			}
			if len(c) != op.compactSize() {
				t.Errorf("compactSize = %d; want %d", op.compactSize(), len(c))
			}
			got, err := UnmarshalCompact(c, team, dev.ID(), 42)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID() != op.ID() || !reflect.DeepEqual(got, &Op{Team: team, Author: dev.ID(), Time: 42, Parents: op.Parents, Kind: op.Kind, Body: op.Body}) {
				t.Errorf("UnmarshalCompact(MarshalCompact(op)) = %+v; want %+v", got, op)
			}
			if other, _ := UnmarshalCompact(c, TeamID{1}, dev.ID(), 42); other.ID() == op.ID() {
				t.Errorf("the id does not depend on the team the receiver gives")
			}
		}
	}
}

func TestUnmarshalCompactRefuses(t *testing.T) {
	p1, p2 := OpID{1}, OpID{2}
	head := func(parents int) byte { return byte(KindMessage) | byte(parents)<<5 }
	two := func(a, b OpID) []byte { return append(append([]byte{head(2)}, a[:]...), b[:]...) }
	many := func(n int) []byte { // n ascending parents, counted as 7 and a uvarint of the rest
		b := []byte{head(7), byte(n - 7)}
		for i := range n {
			var p OpID
			p[0] = byte(i + 1)
			b = append(b, p[:]...)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"kind 0", []byte{0}, ErrMalformed},
		{"kind 0 with parents", []byte{2 << 5}, ErrMalformed},
		{"no count after 7", []byte{head(7)}, ErrTruncated},
		{"non-minimal count", append([]byte{head(7), 0x80, 0}, make([]byte, 7*IDSize)...), ErrMalformed},
		{"too many parents", append([]byte{head(7), MaxParents + 1 - 7}, make([]byte, IDSize*(MaxParents+1))...), ErrTooLarge},
		{"truncated parent", append([]byte{head(1)}, make([]byte, IDSize-1)...), ErrTruncated},
		{"parents descending", two(p2, p1), ErrMalformed},
		{"parents repeated", two(p1, p1), ErrMalformed},
		{"longer than MaxOpSize", make([]byte, MaxOpSize+1), ErrTooLarge},
		{"content over MaxOpSize", append([]byte{head(0)}, make([]byte, MaxOpSize-1)...), ErrTooLarge},
	} {
		op, err := UnmarshalCompact(tc.b, TeamID{}, identity.DeviceID{}, 0)
		if !errors.Is(err, tc.want) || op != nil {
			t.Errorf("%s: got %v, %v; want %v", tc.name, op, err, tc.want)
		}
	}
	if op, err := UnmarshalCompact(two(p1, p2), TeamID{}, identity.DeviceID{}, 0); err != nil || len(op.Parents) != 2 || op.Body != nil {
		t.Errorf("two parents, empty body: got %+v, %v", op, err)
	}
	for _, n := range []int{7, 8, MaxParents} {
		op, err := UnmarshalCompact(many(n), TeamID{}, identity.DeviceID{}, 0)
		if err != nil || len(op.Parents) != n || op.Body != nil {
			t.Errorf("%d parents: got %v, %v", n, op, err)
			continue
		}
		if c := op.MarshalCompact(); !bytes.Equal(c, many(n)) || len(c) != op.compactSize() {
			t.Errorf("%d parents: MarshalCompact = %x (size %d); want %x", n, c, op.compactSize(), many(n))
		}
	}
}

// FuzzUnmarshalCompact: UnmarshalCompact never panics, round-trips what it
// accepts, and accepts only ops whose content UnmarshalContent accepts.
func FuzzUnmarshalCompact(f *testing.F) {
	_, ops := goldenOps(f)
	for _, op := range ops {
		f.Add(op.MarshalCompact())
	}
	f.Add([]byte{byte(KindMessage), 0})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		team, author := TeamID{7}, identity.DeviceID{9}
		op, err := UnmarshalCompact(b, team, author, 5)
		if err != nil {
			if op != nil {
				t.Fatalf("got op and error %v", err)
			}
			return
		}
		if got := op.MarshalCompact(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
		if op.Team != team || op.Author != author || op.Time != 5 {
			t.Fatalf("the op is not of the team, author and time given")
		}
		c, err := UnmarshalContent(op.MarshalContent())
		if err != nil || !reflect.DeepEqual(c, op) {
			t.Fatalf("UnmarshalContent refuses the rebuilt content: %v", err)
		}
	})
}
