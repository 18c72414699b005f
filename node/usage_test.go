package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	stdsync "sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
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

func newTestStore(t *testing.T) (*storage.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := storage.Create(dir, storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, dir
}

func testPeer(t *testing.T) peer.ID {
	t.Helper()
	d, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PeerID(d.ID())
	if err != nil {
		t.Fatal(err)
	}
	return p
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

// TestUsageCountsLandInDayTeamProtocol feeds every source of counts over two local days and checks
// where each byte lands: the day in the clock's time zone, the protocol, the peer, the team.
func TestUsageCountsLandInDayTeamProtocol(t *testing.T) {
	st, _ := newTestStore(t)
	clock := &fakeClock{t: time.Date(2025, 3, 14, 23, 59, 0, 0, eat)}
	var mine, foreign envelope.Topic
	mine[0], foreign[0] = 1, 2
	u := newUsage(st, clock.now, slog.New(slog.DiscardHandler), func(t envelope.Topic) bool { return t == mine })
	pa, pb := testPeer(t), testPeer(t)
	tr := u.tracer()

	u.LogSentMessageStream(100, "/meshsub/1.2.0", pa)
	u.LogRecvMessageStream(50, SyncProtocolV2, pb)
	u.LogSentMessage(100) // counted by the stream variant only
	msg := gossipRPC(meshconf.TopicName(mine), bytes.Repeat([]byte("e"), 1000))
	tr.RecvRPC(msg)
	tr.SendRPCCompleted(msg, pa, time.Millisecond)
	tr.RecvRPC(gossipRPC(meshconf.TopicName(foreign), make([]byte, 500))) // not one of our teams
	tr.RecvRPC(gossipRPC("not-fieldmesh", make([]byte, 500)))
	u.syncBytes(mine, 10, 20)
	// 00:30 in Nairobi is still the 14th in UTC: it must count on the 15th.
	clock.set(time.Date(2025, 3, 15, 0, 30, 0, 0, eat))
	u.LogSentMessageStream(7, "/meshsub/1.2.0", pa)
	u.LogRecvMessageStream(3, "", pb) // bytes of protocol negotiation

	if err := u.flush(); err != nil {
		t.Fatal(err)
	}
	gossip := uint64(pbField(messageSize(msg.Publish[0])))
	if gossip <= 1000 || gossip > 1100 {
		t.Fatalf("gossip message size %d; want a little over 1000", gossip)
	}
	want := map[storage.UsageKey]storage.UsageCount{
		{Day: 20250314, Protocol: "/meshsub/1.2.0", Peer: string(pa)}: {Sent: 100},
		{Day: 20250314, Protocol: SyncProtocolV2, Peer: string(pb)}:   {Received: 50},
		{Day: 20250314, Topic: mine, Protocol: usageGossip}:           {Sent: gossip, Received: gossip},
		{Day: 20250314, Topic: mine, Protocol: usageSync}:             {Sent: 10, Received: 20},
		{Day: 20250315, Protocol: "/meshsub/1.2.0", Peer: string(pa)}: {Sent: 7},
		{Day: 20250315, Protocol: usageNegotiation, Peer: string(pb)}: {Received: 3},
	}
	if got := storedUsage(t, st); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored counters:\ngot  %v\nwant %v", got, want)
	}

	var teamID crdt.TeamID
	teamID[0] = 9
	r, err := u.report("2025-03", func(tp envelope.Topic) (crdt.TeamID, string, bool) {
		return teamID, "Maternity Ward 3", tp == mine
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Month != "2025-03" || r.Total != (UsageBytes{Sent: 107, Received: 53, Total: 160}) {
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
	da, _ := deviceOf(pa)
	if len(r.Peers) != 2 || r.Peers[0].Device != da.Short() || r.Peers[0].Total != 107 {
		t.Errorf("peers %+v; want %s first with 107 bytes", r.Peers, da.Short())
	}
	// The team bytes here exceed the wire bytes (the wire counts came from a hand-fed reporter): the
	// unattributed part is floored at zero, never wrapped.
	if r.Unattributed.Sent != 0 || r.Unattributed.Received != 0 {
		t.Errorf("unattributed %+v; want zero", r.Unattributed)
	}
	if r, err := u.report("2025-04", nil); err != nil || r.Total.Total != 0 || len(r.Days) != 0 {
		t.Errorf("April: %+v, %v; want an empty report", r, err)
	}
	for _, bad := range []string{"2025-3", "March", "2025-13", "2025-03-01"} {
		if _, err := u.report(bad, nil); err == nil {
			t.Errorf("report(%q) succeeded; want an error", bad)
		}
	}
}

// TestUsageFlushBatching: counts stay in memory until a flush, which writes them in one transaction;
// an idle flush writes nothing; the loop flushes on its tick.
func TestUsageFlushBatching(t *testing.T) {
	st, _ := newTestStore(t)
	clock := &fakeClock{t: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)}
	u := newUsage(st, clock.now, slog.New(slog.DiscardHandler), func(envelope.Topic) bool { return false })
	p := testPeer(t)
	for range 1000 {
		u.LogSentMessageStream(10, "/meshsub/1.2.0", p)
	}
	if got := storedUsage(t, st); len(got) != 0 || u.flushes != 0 {
		t.Fatalf("before a flush: %d flushes, store %v; want nothing written", u.flushes, got)
	}
	if s := u.GetBandwidthTotals(); s.TotalOut != 10000 {
		t.Errorf("unflushed totals %+v; want 10000 out", s)
	}
	if r, err := u.report("2025-03", nil); err != nil || r.Total.Sent != 10000 {
		t.Errorf("report before the flush: %+v, %v; want the unflushed 10000 bytes", r.Total, err)
	}
	if err := u.flush(); err != nil {
		t.Fatal(err)
	}
	key := storage.UsageKey{Day: 20250314, Protocol: "/meshsub/1.2.0", Peer: string(p)}
	if got := storedUsage(t, st); len(got) != 1 || got[key].Sent != 10000 || u.flushes != 1 {
		t.Fatalf("after one flush: %d flushes, store %v; want one transaction of 10000 bytes", u.flushes, got)
	}
	if err := u.flush(); err != nil || u.flushes != 1 {
		t.Errorf("an idle flush: %v, %d flushes; want no write", err, u.flushes)
	}
	if r, err := u.report("2025-03", nil); err != nil || r.Total.Sent != 10000 {
		t.Errorf("report after the flush: %+v, %v; want 10000 bytes, counted once", r.Total, err)
	}

	// The loop: a tick flushes what came since.
	u.flushedC = make(chan struct{}, 1)
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.run(ctx, tick) }()
	u.LogSentMessageStream(5, "/meshsub/1.2.0", p)
	tick <- clock.now()
	select {
	case <-u.flushedC:
	case <-time.After(30 * time.Second):
		t.Fatal("the loop did not flush on its tick")
	}
	cancel()
	<-done
	if got := storedUsage(t, st); got[key].Sent != 10005 || u.flushes != 2 {
		t.Errorf("after the tick: %d flushes, %v; want 10005 bytes in 2 flushes", u.flushes, got[key])
	}
}

// TestUsageBoundsPeersAndProtocols: a day keeps at most usageMaxPeers peers and usageMaxProtocols
// protocols, the busiest, across flushes; the rest is folded, and no byte is lost.
func TestUsageBoundsPeersAndProtocols(t *testing.T) {
	st, _ := newTestStore(t)
	clock := &fakeClock{t: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)}
	u := newUsage(st, clock.now, slog.New(slog.DiscardHandler), func(envelope.Topic) bool { return false })
	const peers = usageMaxPeers + 18
	ps := make([]peer.ID, peers)
	var sum uint64
	for i := range ps {
		ps[i] = testPeer(t)
	}
	// Two flushes: the second brings busier peers, which must push out the quietest stored ones.
	for round, idx := range [][2]int{{0, 30}, {30, peers}} {
		for i := idx[0]; i < idx[1]; i++ {
			n := int64(100 * (i + 1))
			u.LogSentMessageStream(n, "/meshsub/1.2.0", ps[i])
			sum += uint64(n)
		}
		for i := range usageMaxProtocols + 5 {
			u.LogRecvMessageStream(int64(i+1), protocol.ID(fmt.Sprintf("/p/%d", i)), ps[0])
			sum += uint64(i + 1)
		}
		if err := u.flush(); err != nil {
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
	if len(named) != usageMaxPeers {
		t.Errorf("%d peers stored separately; want %d", len(named), usageMaxPeers)
	}
	for i := peers - usageMaxPeers; i < peers; i++ {
		if !named[string(ps[i])] {
			t.Errorf("peer %d (one of the busiest) was folded", i)
		}
	}
	if len(protos) > usageMaxProtocols+1 || !protos[usageOther] || !protos["/meshsub/1.2.0"] {
		t.Errorf("%d protocols stored (%v); want at most %d plus %q, meshsub kept", len(protos), protos, usageMaxProtocols, usageOther)
	}
}

// TestUsageSurvivesRestart: counts reach the store when the node closes and are in the next run's
// report, merged with what that run counts.
func TestUsageSurvivesRestart(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	team, err := a.CreateTeam("Night shift", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	topic := envelope.TopicOf(team.ID)
	month := time.Now().Format("2006-01")
	a.usage.syncBytes(topic, 1000, 2000)
	a.usage.LogSentMessageStream(300, SyncProtocolV2, testPeer(t))
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	a2.usage.syncBytes(topic, 1, 2)
	r, err := a2.Usage(month)
	if err != nil {
		t.Fatal(err)
	}
	if r.Total.Sent != 300 || len(r.Teams) != 1 || r.Teams[0].Name != "Night shift" || r.Teams[0].Sync != (UsageBytes{Sent: 1001, Received: 2002, Total: 3003}) {
		t.Errorf("after restart: total %+v teams %+v; want 300 sent and Night shift with 1001/2002 of sync", r.Total, r.Teams)
	}
}

// TestBandwidthReporterWithDisableMetrics: a libp2p host built as the node builds it, with
// DisableMetrics, still reports every stream's bytes, by protocol and peer, to BandwidthReporter.
func TestBandwidthReporterWithDisableMetrics(t *testing.T) {
	st, _ := newTestStore(t)
	u := newUsage(st, time.Now, slog.New(slog.DiscardHandler), func(envelope.Topic) bool { return false })
	mk := func(rep *usage) host.Host {
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
	a, b := mk(u), mk(nil)
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
	got := u.GetBandwidthForProtocol(proto)
	if got.TotalOut < 5000 || got.TotalIn < 2 {
		t.Errorf("reported %+v for %s; want at least 5000 bytes out and 2 in", got, proto)
	}
	if byPeer := u.GetBandwidthForPeer(b.ID()); byPeer.TotalOut < 5000 {
		t.Errorf("reported %+v for the peer; want at least 5000 bytes out", byPeer)
	}
}

func TestDeferrable(t *testing.T) {
	dev, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(p crdt.Priority) *crdt.Op {
		return crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindMessage, crdt.Message{Text: "x", Priority: p}.Marshal())
	}
	for _, c := range []struct {
		name string
		op   *crdt.Op
		want bool
	}{
		{"routine message", msg(crdt.Routine), true},
		{"urgent message", msg(crdt.Urgent), false},
		{"emergency message", msg(crdt.Emergency), false},
		{"ack", crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindAck, crdt.Ack{IDs: []crdt.OpID{{1}}}.Marshal()), true},
		{"membership", crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindMember, []byte{1}), false},
		{"undecodable message", crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindMessage, []byte{0xff}), false},
	} {
		if got := deferrable(c.op); got != c.want {
			t.Errorf("%s: deferrable = %v; want %v", c.name, got, c.want)
		}
	}
}

// TestLowDataOutbox: in low-data mode a routine message is queued, not sealed or sent, while an
// urgent one goes out; the queue survives a restart (as does the mode) and is published once when
// the mode goes off.
func TestLowDataOutbox(t *testing.T) {
	_, ns := newMockNodes(t, "Nurse Phiri", "Dr Banda")
	a, b := ns[0], ns[1]
	team, err := a.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b)
	if s, err := a.SetLowData(true); err != nil || !s.On {
		t.Fatalf("SetLowData(true) = %+v, %v", s, err)
	}
	routine, _, err := a.Send(ref, crdt.Message{Text: "routine: stock count"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Send(ref, crdt.Message{Text: "urgent: bleeding", Priority: crdt.Urgent}); err != nil {
		t.Fatal(err)
	}
	if ms := waitMessages(t, b, ref, 1); ms[0].Text != "urgent: bleeding" {
		t.Errorf("b got %q first; want the urgent message", ms[0].Text)
	}
	if a.teamByID(team.ID).has(routine) {
		t.Error("the queued message is in the team log already")
	}
	if s, _ := a.LowData(); s.Queued != 1 || s.UrgentTeams > 1 {
		t.Errorf("status %+v; want 1 queued", s)
	}

	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a2.Close() })
	if s, err := a2.LowData(); err != nil || !s.On || s.Queued != 1 {
		t.Fatalf("after restart: %+v, %v; want on with 1 queued", s, err)
	}
	if a2.teamByID(team.ID).has(routine) {
		t.Error("the queued message was published at start in low-data mode")
	}
	var queued []byte
	var queuedKey storage.OutboxKey
	if err := a.st.Outbox(func(k storage.OutboxKey, b []byte) error {
		queuedKey, queued = k, b
		return nil
	}); err != nil || queuedKey.ID != routine {
		t.Fatalf("outbox holds %x (%v); want the routine message", queuedKey.ID, err)
	}
	s, err := a2.SetLowData(false)
	if err != nil || s.On || s.Queued != 0 {
		t.Fatalf("SetLowData(false) = %+v, %v; want off with nothing queued", s, err)
	}
	if !a2.teamByID(team.ID).has(routine) {
		t.Error("the queued message is not in the team log after publishing")
	}
	ms := waitMessages(t, b, ref, 2)
	if ms[0].ID != routine && ms[1].ID != routine {
		t.Errorf("b shows %v; want the routine message %v among them", ids(ms), routine)
	}
	// Published once: flushing again publishes nothing, and an entry for an op already published
	// (a crash between publishing and dequeuing) is only removed.
	if n, err := a2.flushOutbox(); err != nil || n != 0 {
		t.Errorf("second flush published %d (%v); want 0", n, err)
	}
	if err := a.st.PutOutbox(queuedKey, queued); err != nil {
		t.Fatal(err)
	}
	if n, err := a2.flushOutbox(); err != nil || n != 0 {
		t.Errorf("flush of an already published op published %d (%v); want 0", n, err)
	}
	if s, _ := a2.LowData(); s.Queued != 0 {
		t.Errorf("%d still queued; want 0", s.Queued)
	}
	if n, err := a2.SyncNow(context.Background()); err != nil || n != 1 {
		t.Errorf("SyncNow = %d, %v; want 1 (one peer, one team)", n, err)
	}
}

// TestLowDataQueuesAcks: an acknowledgement batch made in low-data mode is queued and goes out when
// the mode is turned off.
func TestLowDataQueuesAcks(t *testing.T) {
	_, ns := newMockNodes(t, "Author", "Reader")
	a, r := ns[0], ns[1]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, r)
	if _, _, err := a.Send(ref, crdt.Message{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, r, ref, 1)
	if _, err := r.SetLowData(true); err != nil {
		t.Fatal(err)
	}
	if !r.deferAcks() {
		t.Error("deferAcks is false in low-data mode")
	}
	if n, err := r.FlushAcks(); err != nil || n != 1 {
		t.Fatalf("FlushAcks = %d, %v; want 1 ack op (queued)", n, err)
	}
	if s, _ := r.LowData(); s.Queued != 1 {
		t.Errorf("%d queued; want the ack op", s.Queued)
	}
	if _, err := r.SetLowData(false); err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := a.Watch(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for len(a.mustMessages(t, ref)[0].ReceivedBy) != 1 {
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("the author never saw the queued acknowledgement")
		}
	}
}

// TestLowDataGatesAutoSync: in low-data mode automatic reconciliation runs only for a team with an
// urgent op pending, until a session for it completes; the marks survive a restart.
func TestLowDataGatesAutoSync(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	info, err := a.CreateTeam("Night shift", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	tm := a.teamByID(info.ID)
	if !a.autoSyncAllowed(tm) {
		t.Error("auto sync refused with low-data mode off")
	}
	if _, err := a.SetLowData(true); err != nil {
		t.Fatal(err)
	}
	if a.autoSyncAllowed(tm) {
		t.Error("auto sync allowed in low-data mode with nothing urgent")
	}
	if _, _, err := a.Send(info.ID.String(), crdt.Message{Text: "emergency", Priority: crdt.Emergency}); err != nil {
		t.Fatal(err)
	}
	if !a.autoSyncAllowed(tm) {
		t.Error("auto sync refused with an emergency message pending")
	}
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a2.Close() })
	tm = a2.teamByID(info.ID)
	if s, _ := a2.LowData(); !s.On || s.UrgentTeams != 1 || !a2.autoSyncAllowed(tm) {
		t.Errorf("after restart: %+v, allowed %v; want on, 1 urgent team, allowed", s, a2.autoSyncAllowed(tm))
	}
	a2.lowDataSynced(tm)
	if a2.autoSyncAllowed(tm) {
		t.Error("auto sync still allowed after a completed session")
	}
	// Turning the mode off with an urgent mark set drops the mark, in the store too.
	if _, _, err := a2.Send(info.ID.String(), crdt.Message{Text: "urgent", Priority: crdt.Urgent}); err != nil {
		t.Fatal(err)
	}
	if s, err := a2.SetLowData(false); err != nil || s.On || s.UrgentTeams != 0 {
		t.Fatalf("SetLowData(false) = %+v, %v; want off, nothing urgent", s, err)
	}
	if !a2.autoSyncAllowed(tm) {
		t.Error("auto sync refused after low-data mode went off")
	}
	a2.Close()
	a3, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a3.Close()
	if s, _ := a3.LowData(); s.On || s.UrgentTeams != 0 {
		t.Errorf("after another restart: %+v; want off, nothing urgent", s)
	}
}

// TestConfigLowDataForcesOn: Config.LowData turns the mode on at start, and keeps it on afterwards.
func TestConfigLowDataForcesOn(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true, LowData: true})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := a2.LowData(); !s.On {
		t.Error("Config.LowData did not turn the mode on")
	}
	a2.Close()
	a3, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a3.Close()
	if s, _ := a3.LowData(); !s.On {
		t.Error("the mode did not survive a restart without the flag")
	}
}

func TestLowDataSettingEncoding(t *testing.T) {
	var t1, t2 envelope.Topic
	t1[0], t2[0] = 1, 2
	for _, c := range []struct {
		on     bool
		urgent map[envelope.Topic]struct{}
	}{
		{false, map[envelope.Topic]struct{}{}},
		{true, map[envelope.Topic]struct{}{t2: {}, t1: {}}},
	} {
		b := marshalLowData(c.on, c.urgent)
		on, urgent, err := unmarshalLowData(b)
		if err != nil || on != c.on || fmt.Sprint(urgent) != fmt.Sprint(c.urgent) {
			t.Errorf("round trip of %v %v: %v %v %v", c.on, c.urgent, on, urgent, err)
		}
	}
	good := marshalLowData(true, map[envelope.Topic]struct{}{t1: {}, t2: {}})
	swapped := append(append(bytes.Clone(good[:3]), t2[:]...), t1[:]...)
	for name, b := range map[string][]byte{
		"empty":       nil,
		"version 2":   {2, 0, 0},
		"flag 2":      {1, 2, 0},
		"truncated":   good[:len(good)-1],
		"trailing":    append(bytes.Clone(good), 0),
		"unsorted":    swapped,
		"long varint": {1, 0, 0x80, 0x00},
	} {
		if _, _, err := unmarshalLowData(b); err == nil {
			t.Errorf("%s: decoded; want an error", name)
		}
	}
}

func FuzzLowDataSetting(f *testing.F) {
	var t1 envelope.Topic
	t1[3] = 7
	f.Add(marshalLowData(true, map[envelope.Topic]struct{}{t1: {}}))
	f.Add(marshalLowData(false, nil))
	f.Add([]byte{1, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		on, urgent, err := unmarshalLowData(b)
		if err != nil {
			return
		}
		if got := marshalLowData(on, urgent); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\ngot  %x\nwant %x", got, b)
		}
	})
}

func TestParseTopicName(t *testing.T) {
	var tp envelope.Topic
	tp[0], tp[15] = 0xab, 0xcd
	if got, ok := meshconf.ParseTopicName(meshconf.TopicName(tp)); !ok || got != tp {
		t.Errorf("meshconf.ParseTopicName(meshconf.TopicName(%v)) = %v, %v", tp, got, ok)
	}
	for _, s := range []string{"", "/fieldmesh/t/", "/fieldmesh/t/zz" + meshconf.TopicName(tp)[15:], meshconf.TopicName(tp) + "00", "/meshsub"} {
		if _, ok := meshconf.ParseTopicName(s); ok {
			t.Errorf("meshconf.ParseTopicName(%q) succeeded", s)
		}
	}
}
