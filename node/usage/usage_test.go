package usage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	stdsync "sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	lnoise "github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// fakeClock is a settable clock for the accounting tests.
type fakeClock struct {
	mu stdsync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func newTestStore(t *testing.T) *storage.Store {
	t.Helper()
	// A cheap Argon2id keeps the tests fast; production uses the defaults.
	st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testPeer returns the peer id of a new device, and the device.
func testPeer(t *testing.T) (peer.ID, identity.DeviceID) {
	t.Helper()
	d, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	id := d.ID()
	pk, err := lcrypto.UnmarshalEd25519PublicKey(id[:])
	if err != nil {
		t.Fatal(err)
	}
	p, err := peer.IDFromPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	return p, id
}

func gossipRPC(topic string, data []byte) *pubsub.RPC {
	return &pubsub.RPC{RPC: pb.RPC{Publish: []*pb.Message{{Data: data, Topic: &topic}}}}
}

// storedUsage returns every usage counter in the store.
func storedUsage(t *testing.T, st *storage.Store) map[storage.UsageKey]storage.UsageCount {
	t.Helper()
	out := make(map[storage.UsageKey]storage.UsageCount)
	if err := st.Usage(0, ^uint32(0), func(k storage.UsageKey, c storage.UsageCount) error {
		out[k] = c
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

var eat = time.FixedZone("EAT", 3*3600)

// TestCountsLandInDayTeamProtocol feeds every source of counts over two local days and checks where
// each byte lands: the day in the clock's time zone, the protocol, the peer, the team.
func TestCountsLandInDayTeamProtocol(t *testing.T) {
	st := newTestStore(t)
	clock := &fakeClock{t: time.Date(2025, 3, 14, 23, 59, 0, 0, eat)}
	var mine, foreign envelope.Topic
	mine[0], foreign[0] = 1, 2
	m := New(st, Config{Now: clock.now, Topic: func(name string) (envelope.Topic, bool) {
		return mine, name == meshconf.TopicName(mine)
	}})
	pa, da := testPeer(t)
	pb, db := testPeer(t)
	tr := m.Tracer()

	m.LogSentMessageStream(100, "/meshsub/1.2.0", pa)
	m.LogRecvMessageStream(50, recon.Protocol, pb)
	m.LogSentMessage(100) // counted by the stream variant only
	msg := gossipRPC(meshconf.TopicName(mine), bytes.Repeat([]byte("e"), 1000))
	tr.RecvRPC(msg)
	tr.SendRPCCompleted(msg, pa, time.Millisecond)
	tr.RecvRPC(gossipRPC(meshconf.TopicName(foreign), make([]byte, 500))) // not one of our teams
	tr.RecvRPC(gossipRPC("not-fieldmesh", make([]byte, 500)))
	m.SyncBytes(mine, 10, 20)
	// 00:30 in Nairobi is still the 14th in UTC: it must count on the 15th.
	clock.set(time.Date(2025, 3, 15, 0, 30, 0, 0, eat))
	m.LogSentMessageStream(7, "/meshsub/1.2.0", pa)
	m.LogRecvMessageStream(3, "", pb) // bytes of protocol negotiation

	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	gossip := uint64(pbField(messageSize(msg.Publish[0])))
	if gossip <= 1000 || gossip > 1100 {
		t.Fatalf("gossip message size %d; want a little over 1000", gossip)
	}
	want := map[storage.UsageKey]storage.UsageCount{
		{Day: 20250314, Protocol: "/meshsub/1.2.0", Peer: string(pa)}: {Sent: 100},
		{Day: 20250314, Protocol: recon.Protocol, Peer: string(pb)}:   {Received: 50},
		{Day: 20250314, Topic: mine, Protocol: labelGossip}:           {Sent: gossip, Received: gossip},
		{Day: 20250314, Topic: mine, Protocol: labelSync}:             {Sent: 10, Received: 20},
		{Day: 20250315, Protocol: "/meshsub/1.2.0", Peer: string(pa)}: {Sent: 7},
		{Day: 20250315, Protocol: labelNegotiation, Peer: string(pb)}: {Received: 3},
	}
	if got := storedUsage(t, st); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored counters:\ngot  %v\nwant %v", got, want)
	}

	var teamID crdt.TeamID
	teamID[0] = 9
	devices := map[peer.ID]identity.DeviceID{pa: da, pb: db}
	r, err := m.Report("2025-03", Names{
		Team: func(tp envelope.Topic) (crdt.TeamID, string, bool) {
			return teamID, "Maternity Ward 3", tp == mine
		},
		Device: func(p peer.ID) (identity.DeviceID, error) {
			if d, ok := devices[p]; ok {
				return d, nil
			}
			return identity.DeviceID{}, fmt.Errorf("unknown peer %s", p)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Month != "2025-03" || r.Total != (Bytes{Sent: 107, Received: 53, Total: 160}) {
		t.Errorf("month %q total %+v; want 2025-03, 107 sent, 53 received", r.Month, r.Total)
	}
	if len(r.Days) != 2 || r.Days[0].Date != "2025-03-14" || r.Days[0].Total != 150 || r.Days[1].Date != "2025-03-15" || r.Days[1].Total != 10 {
		t.Errorf("days %+v; want the 14th with 150 bytes, the 15th with 10", r.Days)
	}
	if len(r.Teams) != 1 || r.Teams[0].Name != "Maternity Ward 3" || r.Teams[0].ID != teamID.String() ||
		r.Teams[0].Gossip.Total != 2*gossip || r.Teams[0].Sync.Total != 30 || r.Teams[0].Total != 2*gossip+30 {
		t.Errorf("teams %+v; want one team with gossip %d, sync 30", r.Teams, 2*gossip)
	}
	if len(r.Protocols) != 3 || r.Protocols[0].Protocol != "/meshsub/1.2.0" || r.Protocols[0].Sent != 107 {
		t.Errorf("protocols %+v; want meshsub first with 107 sent, then two more", r.Protocols)
	}
	if len(r.Peers) != 2 || r.Peers[0].Device != da.Short() || r.Peers[0].Total != 107 || r.Peers[1].Device != db.Short() {
		t.Errorf("peers %+v; want %s first with 107 bytes, then %s", r.Peers, da.Short(), db.Short())
	}
	// The team bytes here exceed the wire bytes (the wire counts came from a hand-fed reporter): the
	// unattributed part is floored at zero, never wrapped.
	if r.Unattributed.Sent != 0 || r.Unattributed.Received != 0 {
		t.Errorf("unattributed %+v; want zero", r.Unattributed)
	}
	// Without names, teams and devices are reported unnamed.
	if r, err := m.Report("2025-03", Names{}); err != nil || len(r.Teams) != 1 || r.Teams[0].ID != "" || r.Teams[0].Name != "" ||
		len(r.Peers) != 2 || r.Peers[0].Device != "?" {
		t.Errorf("report without names: %+v %+v, %v; want an unnamed team and peers of device ?", r.Teams, r.Peers, err)
	}
	if r, err := m.Report("2025-04", Names{}); err != nil || r.Total.Total != 0 || len(r.Days) != 0 {
		t.Errorf("April: %+v, %v; want an empty report", r, err)
	}
	for _, bad := range []string{"2025-3", "March", "2025-13", "2025-03-01"} {
		if _, err := m.Report(bad, Names{}); err == nil {
			t.Errorf("Report(%q) succeeded; want an error", bad)
		}
	}
}

// TestFlushBatching: counts stay in memory until a flush, which writes them in one transaction; an
// idle flush writes nothing; the loop flushes on its tick.
func TestFlushBatching(t *testing.T) {
	st := newTestStore(t)
	clock := &fakeClock{t: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)}
	m := New(st, Config{Now: clock.now})
	p, _ := testPeer(t)
	for range 1000 {
		m.LogSentMessageStream(10, "/meshsub/1.2.0", p)
	}
	if got := storedUsage(t, st); len(got) != 0 || m.flushes != 0 {
		t.Fatalf("before a flush: %d flushes, store %v; want nothing written", m.flushes, got)
	}
	if s := m.GetBandwidthTotals(); s.TotalOut != 10000 {
		t.Errorf("unflushed totals %+v; want 10000 out", s)
	}
	if r, err := m.Report("2025-03", Names{}); err != nil || r.Total.Sent != 10000 {
		t.Errorf("report before the flush: %+v, %v; want the unflushed 10000 bytes", r.Total, err)
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	key := storage.UsageKey{Day: 20250314, Protocol: "/meshsub/1.2.0", Peer: string(p)}
	if got := storedUsage(t, st); len(got) != 1 || got[key].Sent != 10000 || m.flushes != 1 {
		t.Fatalf("after one flush: %d flushes, store %v; want one transaction of 10000 bytes", m.flushes, got)
	}
	if err := m.Flush(); err != nil || m.flushes != 1 {
		t.Errorf("an idle flush: %v, %d flushes; want no write", err, m.flushes)
	}
	if r, err := m.Report("2025-03", Names{}); err != nil || r.Total.Sent != 10000 {
		t.Errorf("report after the flush: %+v, %v; want 10000 bytes, counted once", r.Total, err)
	}

	// The loop: a tick flushes what came since.
	m.flushedC = make(chan struct{}, 1)
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.run(ctx, tick) }()
	m.LogSentMessageStream(5, "/meshsub/1.2.0", p)
	tick <- clock.now()
	select {
	case <-m.flushedC:
	case <-time.After(30 * time.Second):
		t.Fatal("the loop did not flush on its tick")
	}
	cancel()
	<-done
	if got := storedUsage(t, st); got[key].Sent != 10005 || m.flushes != 2 {
		t.Errorf("after the tick: %d flushes, %v; want 10005 bytes in 2 flushes", m.flushes, got[key])
	}
}

// TestBoundsPeersAndProtocols: a day keeps at most maxPeers peers and maxProtocols protocols, the
// busiest, across flushes; the rest is folded, and no byte is lost.
func TestBoundsPeersAndProtocols(t *testing.T) {
	st := newTestStore(t)
	clock := &fakeClock{t: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)}
	m := New(st, Config{Now: clock.now})
	const peers = maxPeers + 18
	ps := make([]peer.ID, peers)
	var sum uint64
	for i := range ps {
		ps[i], _ = testPeer(t)
	}
	// Two flushes: the second brings busier peers, which must push out the quietest stored ones.
	for round, idx := range [][2]int{{0, 30}, {30, peers}} {
		for i := idx[0]; i < idx[1]; i++ {
			n := int64(100 * (i + 1))
			m.LogSentMessageStream(n, "/meshsub/1.2.0", ps[i])
			sum += uint64(n)
		}
		for i := range maxProtocols + 5 {
			m.LogRecvMessageStream(int64(i+1), protocol.ID(fmt.Sprintf("/p/%d", i)), ps[0])
			sum += uint64(i + 1)
		}
		if err := m.Flush(); err != nil {
			t.Fatalf("flush %d: %v", round, err)
		}
	}
	got := storedUsage(t, st)
	named, protos := map[string]bool{}, map[string]bool{}
	var total uint64
	for k, c := range got {
		total += c.Total()
		if k.Peer != "" {
			named[k.Peer] = true
		}
		protos[k.Protocol] = true
	}
	if total != sum {
		t.Errorf("stored %d bytes; want %d (folding must not lose or double any)", total, sum)
	}
	if len(named) != maxPeers {
		t.Errorf("%d peers stored separately; want %d", len(named), maxPeers)
	}
	for i := peers - maxPeers; i < peers; i++ {
		if !named[string(ps[i])] {
			t.Errorf("peer %d (one of the busiest) was folded", i)
		}
	}
	if len(protos) > maxProtocols+1 || !protos[labelOther] || !protos["/meshsub/1.2.0"] {
		t.Errorf("%d protocols stored (%v); want at most %d plus %q, meshsub kept", len(protos), protos, maxProtocols, labelOther)
	}
}

// TestBandwidthReporterWithDisableMetrics: a libp2p host built as the node builds it, with
// DisableMetrics, still reports every stream's bytes, by protocol and peer, to BandwidthReporter.
func TestBandwidthReporterWithDisableMetrics(t *testing.T) {
	m := New(newTestStore(t), Config{})
	mk := func(rep *Meter) host.Host {
		opts := []libp2p.Option{
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Security(lnoise.ID, lnoise.New),
			libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
			libp2p.Transport(tcp.NewTCPTransport),
			libp2p.DisableMetrics(),
		}
		if rep != nil {
			opts = append(opts, libp2p.BandwidthReporter(rep))
		}
		h, err := libp2p.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	a, b := mk(m), mk(nil)
	const proto = "/fieldmesh/test/1.0.0"
	b.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		if _, err := io.Copy(io.Discard, s); err == nil {
			s.Write([]byte("ok"))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := a.NewStream(ctx, b.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	reply, err := io.ReadAll(s)
	s.Close()
	if err != nil || string(reply) != "ok" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	got := m.GetBandwidthForProtocol(proto)
	if got.TotalOut < 5000 || got.TotalIn < 2 {
		t.Errorf("reported %+v for %s; want at least 5000 bytes out and 2 in", got, proto)
	}
	if byPeer := m.GetBandwidthForPeer(b.ID()); byPeer.TotalOut < 5000 {
		t.Errorf("reported %+v for the peer; want at least 5000 bytes out", byPeer)
	}
}
