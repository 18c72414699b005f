package meshconf

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLatencyScore(t *testing.T) {
	for _, c := range []struct {
		rtt  time.Duration
		want float64
	}{
		{0, 0},
		{-time.Millisecond, 0},
		{time.Millisecond, 100},
		{11 * time.Millisecond, 100},
		{12 * time.Millisecond, 95},
		{20 * time.Millisecond, 85},
		{21 * time.Millisecond, 85}, // within a step of 20 ms: a tie
		{100 * time.Millisecond, 50},
		{500 * time.Millisecond, 15},
		{999 * time.Millisecond, 0},
		{time.Second, 0},
		{time.Minute, 0},
	} {
		if got := LatencyScore(c.rtt); got != c.want {
			t.Errorf("LatencyScore(%v) = %v; want %v", c.rtt, got, c.want)
		}
	}
	sp, _ := GossipPeerScore(func(peer.ID) time.Duration { return 20 * time.Millisecond })
	if got := sp.AppSpecificScore("x"); got != 85 {
		t.Errorf("peer score with a 20 ms round trip: P5 = %v; want 85", got)
	}
	sp, _ = GossipPeerScore(nil)
	if got := sp.AppSpecificScore("x"); got != 0 {
		t.Errorf("peer score without round trips: P5 = %v; want 0", got)
	}
}

func newLoopbackHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProber: a host measures a round trip to a peer when it connects (and to a peer it was already
// connected to when the prober started), forgets it when the connection goes, and stops with its
// context.
func TestProber(t *testing.T) {
	a, b, c := newLoopbackHost(t), newLoopbackHost(t), newLoopbackHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: c.ID(), Addrs: c.Addrs()}); err != nil {
		t.Fatal(err)
	}
	pr, err := StartProber(ctx, a, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := pr.RTT(b.ID()); got != 0 {
		t.Fatalf("round trip to a peer never met: %v; want 0", got)
	}
	waitFor(t, "a round trip to the peer connected before the start", func() bool { return pr.RTT(c.ID()) > 0 })
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a round trip to a new peer", func() bool { return pr.RTT(b.ID()) > 0 })
	if got := pr.RTT(b.ID()); got > 5*time.Second {
		t.Errorf("round trip on loopback %v; want well under the probe timeout", got)
	}
	if err := a.Network().ClosePeer(b.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the round trip forgotten after disconnecting", func() bool { return pr.RTT(b.ID()) == 0 })
	if pr.RTT(c.ID()) == 0 {
		t.Error("disconnecting one peer forgot another's round trip")
	}
	cancel()
	done := make(chan struct{})
	go func() { pr.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("prober did not stop after its context ended")
	}
	var nilp *Prober
	if nilp.RTT(b.ID()) != 0 {
		t.Error("nil prober knows a round trip")
	}
}
