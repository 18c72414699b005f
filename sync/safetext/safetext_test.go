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

// TestLookAlike: names that read the same across scripts, case or letter pairs look alike; different
// names do not.
func TestLookAlike(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"Ward A", "Ward \u0410", true},                        // a one-letter Cyrillic word
		{"Ward A", "W\u0430rd \u0410", true},                   // Cyrillic a inside (CheckName refuses it anyway)
		{"Nurse Copa", "Nurse \u0421\u043e\u0440\u0430", true}, // a whole word in Cyrillic
		{"Dr Banda", "dr  banda", true},                        // case and spaces
		{"Dr Kern", "Dr Kem", true},                            // rn and m
		{"Ward A", "Ward B", false},
		{"Nurse Phiri", "Nurse Banda", false},
		{"\u0421\u0435\u0440\u0433\u0435\u0439", "Sergei", false}, // a Cyrillic name that does not look Latin
	} {
		if got := LookAlike(tc.a, tc.b); got != tc.want {
			t.Errorf("LookAlike(%q, %q) = %v; want %v (skeletons %q, %q)", tc.a, tc.b, got, tc.want, Skeleton(tc.a), Skeleton(tc.b))
		}
	}
	for _, name := range []string{"Nurse \u0421\u043e\u0440\u0430", "Ward \u0410"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v: a whole-script word is a valid name, told apart by LookAlike", name, err)
		}
	}
}
