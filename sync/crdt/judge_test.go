package crdt

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// sealedMsg is a message op by author sealed at (epoch, index).
func (s *scene) sealedMsg(author string, sec int, parents []*Op, text string, epoch, index uint32) *Op {
	op := NewOp(s.d(author), s.team, hlcAt(sec, 0), ids(parents), KindMessage, Message{Text: text}.Marshal())
	op.Sign(s.d(author), epoch, index, InnerHash{})
	s.ops = append(s.ops, op)
	return op
}

// evidence is an evidence op by author about two seals of the same (epoch, index).
func (s *scene) evidence(author string, sec int, parents []*Op, a, b *Op) *Op {
	e := NewEvidence(a.Author, a.Seal.Epoch, a.Seal.Index, SealedOf(a.ID(), a.Seal), SealedOf(b.ID(), b.Seal))
	op := newOp(s.d(author), s.team, hlcAt(sec, 0), ids(parents), KindEvidence, e.Marshal())
	s.ops = append(s.ops, op)
	return op
}

func TestEquivocation(t *testing.T) {
	s := newScene(t, 40)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	c := s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
	x := s.sealedMsg("B", 3, []*Op{c}, "to Ann", 7, 0)
	y := s.sealedMsg("B", 4, []*Op{c}, "to Cat", 7, 0) // the same (epoch, index): equivocation
	z := s.sealedMsg("B", 5, []*Op{c}, "fine", 7, 1)
	s.msg("A", 6, []*Op{x}, "reply")
	st := s.check("before the evidence both show", "Ann*:A Ben:B Cat:C | removed | msgs to Ann/Ben to Cat/Ben fine/Ben reply/Ann | epochs 1 2 3!<")
	if len(st.Equivocations) != 0 {
		t.Fatalf("equivocations without evidence: %v", st.Equivocations)
	}
	s.evidence("C", 7, []*Op{y, z}, y, x)
	st = s.check("evidence hides both, whoever holds which", "Ann*:A Ben:B Cat:C | removed | msgs fine/Ben reply/Ann | epochs 1 2 3!<")
	if len(st.Equivocations) != 1 {
		t.Fatalf("Equivocations: %+v; want one", st.Equivocations)
	}
	q := st.Equivocations[0]
	if q.Device != s.id("B") || q.Epoch != 7 || q.Index != 0 || !slices.Contains(q.IDs[:], x.ID()) || !slices.Contains(q.IDs[:], y.ID()) {
		t.Errorf("Equivocation: %+v", q)
	}
	if st.Counts(x.ID()) || st.Counts(y.ID()) || !st.Counts(z.ID()) {
		t.Errorf("Counts: x %v, y %v, z %v; want false, false, true", st.Counts(x.ID()), st.Counts(y.ID()), st.Counts(z.ID()))
	}
}

func TestEvidenceMustProve(t *testing.T) {
	s := newScene(t, 41)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	c := s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
	x := s.sealedMsg("B", 3, []*Op{c}, "one", 7, 0)
	y := s.sealedMsg("B", 4, []*Op{c}, "two", 7, 1) // another index: no equivocation
	s.evidence("C", 5, []*Op{x, y}, x, y)
	// Forged: Cat signs a second op "by Ben" itself.
	forged := NewOp(s.d("B"), s.team, hlcAt(6, 0), ids([]*Op{c}), KindMessage, Message{Text: "forged"}.Marshal())
	forged.Seal = Seal{Epoch: 7, Index: 0, Sig: s.d("C").Sign(SignedBytes(s.team, 7, s.id("B"), 0, forged.ID(), InnerHash{}))}
	s.evidence("C", 7, []*Op{x}, x, forged)
	// Genuine, but published by a device that was never a member.
	w := s.sealedMsg("B", 8, []*Op{c}, "twin", 7, 0)
	s.ops = s.ops[:len(s.ops)-1]
	s.evidence("Q", 9, []*Op{x}, x, w)
	st := s.check("evidence that proves nothing, or from an outsider, hides nothing",
		"Ann*:A Ben:B Cat:C | removed | msgs one/Ben two/Ben | epochs 1 2 3!<")
	if len(st.Equivocations) != 0 {
		t.Errorf("Equivocations: %+v; want none", st.Equivocations)
	}
}

func TestEvidenceEncoding(t *testing.T) {
	r := detRand(42)
	d := newDevice(t, r)
	a := SealedID{ID: OpID{2}, Sig: bytes.Repeat([]byte{1}, SigSize)}
	b := SealedID{ID: OpID{1}, Sig: bytes.Repeat([]byte{2}, SigSize)}
	e := NewEvidence(d.ID(), 9, 4, a, b)
	if e.A.ID != b.ID || e.B.ID != a.ID {
		t.Fatalf("NewEvidence did not order the ids: %+v", e)
	}
	raw := e.Marshal()
	back, err := UnmarshalEvidence(raw)
	if err != nil || !bytes.Equal(back.Marshal(), raw) || back.Device != e.Device || back.Epoch != 9 || back.Index != 4 {
		t.Fatalf("roundtrip: %+v, %v", back, err)
	}
	same := e
	same.B = same.A
	for name, in := range map[string][]byte{
		"empty":     nil,
		"short":     raw[:len(raw)-1],
		"long":      append(bytes.Clone(raw), 0),
		"version 2": append([]byte{2}, raw[1:]...),
		"same ids":  same.Marshal(),
	} {
		if _, err := UnmarshalEvidence(in); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestWeakNoiseKeyRefused(t *testing.T) {
	s := newScene(t, 43)
	weak := info(s.d("B"), "Ben", false)
	weak.Noise = identity.NoisePublic{} // all zeros: small order
	bad := s.raw("A", 1, []*Op{s.gen}, 2, "A B", Change{Action: ActAdd, Info: weak})
	st := s.check("adding a device with a small-order Noise key is not permitted", "Ann*:A | removed | msgs | epochs 1!<")
	if st.Permitted(bad.ID()) || st.Counts(bad.ID()) {
		t.Errorf("the weak add is permitted or counts")
	}
	if _, err := st.NextCommit(s.id("A"), Change{Action: ActAdd, Info: weak}); !errors.Is(err, ErrInvalid) {
		t.Errorf("NextCommit with a weak key: %v; want ErrInvalid", err)
	}
	// A genesis whose creator has a weak key is no genesis.
	l := NewLog(s.team)
	g := NewOp(s.d("A"), s.team, hlcAt(0, 0), nil, KindCreate, Create{Name: "W", Kind: Clinical, Creator: MemberInfo{Device: s.id("A"), Name: "Ann"}}.Marshal())
	mustAdd(t, l, g)
	if st := l.State(); st.Name != "" || st.Current != -1 {
		t.Errorf("a weak genesis makes a team: %+v", st)
	}
}

func TestPermittedAndCounts(t *testing.T) {
	s := newScene(t, 44)
	c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
	r := s.next("A", 2, []*Op{c}, s.remove("C"))
	cut := s.next("C", 3, []*Op{c}) // a re-key by Cat, concurrent with her removal: cut
	outsider := s.raw("Q", 4, []*Op{c}, 9, "A C Q")
	m := s.msg("A", 5, []*Op{r}, "hello")
	st := s.check("permitted commits", "Ann*:A | removed C | msgs hello/Ann | epochs 1! 2 3!<")
	for _, tt := range []struct {
		name              string
		op                *Op
		counts, permitted bool
	}{
		{"genesis", s.gen, true, true},
		{"valid add", c, true, true},
		{"valid removal", r, true, true},
		{"cut re-key", cut, false, true},
		{"commit by a non-member", outsider, false, false},
		{"message", m, true, false},
	} {
		if st.Counts(tt.op.ID()) != tt.counts || st.Permitted(tt.op.ID()) != tt.permitted {
			t.Errorf("%s: Counts %v, Permitted %v; want %v, %v", tt.name, st.Counts(tt.op.ID()), st.Permitted(tt.op.ID()), tt.counts, tt.permitted)
		}
	}
}

// TestWitnessMustCount: a removed member cannot witness another's concurrent message unless its own
// op counts, so two removed members cannot vouch for each other.
func TestWitnessMustCount(t *testing.T) {
	s := newScene(t, 45)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	c := s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
	d := s.next("A", 3, []*Op{c}, s.add("D", "Dan", false))
	r1 := s.next("A", 4, []*Op{d}, s.remove("B"))
	r2 := s.next("A", 5, []*Op{r1}, s.remove("C"))
	mb := s.msg("B", 6, []*Op{d}, "by Ben")
	mc := s.msg("C", 7, []*Op{mb}, "Cat vouches")
	s.msg("B", 8, []*Op{mc}, "Ben vouches back")
	s.check("two removed members do not witness each other", "Ann*:A Dan:D | removed B C | msgs | epochs 1 2 3 4 5 6!<")
	s.msg("D", 9, []*Op{mc}, "Dan read it") // Dan had received neither removal
	s.check("a member that had not received either removal witnesses both",
		"Ann*:A Dan:D | removed B C | msgs by Ben/Ben Cat vouches/Cat Dan read it/Dan | epochs 1 2 3 4 5 6!<")
	s.msg("D", 10, []*Op{mc, r2}, "too late")
	s.check("after the removals nothing new is witnessed",
		"Ann*:A Dan:D | removed B C | msgs by Ben/Ben Cat vouches/Cat Dan read it/Dan too late/Dan | epochs 1 2 3 4 5 6!<")
}

// TestRekeyDetached: a current epoch started without knowledge of a concurrent one that lists
// fewer devices needs a re-key (the devices added with it may not hold the other's outer key).
func TestRekeyDetached(t *testing.T) {
	s := newScene(t, 46)
	c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
	ra := s.next("A", 2, []*Op{c})                           // Ann re-keys: recipients A C
	rc := s.next("C", 3, []*Op{c}, s.add("D", "Dan", false)) // Cat adds Dan concurrently
	st := s.check("a current epoch beside a concurrent one", "Ann*:A Cat*:C Dan:D | removed | msgs | epochs 1 2 3 3!< rekey")
	if !st.NeedsRekey {
		t.Errorf("NeedsRekey false; want true: Dan may not hold the outer key of Ann's re-key")
	}
	s.next("D", 4, []*Op{ra, rc})
	if st := s.check("after a re-key that knows both", "Ann*:A Cat*:C Dan:D | removed | msgs | epochs 1 2 3 3! 4!<"); st.NeedsRekey {
		t.Errorf("NeedsRekey after the merge re-key")
	}
}

func TestLogRemoveAndMissing(t *testing.T) {
	s := newScene(t, 47)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	m1 := s.msg("A", 2, []*Op{b}, "one")
	m2 := s.msg("B", 3, []*Op{m1}, "two")
	l := NewLog(s.team)
	mustAdd(t, l, s.gen, b, m2)
	if got := l.Missing(); !slices.Equal(got, []OpID{m1.ID()}) || !l.Parented(m1.ID()) {
		t.Errorf("Missing: %v; want m1", got)
	}
	mustAdd(t, l, m1)
	if len(l.Missing()) != 0 || !slices.Equal(l.Heads(), []OpID{m2.ID()}) {
		t.Errorf("after adding m1: missing %v, heads %v", l.Missing(), l.Heads())
	}
	if !l.Remove(m2.ID()) || l.Remove(m2.ID()) || l.Has(m2.ID()) || l.Parented(m1.ID()) {
		t.Errorf("Remove: the op or its parent links stayed")
	}
	if !slices.Equal(l.Heads(), []OpID{m1.ID()}) || len(l.State().Messages) != 1 {
		t.Errorf("after Remove: heads %v, %d messages", l.Heads(), len(l.State().Messages))
	}
}

func FuzzUnmarshalEvidence(f *testing.F) {
	e := NewEvidence(identity.DeviceID{3}, 9, 4, SealedID{ID: OpID{1}, Sig: make([]byte, SigSize)}, SealedID{ID: OpID{2}, Sig: make([]byte, SigSize)})
	f.Add(e.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEvidence(b)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded an invalid Evidence: %v", err)
		}
		if got := e.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}

func FuzzUnmarshalContent(f *testing.F) {
	r := detRand(48)
	d := newDevice(f, r)
	team, _ := NewTeamID(r)
	f.Add(NewOp(d, team, 5, []OpID{{1}}, KindMessage, Message{Text: "x"}.Marshal()).MarshalContent())
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := UnmarshalContent(b)
		if err != nil {
			return
		}
		if got := o.MarshalContent(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}

// without returns ops less op: the log of a device that cannot read op (sealed in an epoch it is
// not a recipient of), whose children name it all the same.
func without(ops []*Op, op *Op) []*Op {
	return slices.DeleteFunc(slices.Clone(ops), func(o *Op) bool { return o.ID() == op.ID() })
}

// TestWitnessWithGap: rule 6a with a gap in the log. Dan builds on Ben's message, concurrent with
// Ben's removal, and on Cat's message written after the removal, so Dan is no witness. A device that
// cannot read Cat's message must not take Dan's op for a witness: the gap may hide the removal, and
// the device would show what counts nowhere the gap is filled. A gap in the removal's own causal past
// hides nothing, and neither does one older than the removal (a descendant of the removal is
// later than it).
func TestWitnessWithGap(t *testing.T) {
	s := newScene(t, 49)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	c := s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
	d := s.next("A", 3, []*Op{c}, s.add("D", "Dan", false))
	r := s.next("A", 4, []*Op{d}, s.remove("B"))
	mb := s.msg("B", 5, []*Op{d}, "by Ben")
	seen := s.msg("C", 6, []*Op{r}, "seen")
	s.msg("D", 7, []*Op{mb, seen}, "after")
	full := s.ops
	s.check("Dan knew of the removal: no witness", "Ann*:A Cat:C Dan:D | removed B | msgs seen/Cat after/Dan | epochs 1 2 3 4 5!<")
	s.ops = without(full, seen)
	s.check("a gap after the removal: no witness either", "Ann*:A Cat:C Dan:D | removed B | msgs after/Dan | epochs 1 2 3 4 5!<")
	s.ops = full
	s.msg("D", 8, []*Op{mb}, "reply")
	s.check("a witness", "Ann*:A Cat:C Dan:D | removed B | msgs by Ben/Ben seen/Cat after/Dan reply/Dan | epochs 1 2 3 4 5!<")

	s = newScene(t, 50)
	b = s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	c = s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
	d = s.next("A", 3, []*Op{c}, s.add("D", "Dan", false))
	pre := s.msg("C", 4, []*Op{d}, "pre")
	old := s.msg("C", 5, []*Op{pre}, "old")
	s.next("A", 6, []*Op{d, old}, s.remove("B"))
	mb = s.msg("B", 7, []*Op{d}, "by Ben")
	s.msg("D", 8, []*Op{mb, old}, "reply")
	s.ops = without(s.ops, pre)
	s.check("a gap in the removal's causal past hides nothing", "Ann*:A Cat:C Dan:D | removed B | msgs old/Cat by Ben/Ben reply/Dan | epochs 1 2 3 4 5!<")

	s = newScene(t, 51)
	b = s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	c = s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
	d = s.next("A", 3, []*Op{c}, s.add("D", "Dan", false))
	gap := s.msg("C", 4, []*Op{d}, "unread")
	before := s.msg("D", 5, []*Op{gap}, "before")
	s.next("A", 6, []*Op{d}, s.remove("B"))
	mb = s.msg("B", 7, []*Op{d}, "by Ben")
	s.msg("D", 8, []*Op{mb, before}, "reply")
	s.ops = without(s.ops, gap)
	s.check("a gap older than the removal hides nothing", "Ann*:A Cat:C Dan:D | removed B | msgs before/Dan by Ben/Ben reply/Dan | epochs 1 2 3 4 5!<")
}
