package safetext

import (
	"errors"
	"testing"
	"unicode/utf8"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"Dr Banda", true},
		{"Nurse Phiri", true},
		{"José Álvarez", true},
		{"Zoë O'Neil-Smith", true},
		{"Алиса Петрова", true}, // all Cyrillic
		{"山田 たろう", true},        // Han and Hiragana mix in Japanese
		{"محمد", true},
		{"Ward 3", true},
		{"Al\u202eecila", false},      // right-to-left override
		{"Alice\u2066x\u2069", false}, // isolates
		{"Ali\u200bce", false},        // zero-width space
		{"\u0410lice", false},         // Cyrillic А in a Latin word
		{"Bob\u0391", false},          // Greek Alpha
		{"bell\x07", false},
		{"", false},
	} {
		err := CheckName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v; want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrName) {
			t.Errorf("CheckName(%q) = %v; want ErrName", tc.name, err)
		}
	}
	if got, err := NormalizeName("  Ａlice   Smith "); err != nil || got != "Alice Smith" {
		t.Errorf("NormalizeName = %q, %v; want %q", got, err, "Alice Smith")
	}
}

func TestDisplay(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"dose 5\u202e01 mg", "dose 5<U+202E>01 mg"},
		{"a\u200fb\u200ec", "a<U+200F>b<U+200E>c"},
		{"x\u2067y\u2069", "x<U+2067>y<U+2069>"},
		{"zero\u200bwidth", "zero<U+200B>width"},
		{"\x1b[2Jcleared", "\uFFFD[2Jcleared"},
		{"two\nlines\tand tab", "two\nlines\tand tab"},
		{"family: 👨\u200d👩\u200d👧", "family: 👨\u200d👩\u200d👧"},
		{"شكرا 5 mg", "شكرا 5 mg"},
		{"plain", "plain"},
	} {
		if got := Display(tc.in); got != tc.want {
			t.Errorf("Display(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzDisplay(f *testing.F) {
	f.Add("dose 5\u202e01 mg")
	f.Fuzz(func(t *testing.T, s string) {
		out := Display(s)
		for _, r := range out {
			if !visible(r) {
				t.Fatalf("Display(%q) = %q keeps %U", s, out, r)
			}
		}
		if utf8.ValidString(s) && Display(out) != out {
			t.Fatalf("Display is not idempotent on %q", s)
		}
	})
}
