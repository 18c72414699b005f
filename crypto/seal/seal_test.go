package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
)

func testKey(t testing.TB, seed byte) EpochKey {
	t.Helper()
	var s [32]byte
	s[0] = seed
	k, err := NewEpochKey(rand.NewChaCha8(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundtrip(t *testing.T) {
	key := testKey(t, 1)
	nonce := [12]byte{1, 2, 3}
	for _, tt := range []struct {
		name   string
		ad, pt []byte
	}{
		{"empty", nil, nil},
		{"no ad", nil, []byte("hello")},
		{"ad", []byte("header"), []byte("hello")},
		{"200 bytes", []byte("h"), bytes.Repeat([]byte{7}, 200)},
	} {
		ct := Seal(key, nonce, tt.ad, tt.pt)
		if got, want := len(ct), len(tt.pt)+Overhead; got != want {
			t.Errorf("%s: len(ct): got %d; want %d", tt.name, got, want)
		}
		got, err := Open(key, nonce, tt.ad, ct)
		if err != nil || !bytes.Equal(got, tt.pt) {
			t.Errorf("%s: Open: got %q, %v; want %q, nil", tt.name, got, err, tt.pt)
		}
	}
}

// TestKnownAnswer checks RFC 8439 section 2.8.2.
func TestKnownAnswer(t *testing.T) {
	k, err := EpochKeyFromBytes(unhex(t, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
	if err != nil {
		t.Fatal(err)
	}
	var nonce [12]byte
	copy(nonce[:], unhex(t, "070000004041424344454647"))
	ad := unhex(t, "50515253c0c1c2c3c4c5c6c7")
	pt := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	ct := Seal(k, nonce, ad, pt)
	if got, want := hex.EncodeToString(ct[len(ct)-Overhead:]), "1ae10b594f09e26a7e902ecbd0600691"; got != want {
		t.Errorf("tag: got %s; want %s", got, want)
	}
	if got, want := hex.EncodeToString(ct[:16]), "d31a8d34648e60db7b86afbc53ef7ec2"; got != want {
		t.Errorf("ciphertext prefix: got %s; want %s", got, want)
	}
}

func TestTamper(t *testing.T) {
	key := testKey(t, 1)
	nonce := [12]byte{9, 8, 7, 6, 5, 4, 3, 2, 1}
	ad := []byte("associated data")
	pt := []byte("a message of moderate length")
	ct := Seal(key, nonce, ad, pt)

	check := func(name string, k EpochKey, n [12]byte, ad, ct []byte) {
		t.Helper()
		got, err := Open(k, n, ad, ct)
		if !errors.Is(err, ErrOpen) || got != nil {
			t.Errorf("%s: got %q, %v; want nil, ErrOpen", name, got, err)
		}
	}
	for i := range ct {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		check(fmt.Sprintf("ciphertext byte %d", i), key, nonce, ad, c)
	}
	for i := range ad {
		a := bytes.Clone(ad)
		a[i] ^= 0x80
		check(fmt.Sprintf("ad byte %d", i), key, nonce, a, ct)
	}
	for i := range nonce {
		n := nonce
		n[i] ^= 0xff
		check(fmt.Sprintf("nonce byte %d", i), key, n, ad, ct)
	}
	check("wrong key", testKey(t, 2), nonce, ad, ct)
	check("zero key", EpochKey{}, nonce, ad, ct)
	check("no ad", key, nonce, nil, ct)
	check("truncated", key, nonce, ad, ct[:len(ct)-1])
	check("extended", key, nonce, ad, append(bytes.Clone(ct), 0))
	check("tag only", key, nonce, ad, ct[len(ct)-Overhead:])
	check("short", key, nonce, ad, ct[:Overhead-1])
	check("empty", key, nonce, ad, nil)
}

func TestEpochKey(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 1)
	c := testKey(t, 2)
	if !a.Equal(b) || a.Equal(c) {
		t.Errorf("Equal: got %v, %v; want true, false", a.Equal(b), a.Equal(c))
	}
	k, err := EpochKeyFromBytes(a.Bytes())
	if err != nil || !k.Equal(a) {
		t.Errorf("EpochKeyFromBytes(Bytes()): got %v; want the same key", err)
	}
	raw := a.Bytes()
	raw[0] ^= 1
	if !bytes.Equal(a.Bytes()[1:], raw[1:]) || bytes.Equal(a.Bytes(), raw) {
		t.Errorf("Bytes returned an alias; want a copy")
	}
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := EpochKeyFromBytes(make([]byte, n)); !errors.Is(err, ErrKeySize) {
			t.Errorf("EpochKeyFromBytes(%d bytes): got %v; want ErrKeySize", n, err)
		}
	}
	if _, err := NewEpochKey(nil); err != nil {
		t.Errorf("NewEpochKey(nil): got %v; want nil", err)
	}
	if _, err := NewEpochKey(bytes.NewReader(make([]byte, 31))); !errors.Is(err, ErrRandomness) {
		t.Errorf("NewEpochKey(short): got %v; want ErrRandomness", err)
	}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", a)
	secret := hex.EncodeToString(a.Bytes()[:4])
	for _, out := range []string{a.String(), fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, a), logs.String()} {
		if strings.Contains(out, secret) || !strings.Contains(out, "[redacted]") {
			t.Errorf("output %q: want [redacted] and no key bytes", out)
		}
	}
}

func TestTopic(t *testing.T) {
	var team [32]byte
	for i := range team {
		team[i] = byte(i)
	}
	h := sha256.Sum256(append([]byte("fieldmesh/v1/topic"), team[:]...))
	if got, want := Topic(team), [16]byte(h[:16]); got != want {
		t.Errorf("Topic: got %x; want %x", got, want)
	}
	// Fixed vector (computed independently) so a change of derivation is noticed.
	zero := Topic([32]byte{})
	if got, want := hex.EncodeToString(zero[:]), "6243189a8a09e64f140ace57c0eacf76"; got != want {
		t.Errorf("Topic(zero): got %s; want %s", got, want)
	}
	team2 := team
	team2[31] ^= 1
	if Topic(team) == Topic(team2) {
		t.Errorf("Topic: got equal topics for different teams")
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var sink []byte

func BenchmarkSeal200(b *testing.B) {
	key := testKey(b, 1)
	pt := make([]byte, 200)
	ad := make([]byte, 61)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		sink = Seal(key, [12]byte{}, ad, pt)
	}
}

func BenchmarkOpen200(b *testing.B) {
	key := testKey(b, 1)
	pt := make([]byte, 200)
	ad := make([]byte, 61)
	ct := Seal(key, [12]byte{}, ad, pt)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		sink, err = Open(key, [12]byte{}, ad, ct)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestStream: Stream is Seal's encryption without the tag (the same
// keystream from block 1), and it undoes itself.
func TestStream(t *testing.T) {
	key, err := EpochKeyFromBytes(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	nonce := [NonceSize]byte{1, 2, 3}
	pt := bytes.Repeat([]byte("stream "), 30)
	ct := make([]byte, len(pt))
	Stream(key, nonce, ct, pt)
	if want := Seal(key, nonce, nil, pt); !bytes.Equal(ct, want[:len(pt)]) {
		t.Errorf("Stream differs from Seal's ciphertext")
	}
	back := bytes.Clone(ct)
	Stream(key, nonce, back, back)
	if !bytes.Equal(back, pt) {
		t.Errorf("Stream twice does not give back the plaintext")
	}
}
