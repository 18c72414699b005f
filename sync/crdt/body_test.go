package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestBodyRoundtrip(t *testing.T) {
	r := detRand(4)
	a, b := newDevice(t, r), newDevice(t, r)
	id := OpID{9, 9, 9}
	bodies := []struct {
		name      string
		v         interface{ Marshal() []byte }
		unmarshal func([]byte) (any, error)
	}{
		{"create", Create{Name: "Ward 7", Kind: Social, Creator: info(a, "Amara", true)}, func(b []byte) (any, error) { return UnmarshalCreate(b) }},
		{"create max name", Create{Name: strings.Repeat("é", 32), Kind: Clinical, Creator: info(a, strings.Repeat("x", 64), false)}, func(b []byte) (any, error) { return UnmarshalCreate(b) }},
		{"commit add", addCommit(info(b, "Bongani", false)), func(b []byte) (any, error) { return UnmarshalCommit(b) }},
		{"commit add admin", addCommit(info(b, "B", true)), func(b []byte) (any, error) { return UnmarshalCommit(b) }},
		{"message empty", Message{}, func(b []byte) (any, error) { return UnmarshalMessage(b) }},
		{"message full", Message{Text: "BP 180/110, repeat in 15 min", Priority: Emergency, Patient: "NHS 943 476 5919", ReplyTo: &id}, func(b []byte) (any, error) { return UnmarshalMessage(b) }},
		{"message max", Message{Text: strings.Repeat("a", MaxTextLen), Priority: Urgent, Patient: strings.Repeat("p", MaxPatientLen)}, func(b []byte) (any, error) { return UnmarshalMessage(b) }},
	}
	for _, tt := range bodies {
		enc := tt.v.Marshal()
		got, err := tt.unmarshal(enc)
		if err != nil {
			t.Errorf("%s: unmarshal: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.v) {
			t.Errorf("%s: got %+v; want %+v", tt.name, got, tt.v)
		}
		m, isMessage := tt.v.(Message)
		if !isMessage {
			if enc[0] != 1 {
				t.Errorf("%s: version byte got %d; want 1", tt.name, enc[0])
			}
			if _, err := tt.unmarshal(append(bytes.Clone(enc), 0)); !errors.Is(err, ErrTrailing) {
				t.Errorf("%s: trailing byte: got %v; want ErrTrailing", tt.name, err)
			}
		}
		// A message's text is the rest of its body (the op frames the body): only prefixes that cut
		// what comes before the text are incomplete.
		cut := len(enc)
		if isMessage {
			cut = len(enc) - len(m.Text)
		}
		for i := range cut {
			if _, err := tt.unmarshal(enc[:i]); err == nil {
				t.Errorf("%s: unmarshal of %d-byte prefix: got nil error; want error", tt.name, i)
			}
		}
	}
}

func TestBodyErrors(t *testing.T) {
	r := detRand(5)
	a := newDevice(t, r)
	good := Create{Name: "T", Kind: Clinical, Creator: info(a, "A", true)}
	msg := Message{Text: "x"}
	tests := []struct {
		name string
		v    interface {
			Marshal() []byte
			Validate() error
		}
		unmarshal func([]byte) error
		want      error
	}{
		{"empty team name", Create{Kind: Clinical, Creator: good.Creator}, unCreate, ErrInvalid},
		{"long team name", Create{Name: strings.Repeat("n", 65), Kind: Clinical, Creator: good.Creator}, unCreate, ErrInvalid},
		{"bad utf-8 team name", Create{Name: "\xff", Kind: Clinical, Creator: good.Creator}, unCreate, ErrInvalid},
		{"team kind 0", Create{Name: "T", Creator: good.Creator}, unCreate, ErrInvalid},
		{"team kind 3", Create{Name: "T", Kind: 3, Creator: good.Creator}, unCreate, ErrInvalid},
		{"empty creator name", Create{Name: "T", Kind: Social, Creator: info(a, "", true)}, unCreate, ErrInvalid},
		{"empty member name", addCommit(info(a, "", false)), unCommit, ErrInvalid},
		{"bad utf-8 member name", addCommit(info(a, "a\xc3", false)), unCommit, ErrInvalid},
		{"long member name", addCommit(info(a, strings.Repeat("m", 65), false)), unCommit, ErrInvalid},
		{"long text", Message{Text: strings.Repeat("t", MaxTextLen+1)}, unMessage, ErrInvalid},
		{"bad utf-8 text", Message{Text: "ok\xff"}, unMessage, ErrInvalid},
		{"priority 3", Message{Text: "x", Priority: 3}, unMessage, ErrInvalid},
		{"long patient", Message{Text: "x", Patient: strings.Repeat("p", MaxPatientLen+1)}, unMessage, ErrInvalid},
		{"bad utf-8 patient", Message{Text: "x", Patient: "\xfe"}, unMessage, ErrInvalid},
	}
	for _, tt := range tests {
		if err := tt.v.Validate(); err == nil {
			t.Errorf("%s: Validate got nil; want error", tt.name)
		}
		// Long strings are refused by the length check (ErrTooLarge), the
		// rest by validation (ErrInvalid).
		err := tt.unmarshal(tt.v.Marshal())
		if err == nil || !(errors.Is(err, tt.want) || errors.Is(err, ErrTooLarge)) {
			t.Errorf("%s: unmarshal got %v; want %v", tt.name, err, tt.want)
		}
	}
	if err := good.Validate(); err != nil {
		t.Errorf("good create: Validate got %v; want nil", err)
	}
	if err := msg.Validate(); err != nil {
		t.Errorf("good message: Validate got %v; want nil", err)
	}

	// Encoding-level errors.
	mb := addCommit(info(a, "A", true)).Marshal()
	m := msg.Marshal()
	raw := []struct {
		name      string
		in        []byte
		unmarshal func([]byte) error
		want      error
	}{
		{"commit version 2", append([]byte{2}, mb[1:]...), unCommit, ErrVersion},
		{"commit action 0", slices.Concat(mb[:6], []byte{0}, mb[7:]), unCommit, ErrMalformed},
		{"commit admin byte 2", slices.Concat(mb[:6+1+64+2], []byte{2}, mb[6+1+64+2+1:]), unCommit, ErrMalformed},
		{"message head bit 6", append([]byte{m[0] | 0x40}, m[1:]...), unMessage, ErrMalformed},
		{"message head bit 7", append([]byte{m[0] | 0x80}, m[1:]...), unMessage, ErrMalformed},
		{"message priority 3", append([]byte{m[0] | 3}, m[1:]...), unMessage, ErrInvalid},
		{"message reply id short", []byte{msgReply, 1, 2, 3}, unMessage, ErrTruncated},
		{"message patient empty", []byte{msgPatient, 0, 'x'}, unMessage, ErrMalformed},
		{"message patient cut", []byte{msgPatient, 5, 'x'}, unMessage, ErrTruncated},
		{"message text not UTF-8", []byte{0, 0xff}, unMessage, ErrInvalid},
		{"message empty", nil, unMessage, ErrTruncated},
		{"create empty", nil, unCreate, ErrTruncated},
		{"too large", make([]byte, MaxOpSize+1), unMessage, ErrTooLarge},
	}
	for _, tt := range raw {
		if err := tt.unmarshal(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
		}
	}
}

func unCreate(b []byte) error  { _, err := UnmarshalCreate(b); return err }
func unCommit(b []byte) error  { _, err := UnmarshalCommit(b); return err }
func unMessage(b []byte) error { _, err := UnmarshalMessage(b); return err }

func TestEnums(t *testing.T) {
	kinds := []struct {
		k TeamKind
		s string
	}{{Clinical, "clinical"}, {Social, "social"}}
	for _, tt := range kinds {
		if got := tt.k.String(); got != tt.s {
			t.Errorf("String: got %q; want %q", got, tt.s)
		}
		if got, err := ParseTeamKind(tt.s); err != nil || got != tt.k {
			t.Errorf("ParseTeamKind(%q): got %v, %v; want %v, nil", tt.s, got, err, tt.k)
		}
	}
	prios := []struct {
		p Priority
		s string
	}{{Routine, "routine"}, {Urgent, "urgent"}, {Emergency, "emergency"}}
	for _, tt := range prios {
		if got := tt.p.String(); got != tt.s {
			t.Errorf("String: got %q; want %q", got, tt.s)
		}
		if got, err := ParsePriority(tt.s); err != nil || got != tt.p {
			t.Errorf("ParsePriority(%q): got %v, %v; want %v, nil", tt.s, got, err, tt.p)
		}
	}
	for _, s := range []string{"", "Clinical", "other"} {
		if _, err := ParseTeamKind(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTeamKind(%q): got %v; want ErrInvalid", s, err)
		}
		if _, err := ParsePriority(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePriority(%q): got %v; want ErrInvalid", s, err)
		}
	}
	if got, want := TeamKind(9).String(), "TeamKind(9)"; got != want {
		t.Errorf("String: got %q; want %q", got, want)
	}
	if got, want := Priority(9).String(), "Priority(9)"; got != want {
		t.Errorf("String: got %q; want %q", got, want)
	}
	if got, want := KindMessage.String(), "message"; got != want {
		t.Errorf("Kind String: got %q; want %q", got, want)
	}
	// JSON uses the names.
	j, err := json.Marshal(struct {
		K TeamKind
		P Priority
	}{Social, Emergency})
	if got, want := string(j), `{"K":"social","P":"emergency"}`; err != nil || got != want {
		t.Errorf("json: got %s, %v; want %s", got, err, want)
	}
	var back struct {
		K TeamKind
		P Priority
	}
	if err := json.Unmarshal(j, &back); err != nil || back.K != Social || back.P != Emergency {
		t.Errorf("json back: got %+v, %v", back, err)
	}
	// Invalid values still marshal (so a zero State encodes), but do not parse back.
	j, err = json.Marshal(struct{ K TeamKind }{})
	if got, want := string(j), `{"K":"TeamKind(0)"}`; err != nil || got != want {
		t.Errorf("json of TeamKind(0): got %s, %v; want %s", got, err, want)
	}
	if err := json.Unmarshal(j, &back); err == nil {
		t.Errorf("json back of TeamKind(0): got nil error; want error")
	}
}

func FuzzUnmarshalCreate(f *testing.F) {
	g, _ := goldenOps(f)
	f.Add(g.vals["create.body"])
	f.Add([]byte{1, 1, 'x', 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalCreate(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded an invalid Create: %v", err)
		}
		if got := c.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}

func FuzzUnmarshalMessage(f *testing.F) {
	g, _ := goldenOps(f)
	f.Add(g.vals["message1.body"])
	f.Add(g.vals["message2.body"])
	f.Add(Message{}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnmarshalMessage(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid Message: %v", err)
		}
		if got := m.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}

func FuzzUnmarshalRelay(f *testing.F) {
	f.Add(Relay{Peer: []byte("12D3KooW"), Addrs: [][]byte{{4, 127, 0, 0, 1, 6, 0x0f, 0xa1}}}.Marshal())
	f.Add(Relay{Peer: []byte{1}, Removed: true}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalRelay(b)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded an invalid Relay: %v", err)
		}
		if got := r.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}
