package crdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

func ackIDs(n int) []OpID {
	ids := make([]OpID, n)
	for i := range ids {
		binary.BigEndian.PutUint32(ids[i][:], uint32(i+1))
		ids[i][len(ids[i])-1] = 0xaa
	}
	return ids
}

func TestAckRoundtrip(t *testing.T) {
	tests := []struct {
		name string
		a    Ack
	}{
		{"received one", Ack{IDs: ackIDs(1)}},
		{"read three", Ack{Read: true, IDs: ackIDs(3)}},
		{"max", Ack{Read: true, IDs: ackIDs(MaxAckIDs)}},
	}
	for _, tt := range tests {
		if err := tt.a.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", tt.name, err)
		}
		enc := tt.a.Marshal()
		got, err := UnmarshalAck(enc)
		if err != nil {
			t.Fatalf("%s: UnmarshalAck: %v", tt.name, err)
		}
		if !reflect.DeepEqual(got, tt.a) {
			t.Errorf("%s: got %+v; want %+v", tt.name, got, tt.a)
		}
		for i := range enc {
			if _, err := UnmarshalAck(enc[:i]); err == nil {
				t.Errorf("%s: UnmarshalAck of a %d-byte prefix: got nil error; want error", tt.name, i)
			}
		}
		if _, err := UnmarshalAck(append(bytes.Clone(enc), 0)); !errors.Is(err, ErrTrailing) {
			t.Errorf("%s: trailing byte: got %v; want ErrTrailing", tt.name, err)
		}
	}
	// An ack op of the largest ack fits in an op.
	r := detRand(40)
	d := newDevice(t, r)
	op := newOp(d, TeamID{1}, hlcAt(0, 0), ackIDs(MaxParents), KindAck, Ack{Read: true, IDs: ackIDs(MaxAckIDs)}.Marshal())
	if err := op.Verify(); err != nil {
		t.Errorf("largest ack op: Verify: %v", err)
	}
}

func TestAckErrors(t *testing.T) {
	ids := ackIDs(3)
	unsorted := []OpID{ids[1], ids[0]}
	dup := []OpID{ids[0], ids[0]}
	enc := func(read byte, n uint64, ids ...OpID) []byte {
		b := []byte{1, read}
		b = binary.AppendUvarint(b, n)
		for _, id := range ids {
			b = append(b, id[:]...)
		}
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 2", append([]byte{2}, enc(0, 1, ids[0])[1:]...), ErrVersion},
		{"read byte 2", enc(2, 1, ids[0]), ErrMalformed},
		{"no ids", enc(0, 0), ErrInvalid},
		{"too many ids", enc(0, MaxAckIDs+1, ackIDs(MaxAckIDs+1)...), ErrTooLarge},
		{"count beyond input", enc(0, 3, ids[0]), ErrTruncated},
		{"huge count", enc(0, 1<<62), ErrTooLarge},
		{"unsorted", enc(1, 2, unsorted...), ErrMalformed},
		{"duplicate", enc(1, 2, dup...), ErrMalformed},
		{"non-minimal count", append([]byte{1, 0, 0x81, 0x00}, ids[0][:]...), ErrMalformed},
		{"oversize input", make([]byte, 1<<20), ErrTooLarge},
	}
	for _, tt := range tests {
		a, err := UnmarshalAck(tt.in)
		if !errors.Is(err, tt.want) || a.IDs != nil {
			t.Errorf("%s: got %+v, %v; want zero Ack, %v", tt.name, a, err, tt.want)
		}
	}
	for _, a := range []Ack{{}, {IDs: unsorted}, {IDs: dup}, {IDs: ackIDs(MaxAckIDs + 1)}} {
		if err := a.Validate(); err == nil {
			t.Errorf("Validate(%d ids): got nil; want error", len(a.IDs))
		}
	}
}

func TestSplitAcks(t *testing.T) {
	if got := SplitAcks(true, nil); got != nil {
		t.Errorf("SplitAcks(nil): got %v; want nil", got)
	}
	ids := ackIDs(2*MaxAckIDs + 7)
	in := slices.Clone(ids)
	in = append(in, ids[:20]...) // duplicates
	slices.Reverse(in)
	orig := slices.Clone(in)
	acks := SplitAcks(true, in)
	if !reflect.DeepEqual(in, orig) {
		t.Errorf("SplitAcks modified its argument")
	}
	if got, want := len(acks), 3; got != want {
		t.Fatalf("SplitAcks: got %d acks; want %d", got, want)
	}
	var all []OpID
	for i, a := range acks {
		if err := a.Validate(); err != nil {
			t.Errorf("ack %d: %v", i, err)
		}
		if !a.Read {
			t.Errorf("ack %d: Read false; want true", i)
		}
		all = append(all, a.IDs...)
	}
	if !reflect.DeepEqual(all, ids) {
		t.Errorf("SplitAcks: the acks do not cover the ids exactly once, in order")
	}
	if got := len(acks[2].IDs); got != 7 {
		t.Errorf("last ack: %d ids; want 7", got)
	}
}

// TestStateAcks checks who received and read what, in both orders.
func TestStateAcks(t *testing.T) {
	r := detRand(41)
	A, B, C, E := newDevice(t, r), newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := createOp(A, team, hlcAt(0, 0), "T")
	g := []OpID{gen.ID()}
	addB := memberOp(A, team, hlcAt(1, 0), g, info(B, "B", false))
	addC := memberOp(A, team, hlcAt(1, 1), g, info(C, "C", false))
	m1 := messageOp(A, team, hlcAt(2, 0), g, "one")
	m2 := messageOp(B, team, hlcAt(3, 0), g, "two")
	ack := func(d *identity.Device, sec int, read bool, ids ...OpID) *Op {
		return newOp(d, team, hlcAt(sec, 0), g, KindAck, SplitAcks(read, ids)[0].Marshal())
	}
	ops := []*Op{gen, addB, addC, m1, m2,
		ack(B, 4, false, m1.ID()),                // B received m1
		ack(C, 4, true, m1.ID(), m2.ID(), g[0]),  // C read both; the genesis id is ignored
		ack(C, 5, true, m2.ID()),                 // again: no change
		ack(E, 5, true, m1.ID(), m2.ID()),        // not a member: ignored
		ack(A, 6, true, m1.ID()),                 // the author of m1: ignored
		ack(A, 6, false, m2.ID(), OpID{1, 2, 3}), // A received m2; an unknown id is ignored
		newOp(B, team, hlcAt(0, 0), []OpID{m1.ID()}, KindAck, Ack{Read: true, IDs: []OpID{m2.ID()}}.Marshal()), // impossible parent
	}
	sortDevs := func(ds ...*identity.Device) []identity.DeviceID {
		var out []identity.DeviceID
		for _, d := range ds {
			out = append(out, d.ID())
		}
		slices.SortFunc(out, compareDevice)
		return out
	}
	want := map[string][2][]identity.DeviceID{
		"one": {sortDevs(B, C), sortDevs(C)},
		"two": {sortDevs(A, C), sortDevs(C)},
	}
	for _, reverse := range []bool{false, true} {
		in := slices.Clone(ops)
		if reverse {
			slices.Reverse(in)
		}
		l := NewLog(team)
		mustAdd(t, l, in...)
		s := l.State()
		if got := len(s.Messages); got != 2 {
			t.Fatalf("messages: got %d; want 2", got)
		}
		for _, m := range s.Messages {
			w := want[m.Text]
			if !reflect.DeepEqual(m.ReceivedBy, w[0]) || !reflect.DeepEqual(m.ReadBy, w[1]) {
				t.Errorf("reverse %v: %q: ReceivedBy %v, ReadBy %v; want %v, %v", reverse, m.Text, m.ReceivedBy, m.ReadBy, w[0], w[1])
			}
		}
		// Unacked: what each device still has to acknowledge.
		for _, tt := range []struct {
			d    *identity.Device
			read bool
			want []OpID
		}{
			{A, false, nil},
			{A, true, []OpID{m2.ID()}},
			{B, false, nil},
			{B, true, []OpID{m1.ID()}},
			{C, true, nil},
			{E, false, sorted(m1.ID(), m2.ID())},
		} {
			if got := s.Unacked(tt.d.ID(), tt.read); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Unacked(%s, read %v): got %v; want %v", tt.d.ID().Short(), tt.read, got, tt.want)
			}
		}
		// The state is a copy, acks included.
		s.Messages[0].ReceivedBy[0] = identity.DeviceID{}
		if again := l.State(); reflect.DeepEqual(again.Messages[0].ReceivedBy, s.Messages[0].ReceivedBy) {
			t.Errorf("State aliases ReceivedBy")
		}
	}
}

// ackGolden is the committed vector of the Ack encoding.
func ackGolden(t testing.TB) (*golden, *Op) {
	r := detRand(0xac4)
	d := newDevice(t, r)
	team, _ := NewTeamID(r)
	a := SplitAcks(true, []OpID{{0xff, 1}, {0x01, 2}, {0x80, 3}})[0]
	op := newOp(d, team, hlcAt(60, 2), []OpID{{0x42}}, KindAck, a.Marshal())
	id := op.ID()
	var g golden
	g.add("team", team[:])
	g.add("author", d.ID().PublicKey())
	g.add("ack.body", a.Marshal())
	g.add("ack.op", op.Marshal())
	g.add("ack.id", id[:])
	return &g, op
}

func TestGoldenAck(t *testing.T) {
	g, op := ackGolden(t)
	path := filepath.Join("testdata", "ack.golden")
	want := g.encode("crdt Ack body and ack op encodings (issue #4, version 1), from a fixed seed.")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the encodings made now (an encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
	vals := readGolden(t, path)
	a, err := UnmarshalAck(vals["ack.body"])
	if err != nil {
		t.Fatalf("ack.body: %v", err)
	}
	if !a.Read || len(a.IDs) != 3 || a.IDs[0] != (OpID{0x01, 2}) {
		t.Errorf("ack.body: got %+v; want a read ack of 3 ids, 01.. first", a)
	}
	back, err := UnmarshalOp(vals["ack.op"])
	if err != nil {
		t.Fatalf("ack.op: %v", err)
	}
	if !reflect.DeepEqual(back, op) || back.ID() != OpID(vals["ack.id"]) || back.Kind != KindAck {
		t.Errorf("ack.op: got %+v; want %+v", back, op)
	}
	if err := NewLog(TeamID(vals["team"])).Check(back); err != nil {
		t.Errorf("ack.op: Check: %v", err)
	}
}

func FuzzUnmarshalAck(f *testing.F) {
	g, _ := ackGolden(f)
	f.Add(g.vals["ack.body"])
	f.Add(Ack{IDs: ackIDs(1)}.Marshal())
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 1, 0x80, 0x04})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := UnmarshalAck(b)
		if err != nil {
			if a.IDs != nil {
				t.Fatalf("got ids and error %v", err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("decoded an invalid Ack: %v", err)
		}
		if got := a.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
		if got := SplitAcks(a.Read, a.IDs); len(got) != 1 || !reflect.DeepEqual(got[0], a) {
			t.Fatalf("SplitAcks of a valid Ack: got %+v; want it back", got)
		}
	})
}
