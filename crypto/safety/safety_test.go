package safety

import (
	"bytes"
	"crypto/sha512"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

type dev struct {
	id identity.DeviceID
	np identity.NoisePublic
}

func fixed(seed byte) dev {
	var d dev
	for i := range d.id {
		d.id[i] = seed + byte(i)
		d.np[i] = seed ^ byte(3*i+1)
	}
	return d
}

// refHalf is an independent transcription of the package documentation,
// with math/big for the digits.
func refHalf(d dev) string {
	key := append(append([]byte{}, d.id[:]...), d.np[:]...)
	h := append([]byte{0, 0}, key...)
	h = append(h, "fieldmesh/v1/safety-number"...)
	for range 5200 {
		s := sha512.New()
		s.Write(h)
		s.Write(key)
		h = s.Sum(nil)
	}
	var out string
	for i := 0; i < 30; i += 5 {
		v := new(big.Int).SetBytes(h[i : i+5])
		v.Mod(v, big.NewInt(100000))
		out += fmt.Sprintf("%05d", v.Int64())
	}
	return out
}

func TestReference(t *testing.T) {
	for _, p := range [][2]byte{{1, 2}, {7, 200}, {0, 255}} {
		a, b := fixed(p[0]), fixed(p[1])
		halves := []string{refHalf(a), refHalf(b)}
		sort.Strings(halves)
		want := halves[0] + halves[1]
		if got := Number(a.id, b.id, a.np, b.np).Digits(); got != want {
			t.Errorf("%v: got %s; want %s", p, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	a, b := fixed(1), fixed(2)
	n := Number(a.id, b.id, a.np, b.np)
	if ok, _ := regexp.MatchString(`^[0-9]{5}( [0-9]{5}){11}$`, n.String()); !ok {
		t.Errorf("String: got %q; want 12 groups of 5 digits", n.String())
	}
	if got, want := strings.ReplaceAll(n.String(), " ", ""), n.Digits(); got != want || len(got) != 60 {
		t.Errorf("Digits: got %q; want %q (60 digits)", want, got)
	}
	qr := n.QR()
	if ok, _ := regexp.MatchString(`^FIELDMESH:SN0:[0-9A-F]{128}$`, qr); !ok || len(qr) != qrLen {
		t.Errorf("QR: got %q; want FIELDMESH:SN0: and 128 upper-case hex digits", qr)
	}
}

func TestSymmetricAndSensitive(t *testing.T) {
	a, b := fixed(1), fixed(2)
	n := Number(a.id, b.id, a.np, b.np)
	if got := Number(b.id, a.id, b.np, a.np); got != n || got.String() != n.String() || got.QR() != n.QR() {
		t.Errorf("swapped arguments: got %s; want %s", got, n)
	}
	flipID := func(d dev, i int) dev { d.id[i] ^= 1; return d }
	flipNP := func(d dev, i int) dev { d.np[i] ^= 0x80; return d }
	tests := []struct {
		name string
		a, b dev
	}{
		{"a's id, first byte", flipID(a, 0), b},
		{"a's id, last byte", flipID(a, 31), b},
		{"b's id", a, flipID(b, 17)},
		{"a's noise key", flipNP(a, 0), b},
		{"b's noise key, last byte", a, flipNP(b, 31)},
		{"another device entirely", a, fixed(3)},
		{"keys paired the other way", dev{a.id, b.np}, dev{b.id, a.np}},
	}
	seen := map[string]string{n.Digits(): "original"}
	for _, tt := range tests {
		got := Number(tt.a.id, tt.b.id, tt.a.np, tt.b.np)
		if got == n || got.QR() == n.QR() {
			t.Errorf("%s: number unchanged", tt.name)
		}
		if prev, dup := seen[got.Digits()]; dup {
			t.Errorf("%s: same digits as %s", tt.name, prev)
		}
		seen[got.Digits()] = tt.name
		if err := n.MatchQR(got.QR()); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: MatchQR: got %v; want ErrMismatch", tt.name, err)
		}
	}
	// Only the half of the changed device changes.
	c := Number(a.id, fixed(3).id, a.np, fixed(3).np)
	if !strings.Contains(c.Digits(), refHalf(a)) {
		t.Errorf("a's half %s missing from %s", refHalf(a), c.Digits())
	}
}

func TestSameDevice(t *testing.T) {
	a := fixed(5)
	n := Number(a.id, a.id, a.np, a.np)
	if got, want := n.Digits(), refHalf(a)+refHalf(a); got != want {
		t.Errorf("device with itself: got %s; want %s", got, want)
	}
}

func TestMatchQR(t *testing.T) {
	a, b := fixed(1), fixed(2)
	n := Number(a.id, b.id, a.np, b.np)
	qr := n.QR()
	tests := []struct {
		name    string
		scanned string
		want    error
	}{
		{"own", qr, nil},
		{"other side's scan", Number(b.id, a.id, b.np, a.np).QR(), nil},
		{"empty", "", ErrNotSafetyQR},
		{"prefix only", qrPrefix, ErrNotSafetyQR},
		{"lower case", strings.ToLower(qr), ErrNotSafetyQR},
		{"hex lower case", qrPrefix + strings.ToLower(qr[len(qrPrefix):]), ErrNotSafetyQR},
		{"other version", strings.Replace(qr, "SN0", "SN1", 1), ErrNotSafetyQR},
		{"truncated", qr[:len(qr)-1], ErrNotSafetyQR},
		{"extended", qr + "0", ErrNotSafetyQR},
		{"non-hex", qr[:len(qr)-1] + "G", ErrNotSafetyQR},
		{"the digits instead", n.Digits(), ErrNotSafetyQR},
		{"an invite code", "fm1qqqqqqqqqqqqqqqqq", ErrNotSafetyQR},
		{"one nibble changed", qr[:len(qr)-1] + map[bool]string{true: "1", false: "0"}[qr[len(qr)-1] == '0'], ErrMismatch},
		{"halves swapped", qrPrefix + qr[len(qrPrefix)+64:] + qr[len(qrPrefix):len(qrPrefix)+64], ErrMismatch},
	}
	for _, tt := range tests {
		if err := n.MatchQR(tt.scanned); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
		}
	}
}

// TestGolden is the known-answer test: fixed keys, committed digits and QR
// payload in testdata/safety.golden.
func TestGolden(t *testing.T) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# safety numbers (issue #3, fingerprint version 0), from fixed keys.\n# Regenerate with: go test -run TestGolden -update\n")
	for _, p := range [][2]byte{{1, 2}, {7, 200}, {0, 255}} {
		a, b := fixed(p[0]), fixed(p[1])
		n := Number(a.id, b.id, a.np, b.np)
		fmt.Fprintf(&buf, "a.id %s\na.noise %s\nb.id %s\nb.noise %s\nnumber %s\nqr %s\n\n", a.id, a.np, b.id, b.np, n, n.QR())
	}
	want := buf.Bytes()
	path := filepath.Join("testdata", "safety.golden")
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
		t.Fatalf("%s differs from the numbers computed now (the derivation changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
}

func FuzzMatchQR(f *testing.F) {
	a, b := fixed(1), fixed(2)
	n := Number(a.id, b.id, a.np, b.np)
	f.Add(n.QR())
	f.Add(qrPrefix)
	f.Add("")
	f.Add(n.String())
	f.Fuzz(func(t *testing.T, s string) {
		err := n.MatchQR(s)
		switch {
		case err == nil && s != n.QR():
			t.Fatalf("%q matched; only %q should", s, n.QR())
		case err != nil && !errors.Is(err, ErrNotSafetyQR) && !errors.Is(err, ErrMismatch):
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func BenchmarkNumber(b *testing.B) {
	x, y := fixed(1), fixed(2)
	for b.Loop() {
		_ = Number(x.id, y.id, x.np, y.np)
	}
}
