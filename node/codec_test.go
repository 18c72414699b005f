package node

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/crypto/seal"
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
	k1, _ := seal.NewEpochKey(nil)
	k2, _ := seal.NewEpochKey(nil)
	rec := &teamRecord{Epochs: []epochKey{{Epoch: 1, Key: k1}, {Epoch: 2, Key: k2}}}
	rec.ID[0] = 7
	got, err := unmarshalTeamRecord(rec.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != rec.ID || len(got.Epochs) != 2 || !got.Epochs[1].Key.Equal(k2) || got.Epochs[1].Epoch != 2 {
		t.Errorf("round trip changed the record")
	}
	b := rec.marshal()
	for i := 0; i < len(b); i++ {
		if _, err := unmarshalTeamRecord(b[:i]); err == nil {
			t.Errorf("truncated record of %d bytes accepted", i)
		}
	}
}

func FuzzTeamRecord(f *testing.F) {
	k, _ := seal.NewEpochKey(nil)
	f.Add((&teamRecord{Epochs: []epochKey{{Epoch: 1, Key: k}}}).marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := unmarshalTeamRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(rec.marshal()[:33], b[:33]) {
			t.Fatal("id changed on re-encoding")
		}
	})
}

func FuzzJoinMessages(f *testing.F) {
	k, _ := seal.NewEpochKey(nil)
	f.Add(joinRequest{Name: "Nurse Phiri"}.marshal())
	f.Add(joinAnswer{Epoch: 3, Key: k}.marshal())
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
