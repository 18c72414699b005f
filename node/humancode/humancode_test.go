package humancode

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestKnownAnswers pins the format byte for byte. The vectors were computed by an independent
// implementation of the package comment's grammar (bitwise CRC-32C, base32 by hand), not by Encode.
func TestKnownAnswers(t *testing.T) {
	seq := make([]byte, 48)
	for i := range seq {
		seq[i] = byte(i)
	}
	for _, tc := range []struct {
		kind    Kind
		payload []byte
		want    string
	}{
		{Relay, seq, "fmr3-000g40r40m30e209185gr38e1w8124gk2gahc5rr34d1p70x3rfj08924cj2a9h750mjmasc5mq2y1vmscw0"},
		{Invite, []byte("fieldmesh"), "fmi2-csmpav34dnjq6t2ax3a92"},
		{Invite, nil, "fmi2-78kbr2g"},
	} {
		if got := Encode(tc.kind, tc.payload); got != tc.want {
			t.Errorf("Encode(%v, %x) = %q; want %q", tc.kind, tc.payload, got, tc.want)
		}
		got, err := Decode(tc.kind, tc.want)
		if err != nil || !bytes.Equal(got, tc.payload) {
			t.Errorf("Decode(%v, %q) = %x, %v; want %x", tc.kind, tc.want, got, err, tc.payload)
		}
	}
}

func TestKinds(t *testing.T) {
	seen := map[string]Kind{}
	for k := Kind(1); int(k) < len(kinds); k++ {
		p := k.Prefix()
		if len(p) != headLen || strings.ToLower(p) != p || p[headLen-1] < '1' || p[headLen-1] > '9' {
			t.Errorf("%v: prefix %q; want three lower-case letters and a digit 1-9", k, p)
		}
		if other, ok := seen[p[:headLen-1]]; ok {
			t.Errorf("%v and %v share the prefix %q", k, other, p[:headLen-1])
		}
		seen[p[:headLen-1]] = k
		if strings.Contains(k.String(), "unknown") {
			t.Errorf("kind %d has no name", k)
		}
	}
	if len(seen) < 2 {
		t.Fatalf("%d kinds; want invite and relay at least", len(seen))
	}
	if Kind(0).Prefix() != "" || Kind(200).Prefix() != "" {
		t.Errorf("a value that is not a kind has a prefix")
	}
	if _, err := Decode(Kind(200), Encode(Relay, nil)); !errors.Is(err, ErrMalformed) {
		t.Errorf("Decode with a value that is not a kind: %v; want ErrMalformed", err)
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range []Kind{Invite, Relay} {
		for _, n := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 31, 48, 200, MaxPayload} {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			code := Encode(k, p)
			if !strings.HasPrefix(code, k.Prefix()+"-") {
				t.Fatalf("%v: code %q does not start with %s-", k, code, k.Prefix())
			}
			for _, c := range code[headLen+1:] {
				if !strings.ContainsRune(alphabet, c) {
					t.Fatalf("%v: code %q holds %q, outside the alphabet", k, code, c)
				}
			}
			got, err := Decode(k, code)
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("%v, %d bytes: Decode(Encode) = %x, %v; want %x", k, n, got, err, p)
			}
		}
	}
	long := Encode(Invite, make([]byte, MaxPayload))
	if len(long) != 1650 {
		t.Errorf("a code of MaxPayload bytes is %d characters; the doc says 1,650", len(long))
	}
	if grouped := group(long, 1, " "); len(grouped) > MaxLen {
		t.Errorf("a code of MaxPayload bytes with a space after every character is %d bytes, over MaxLen", len(grouped))
	} else if _, err := Decode(Invite, grouped); err != nil {
		t.Errorf("the longest code, grouped by single characters: %v", err)
	}
}

// group inserts sep after every n characters of s.
func group(s string, n int, sep string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += n {
		b.WriteString(s[i:min(i+n, len(s))])
		if i+n < len(s) {
			b.WriteString(sep)
		}
	}
	return b.String()
}

func TestDecodeTolerates(t *testing.T) {
	p := []byte("a payload that a person reads out")
	code := Encode(Relay, p)
	data := code[headLen+1:]
	confusable := strings.NewReplacer("1", "l", "0", "o").Replace(data)
	if confusable == data {
		t.Fatal("the test code holds no 0 or 1; pick another payload")
	}
	for _, tc := range []struct{ name, in string }{
		{"as written", code},
		{"upper case", strings.ToUpper(code)},
		{"surrounding white space", "\t " + code + " \r\n"},
		{"no dash after the head", code[:headLen] + data},
		{"groups of four with dashes", group(code, 4, "-")},
		{"groups of five with spaces", group(code, 5, " ")},
		{"wrapped lines", group(code, 20, "\n")},
		{"typographic dashes", group(code, 4, "\u2010") + "\u2013"},
		{"no-break spaces", group(code, 6, "\u00a0")},
		{"l and o for 1 and 0", code[:headLen+1] + confusable},
		{"I for 1", code[:headLen+1] + strings.ToUpper(strings.ReplaceAll(data, "1", "i"))},
	} {
		got, err := Decode(Relay, tc.in)
		if err != nil || !bytes.Equal(got, p) {
			t.Errorf("%s: Decode(%q) = %q, %v; want %q", tc.name, tc.in, got, err, p)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	relay := Encode(Relay, []byte("relay payload"))
	invite := Encode(Invite, []byte("invite payload"))
	data := invite[headLen+1:]
	swapped := []byte(invite)
	i := headLen + 3
	for swapped[i] == swapped[i+1] {
		i++
	}
	swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
	for _, tc := range []struct {
		name, in string
		want     error
		text     string
	}{
		{"empty", "", ErrMalformed, "an invite code starts with fmi2"},
		{"head only", "fmi", ErrMalformed, "starts with fmi2"},
		{"another program's code", "xyz2-" + data, ErrMalformed, "starts with fmi2"},
		{"no version", "fmi-" + data, ErrMalformed, "starts with fmi2"},
		{"too long", invite + strings.Repeat(" ", MaxLen), ErrMalformed, "longer than"},
		{"older version", "fmi1-" + data, ErrVersion, "of version 1; this one reads version 2"},
		{"newer version", "fmi9-" + data, ErrVersion, "version 9"},
		{"u is not a code character", invite[:10] + "u" + invite[11:], ErrMalformed, `'u'`},
		{"punctuation", invite[:10] + "!" + invite[11:], ErrMalformed, `'!'`},
		{"not ASCII", invite[:10] + "é" + invite[11:], ErrMalformed, `'é'`},
		{"not UTF-8", invite[:10] + "\xff" + invite[11:], ErrMalformed, "not a character"},
		{"a character missing", invite[:len(invite)-1], nil, "one missing or extra"},
		{"a character extra", invite + "a", nil, "one missing or extra"},
		{"truncated to the checksum", invite[:headLen+1+6], ErrMalformed, "one missing or extra"},
		{"a character changed", invite[:10] + string(other(invite[10])) + invite[11:], ErrMistyped, "mistyped: the checksum does not match"},
		{"neighbours swapped", string(swapped), ErrMistyped, "mistyped: the checksum does not match"},
		{"code of the other kind", relay, nil, "this is a relay code, not an invite code"},
	} {
		got, err := Decode(Invite, tc.in)
		switch {
		case err == nil:
			t.Errorf("%s: Decode(%q) = %x; want an error", tc.name, tc.in, got)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: Decode: %v; want %v", tc.name, err, tc.want)
		case !strings.Contains(err.Error(), tc.text):
			t.Errorf("%s: Decode: %q; want it to say %q", tc.name, err, tc.text)
		}
	}
	var ke *KindError
	if _, err := Decode(Relay, invite); !errors.As(err, &ke) || ke.Want != Relay || ke.Got != Invite ||
		err.Error() != "humancode: this is an invite code, not a relay code" {
		t.Errorf("Decode(Relay, an invite code): %v; want a *KindError naming both", err)
	}
}

// other returns another character of the alphabet than c.
func other(c byte) byte {
	i := strings.IndexByte(alphabet, c)
	return alphabet[(i+1)%len(alphabet)]
}

// TestTyposDetected checks the checksum's guarantee on whole codes: every single character replaced
// by every other character of the alphabet, and every two different neighbours swapped, is refused as
// mistyped. Payloads come from a logged seed.
func TestTyposDetected(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for _, n := range []int{0, 48, 160} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		code := Encode(Invite, p)
		mistyped := func(what, in string) {
			t.Helper()
			if got, err := Decode(Invite, in); !errors.Is(err, ErrMistyped) {
				t.Fatalf("seed %d, %d bytes: %s: Decode(%q) = %x, %v; want ErrMistyped", seed, n, what, in, got, err)
			}
		}
		b := []byte(code)
		for i := headLen + 1; i < len(b); i++ {
			orig := b[i]
			for j := range len(alphabet) {
				if alphabet[j] == orig {
					continue
				}
				b[i] = alphabet[j]
				mistyped("one character changed", string(b))
			}
			b[i] = orig
			if i+1 < len(b) && b[i] != b[i+1] {
				b[i], b[i+1] = b[i+1], b[i]
				mistyped("neighbours swapped", string(b))
				b[i], b[i+1] = b[i+1], b[i]
			}
		}
	}
}

// FuzzDecode checks that Decode never panics, that what it accepts re-encodes to a code it reads the
// same way, and that every payload up to MaxPayload survives Encode and Decode.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(Invite, []byte("invite")))
	f.Add(Encode(Relay, make([]byte, 48)))
	f.Add(strings.ToUpper(group(Encode(Relay, []byte{1, 2, 3}), 4, "-")))
	f.Add("fmi1-0000")
	f.Add("fmr3")
	f.Fuzz(func(t *testing.T, text string) {
		for _, k := range []Kind{Invite, Relay} {
			p, err := Decode(k, text)
			if err == nil {
				again, err := Decode(k, Encode(k, p))
				if err != nil || !bytes.Equal(again, p) {
					t.Fatalf("%v: accepted %q, whose re-encoding decodes to %x, %v", k, text, again, err)
				}
			}
			if len(text) <= MaxPayload {
				got, err := Decode(k, Encode(k, []byte(text)))
				if err != nil || !bytes.Equal(got, []byte(text)) {
					t.Fatalf("%v: payload %q does not round-trip: %x, %v", k, text, got, err)
				}
			}
		}
	})
}
