package main

import "testing"

func TestPrintableNeutralisesEscapes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"two\nlines\tand tab", "two\nlines\tand tab"},
		{"\x1b[2Jcleared", "\uFFFD[2Jcleared"},
		{"bell\x07", "bell\uFFFD"},
		{"dose 5\u202e01 mg", "dose 5<U+202E>01 mg"}, // a right-to-left override must not reorder the dose
		{"Al\u2067ice", "Al<U+2067>ice"},
	} {
		if got := printable(tc.in); got != tc.want {
			t.Errorf("printable(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
