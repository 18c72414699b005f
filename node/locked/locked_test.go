package locked_test

import (
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/locked"
	"github.com/fieldmesh/fieldmesh/node/wipeproto/wipeprototest"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// A locked phone that stays connected to a peer (its clinic's relay, a colleague's phone) learns of a
// wipe order the peer is handed after the connection began: it asks its connected peers again each
// WipeAsk, not only when a connection starts.
func TestOrderReachesLongConnection(t *testing.T) {
	admin, err := identity.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := identity.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// The carrier: a peer that answers wipe order fetches from what it carries, and never drops the
	// connection.
	carrier, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer carrier.Close()
	carried := wipeprototest.Serve(carrier)

	pub, _, err := locked.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	spool, err := locked.CreateSpool(filepath.Join(t.TempDir(), "sealed-inbox"), pub)
	if err != nil {
		t.Fatal(err)
	}
	wiped := make(chan *wipeorder.Order, 1)
	d, err := locked.Start(locked.Config{
		Key:         lost.SigningKey(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		State: node.Sealed{Device: lost.ID(), Admins: map[identity.DeviceID]bool{admin.ID(): true},
			Members: map[identity.DeviceID]bool{admin.ID(): true, lost.ID(): true},
			Dial:    []peer.AddrInfo{{ID: carrier.ID(), Addrs: carrier.Addrs()}}},
		Spool:          spool,
		OnWipe:         func(o *wipeorder.Order) { wiped <- o },
		RedialInterval: time.Hour, // only the first dial: the connection must not be redone
		WipeAsk:        50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lostPeer := d.Host().ID()

	select {
	case <-carried.Asked: // the ask a new connection makes, answered with nothing
	case <-time.After(30 * time.Second):
		t.Fatal("the locked device did not connect to the carrier and ask for orders within 30 s")
	}
	conns := carrier.Network().ConnsToPeer(lostPeer)

	o, err := wipeorder.Issue(admin, lost.ID(), time.Now(), time.Hour, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	carried.Add(o)
	select {
	case got := <-wiped:
		if got.Key() != o.Key() {
			t.Fatal("wiped on another order than the one carried")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the locked device did not learn of the order its connected peer was handed within 30 s")
	}
	now := carrier.Network().ConnsToPeer(lostPeer)
	if len(now) != 1 || len(conns) != 1 || now[0].ID() != conns[0].ID() {
		t.Fatalf("the order came over a new connection (%d then %d): this test is about one that lasts", len(conns), len(now))
	}
}
