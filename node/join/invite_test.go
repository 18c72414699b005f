package join

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/humancode"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

func testInvite(t testing.TB) Invite {
	t.Helper()
	pid, err := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	if err != nil {
		t.Fatal(err)
	}
	inv := Invite{
		Expires: time.Unix(1_800_000_000, 0),
		Inviter: peer.AddrInfo{ID: pid, Addrs: []ma.Multiaddr{
			ma.StringCast("/ip4/127.0.0.1/tcp/4001"),
			ma.StringCast("/ip4/192.0.2.7/udp/4001/quic-v1"),
		}},
	}
	for i := range inv.ID {
		inv.ID[i] = byte(i)
	}
	for i := range inv.Secret {
		inv.Secret[i] = byte(100 + i)
	}
	return inv
}

func sameInvite(a, b Invite) bool {
	if a.ID != b.ID || a.Secret != b.Secret || !a.Expires.Equal(b.Expires) || a.Inviter.ID != b.Inviter.ID ||
		len(a.Inviter.Addrs) != len(b.Inviter.Addrs) {
		return false
	}
	for i := range a.Inviter.Addrs {
		if !a.Inviter.Addrs[i].Equal(b.Inviter.Addrs[i]) {
			return false
		}
	}
	return true
}

func TestInviteCodeRoundTrip(t *testing.T) {
	inv := testInvite(t)
	code := inv.Code()
	if !strings.HasPrefix(code, humancode.Invite.Prefix()+"-") {
		t.Fatalf("code %q does not start with %s-", code, humancode.Invite.Prefix())
	}
	for _, in := range []string{code, "  " + strings.ToUpper(code) + "\n", strings.Join(strings.SplitAfter(code, "a"), " - ")} {
		got, err := ParseInvite(in)
		if err != nil {
			t.Fatalf("ParseInvite(%q): %v", in, err)
		}
		if !sameInvite(got, inv) {
			t.Errorf("ParseInvite(%q) = %+v; want %+v", in, got, inv)
		}
	}
	for _, s := range []string{inv.String(), fmt.Sprintf("%v", inv)} {
		if strings.Contains(s, fmt.Sprintf("%x", inv.Secret[:4])) {
			t.Errorf("an invite prints its secret: %s", s)
		}
	}
}

// TestInviteCodeKeepsWhatFits gives Code more addresses than a code holds, some too long for one:
// the code keeps addresses in order, only ones a code may hold, as many as fit, and always parses.
func TestInviteCodeKeepsWhatFits(t *testing.T) {
	long := ma.StringCast("/dns4/" + strings.Repeat("a", 250) + ".example/tcp/1")
	if len(long.Bytes()) <= maxInviteAddrLen {
		t.Fatalf("the long address is %d bytes; want more than %d", len(long.Bytes()), maxInviteAddrLen)
	}
	medium := func(c string) ma.Multiaddr {
		return ma.StringCast("/dns4/" + strings.Repeat(c, 240) + ".example/tcp/1")
	}
	short := func(i int) ma.Multiaddr { return ma.StringCast(fmt.Sprintf("/ip4/10.0.0.%d/tcp/4001", i)) }
	var shorts []ma.Multiaddr
	for i := range 40 {
		shorts = append(shorts, short(i))
	}
	for _, tc := range []struct {
		name  string
		addrs []ma.Multiaddr
		want  []ma.Multiaddr
	}{
		{"many short", shorts, shorts[:maxInviteAddrs]},
		{"too long, then short", append([]ma.Multiaddr{long}, shorts[:3]...), shorts[:3]},
		// Three medium ones fill most of the payload; the fourth does not fit, short ones do.
		{"payload full", []ma.Multiaddr{medium("a"), medium("b"), medium("c"), medium("d"), short(1), short(2)},
			[]ma.Multiaddr{medium("a"), medium("b"), medium("c"), short(1), short(2)}},
	} {
		inv := testInvite(t)
		inv.Inviter.Addrs = tc.addrs
		got, err := ParseInvite(inv.Code())
		if err != nil {
			t.Fatalf("%s: the code does not parse: %v", tc.name, err)
		}
		inv.Inviter.Addrs = tc.want
		if !sameInvite(got, inv) {
			t.Errorf("%s: kept addresses %v; want %v", tc.name, got.Inviter.Addrs, tc.want)
		}
	}
}

func TestParseInviteRejects(t *testing.T) {
	good := testInvite(t).Code()
	typo := []byte(good)
	typo[20] = map[bool]byte{true: 'b', false: 'a'}[typo[20] == 'a']
	payload, err := humancode.Decode(humancode.Invite, good)
	if err != nil {
		t.Fatal(err)
	}
	tooMany := append([]byte(nil), payload[:16+32+8+1+payload[16+32+8]]...)
	tooMany = append(tooMany, maxInviteAddrs+1)
	for _, tc := range []struct{ name, code, want string }{
		{"empty", "", "starts with fmi2"},
		{"relay code", humancode.Encode(humancode.Relay, make([]byte, 48)), "this is a relay code, not an invite code"},
		{"mistyped", string(typo), "mistyped: the checksum does not match"},
		{"truncated", good[:len(good)-10], ""},
		{"huge", good + strings.Repeat("a", humancode.MaxLen), "longer than"},
		{"short payload", humancode.Encode(humancode.Invite, payload[:40]), "unexpected end"},
		{"trailing bytes", humancode.Encode(humancode.Invite, append(payload, 0)), "trailing"},
		{"too many addresses", humancode.Encode(humancode.Invite, tooMany), "17 addresses"},
		{"bad inviter", humancode.Encode(humancode.Invite, append(append([]byte(nil), payload[:56]...), 1, 0xff, 0)), "inviter"},
	} {
		_, err := ParseInvite(tc.code)
		if !errors.Is(err, ErrInviteMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParseInvite: %v; want ErrInviteMalformed mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestNewInvite(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	a, err := NewInvite(now, 0, peer.AddrInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(DefaultInviteTTL).Truncate(time.Second); !a.Expires.Equal(want) {
		t.Errorf("default expiry %v; want %v", a.Expires, want)
	}
	b, err := NewInvite(now, MaxInviteTTL, peer.AddrInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || a.Secret == b.Secret || a.Secret == ([32]byte{}) {
		t.Errorf("two invites share an id or secret, or the secret is zero")
	}
	if _, err := NewInvite(now, MaxInviteTTL+time.Second, peer.AddrInfo{}); err == nil {
		t.Errorf("an invite longer than MaxInviteTTL was made")
	}
}

func TestRecord(t *testing.T) {
	for _, r := range []Record{
		{Team: crdt.TeamID{1}, Secret: [32]byte{2}, Expires: time.Unix(1e9, 0)},
		{Team: crdt.TeamID{1}, Secret: [32]byte{2}, Expires: time.Unix(1e9, 0), Link: true, Person: identity.DeviceID{3}},
	} {
		got, err := unmarshalRecord(r.Marshal())
		if err != nil || got != r {
			t.Errorf("record round trip: %+v, %v; want %+v", got, err, r)
		}
	}
	b := Record{Link: true}.Marshal()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"truncated", b[:len(b)-1]},
		{"trailing", append(b, 0)},
		{"version 1", append([]byte{1}, b[1:1+32+32+8]...)},
		{"link byte 2", append(append(append([]byte(nil), b[:73]...), 2), b[74:]...)},
		{"expiry out of range", append(append(append([]byte(nil), b[:65]...), 0xff, 0, 0, 0, 0, 0, 0, 0), b[73:]...)},
	} {
		if _, err := unmarshalRecord(tc.b); err == nil {
			t.Errorf("%s: record accepted", tc.name)
		}
	}
}

func FuzzParseInvite(f *testing.F) {
	f.Add(testInvite(f).Code())
	f.Add(humancode.Invite.Prefix())
	f.Add("FMI2-AAAA")
	f.Add(humancode.Encode(humancode.Relay, make([]byte, 48)))
	f.Fuzz(func(t *testing.T, code string) {
		inv, err := ParseInvite(code)
		if err != nil {
			return
		}
		again, err := ParseInvite(inv.Code())
		if err != nil {
			t.Fatalf("re-encoded invite does not parse: %v", err)
		}
		if !sameInvite(again, inv) {
			t.Fatalf("invite changed on re-encoding: %+v; want %+v", again, inv)
		}
	})
}

func FuzzInviteRecord(f *testing.F) {
	f.Add(Record{Team: crdt.TeamID{1}, Expires: time.Unix(1e9, 0)}.Marshal())
	f.Add(Record{Team: crdt.TeamID{1}, Link: true, Person: identity.DeviceID{2}, Expires: time.Unix(1e9, 0)}.Marshal())
	f.Add(Record{Team: crdt.TeamID{1}, Link: true, Person: identity.DeviceID{2}, Expires: time.Unix(1e9, 0), DeviceName: "laptop"}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := unmarshalRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatal("invite record is not canonical")
		}
	})
}
