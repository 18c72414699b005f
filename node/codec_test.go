package node

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
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

func TestInviteCodeRoundTrip(t *testing.T) {
	inv := testInvite(t)
	code := inv.Code()
	if !strings.HasPrefix(code, "fm1") {
		t.Fatalf("code %q lacks its prefix", code)
	}
	got, err := ParseInvite("  " + strings.ToUpper(code) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != inv.ID || got.Secret != inv.Secret || !got.Expires.Equal(inv.Expires) || got.Inviter.ID != inv.Inviter.ID {
		t.Errorf("got %v; want %v", got, inv)
	}
	if len(got.Inviter.Addrs) != 2 || !got.Inviter.Addrs[1].Equal(inv.Inviter.Addrs[1]) {
		t.Errorf("addrs = %v; want %v", got.Inviter.Addrs, inv.Inviter.Addrs)
	}
	if strings.Contains(inv.String(), string(inv.Secret[:4])) {
		t.Error("String() prints the secret")
	}
}

func TestParseInviteRejects(t *testing.T) {
	good := testInvite(t).Code()
	for _, tc := range []struct{ name, code string }{
		{"empty", ""},
		{"no prefix", good[3:]},
		{"truncated", good[:len(good)-10]},
		{"trailing", good + "aaaaaaaa"},
		{"bad base32", good[:20] + "!!" + good[22:]},
		{"huge", "fm1" + strings.Repeat("a", 5000)},
		{"bad version", "fm1" + strings.ToLower(inviteEncoding.EncodeToString([]byte{9, 1, 2, 3}))},
	} {
		if _, err := ParseInvite(tc.code); !errors.Is(err, ErrInviteMalformed) {
			t.Errorf("%s: err = %v; want ErrInviteMalformed", tc.name, err)
		}
	}
}

func FuzzParseInvite(f *testing.F) {
	f.Add(testInvite(f).Code())
	f.Add("fm1")
	f.Add("fm1aaaa")
	f.Fuzz(func(t *testing.T, code string) {
		inv, err := ParseInvite(code)
		if err != nil {
			return
		}
		again, err := ParseInvite(inv.Code())
		if err != nil {
			t.Fatalf("re-encoded invite does not parse: %v", err)
		}
		if again.ID != inv.ID || again.Secret != inv.Secret || again.Inviter.ID != inv.Inviter.ID {
			t.Fatal("invite changed on re-encoding")
		}
	})
}

func TestTeamRecordRoundTrip(t *testing.T) {
	rec := &teamRecord{}
	rec.ID[0], rec.Genesis[1] = 7, 9
	got, err := unmarshalTeamRecord(rec.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if *got != *rec {
		t.Errorf("round trip changed the record")
	}
	b := rec.marshal()
	for i := 0; i < len(b); i++ {
		if _, err := unmarshalTeamRecord(b[:i]); err == nil {
			t.Errorf("truncated record of %d bytes accepted", i)
		}
	}
	if _, err := unmarshalTeamRecord(append(b, 0)); err == nil {
		t.Error("record with a trailing byte accepted")
	}
	old := append([]byte{1}, b[1:]...)
	if _, err := unmarshalTeamRecord(old); err == nil || !strings.Contains(err.Error(), "before key epochs") {
		t.Errorf("a version-1 record: %v; want a clear refusal", err)
	}
}

func FuzzTeamRecord(f *testing.F) {
	f.Add((&teamRecord{ID: crdt.TeamID{1}, Genesis: crdt.OpID{2}}).marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := unmarshalTeamRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(rec.marshal(), b) {
			t.Fatal("team record is not canonical")
		}
	})
}

func FuzzJoinMessages(f *testing.F) {
	f.Add(joinRequest{Name: "Nurse Phiri"}.marshal())
	f.Add(joinAnswer{Team: crdt.TeamID{3}, History: []historyItem{{Op: []byte{1, 2}, Env: []byte{3}}, {Op: []byte{4}}}}.marshal())
	f.Add(joinAnswer{Refusal: "invite code already used"}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := unmarshalJoinRequest(b); err == nil {
			if !bytes.Equal(r.marshal(), b) {
				t.Fatal("join request is not canonical")
			}
		}
		if a, err := unmarshalJoinAnswer(b); err == nil && a.Refusal == "" {
			if !bytes.Equal(a.marshal(), b) {
				t.Fatal("join answer is not canonical")
			}
		}
	})
}

func FuzzInviteRecord(f *testing.F) {
	f.Add(inviteRecord{Team: crdt.TeamID{1}, Expires: time.Unix(1e9, 0)}.marshal())
	f.Add(inviteRecord{Team: crdt.TeamID{1}, Link: true, Person: identity.DeviceID{2}, Expires: time.Unix(1e9, 0)}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := unmarshalInviteRecord(b)
		if err != nil || b[0] != 2 {
			return
		}
		if !bytes.Equal(r.marshal(), b) {
			t.Fatal("invite record is not canonical")
		}
	})
}
