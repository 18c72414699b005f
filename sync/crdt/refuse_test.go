package crdt

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// TestLogRefuses checks that Add and Check refuse bad ops, which are then
// not in the log, and accept everything else.
func TestLogRefuses(t *testing.T) {
	r := detRand(50)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	other, _ := NewTeamID(r)
	g := createOp(a, team, hlcAt(0, 0), "T")
	gp := []OpID{g.ID()}
	at := func(s int) HLC { return hlcAt(s, 0) }

	badSig := messageOp(a, team, at(1), gp, "x")
	badSig.Seal.Sig[3] ^= 0x10
	tampered := messageOp(a, team, at(1), gp, "x")
	tampered.Body[1] ^= 1
	oversize := newOp(a, team, at(1), gp, Kind(77), make([]byte, MaxOpSize))
	tooManyParents := messageOp(a, team, at(1), gp, "x")
	tooManyParents.Parents = ackIDs(MaxParents + 1)
	longText := Message{Text: string(make([]byte, MaxTextLen+1))}

	tests := []struct {
		name string
		op   *Op
		want error // nil: accepted
	}{
		{"good message", messageOp(a, team, at(1), gp, "x"), nil},
		{"good ack", newOp(a, team, at(1), gp, KindAck, Ack{IDs: gp}.Marshal()), nil},
		{"unknown kind, any body", newOp(a, team, at(1), gp, Kind(200), []byte("future")), nil},
		{"create with parents (kept, not a genesis)", newOp(a, team, at(1), gp, KindCreate, Create{Name: "X", Kind: Social, Creator: info(a, "A", true)}.Marshal()), nil},
		{"wrong team", messageOp(a, other, at(1), gp, "x"), ErrWrongTeam},
		{"bad signature", badSig, ErrBadSignature},
		{"tampered body", tampered, ErrBadSignature},
		{"oversize", oversize, ErrTooLarge},
		{"too many parents", tooManyParents, ErrTooLarge},
		{"kind 0", newOp(a, team, at(1), gp, 0, nil), ErrMalformed},
		{"create body undecodable", newOp(a, team, at(1), nil, KindCreate, []byte{1, 0}), ErrBadBody},
		{"member body undecodable", newOp(a, team, at(1), gp, KindMember, []byte{1, 1, 2}), ErrBadBody},
		{"member body empty", newOp(a, team, at(1), gp, KindMember, nil), ErrBadBody},
		{"message body undecodable", newOp(a, team, at(1), gp, KindMessage, []byte{7}), ErrBadBody},
		{"message text over the limit", newOp(a, team, at(1), gp, KindMessage, longText.Marshal()), ErrBadBody},
		{"message priority out of range", newOp(a, team, at(1), gp, KindMessage, []byte{3}), ErrBadBody}, // head byte: priority 3,
		{"ack of nothing", newOp(a, team, at(1), gp, KindAck, Ack{}.Marshal()), ErrBadBody},
		{"ack unsorted", newOp(a, team, at(1), gp, KindAck, Ack{IDs: []OpID{{2}, {1}}}.Marshal()), ErrBadBody},
	}
	for _, tt := range tests {
		l := NewLog(team)
		mustAdd(t, l, g)
		if err := l.Check(tt.op); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: Check got %v; want %v", tt.name, err, tt.want)
		}
		added, err := l.Add(tt.op)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) || added != (tt.want == nil) {
			t.Errorf("%s: Add got %v, %v; want %v, %v", tt.name, added, err, tt.want == nil, tt.want)
		}
		if got, want := l.Has(tt.op.ID()), tt.want == nil; got != want {
			t.Errorf("%s: Has got %v; want %v", tt.name, got, want)
		}
		if got, want := l.Len(), 1+btoi(tt.want == nil); got != want {
			t.Errorf("%s: Len got %d; want %d", tt.name, got, want)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestImpossibleParents checks that ops with impossible parents change
// nothing in State, whatever order the ops arrive in, and that an honest
// op that names one as a parent still counts.
func TestImpossibleParents(t *testing.T) {
	r := detRand(51)
	A, B, C := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := createOp(A, team, hlcAt(0, 0), "T")
	g := []OpID{gen.ID()}
	addB := memberOp(A, team, hlcAt(1, 0), g, info(B, "B", true))
	m1 := messageOp(B, team, hlcAt(2, 0), []OpID{addB.ID()}, "one")
	honest := []*Op{gen, addB, m1}

	same := messageOp(B, team, m1.Time, []OpID{m1.ID()}, "same time as its parent")
	earlier := messageOp(B, team, m1.Time-1, []OpID{m1.ID()}, "a tick before its parent")
	early1970 := messageOp(A, team, MakeHLC(t0.AddDate(-55, 0, 0), 0), []OpID{m1.ID(), gen.ID()}, "1970, after a reply")
	reply := m1.ID()
	replyBefore := newOp(B, team, m1.Time-5, []OpID{m1.ID()}, KindMessage, Message{Text: "reply before", ReplyTo: &reply}.Marshal())
	addC := memberOp(A, team, addB.Time, []OpID{addB.ID()}, info(C, "C", true)) // would make C a member
	fromC := messageOp(C, team, hlcAt(9, 0), g, "from C")                       // shown only if C were a member
	ackImp := newOp(B, team, hlcAt(0, 0), []OpID{m1.ID()}, KindAck, Ack{Read: true, IDs: []OpID{m1.ID()}}.Marshal())
	impossible := []*Op{same, earlier, early1970, replyBefore, addC, ackImp}
	// An honest child of an impossible op (its time is after both parents)
	// counts: an op is judged by its own parents' times only.
	child := messageOp(A, team, hlcAt(10, 0), []OpID{earlier.ID(), m1.ID()}, "honest child")

	ref := NewLog(team)
	mustAdd(t, ref, append(slices.Clone(honest), child, fromC)...)
	want := ref.State()
	if got := len(want.Messages); got != 2 {
		t.Fatalf("reference: %d messages; want 2 (one, honest child)", got)
	}

	all := append(append(slices.Clone(honest), child, fromC), impossible...)
	rng := rand.New(rand.NewPCG(51, 52))
	for i := range 300 {
		order := rng.Perm(len(all))
		if i == 0 {
			slices.Reverse(order)
		}
		l := NewLog(team)
		for j, k := range order {
			mustAdd(t, l, all[k])
			if j%3 == 0 {
				_ = l.State()
			}
		}
		if got := l.State(); !reflect.DeepEqual(got, want) {
			t.Fatalf("order %v: State with impossible ops differs from the State without them:\ngot  %+v\nwant %+v", order, got, want)
		}
		if got, want := len(l.impossible()), len(impossible); got != want {
			t.Fatalf("order %v: %d impossible ops; want %d", order, got, want)
		}
	}
}

// TestSelfParent checks the self-parent rule on a log built by hand (no op
// can name its own id short of a SHA-256 collision).
func TestSelfParent(t *testing.T) {
	r := detRand(53)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := createOp(a, team, hlcAt(0, 0), "T")
	m := messageOp(a, team, hlcAt(5, 0), []OpID{gen.ID()}, "m")
	l := NewLog(team)
	mustAdd(t, l, gen, m)
	if got := len(l.State().Messages); got != 1 {
		t.Fatalf("messages: got %d; want 1", got)
	}
	// Pretend m's id were its own parent.
	self := m.Clone()
	self.Parents = []OpID{gen.ID(), {0xee}}
	l.ops[OpID{0xee}] = self
	l.state, l.memo = nil, nil // a log built by hand: nothing cached holds
	if !l.impossible()[OpID{0xee}] {
		t.Errorf("an op naming itself as a parent is not impossible")
	}
	if got := len(l.State().Messages); got != 1 {
		t.Errorf("messages with a self-parented op: got %d; want 1", got)
	}
}

// TestVerifyMemo checks that remembering verified ids never lets a bad
// signature through, and that the memo stays bounded.
func TestVerifyMemo(t *testing.T) {
	r := detRand(54)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	op := messageOp(a, team, hlcAt(1, 0), nil, "x")
	if !verified.has(sealKey(op.Team, op.Author, op.ID(), op.Seal)) {
		t.Errorf("Sign did not remember its seal as verified")
	}
	if err := op.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// A decoded copy verifies (it has the same id); one bit off does not.
	back, err := UnmarshalOp(op.Marshal())
	if err != nil || back.Verify() != nil {
		t.Fatalf("decoded copy: %v, %v", err, back.Verify())
	}
	for i := range op.Seal.Sig {
		bad := op.Clone()
		bad.Seal.Sig[i] ^= 0x40
		if err := bad.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("signature byte %d flipped: got %v; want ErrBadSignature", i, err)
		}
	}
	// Forget everything: a real check, which passes, and is remembered.
	cur, old := verified.snapshot()
	defer verified.restore(cur, old)
	verified.restore(nil, nil)
	if err := back.Verify(); err != nil || !verified.has(sealKey(back.Team, back.Author, back.ID(), back.Seal)) {
		t.Errorf("Verify with an empty memo: %v, remembered %v", err, verified.has(sealKey(back.Team, back.Author, back.ID(), back.Seal)))
	}
	// Bounded: two generations of verifiedGen ids at most.
	for i := range 2*verifiedGen + 10 {
		var id [32]byte
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		verified.add(id)
	}
	if n := len(verified.cur) + len(verified.old); n > 2*verifiedGen {
		t.Errorf("memo holds %d ids; want at most %d", n, 2*verifiedGen)
	}
	if verified.has(sealKey(back.Team, back.Author, back.ID(), back.Seal)) {
		t.Errorf("the oldest id survived two generations")
	}
}

func (v *verifiedSeals) snapshot() (cur, old map[[32]byte]struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cur, v.old
}

func (v *verifiedSeals) restore(cur, old map[[32]byte]struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cur, v.old = cur, old
}
