package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestRealHostsOverQUIC runs two nodes with real libp2p hosts on loopback, QUIC only, so the
// transport stack the binary uses (QUIC, Noise via TLS in QUIC's case, the resource and connection
// managers) is exercised, not just mocknet.
func TestRealHostsOverQUIC(t *testing.T) {
	mk := func(name string) *Node {
		st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if _, err := Init(st, name); err != nil {
			t.Fatal(err)
		}
		n, err := New(Config{Store: st, NoMDNS: true, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a, b := mk("Dr Banda"), mk("Nurse Phiri")
	team, err := a.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Invite(team.ID.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range inv.Inviter.Addrs {
		if !strings.HasSuffix(addr.String(), "/quic-v1") {
			t.Errorf("invite address %s is not QUIC", addr)
		}
	}
	if _, err := b.Join(context.Background(), inv.Code()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Send(team.ID.String(), crdt.Message{Text: "hello over QUIC"}); err != nil {
		t.Fatal(err)
	}
	tb := &testNode{Node: b}
	ms := waitMessages(t, tb, team.ID.String(), 1)
	if ms[0].Text != "hello over QUIC" || ms[0].AuthorName != "Dr Banda" {
		t.Errorf("got %q by %q; want %q by %q", ms[0].Text, ms[0].AuthorName, "hello over QUIC", "Dr Banda")
	}
}
