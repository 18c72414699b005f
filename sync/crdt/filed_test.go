package crdt

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// TestStateFiled: a filed op counts only from a current admin's device whose op counts by the rule
// of messages. A plain member filing anyone's message, an admin removed before the filing, and an
// outsider are ignored; of two filings of one message the first by (Time, ID) gives the reference.
func TestStateFiled(t *testing.T) {
	r := detRand(41)
	a, b, c, x := newDevice(t, r), newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := newOp(a, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(a, "Mia", true)}.Marshal())
	g := []OpID{gen.ID()}
	addB := memberOp(a, team, hlcAt(1, 0), g, info(b, "Zed", false))
	addC := commitOp(a, team, hlcAt(2, 0), []OpID{addB.ID()}, []Recipient{recipient(a), recipient(b), recipient(c)},
		Change{Action: ActAdd, Info: info(c, "Ola", true)})
	m1 := messageOp(b, team, hlcAt(3, 0), []OpID{addC.ID()}, "one")
	m2 := messageOp(b, team, hlcAt(3, 1), []OpID{addC.ID()}, "two")
	m3 := messageOp(a, team, hlcAt(3, 2), []OpID{addC.ID()}, "three")
	filed := func(dev *identity.Device, at HLC, parents []OpID, ref string, ids ...OpID) *Op {
		f := Filed{At: 1700000000000}
		for _, id := range ids {
			f.Entries = append(f.Entries, FiledEntry{Message: id, Ref: ref})
		}
		if err := f.Validate(); err != nil {
			t.Fatal(err)
		}
		return newOp(dev, team, at, parents, KindFiled, f.Marshal())
	}
	msgs := []OpID{m1.ID(), m2.ID(), m3.ID()}
	l := NewLog(team)
	mustAdd(t, l, gen, addB, addC, m1, m2, m3,
		filed(a, hlcAt(4, 0), msgs, "Communication/first", m1.ID()),
		filed(a, hlcAt(5, 0), msgs, "Communication/second", m1.ID()),
		filed(b, hlcAt(4, 1), msgs, "Communication/bymember", m2.ID()),
		filed(x, hlcAt(4, 2), msgs, "Communication/byoutsider", m3.ID()),
	)
	s := l.State()
	if f, ok := s.Filed[m1.ID()]; !ok || f.Ref != "Communication/first" || f.By != a.ID() || f.Time != hlcAt(4, 0) {
		t.Errorf("m1 filed %+v, %v; want the admin's first filing", f, ok)
	}
	if _, ok := s.Filed[m2.ID()]; ok {
		t.Errorf("a plain member's filing counts")
	}
	if _, ok := s.Filed[m3.ID()]; ok {
		t.Errorf("an outsider's filing counts")
	}
	for _, m := range s.Messages {
		if (m.ID == m1.ID()) != (m.Filed != nil) {
			t.Errorf("message %v: Filed %+v", m.Text, m.Filed)
		}
	}

	// An admin removed: its filings stop counting, as relay ops do (the gateway files again, and the
	// record's identifier makes that the same resource).
	rm := commitOp(a, team, hlcAt(6, 0), []OpID{addC.ID()}, []Recipient{recipient(a), recipient(b)},
		Change{Action: ActRemove, Target: c.ID()})
	byC := filed(c, hlcAt(7, 0), []OpID{rm.ID()}, "Communication/byleaver", m3.ID())
	mustAdd(t, l, rm, byC)
	if f, ok := l.State().Filed[m3.ID()]; ok {
		t.Errorf("a removed admin's filing after its removal counts: %+v", f)
	}
}

func TestFiledBody(t *testing.T) {
	id := func(b byte) OpID { var o OpID; o[0] = b; return o }
	good := Filed{At: 42, Entries: []FiledEntry{{Message: id(1), Ref: "Communication/abc-1.2"}, {Message: id(2), Ref: "DocumentReference/9"}}}
	got, err := UnmarshalFiled(good.Marshal())
	if err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if err := CheckBody(KindFiled, good.Marshal()); err != nil {
		t.Errorf("CheckBody: %v", err)
	}
	bad := map[string]Filed{
		"no entries":      {At: 1},
		"not ascending":   {Entries: []FiledEntry{{Message: id(2), Ref: "A/1"}, {Message: id(1), Ref: "A/1"}}},
		"duplicate":       {Entries: []FiledEntry{{Message: id(1), Ref: "A/1"}, {Message: id(1), Ref: "A/1"}}},
		"empty ref":       {Entries: []FiledEntry{{Message: id(1)}}},
		"absolute url":    {Entries: []FiledEntry{{Message: id(1), Ref: "https://evil.example/Communication/1"}}},
		"lower type":      {Entries: []FiledEntry{{Message: id(1), Ref: "communication/1"}}},
		"control char":    {Entries: []FiledEntry{{Message: id(1), Ref: "Communication/1\n"}}},
		"no id":           {Entries: []FiledEntry{{Message: id(1), Ref: "Communication/"}}},
		"no type":         {Entries: []FiledEntry{{Message: id(1), Ref: "/1"}}},
		"two slashes":     {Entries: []FiledEntry{{Message: id(1), Ref: "Communication/1/_history/2"}}},
		"id over 64":      {Entries: []FiledEntry{{Message: id(1), Ref: "C/" + strings.Repeat("a", 65)}}},
		"too many":        {Entries: make([]FiledEntry, MaxFiledEntries+1)},
		"patient in text": {Entries: []FiledEntry{{Message: id(1), Ref: "Communication/Jane Doe"}}},
	}
	for name, f := range bad {
		if err := f.Validate(); err == nil {
			t.Errorf("%s: Validate passes", name)
		}
		if _, err := UnmarshalFiled(f.Marshal()); err == nil {
			t.Errorf("%s: UnmarshalFiled passes", name)
		}
	}
	if _, err := UnmarshalFiled(make([]byte, maxFiledSize+1)); err == nil {
		t.Errorf("oversized body decodes")
	}
}

// TestMessageForRecord: the for-record flag is bit 3 of the message's head byte (bits 0-1 are the
// priority, bit 2 says a reply-to id follows), so it costs no byte and each message has one
// encoding; unknown head bits are refused. The text is the rest of the body: a trailing byte is
// text.
func TestMessageForRecord(t *testing.T) {
	plain := Message{Text: "x", Patient: "P-1"}
	flagged := plain
	flagged.ForRecord = true
	pb, fb := plain.Marshal(), flagged.Marshal()
	if len(fb) != len(pb) || !bytes.Equal(fb[1:], pb[1:]) || fb[0] != pb[0]|1<<3 {
		t.Fatalf("for-record encoding %x; want the plain one %x with head bit 3", fb, pb)
	}
	m, err := UnmarshalMessage(fb)
	if err != nil || !m.ForRecord || m.ReplyTo != nil {
		t.Fatalf("UnmarshalMessage: %+v, %v", m, err)
	}
	var id OpID
	id[0] = 7
	both := flagged
	both.ReplyTo = &id
	m, err = UnmarshalMessage(both.Marshal())
	if err != nil || !m.ForRecord || m.ReplyTo == nil || *m.ReplyTo != id {
		t.Fatalf("a reply for the record: %+v, %v", m, err)
	}
	if m, err := UnmarshalMessage(append(plain.Marshal(), 'y')); err != nil || m.Text != "xy" {
		t.Errorf("a trailing byte: %+v, %v; want the text \"xy\"", m, err)
	}
	for _, head := range []byte{0x40, 0x80} {
		b := slices.Clone(pb)
		b[0] |= head
		if _, err := UnmarshalMessage(b); err == nil {
			t.Errorf("head bit %#x decodes", head)
		}
	}
}

func FuzzUnmarshalFiled(f *testing.F) {
	var id OpID
	f.Add(Filed{At: 1, Entries: []FiledEntry{{Message: id, Ref: "Communication/1"}}}.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := UnmarshalFiled(b)
		if err != nil {
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("decoded an invalid Filed: %v", err)
		}
		if got := v.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}
