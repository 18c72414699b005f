package relayproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/humancode"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// goldenTeam and the peer ids below are fixed inputs of the known-answer vectors.
var goldenTeam = [32]byte{0: 0xfe, 1: 0x1d, 31: 0x42}

var goldenAdmin = identity.DeviceID{0: 0xad, 31: 0x01}

func goldenPeers(t *testing.T) (relay, device peer.ID) {
	t.Helper()
	r, err := peer.Decode("12D3KooWAVNbU9ihFMK23TvzdzzWxMqxZXmDsZEPGxTrGtvqDpFQ")
	if err != nil {
		t.Fatal(err)
	}
	d, err := peer.Decode("12D3KooWAkMeMqaQ96RKV8kMVYBghkLdLoFCtLgHukY5WKdWpxNh")
	if err != nil {
		t.Fatal(err)
	}
	return r, d
}

// TestGolden pins the relay key derivation, the enrolment proof, the code and the wire messages byte for
// byte: a relay and the devices it serves must agree on them across releases. Regenerate with -update.
func TestGolden(t *testing.T) {
	rp, dp := goldenPeers(t)
	k := TeamKey(goldenTeam)
	var nonce [NonceSize]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	proof := k.Proof(rp, dp, nonce)
	code := CodeFor(goldenTeam, goldenAdmin)
	topic := code.Topic
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# node/relay/relayproto known answers. Regenerate with: go test -run TestGolden -update\n")
	fmt.Fprintf(&buf, "team %x\n", goldenTeam)
	fmt.Fprintf(&buf, "relay.key %x\n", k.k)
	fmt.Fprintf(&buf, "topic %x\n", topic[:])
	fmt.Fprintf(&buf, "proof %x\n", proof)
	fmt.Fprintf(&buf, "code %s\n", code.Encode())
	fmt.Fprintf(&buf, "challenge %x\n", MarshalChallenge(nonce))
	fmt.Fprintf(&buf, "enrol.request %x\n", MarshalEnrolRequest([]EnrolProof{{Topic: topic, Proof: proof}}))
	fmt.Fprintf(&buf, "enrol.answer %x\n", MarshalEnrolAnswer([]EnrolResult{
		{Topic: topic, Status: StatusOK, Horizon: 0x0195_50d3_9b40_0000},
		{Status: StatusNotCarried, Message: "not carried"},
	}))
	fmt.Fprintf(&buf, "register %x\n", MarshalRegister(topic, nil))
	fmt.Fprintf(&buf, "peers %x\n", MarshalPeers(StatusOK, "", []peer.AddrInfo{{ID: dp}}))
	admin := goldenDevice(t, 1)
	ro := NewRoster(topic, 7, []identity.DeviceID{goldenDevice(t, 2).ID()}, []identity.DeviceID{admin.ID()})
	ro.Sign(admin.ID(), admin.Sign)
	fmt.Fprintf(&buf, "roster %x\n", ro.Marshal())
	path := filepath.Join("testdata", "relay.golden")
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("known answers differ from %s (run with -update if the change is intended):\ngot:\n%s\nwant:\n%s", path, buf.Bytes(), want)
	}
}

func TestTeamKey(t *testing.T) {
	a, b := TeamKey(goldenTeam), TeamKey(goldenTeam)
	if !a.Equal(b) {
		t.Errorf("TeamKey is not deterministic")
	}
	other := goldenTeam
	other[0] ^= 1
	if TeamKey(other).Equal(a) {
		t.Errorf("TeamKey: two teams got the same key")
	}
	// One-way and domain-separated: neither the team id nor the topic is the key.
	topic := CodeFor(goldenTeam, goldenAdmin).Topic
	if bytes.Equal(a.k[:], goldenTeam[:]) || bytes.Contains(a.k[:], topic[:]) {
		t.Errorf("TeamKey leaks its input")
	}
	if got := fmt.Sprintf("%v %s", a, a); got != "[redacted] [redacted]" {
		t.Errorf("a key prints as %q; want [redacted]", got)
	}
	if got := CodeFor(goldenTeam, goldenAdmin).String(); strings.Contains(got, hex.EncodeToString(a.k[:4])) || !strings.Contains(got, "[redacted]") {
		t.Errorf("Code.String() = %q shows the key", got)
	}
}

func TestProof(t *testing.T) {
	rp, dp := goldenPeers(t)
	k := TeamKey(goldenTeam)
	var nonce [NonceSize]byte
	p := k.Proof(rp, dp, nonce)
	if !k.Verify(rp, dp, nonce, p) {
		t.Fatalf("a proof does not verify")
	}
	other := goldenTeam
	other[5] ^= 1
	nonce2 := nonce
	nonce2[0] = 1
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"other key", TeamKey(other).Verify(rp, dp, nonce, p)},
		{"other relay", k.Verify(dp, dp, nonce, p)},
		{"other device", k.Verify(rp, rp, nonce, p)},
		{"swapped ids", k.Verify(dp, rp, nonce, p)},
		{"other nonce", k.Verify(rp, dp, nonce2, p)},
	} {
		if tc.ok {
			t.Errorf("%s: a proof verified; want refused", tc.name)
		}
	}
}

func TestCode(t *testing.T) {
	c := CodeFor(goldenTeam, goldenAdmin)
	s := c.Encode()
	if !strings.HasPrefix(s, humancode.Relay.Prefix()+"-") || strings.ToLower(s) != s {
		t.Fatalf("code %q: want lower case, starting %s-", s, humancode.Relay.Prefix())
	}
	for _, in := range []string{s, strings.ToUpper(s), "  " + s + "\n", strings.Join(strings.SplitAfter(s, "aa"), "-")} {
		got, err := ParseCode(in)
		if err != nil {
			t.Fatalf("ParseCode(%q): %v", in, err)
		}
		if got.Topic != c.Topic || !got.Key.Equal(c.Key) {
			t.Errorf("ParseCode(%q) = %v; want %v", in, got, c)
		}
	}
	typo := []byte(s)
	typo[10] = map[bool]byte{true: 'b', false: 'a'}[typo[10] == 'a']
	data := s[len(humancode.Relay.Prefix())+1:]
	bad := []struct{ name, in, want string }{
		{"empty", "", "starts with fmr3"},
		{"invite code", humancode.Encode(humancode.Invite, make([]byte, 80)), "this is an invite code, not a relay code"},
		{"typo", string(typo), "mistyped: the checksum does not match"},
		{"older version", "fmr1-" + data, "version 1"},
		{"short payload", humancode.Encode(humancode.Relay, make([]byte, codeBytes-1)), "bytes, want"},
		{"long payload", humancode.Encode(humancode.Relay, make([]byte, codeBytes+1)), "bytes, want"},
		{"not base32", "fmr3-!!!!", "not a character"},
		{"long", "fmr3-" + strings.Repeat("a", humancode.MaxLen), "longer"},
	}
	for _, tc := range bad {
		_, err := ParseCode(tc.in)
		if !errors.Is(err, ErrCodeMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParseCode: %v; want ErrCodeMalformed mentioning %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseCode(f *testing.F) {
	f.Add(CodeFor(goldenTeam, goldenAdmin).Encode())
	f.Add(strings.ToUpper(CodeFor(goldenTeam, goldenAdmin).Encode()))
	f.Add("fmr3")
	f.Add("FMR2-AAAA")
	f.Add(humancode.Encode(humancode.Relay, make([]byte, codeBytes+1)))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCode(s)
		if err != nil {
			return
		}
		again, err := ParseCode(c.Encode())
		if err != nil || again.Topic != c.Topic || !again.Key.Equal(c.Key) {
			t.Fatalf("a parsed code does not round-trip: %v", err)
		}
	})
}
