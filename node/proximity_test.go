package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node/proximity"
	"github.com/fieldmesh/fieldmesh/node/proximity/proximitytest"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// proximityNode starts a node whose host listens only on an in-memory radio of air: no IP address at
// all, so whatever reaches it came over the radio.
func proximityNode(t *testing.T, air *proximitytest.Air, name string) (*Node, *proximitytest.Radio) {
	t.Helper()
	st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	id, err := Init(st, name)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := PeerID(id.Device.ID())
	if err != nil {
		t.Fatal(err)
	}
	r := air.NewRadio()
	px, err := proximity.New(r, pid.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Attach(px)
	n, err := New(Config{Store: st, NoMDNS: true, Proximity: px, ListenAddrs: []string{px.Multiaddr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, r
}

// TestProximityOnly runs two nodes that share no network, only an in-memory proximity radio: they find
// each other over it, one joins the other's team with an invite whose only address is a proximity
// address, and messages go both ways. Every connection is a proximity link, and the radio carried
// the bytes.
func TestProximityOnly(t *testing.T) {
	air := proximitytest.New()
	t.Cleanup(air.Close) // after the nodes (cleanups run last-in first-out)
	a, ra := proximityNode(t, air, "Dr Banda")
	b, rb := proximityNode(t, air, "Nurse Phiri")

	for _, n := range []*Node{a, b} {
		for _, addr := range n.Status().Addrs {
			if _, err := addr.ValueForProtocol(proximity.Code); err != nil {
				t.Fatalf("%s listens on %s, not a proximity address", n.id.Name, addr)
			}
		}
	}
	team, err := a.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Invite(team.ID.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Inviter.Addrs) == 0 {
		t.Fatal("the invite carries no address")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Join(ctx, inv.Code()); err != nil {
		t.Fatalf("join over the radio: %v", err)
	}
	if _, _, err := a.Send(team.ID.String(), crdt.Message{Text: "hello over the radio"}); err != nil {
		t.Fatal(err)
	}
	ms := waitMessages(t, &testNode{Node: b}, team.ID.String(), 1)
	if ms[0].Text != "hello over the radio" || ms[0].AuthorName != "Dr Banda" {
		t.Errorf("B got %q by %q", ms[0].Text, ms[0].AuthorName)
	}
	if _, _, err := b.Send(team.ID.String(), crdt.Message{Text: "on my way"}); err != nil {
		t.Fatal(err)
	}
	ms = waitMessages(t, &testNode{Node: a}, team.ID.String(), 2)
	if ms[1].Text != "on my way" || ms[1].AuthorName != "Nurse Phiri" {
		t.Errorf("A got %q by %q", ms[1].Text, ms[1].AuthorName)
	}
	for _, n := range []*Node{a, b} {
		for _, c := range n.host.Network().Conns() {
			if !isProximity(c.RemoteMultiaddr()) {
				t.Errorf("%s has a connection over %s", n.id.Name, c.RemoteMultiaddr())
			}
		}
	}
	if ra.Sent() == 0 || rb.Sent() == 0 {
		t.Errorf("payloads sent over the radio: A %d, B %d; want both > 0", ra.Sent(), rb.Sent())
	}
}

// TestProximityOutOfRange: two nodes whose radios are apart cannot use an invite: the radio is the only
// way between them, and it does not pretend to connect.
func TestProximityOutOfRange(t *testing.T) {
	air := proximitytest.New()
	t.Cleanup(air.Close)
	a, ra := proximityNode(t, air, "Dr Banda")
	b, rb := proximityNode(t, air, "Nurse Phiri")
	air.Separate(ra, rb)
	team, err := a.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Invite(team.ID.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Join(ctx, inv.Code()); err == nil || !strings.Contains(err.Error(), "reach") {
		t.Fatalf("join with the radios apart: %v; want the inviter unreachable", err)
	}
	if got := len(b.Teams()); got != 0 {
		t.Errorf("B has %d teams", got)
	}
}

func isProximity(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(proximity.Code)
	return err == nil
}

// TestProximitySimultaneousDial: two devices dial each other at the same moment over a radio that
// keeps one link per pair of devices (as Nearby Connections does). Both dials succeed, over the one
// link: the dial that finds the other device's link open waits for the host to hold that
// connection, then the host's dialler takes it.
func TestProximitySimultaneousDial(t *testing.T) {
	air := proximitytest.New()
	t.Cleanup(air.Close)
	a, _ := proximityNode(t, air, "Dr Banda")
	b, _ := proximityNode(t, air, "Nurse Phiri")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for _, d := range []struct{ from, to *Node }{{a, b}, {b, a}} {
		go func() {
			errs <- d.from.host.Connect(network.WithForceDirectDial(ctx, "test"), d.to.host.Peerstore().PeerInfo(d.to.host.ID()))
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
