package senderkey

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"golang.org/x/crypto/chacha20poly1305"
	xhkdf "golang.org/x/crypto/hkdf"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func detRand(seed uint64) io.Reader {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	s[31] = 0x5c
	return rand.NewChaCha8(s)
}

func epochKey(t testing.TB, seed uint64) seal.EpochKey {
	t.Helper()
	k, err := seal.NewEpochKey(detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func deviceID(seed byte) identity.DeviceID {
	var d identity.DeviceID
	for i := range d {
		d[i] = seed ^ byte(i*7)
	}
	return d
}

// refKeys is an independent derivation, written from the package
// documentation with golang.org/x/crypto/hkdf: the message keys of indices
// 0..n-1 and the chain key of index n.
func refKeys(t testing.TB, key seal.EpochKey, sender identity.DeviceID, n int) (msgs [][]byte, chain []byte) {
	t.Helper()
	chain = make([]byte, 32)
	if _, err := io.ReadFull(xhkdf.New(sha256.New, key.Bytes(), []byte("fieldmesh/v1/senderkey/chain"), sender[:]), chain); err != nil {
		t.Fatal(err)
	}
	mac := func(k []byte, c byte) []byte {
		m := hmac.New(sha256.New, k)
		m.Write([]byte{c})
		return m.Sum(nil)
	}
	for range n {
		msgs = append(msgs, mac(chain, 1))
		chain = mac(chain, 2)
	}
	return msgs, chain
}

func TestKnownAnswer(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	msgs, _ := refKeys(t, key, alice, 3)
	s := NewSender(key, alice)
	for i, mk := range msgs {
		pt := []byte(fmt.Sprintf("message %d", i))
		ad := []byte("header")
		idx, ct, err := s.Seal(nz, ad, pt)
		if err != nil || idx != uint32(i) {
			t.Fatalf("Seal %d: got index %d, %v; want %d, nil", i, idx, err, i)
		}
		aead, _ := chacha20poly1305.New(mk)
		want := aead.Seal(nil, make([]byte, 12), pt, ad)
		if !bytes.Equal(ct, want) {
			t.Errorf("message %d: got %x; want %x (HMAC chain, zero nonce)", i, ct, want)
		}
	}
}

func TestSealOpenInOrder(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	s, r := NewSender(key, alice), NewReceiver(key, alice)
	for i := range 20 {
		pt := bytes.Repeat([]byte{byte(i)}, i*10)
		ad := []byte{byte(i)}
		idx, ct, err := s.Seal(nz, ad, pt)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(ct), len(pt)+Overhead; got != want {
			t.Errorf("len(ct): got %d; want %d", got, want)
		}
		got, err := r.Open(idx, nz, ad, ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open %d: got %x, %v; want %x, nil", idx, got, err, pt)
		}
	}
	if got, want := s.Next(), uint32(20); got != want {
		t.Errorf("sender Next: got %d; want %d", got, want)
	}
	if r.Next() != 20 || r.Skipped() != 0 {
		t.Errorf("receiver: got next %d skipped %d; want 20, 0", r.Next(), r.Skipped())
	}
	if s.Sender() != alice || r.Sender() != alice {
		t.Errorf("Sender: got %v, %v; want %v", s.Sender(), r.Sender(), alice)
	}
}

type sealed struct {
	idx uint32
	ad  []byte
	pt  []byte
	ct  []byte
}

func sealN(t testing.TB, s *SenderState, n int) []sealed {
	t.Helper()
	var out []sealed
	for i := range n {
		ad := []byte(fmt.Sprintf("ad %d", i))
		pt := []byte(fmt.Sprintf("plaintext %d", i))
		idx, ct, err := s.Seal(nz, ad, pt)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sealed{idx, ad, pt, ct})
	}
	return out
}

func TestOutOfOrder(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		msgs := sealN(t, NewSender(key, alice), 50)
		rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		r := NewReceiver(key, alice)
		for _, m := range msgs {
			got, err := r.Open(m.idx, nz, m.ad, m.ct)
			if err != nil || !bytes.Equal(got, m.pt) {
				t.Fatalf("trial %d: Open %d: got %q, %v; want %q, nil", trial, m.idx, got, err, m.pt)
			}
		}
		if r.Next() != 50 || r.Skipped() != 0 {
			t.Errorf("trial %d: got next %d skipped %d; want 50, 0", trial, r.Next(), r.Skipped())
		}
		// Every message again: all replays.
		for _, m := range msgs {
			if _, err := r.Open(m.idx, nz, m.ad, m.ct); !errors.Is(err, ErrReplay) {
				t.Fatalf("trial %d: replay of %d: got %v; want ErrReplay", trial, m.idx, err)
			}
		}
	}
}

func TestReplay(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	msgs := sealN(t, NewSender(key, alice), 4)
	r := NewReceiver(key, alice)
	steps := []struct {
		m    int
		want error
	}{
		{0, nil}, {0, ErrReplay}, // in order, then replayed
		{3, nil}, {3, ErrReplay}, // ahead (1 and 2 skipped), then replayed
		{2, nil}, {2, ErrReplay}, // a skipped key, used once
		{1, nil}, {1, ErrReplay},
	}
	for i, st := range steps {
		m := msgs[st.m]
		got, err := r.Open(m.idx, nz, m.ad, m.ct)
		if !errors.Is(err, st.want) || (err == nil && !bytes.Equal(got, m.pt)) {
			t.Errorf("step %d (index %d): got %q, %v; want %v", i, m.idx, got, err, st.want)
		}
	}
}

func TestTooFarAhead(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	msgs := sealN(t, NewSender(key, alice), MaxSkipped+3)
	r := NewReceiver(key, alice)
	before, _ := r.MarshalBinary()
	open := func(i int) error {
		m := msgs[i]
		_, err := r.Open(m.idx, nz, m.ad, m.ct)
		return err
	}
	if err := open(MaxSkipped + 1); !errors.Is(err, ErrTooFarAhead) {
		t.Fatalf("jump of MaxSkipped+1: got %v; want ErrTooFarAhead", err)
	}
	if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
		t.Errorf("refused jump changed the state")
	}
	if err := open(MaxSkipped); err != nil {
		t.Fatalf("jump of MaxSkipped: got %v; want nil", err)
	}
	if got, want := r.Skipped(), MaxSkipped; got != want {
		t.Errorf("Skipped: got %d; want %d", got, want)
	}
	if err := open(MaxSkipped + 1); err != nil { // the next index: no skip needed
		t.Errorf("next index with a full store: got %v; want nil", err)
	}
	if err := open(MaxSkipped + 2); err != nil {
		t.Errorf("next index with a full store: got %v; want nil", err)
	}
	// One more message ahead would need a skipped key: refused while full...
	s2 := sealN(t, NewSender(key, alice), MaxSkipped+5)
	m := s2[MaxSkipped+4] // index MaxSkipped+4 skips index MaxSkipped+3
	if _, err := r.Open(m.idx, nz, m.ad, m.ct); !errors.Is(err, ErrTooFarAhead) {
		t.Fatalf("skip with a full store: got %v; want ErrTooFarAhead", err)
	}
	if !strings.Contains(fmt.Sprint(ErrTooFarAhead), "too far ahead") {
		t.Errorf("error text: %v", ErrTooFarAhead)
	}
	// ...and accepted once an earlier message frees a slot.
	if err := open(0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open(m.idx, nz, m.ad, m.ct); err != nil {
		t.Errorf("after a slot was freed: got %v; want nil", err)
	}
}

func TestFailuresLeaveStateUnchanged(t *testing.T) {
	key, alice, bob := epochKey(t, 1), deviceID(1), deviceID(2)
	msgs := sealN(t, NewSender(key, alice), 6)
	r := NewReceiver(key, alice)
	if _, err := r.Open(msgs[3].idx, nz, msgs[3].ad, msgs[3].ct); err != nil { // skips 0, 1, 2
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	errCheck := errors.New("bad signature")
	reject := func([]byte) error { return errCheck }
	bobsMsg := sealN(t, NewSender(key, bob), 5)[4]
	otherEpoch := sealN(t, NewSender(epochKey(t, 2), alice), 5)[4]
	tests := []struct {
		name  string
		idx   uint32
		ad    []byte
		ct    []byte
		check func([]byte) error
		want  error
	}{
		{"ahead, tampered", 5, msgs[5].ad, flip(msgs[5].ct, 0), nil, ErrOpen},
		{"ahead, tampered tag", 5, msgs[5].ad, flip(msgs[5].ct, len(msgs[5].ct)-1), nil, ErrOpen},
		{"ahead, wrong ad", 5, []byte("other"), msgs[5].ct, nil, ErrOpen},
		{"ahead, wrong index", 5, msgs[4].ad, msgs[4].ct, nil, ErrOpen},
		{"ahead, truncated", 5, msgs[5].ad, msgs[5].ct[:Overhead-1], nil, ErrOpen},
		{"ahead, empty", 5, msgs[5].ad, nil, nil, ErrOpen},
		{"ahead, another sender's chain", 4, bobsMsg.ad, bobsMsg.ct, nil, ErrOpen},
		{"ahead, another epoch", 4, otherEpoch.ad, otherEpoch.ct, nil, ErrOpen},
		{"ahead, check rejects", 5, msgs[5].ad, msgs[5].ct, reject, ErrRejected},
		{"skipped, tampered", 1, msgs[1].ad, flip(msgs[1].ct, 3), nil, ErrOpen},
		{"skipped, wrong ad", 1, msgs[2].ad, msgs[1].ct, nil, ErrOpen},
		{"skipped, check rejects", 1, msgs[1].ad, msgs[1].ct, reject, ErrRejected},
		{"index MaxUint32", ^uint32(0), msgs[5].ad, msgs[5].ct, nil, ErrOpen},
		{"replay", 3, msgs[3].ad, msgs[3].ct, nil, ErrReplay},
	}
	for _, tt := range tests {
		before, _ := r.MarshalBinary()
		got, err := r.OpenChecked(tt.idx, nz, tt.ad, tt.ct, tt.check)
		if !errors.Is(err, tt.want) || got != nil {
			t.Errorf("%s: got %q, %v; want nil, %v", tt.name, got, err, tt.want)
		}
		if tt.check != nil && !errors.Is(err, errCheck) {
			t.Errorf("%s: got %v; want it to wrap the check's error", tt.name, err)
		}
		if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
			t.Errorf("%s: the failure changed the state", tt.name)
		}
	}
	// The genuine messages still open, each once.
	for _, i := range []int{0, 1, 2, 4, 5} {
		got, err := r.OpenChecked(msgs[i].idx, nz, msgs[i].ad, msgs[i].ct, func(pt []byte) error { return nil })
		if err != nil || !bytes.Equal(got, msgs[i].pt) {
			t.Errorf("genuine %d after failures: got %q, %v; want %q, nil", i, got, err, msgs[i].pt)
		}
	}
}

// TestDeletedKeys: a captured state holds neither the message key of a
// message it opened nor a chain key at or below its index, and a captured
// sender state holds no key of a message it sealed.
func TestDeletedKeys(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	refMsgs, _ := refKeys(t, key, alice, 10)
	var refChains [][]byte
	for n := range 11 {
		_, c := refKeys(t, key, alice, n)
		refChains = append(refChains, c)
	}
	s := NewSender(key, alice)
	msgs := sealN(t, s, 10)
	sb, _ := s.MarshalBinary()
	for i := range 10 {
		if bytes.Contains(sb, refMsgs[i]) || bytes.Contains(sb, refChains[i]) {
			t.Errorf("sender state after 10 messages holds a key of message %d", i)
		}
	}
	if !bytes.Contains(sb, refChains[10]) {
		t.Errorf("sender state does not hold the chain key of index 10")
	}
	r := NewReceiver(key, alice)
	opened := map[int]bool{}
	for _, i := range []int{2, 7, 3} {
		if _, err := r.Open(msgs[i].idx, nz, msgs[i].ad, msgs[i].ct); err != nil {
			t.Fatal(err)
		}
		opened[i] = true
	}
	rb, _ := r.MarshalBinary()
	for i := range 10 {
		has := bytes.Contains(rb, refMsgs[i])
		if want := i < 8 && !opened[i]; has != want {
			t.Errorf("receiver state holds message key %d: got %v; want %v", i, has, want)
		}
		if has, want := bytes.Contains(rb, refChains[i]), i == 8; has != want {
			t.Errorf("receiver state (next = 8) holds chain key %d: got %v; want %v", i, has, want)
		}
	}
}

func TestChainsAreDistinct(t *testing.T) {
	k1, k2 := epochKey(t, 1), epochKey(t, 2)
	a, b := deviceID(1), deviceID(2)
	chains := map[[32]byte]string{}
	for _, c := range []struct {
		name string
		key  seal.EpochKey
		id   identity.DeviceID
	}{{"k1 a", k1, a}, {"k1 b", k1, b}, {"k2 a", k2, a}, {"k2 b", k2, b}} {
		ch := [32]byte(NewSender(c.key, c.id).chain)
		if other, dup := chains[ch]; dup {
			t.Errorf("%s and %s start with the same chain key", c.name, other)
		}
		chains[ch] = c.name
		if !NewSender(c.key, c.id).Equal(NewSender(c.key, c.id)) {
			t.Errorf("%s: derivation is not deterministic", c.name)
		}
	}
}

func TestExhausted(t *testing.T) {
	var chain [32]byte
	chain[0] = 9
	senderBytes := append([]byte{1, 1}, make([]byte, 32)...)
	senderBytes = binary.BigEndian.AppendUint32(senderBytes, MaxIndex)
	senderBytes = append(senderBytes, chain[:]...)
	s, err := UnmarshalSender(senderBytes)
	if err != nil {
		t.Fatal(err)
	}
	recvBytes := append([]byte{1, 2}, senderBytes[2:]...)
	recvBytes = append(recvBytes, 0, 0)
	r, err := UnmarshalReceiver(recvBytes)
	if err != nil {
		t.Fatal(err)
	}
	idx, ct, err := s.Seal(nz, nil, []byte("last"))
	if err != nil || idx != MaxIndex {
		t.Fatalf("last Seal: got %d, %v; want %d, nil", idx, err, uint32(MaxIndex))
	}
	if _, _, err := s.Seal(nz, nil, []byte("one too many")); !errors.Is(err, ErrExhausted) {
		t.Errorf("Seal after MaxIndex: got %v; want ErrExhausted", err)
	}
	if got, want := s.Next(), uint32(MaxIndex+1); got != want {
		t.Errorf("Next after exhaustion: got %d; want %d", got, want)
	}
	if pt, err := r.Open(idx, nz, nil, ct); err != nil || string(pt) != "last" {
		t.Errorf("open the last index: got %q, %v; want %q, nil", pt, err, "last")
	}
	if _, err := r.Open(idx, nz, nil, ct); !errors.Is(err, ErrReplay) {
		t.Errorf("replay of the last index: got %v; want ErrReplay", err)
	}
	// The exhausted states still round-trip.
	for _, st := range []interface{ MarshalBinary() ([]byte, error) }{s, r} {
		b, _ := st.MarshalBinary()
		var err error
		if b[1] == kindSender {
			_, err = UnmarshalSender(b)
		} else {
			_, err = UnmarshalReceiver(b)
		}
		if err != nil {
			t.Errorf("exhausted state does not round-trip: %v", err)
		}
	}
}

func TestEncodingRoundtrip(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	s := NewSender(key, alice)
	msgs := sealN(t, s, 30)
	sb, err := s.MarshalBinary()
	if err != nil || len(sb) != senderSize {
		t.Fatalf("sender MarshalBinary: %d bytes, %v; want %d", len(sb), err, senderSize)
	}
	s2, err := UnmarshalSender(sb)
	if err != nil || !s2.Equal(s) {
		t.Fatalf("UnmarshalSender: %v, equal=%v", err, s2.Equal(s))
	}
	// Both continue identically.
	_, c1, _ := s.Seal(nz, nil, []byte("x"))
	_, c2, _ := s2.Seal(nz, nil, []byte("x"))
	if !bytes.Equal(c1, c2) {
		t.Errorf("decoded sender seals differently")
	}
	r := NewReceiver(key, alice)
	for _, i := range []int{4, 9, 1, 20} {
		if _, err := r.Open(msgs[i].idx, nz, msgs[i].ad, msgs[i].ct); err != nil {
			t.Fatal(err)
		}
	}
	rb, err := r.MarshalBinary()
	if err != nil || len(rb) != receiverHeader+r.Skipped()*skippedSize {
		t.Fatalf("receiver MarshalBinary: %d bytes, %v", len(rb), err)
	}
	r2, err := UnmarshalReceiver(rb)
	if err != nil || !r2.Equal(r) || r2.Next() != 21 || r2.Skipped() != 17 {
		t.Fatalf("UnmarshalReceiver: %v, equal=%v, next %d, skipped %d", err, r2.Equal(r), r2.Next(), r2.Skipped())
	}
	for _, i := range []int{0, 5, 19, 25, 2} {
		got, err := r2.Open(msgs[i].idx, nz, msgs[i].ad, msgs[i].ct)
		if err != nil || !bytes.Equal(got, msgs[i].pt) {
			t.Errorf("decoded receiver, message %d: got %q, %v", i, got, err)
		}
	}
	if _, err := r2.Open(msgs[4].idx, nz, msgs[4].ad, msgs[4].ct); !errors.Is(err, ErrReplay) {
		t.Errorf("decoded receiver replays 4: got %v; want ErrReplay", err)
	}
	// Not aliased.
	rb[len(rb)-1] ^= 1
	if r3, _ := UnmarshalReceiver(rb); r3.Equal(r) {
		t.Errorf("changed encoding decodes to the same state")
	}
}

func TestUnmarshalErrors(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	s := NewSender(key, alice)
	msgs := sealN(t, s, 5)
	sb, _ := s.MarshalBinary()
	r := NewReceiver(key, alice)
	if _, err := r.Open(msgs[4].idx, nz, msgs[4].ad, msgs[4].ct); err != nil {
		t.Fatal(err)
	}
	rb, _ := r.MarshalBinary() // next 5, skipped 0..3
	mut := func(b []byte, fn func(b []byte) []byte) []byte { return fn(bytes.Clone(b)) }
	entry := func(i int) int { return receiverHeader + i*skippedSize }
	senderCases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", sb[:senderSize-1]},
		{"long", append(bytes.Clone(sb), 0)},
		{"version 2", mut(sb, func(b []byte) []byte { b[0] = 2; return b })},
		{"receiver kind", mut(sb, func(b []byte) []byte { b[1] = kindReceiver; return b })},
		{"a receiver encoding", rb},
	}
	for _, tt := range senderCases {
		if got, err := UnmarshalSender(tt.b); !errors.Is(err, ErrEncoding) || got != nil {
			t.Errorf("UnmarshalSender %s: got %v; want ErrEncoding", tt.name, err)
		}
	}
	receiverCases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", rb[:receiverHeader-1]},
		{"version 0", mut(rb, func(b []byte) []byte { b[0] = 0; return b })},
		{"sender kind", mut(rb, func(b []byte) []byte { b[1] = kindSender; return b })},
		{"a sender encoding", sb},
		{"count too big", mut(rb, func(b []byte) []byte { binary.BigEndian.PutUint16(b[70:], MaxSkipped+1); return b })},
		{"count says 5", mut(rb, func(b []byte) []byte { b[71] = 5; return b })},
		{"count says 3", mut(rb, func(b []byte) []byte { b[71] = 3; return b })},
		{"truncated entry", rb[:len(rb)-1]},
		{"trailing byte", append(bytes.Clone(rb), 0)},
		{"index not below next", mut(rb, func(b []byte) []byte { binary.BigEndian.PutUint32(b[entry(3):], 5); return b })},
		{"indices out of order", mut(rb, func(b []byte) []byte { binary.BigEndian.PutUint32(b[entry(1):], 3); return b })},
		{"index twice", mut(rb, func(b []byte) []byte { binary.BigEndian.PutUint32(b[entry(1):], 0); return b })},
		{"too large", make([]byte, MaxReceiverSize+1)},
	}
	for _, tt := range receiverCases {
		if got, err := UnmarshalReceiver(tt.b); !errors.Is(err, ErrEncoding) || got != nil {
			t.Errorf("UnmarshalReceiver %s: got %v; want ErrEncoding", tt.name, err)
		}
	}
	// A full store round-trips at exactly MaxReceiverSize.
	full := NewReceiver(key, alice)
	big := sealN(t, NewSender(key, alice), MaxSkipped+1)
	if _, err := full.Open(big[MaxSkipped].idx, nz, big[MaxSkipped].ad, big[MaxSkipped].ct); err != nil {
		t.Fatal(err)
	}
	fb, _ := full.MarshalBinary()
	if got, err := UnmarshalReceiver(fb); err != nil || len(fb) != MaxReceiverSize || !got.Equal(full) {
		t.Errorf("full store: %d bytes, %v; want %d bytes, nil", len(fb), err, MaxReceiverSize)
	}
}

func TestRedacted(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	s := NewSender(key, alice)
	r := NewReceiver(key, alice)
	msgs := sealN(t, s, 3)
	if _, err := r.Open(msgs[2].idx, nz, msgs[2].ad, msgs[2].ct); err != nil { // skips 0 and 1
		t.Fatal(err)
	}
	sb, _ := s.MarshalBinary()
	rb, _ := r.MarshalBinary()
	secrets := []string{hex.EncodeToString(sb[38:42]), hex.EncodeToString(rb[38:42]), hex.EncodeToString(rb[receiverHeader+4:][:4])}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "sender", s, "receiver", r)
	for _, out := range []string{
		s.String(), r.String(), fmt.Sprint(s, r),
		fmt.Sprintf("%v %+v %#v %s", s, s, s, s),
		fmt.Sprintf("%v %+v %#v %s", r, r, r, r),
		logs.String(),
	} {
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Errorf("output %q contains key bytes", out)
			}
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("output %q: want [redacted]", out)
		}
	}
}

func TestEqual(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	a, b := NewSender(key, alice), NewSender(key, alice)
	if !a.Equal(b) {
		t.Errorf("same sender states: got unequal")
	}
	_, _, _ = b.Seal(nz, nil, nil)
	if a.Equal(b) || a.Equal(nil) || !(*SenderState)(nil).Equal(nil) {
		t.Errorf("sender Equal: wrong result")
	}
	ra, rb := NewReceiver(key, alice), NewReceiver(key, deviceID(2))
	if ra.Equal(rb) || !ra.Equal(NewReceiver(key, alice)) || ra.Equal(nil) {
		t.Errorf("receiver Equal: wrong result")
	}
}

// TestGolden checks the state encodings byte for byte against
// testdata/states.golden.
func TestGolden(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	s := NewSender(key, alice)
	msgs := sealN(t, s, 4)
	r := NewReceiver(key, alice)
	if _, err := r.Open(msgs[2].idx, nz, msgs[2].ad, msgs[2].ct); err != nil {
		t.Fatal(err)
	}
	sb, _ := s.MarshalBinary()
	rb, _ := r.MarshalBinary()
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# sender-key state encodings and messages (issue #3, version 1), from fixed seeds.\n# Regenerate with: go test -run TestGolden -update\n")
	fmt.Fprintf(&buf, "epochkey %x\nsender %x\n", key.Bytes(), alice[:])
	for _, m := range msgs {
		fmt.Fprintf(&buf, "message%d ad=%q pt=%q ct=%x\n", m.idx, m.ad, m.pt, m.ct)
	}
	fmt.Fprintf(&buf, "senderstate %x\nreceiverstate %x\n", sb, rb)
	want := buf.Bytes()
	path := filepath.Join("testdata", "states.golden")
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
		t.Fatalf("%s differs from the states made now (a derivation or encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
	// The committed receiver state opens the committed messages it skipped.
	var committed []byte
	for _, line := range strings.Split(string(got), "\n") {
		if v, ok := strings.CutPrefix(line, "receiverstate "); ok {
			committed, _ = hex.DecodeString(v)
		}
	}
	r2, err := UnmarshalReceiver(committed)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 3} {
		if pt, err := r2.Open(msgs[i].idx, nz, msgs[i].ad, msgs[i].ct); err != nil || !bytes.Equal(pt, msgs[i].pt) {
			t.Errorf("committed state, message %d: got %q, %v", i, pt, err)
		}
	}
}

func FuzzUnmarshalSender(f *testing.F) {
	s := NewSender(epochKey(f, 1), deviceID(1))
	b, _ := s.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalSender(b)
		if err != nil {
			if s != nil || !errors.Is(err, ErrEncoding) {
				t.Fatalf("got %v, %v; want nil, ErrEncoding", s, err)
			}
			return
		}
		got, _ := s.MarshalBinary()
		if !bytes.Equal(got, b) {
			t.Fatalf("re-marshal: got %x; want %x", got, b)
		}
		_, _, _ = s.Seal(nz, []byte("ad"), []byte("pt"))
	})
}

func FuzzUnmarshalReceiver(f *testing.F) {
	key, alice := epochKey(f, 1), deviceID(1)
	msgs := sealN(f, NewSender(key, alice), 4)
	r := NewReceiver(key, alice)
	b0, _ := r.MarshalBinary()
	_, _ = r.Open(msgs[3].idx, nz, msgs[3].ad, msgs[3].ct)
	b1, _ := r.MarshalBinary()
	f.Add(b0)
	f.Add(b1)
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalReceiver(b)
		if err != nil {
			if r != nil || !errors.Is(err, ErrEncoding) {
				t.Fatalf("got %v, %v; want nil, ErrEncoding", r, err)
			}
			return
		}
		got, _ := r.MarshalBinary()
		if !bytes.Equal(got, b) {
			t.Fatalf("re-marshal: got %x; want %x", got, b)
		}
		if r.Skipped() > MaxSkipped {
			t.Fatalf("decoded %d skipped keys", r.Skipped())
		}
		_, _ = r.Open(msgs[0].idx, nz, msgs[0].ad, msgs[0].ct)
	})
}

// FuzzOpen feeds arbitrary (index, ad, ciphertext) to a receiver that has
// skipped keys: no panic, and a failure leaves the state unchanged.
func FuzzOpen(f *testing.F) {
	key, alice := epochKey(f, 1), deviceID(1)
	msgs := sealN(f, NewSender(key, alice), 8)
	for _, m := range msgs {
		f.Add(m.idx, m.ad, m.ct)
	}
	f.Add(uint32(MaxSkipped+10), []byte{}, []byte{})
	f.Add(^uint32(0), []byte{}, bytes.Repeat([]byte{0}, 16))
	f.Fuzz(func(t *testing.T, idx uint32, ad, ct []byte) {
		r := NewReceiver(key, alice)
		if _, err := r.Open(msgs[4].idx, nz, msgs[4].ad, msgs[4].ct); err != nil {
			t.Fatal(err)
		}
		before, _ := r.MarshalBinary()
		pt, err := r.Open(idx, nz, ad, ct)
		if err != nil {
			if pt != nil {
				t.Fatalf("error %v with a plaintext", err)
			}
			if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
				t.Fatalf("failed Open changed the state")
			}
			return
		}
		// Only the genuine messages open.
		if int(idx) >= len(msgs) || !bytes.Equal(pt, msgs[idx].pt) {
			t.Fatalf("opened a forged message at index %d: %q", idx, pt)
		}
	})
}

// TestStepIsHMAC checks the hand-written HMAC of step against crypto/hmac.
func TestStepIsHMAC(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		var c chainKey
		for j := range c {
			c[j] = byte(rng.Uint32())
		}
		if i == 0 {
			c = chainKey{}
		}
		mk, next := c.step()
		for _, tt := range []struct {
			name string
			got  [32]byte
			m    byte
		}{{"message key", mk, 0x01}, {"next chain key", next, 0x02}} {
			h := hmac.New(sha256.New, c[:])
			h.Write([]byte{tt.m})
			if want := h.Sum(nil); !bytes.Equal(tt.got[:], want) {
				t.Fatalf("key %x: %s: got %x; want HMAC-SHA256 %x", c, tt.name, tt.got, want)
			}
		}
	}
}

func BenchmarkStep(b *testing.B) {
	c := chainKey{1}
	b.ReportAllocs()
	for b.Loop() {
		_, c = c.step()
	}
}

// nz is the nonce the tests seal with when the nonce does not matter.
var nz [NonceSize]byte

func TestNonceFromCaller(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	msgs, _ := refKeys(t, key, alice, 1)
	n := [NonceSize]byte{1, 2, 3}
	s, r := NewSender(key, alice), NewReceiver(key, alice)
	idx, ct, err := s.Seal(n, []byte("ad"), []byte("pt"))
	if err != nil {
		t.Fatal(err)
	}
	aead, _ := chacha20poly1305.New(msgs[0])
	if want := aead.Seal(nil, n[:], []byte("pt"), []byte("ad")); !bytes.Equal(ct, want) {
		t.Errorf("Seal with nonce %x: got %x; want %x", n, ct, want)
	}
	if _, err := r.Open(idx, nz, []byte("ad"), ct); !errors.Is(err, ErrOpen) {
		t.Errorf("Open with another nonce: %v; want ErrOpen", err)
	}
	if pt, err := r.Open(idx, n, []byte("ad"), ct); err != nil || string(pt) != "pt" {
		t.Errorf("Open: %q, %v", pt, err)
	}
}

// TestPeekConsume checks that Peek changes nothing, that Consume spends exactly the index Peek
// opened (and stores the keys it jumps over), and that both refuse what Open refuses.
func TestPeekConsume(t *testing.T) {
	key, alice := epochKey(t, 1), deviceID(1)
	msgs := sealN(t, NewSender(key, alice), 6)
	r := NewReceiver(key, alice)
	before, _ := r.MarshalBinary()
	for range 2 {
		pt, err := r.Peek(msgs[3].idx, nz, msgs[3].ad, msgs[3].ct)
		if err != nil || !bytes.Equal(pt, msgs[3].pt) {
			t.Fatalf("Peek: %q, %v", pt, err)
		}
	}
	if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
		t.Fatal("Peek changed the state")
	}
	if _, err := r.Peek(msgs[3].idx, nz, msgs[2].ad, msgs[3].ct); !errors.Is(err, ErrOpen) {
		t.Errorf("Peek with the wrong ad: %v; want ErrOpen", err)
	}
	if err := r.Consume(3); err != nil {
		t.Fatal(err)
	}
	if r.Next() != 4 || r.Skipped() != 3 || !r.Has(1) || r.Has(3) || !r.Has(4) {
		t.Errorf("after Consume(3): next %d, skipped %d, has 1/3/4 %v %v %v; want 4, 3, true false true",
			r.Next(), r.Skipped(), r.Has(1), r.Has(3), r.Has(4))
	}
	if _, err := r.Peek(3, nz, msgs[3].ad, msgs[3].ct); !errors.Is(err, ErrReplay) {
		t.Errorf("Peek of a consumed index: %v; want ErrReplay", err)
	}
	if err := r.Consume(3); !errors.Is(err, ErrReplay) {
		t.Errorf("Consume twice: %v; want ErrReplay", err)
	}
	// A skipped key opens by Peek, and Consume deletes it.
	if pt, err := r.Peek(1, nz, msgs[1].ad, msgs[1].ct); err != nil || !bytes.Equal(pt, msgs[1].pt) {
		t.Fatalf("Peek of a skipped index: %q, %v", pt, err)
	}
	if err := r.Consume(1); err != nil || r.Skipped() != 2 {
		t.Fatalf("Consume(1): %v, skipped %d; want nil, 2", err, r.Skipped())
	}
	if err := r.Consume(MaxSkipped + 10); !errors.Is(err, ErrTooFarAhead) {
		t.Errorf("Consume far ahead: %v; want ErrTooFarAhead", err)
	}
	if err := r.Consume(MaxIndex + 1); !errors.Is(err, ErrOpen) {
		t.Errorf("Consume past MaxIndex: %v; want ErrOpen", err)
	}
	// What Consume stored opens the remaining messages.
	for _, i := range []uint32{0, 2, 4, 5} {
		if pt, err := r.Open(i, nz, msgs[i].ad, msgs[i].ct); err != nil || !bytes.Equal(pt, msgs[i].pt) {
			t.Errorf("Open %d after Consume: %q, %v", i, pt, err)
		}
	}
}

// TestCheck: Check reports what Peek would refuse before trying a key, and nothing for what Peek
// opens.
func TestCheck(t *testing.T) {
	ck, err := seal.NewEpochKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	var dev identity.DeviceID
	r := NewReceiver(ck, dev)
	if err := r.Check(0); err != nil {
		t.Errorf("Check(0) on a fresh chain: %v", err)
	}
	if err := r.Check(MaxSkipped + 1); !errors.Is(err, ErrTooFarAhead) {
		t.Errorf("Check(MaxSkipped+1): %v; want ErrTooFarAhead", err)
	}
	if err := r.Check(MaxIndex + 1); !errors.Is(err, ErrOpen) {
		t.Errorf("Check(MaxIndex+1): %v; want ErrOpen", err)
	}
	if err := r.Consume(2); err != nil {
		t.Fatal(err)
	}
	if err := r.Check(2); !errors.Is(err, ErrReplay) {
		t.Errorf("Check of a consumed index: %v; want ErrReplay", err)
	}
	if err := r.Check(1); err != nil {
		t.Errorf("Check of a skipped index: %v", err)
	}
}

// TestStream: SealStream is Seal's encryption without the tag (the same
// message key and keystream from block 1), the chains advance alike, and
// PeekStream decrypts without changing the state; what it decrypts is
// not authenticated, so a changed ciphertext gives other bytes, and the
// replay and distance rules are Peek's.
func TestStream(t *testing.T) {
	key, alice := epochKey(t, 3), deviceID(3)
	aead, stream := NewSender(key, alice), NewSender(key, alice)
	r := NewReceiver(key, alice)
	var nonce [NonceSize]byte
	for i := range 5 {
		nonce[0] = byte(i)
		pt := bytes.Repeat([]byte{'p', byte(i)}, 10+i)
		_, ctTagged, err := aead.Seal(nonce, nil, pt)
		if err != nil {
			t.Fatal(err)
		}
		idx, ct, err := stream.SealStream(nonce, pt)
		if err != nil || idx != uint32(i) {
			t.Fatalf("SealStream %d: index %d, %v", i, idx, err)
		}
		if len(ct) != len(pt) || !bytes.Equal(ct, ctTagged[:len(pt)]) {
			t.Fatalf("message %d: the stream is not Seal's ciphertext without its tag", i)
		}
		before, _ := r.MarshalBinary()
		got, err := r.PeekStream(idx, nonce, ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("PeekStream %d: %x, %v; want %x", i, got, err, pt)
		}
		flipped := bytes.Clone(ct)
		flipped[0] ^= 1
		if got, err := r.PeekStream(idx, nonce, flipped); err != nil || bytes.Equal(got, pt) {
			t.Errorf("a changed ciphertext decrypted to the plaintext (or failed: %v)", err)
		}
		if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
			t.Fatalf("PeekStream changed the receiver state")
		}
		if err := r.Consume(idx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.PeekStream(idx, nonce, ct); !errors.Is(err, ErrReplay) {
			t.Errorf("PeekStream of a consumed index: got %v; want ErrReplay", err)
		}
	}
	if !aead.Equal(stream) {
		t.Errorf("Seal and SealStream left different sender states")
	}
	if _, err := r.PeekStream(r.Next()+MaxSkipped+1, nonce, []byte{1}); !errors.Is(err, ErrTooFarAhead) {
		t.Errorf("PeekStream too far ahead: got %v; want ErrTooFarAhead", err)
	}
}
