package node

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/catchup"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide background goroutines started by libp2p and badger dependencies.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*peernet).handleNewStream"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	)
}

// testKDF keeps Argon2id cheap in tests; production uses the defaults.
var testKDF = storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

type testNode struct {
	*Node
	st *storage.Store
}

// newMockNodes starts n nodes, each with its own store, on one mocknet with every pair linked (not
// connected).
func newMockNodes(t *testing.T, names ...string) (mocknet.Mocknet, []*testNode) {
	t.Helper()
	return newMockNodesCfg(t, nil, names...)
}

// newMockNodesCfg is newMockNodes with a hook that adjusts each node's Config.
func newMockNodesCfg(t *testing.T, adjust func(*Config), names ...string) (mocknet.Mocknet, []*testNode) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var out []*testNode
	for i, name := range names {
		st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		id, err := Init(st, name)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := lcrypto.UnmarshalEd25519PrivateKey(id.Device.SigningKey())
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip4/127.0.0.%d/tcp/4001", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Store: st, Host: h, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour}
		if adjust != nil {
			adjust(&cfg)
		}
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		out = append(out, &testNode{Node: n, st: st})
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	return mn, out
}

// waitMessages waits, on the node's watch events with a deadline, until the team shows want messages.
func waitMessages(t *testing.T, n *testNode, team string, want int) []crdt.MessageView {
	t.Helper()
	ch, cancel, err := n.Watch(team)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer cancel()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		ms, err := n.Messages(team)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) >= want {
			return ms
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: %d messages after the deadline; want %d", n.id.Name, len(ms), want)
		}
	}
}

// joinAll has each joiner use a fresh invite of the admin's team, and fails the test on any error.
func joinAll(t *testing.T, admin *testNode, team string, joiners ...*testNode) {
	t.Helper()
	for _, j := range joiners {
		inv, err := admin.Invite(team, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Join(context.Background(), inv.Code()); err != nil {
			t.Fatalf("%s joins: %v", j.id.Name, err)
		}
	}
}

func ids(ms []crdt.MessageView) []crdt.OpID {
	out := make([]crdt.OpID, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestTeamInviteJoinAndMessages(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "CHW Tembo")
	a, b, c := ns[0], ns[1], ns[2]
	ctx := context.Background()

	team, err := a.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	for _, j := range []*testNode{b, c} {
		inv, err := a.Invite(ref, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := j.Join(ctx, inv.Code())
		if err != nil {
			t.Fatalf("%s join: %v", j.id.Name, err)
		}
		if got.Name != "Maternity Ward 3" || got.Kind != crdt.Clinical {
			t.Errorf("joined team = %q %v; want %q clinical", got.Name, got.Kind, "Maternity Ward 3")
		}
	}
	if _, _, err := b.Send(ref, crdt.Message{Text: "BP 150/95 at 34 weeks", Priority: crdt.Urgent, Patient: "MRN-1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Send(ref, crdt.Message{Text: "on my way"}); err != nil {
		t.Fatal(err)
	}
	var want []crdt.OpID
	for _, n := range ns {
		ms := waitMessages(t, n, ref, 2)
		if want == nil {
			want = ids(ms)
		}
		if got := ids(ms); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s shows %v; want %v", n.id.Name, got, want)
		}
		if st := n.snapshot(ref); len(st.Members) != 3 {
			t.Errorf("%s sees %d members; want 3", n.id.Name, len(st.Members))
		}
	}
}

func (n *testNode) snapshot(ref string) *crdt.State {
	t, err := n.teamByRef(ref)
	if err != nil {
		panic(err)
	}
	return t.snapshot()
}

func TestInviteIsOneTimeAndExpires(t *testing.T) {
	_, ns := newMockNodes(t, "Admin", "Joiner", "Late")
	a, b, c := ns[0], ns[1], ns[2]
	ctx := context.Background()
	team, err := a.CreateTeam("Clinic", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Invite(team.ID.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join(ctx, inv.Code()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join(ctx, inv.Code()); err == nil {
		t.Fatal("second use of an invite code succeeded")
	}

	// A wrong secret is refused, and does not burn the invite.
	inv2, err := a.Invite(team.ID.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := inv2
	bad.Secret[0] ^= 1
	if _, err := c.Join(ctx, bad.Code()); err == nil {
		t.Fatal("join with a wrong invite secret succeeded")
	}
	if _, err := c.Join(ctx, inv2.Code()); err != nil {
		t.Fatalf("the right code after a wrong attempt: %v", err)
	}

	// Expiry: the inviter's clock decides.
	inv3, err := a.Invite(team.ID.String(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	_, ns2 := newMockNodes(t, "Someone")
	_ = ns2
	if _, err := ParseInvite(inv3.Code()); err != nil {
		t.Fatal(err)
	}
	// A joiner with a correct clock still reaches the inviter, which refuses.
	d := ns2[0]
	_, err = d.Join(ctx, inv3.Code())
	if err == nil {
		t.Fatal("expired invite accepted")
	}
}

// TestCatchUpAfterPartition cuts a node off while the others talk, lets virtual time pass beyond
// GossipSub's gossip window (so gossip cannot replay what it missed), heals, and requires that catch-up
// delivers every missed op. It runs inside a synctest bubble: the sleep below advances virtual time, it
// does not wait for anything.
func TestCatchUpAfterPartition(t *testing.T) {
	synctest.Test(t, testCatchUpAfterPartition)
}

func testCatchUpAfterPartition(t *testing.T) {
	mn, ns := newMockNodes(t, "A", "B", "C")
	a, b, c := ns[0], ns[1], ns[2]
	team, err := a.CreateTeam("Outreach", crdt.Social)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b, c)
	// Cut C off, once the dials the joins started have settled (a dial under way when the link goes
	// would connect after the cut). Pubsub in mocknet can keep a peer whose connection closed (its
	// dead-peer check races the close, and mocknet streams outlive their connection), and then goes on
	// gossiping to it; so C is also blacklisted in A's and B's pubsub, and they in C's. Only
	// catch-up, which is not pubsub, can bring C what it missed.
	synctest.Wait()
	for _, o := range []*testNode{a, b} {
		if err := mn.UnlinkPeers(c.host.ID(), o.host.ID()); err != nil {
			t.Fatal(err)
		}
		_ = mn.DisconnectPeers(c.host.ID(), o.host.ID())
		o.ps.BlacklistPeer(c.host.ID())
		c.ps.BlacklistPeer(o.host.ID())
	}
	synctest.Wait()
	for _, o := range []*testNode{a, b} {
		tm, err := o.teamByRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(tm.ptop.ListPeers(), c.host.ID()) || o.host.Network().Connectedness(c.host.ID()) == network.Connected {
			t.Fatalf("C still reachable from %s after the cut", o.id.Name)
		}
	}
	const n = 60
	for i := 0; i < n; i++ {
		src := a
		if i%2 == 1 {
			src = b
		}
		if _, _, err := src.Send(ref, crdt.Message{Text: fmt.Sprintf("while C was away %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(c.mustMessages(t, ref)); got != 0 {
		t.Fatalf("C got %d messages while cut off", got)
	}
	// Age the messages out of every gossip cache (history_length heartbeats of one second).
	time.Sleep(time.Minute)
	synctest.Wait()
	// Heal: reconnecting triggers catch-up.
	if _, err := mn.LinkPeers(c.host.ID(), a.host.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := mn.ConnectPeers(c.host.ID(), a.host.ID()); err != nil {
		t.Fatal(err)
	}
	want := ids(waitMessages(t, a, ref, n))
	got := ids(waitMessages(t, c, ref, n))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("C after catch-up shows %d messages %v; want %v", len(got), got, want)
	}
	if s := c.Status().Sync; s.EnvelopesReceived < n {
		t.Errorf("C received %d envelopes by catch-up; want >= %d (C %+v, A %+v)", s.EnvelopesReceived, n, s, a.Status().Sync)
	}
	for _, n := range ns {
		n.Close()
	}
	mn.Close()
}

func (n *testNode) mustMessages(t *testing.T, ref string) []crdt.MessageView {
	t.Helper()
	ms, err := n.Messages(ref)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestRestartRebuildsFromStore(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	team, err := a.CreateTeam("Night shift", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	var want []crdt.OpID
	for i := 0; i < 5; i++ {
		id, _, err := a.Send(ref, crdt.Message{Text: fmt.Sprintf("note %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	n2, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	ms, err := n2.Messages("Night shift")
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(ms); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after restart: %v; want %v", got, want)
	}
}

func TestRivalCreateOpRefused(t *testing.T) {
	_, ns := newMockNodes(t, "Admin", "Member")
	a, b := ns[0], ns[1]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	joinAll(t, a, team.ID.String(), b)
	// B holds the team key and forges a Create op dated before the real one, naming itself creator.
	tb, err := b.teamByRef(team.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	body := crdt.Create{Name: "Ward", Kind: crdt.Clinical, Creator: b.selfMember(true)}
	forged := crdt.NewOp(b.id.Device, team.ID, crdt.MakeHLC(time.Unix(1, 0), 0), nil, crdt.KindCreate, body.Marshal())
	// Sealed as B would seal a genesis: in commit form, a new epoch boxed to B alone.
	tb.keyMu.Lock()
	e, err := tb.keys.SealCommit(forged, rand.Reader)
	tb.keyMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	ta, err := a.teamByRef(team.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = a.acceptRaw(ta, b.host.ID(), [][]byte{e.Marshal()})
	if ta.has(forged.ID()) {
		t.Fatal("a rival Create op was accepted")
	}
	// Even opened (as by a device holding every key), it is refused for not being the pinned genesis.
	ta.keyMu.Lock()
	_, res := a.openOne(ta, e)
	ta.keyMu.Unlock()
	if res == opened {
		t.Fatal("a rival Create op opened")
	}
	if got := ta.snapshot().Creator; got != a.id.Device.ID() {
		t.Errorf("creator = %s; want %s", got.Short(), a.id.Device.ID().Short())
	}
}

// TestValidatorRejectsBadEnvelopes publishes malformed, tampered, foreign and oversized envelopes on a
// team's topic: the validator must reject each before delivery or forwarding, and nothing is stored.
func TestValidatorRejectsBadEnvelopes(t *testing.T) {
	_, ns := newMockNodes(t, "Admin")
	a := ns[0]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := a.teamByRef(team.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	good := crdt.NewOp(a.id.Device, team.ID, crdt.MakeHLC(time.Now(), 0), nil, crdt.KindMessage, crdt.Message{Text: "x"}.Marshal())
	tampered := sealOwn(t, tm, good).Marshal()
	tampered[len(tampered)-1] ^= 1
	otherKey, _ := seal.NewEpochKey(nil)
	other, err := envelope.SealChain(good, sealOwn(t, tm, good).Epoch, envelope.OuterKey(otherKey), senderkey.NewSender(otherKey, a.id.Device.ID()))
	if err != nil {
		t.Fatal(err)
	}
	foreign := other.Marshal()
	unknown := sealOwn(t, tm, good)
	unknown.Epoch += 7
	unknownEpoch := unknown.Marshal()
	before, err := a.st.EnvelopeKeys(tm.topic)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"garbage":       []byte("not an envelope"),
		"empty":         {},
		"tampered":      tampered,
		"wrong key":     foreign,
		"unknown epoch": unknownEpoch,
		"oversized":     make([]byte, envelope.MaxSize+1),
	} {
		if err := tm.ptop.Publish(context.Background(), data); err == nil {
			t.Errorf("%s: publish accepted", name)
		}
	}
	after, err := a.st.EnvelopeKeys(tm.topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("store holds %d envelopes after bad publishes; want %d", len(after), len(before))
	}
}

// TestOldNodeFallsBackToSyncV1 makes one node speak only /fieldmesh/sync/1.0.0, as a node of the
// foundation release would: catch-up between it and a current node must still work both ways.
func TestOldNodeFallsBackToSyncV1(t *testing.T) {
	mn, ns := newMockNodes(t, "New", "Old")
	a, old := ns[0], ns[1]
	old.host.RemoveStreamHandler(SyncProtocolV2)
	old.syncProtos = []protocol.ID{SyncProtocol}
	team, err := a.CreateTeam("Mixed versions", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, old)
	if err := mn.UnlinkPeers(a.host.ID(), old.host.ID()); err != nil {
		t.Fatal(err)
	}
	_ = mn.DisconnectPeers(a.host.ID(), old.host.ID())
	for i := 0; i < 10; i++ {
		if _, _, err := a.Send(ref, crdt.Message{Text: fmt.Sprintf("new %d", i)}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := old.Send(ref, crdt.Message{Text: fmt.Sprintf("old %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := mn.LinkPeers(a.host.ID(), old.host.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := mn.ConnectPeers(a.host.ID(), old.host.ID()); err != nil {
		t.Fatal(err)
	}
	want := ids(waitMessages(t, a, ref, 20))
	if got := ids(waitMessages(t, old, ref, 20)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("old node shows %v; want %v", got, want)
	}
}

// TestGarbageSyncPeerIsDropped has a member's device open a sync stream and send garbage: the honest
// node must end the session, disconnect and refuse that peer, and store nothing.
func TestGarbageSyncPeerIsDropped(t *testing.T) {
	_, ns := newMockNodes(t, "Honest", "Hostile")
	a, bad := ns[0], ns[1]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	joinAll(t, a, team.ID.String(), bad)
	ta, _ := a.teamByRef(team.ID.String())
	before, err := a.st.EnvelopeKeys(ta.topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []protocol.ID{SyncProtocolV2, SyncProtocol} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := bad.host.NewStream(ctx, a.host.ID(), proto)
		cancel()
		if err != nil {
			// Refused outright: the peer is already banned and disconnected after the first round.
			continue
		}
		_ = catchup.WriteFrame(s, ta.topic[:])
		_ = catchup.WriteFrame(s, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		// The honest side must reset the stream: a read ends with an error, not with data.
		buf := make([]byte, 1)
		if _, err := s.Read(buf); err == nil {
			t.Errorf("%s: honest node answered garbage", proto)
		}
		s.Reset()
	}
	if !a.isBanned(bad.host.ID()) {
		t.Error("the peer that sent garbage is not banned")
	}
	after, err := a.st.EnvelopeKeys(ta.topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("store holds %d envelopes; want %d", len(after), len(before))
	}
	if err := a.syncOnce(context.Background(), bad.host.ID(), ta); err == nil {
		t.Error("sync with a banned peer was attempted")
	}
}

// TestAcksAreBatched: many messages are acknowledged by one ack op per device and kind, and the
// acknowledgements show on the author's side.
func TestAcksAreBatched(t *testing.T) {
	_, ns := newMockNodes(t, "Author", "Reader", "Other")
	a, r, o := ns[0], ns[1], ns[2]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, r, o)
	const n = 25
	for i := 0; i < n; i++ {
		if _, _, err := a.Send(ref, crdt.Message{Text: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	shown := ids(waitMessages(t, r, ref, n))
	waitMessages(t, o, ref, n)
	if err := r.MarkRead(ref, shown[:10]); err != nil {
		t.Fatal(err)
	}
	got, err := r.FlushAcks()
	if err != nil {
		t.Fatal(err)
	}
	if got != 2 {
		t.Errorf("reader published %d ack ops for %d messages; want 2 (one read, one received)", got, n)
	}
	if got, err := o.FlushAcks(); err != nil || got != 1 {
		t.Errorf("other published %d ack ops (%v); want 1", got, err)
	}
	if got, _ := r.FlushAcks(); got != 0 {
		t.Errorf("a second flush published %d ack ops; want 0", got)
	}
	// Wait on the author's side until both acknowledgements arrived.
	ch, cancel, err := a.Watch(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		ms := a.mustMessages(t, ref)
		recv, read := 0, 0
		for _, m := range ms {
			recv += len(m.ReceivedBy)
			read += len(m.ReadBy)
		}
		if recv == 2*n && read == 10 {
			break
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("author sees %d receipts and %d reads; want %d and 10", recv, read, 2*n)
		}
	}
	if got := len(a.mustMessages(t, ref)); got != n {
		t.Errorf("author shows %d messages; want %d (acks must not show as messages)", got, n)
	}
}

// TestSkewedClocks: a device a day fast and one stuck in 1970 still take part. The fast device's
// message does not pull the others' clocks forward or hide their later messages, and the 1970 device's
// reply, made after it saw the conversation, sorts after what it replies to.
func TestSkewedClocks(t *testing.T) {
	_, ns := newMockNodes(t, "Normal", "Fast", "Dead battery")
	a, fast, old := ns[0], ns[1], ns[2]
	fast.clockMu.Lock()
	fast.clock.Now = func() time.Time { return time.Now().Add(24 * time.Hour) }
	fast.clockMu.Unlock()
	old.clockMu.Lock()
	old.clock.Now = func() time.Time { return time.Unix(0, 0) }
	old.clockMu.Unlock()
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, fast, old)
	if _, _, err := fast.Send(ref, crdt.Message{Text: "from tomorrow"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, a, ref, 1)
	normal, _, err := a.Send(ref, crdt.Message{Text: "after that"})
	if err != nil {
		t.Fatal(err)
	}
	waitMessages(t, old, ref, 2)
	reply, replyTime, err := old.Send(ref, crdt.Message{Text: "reply from 1970", ReplyTo: &normal})
	if err != nil {
		t.Fatal(err)
	}
	if replyTime.Time().Year() < 2000 {
		t.Errorf("the 1970 device stamped its reply %v; it should continue from the times it observed", replyTime.Time())
	}
	for _, n := range ns {
		ms := waitMessages(t, n, ref, 3)
		pos := map[crdt.OpID]int{}
		for i, m := range ms {
			pos[m.ID] = i
		}
		if _, ok := pos[normal]; !ok {
			t.Errorf("%s does not show the normal device's message", n.id.Name)
		}
		if pos[reply] < pos[normal] {
			t.Errorf("%s shows the reply before its parent", n.id.Name)
		}
	}
	if a.clock.Last().Time().After(time.Now().Add(2 * time.Hour)) {
		t.Errorf("the normal device's clock was pulled to %v by the fast device", a.clock.Last().Time())
	}
}

// TestImpossibleParentsIgnored: an op naming a parent that is not older than itself is stored like
// any well-formed op (so honest nodes agree on what they store whatever the arrival order) but never
// shown.
func TestImpossibleParentsIgnored(t *testing.T) {
	_, ns := newMockNodes(t, "Admin", "Member")
	a, b := ns[0], ns[1]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	joinAll(t, a, team.ID.String(), b)
	tm, _ := a.teamByRef(team.ID.String())
	tb, _ := b.teamByRef(team.ID.String())
	early := crdt.MakeHLC(time.Unix(1000, 0), 0) // older than the genesis op it names as parent
	op := crdt.NewOp(b.id.Device, team.ID, early, []crdt.OpID{tm.rec.Genesis}, crdt.KindMessage, crdt.Message{Text: "impossible"}.Marshal())
	raw := sealOwn(t, tb, op)
	if err := a.acceptRaw(tm, b.host.ID(), [][]byte{raw.Marshal()}); err != nil {
		t.Fatalf("a well-formed op was refused: %v", err)
	}
	if !tm.has(op.ID()) {
		t.Fatal("the op is not in the log")
	}
	for _, m := range a.mustMessages(t, team.ID.String()) {
		if m.ID == op.ID() {
			t.Error("an op with impossible parents is shown")
		}
	}
}

// sealOwn seals op, written by the team's own device, under the team's current epoch as publish does,
// without storing or sending it (the sender chain advances).
func sealOwn(t *testing.T, tm *team, op *crdt.Op) *envelope.Envelope {
	t.Helper()
	s := tm.snapshot()
	if s.Current < 0 {
		t.Fatal("the team has no current epoch")
	}
	tm.keyMu.Lock()
	defer tm.keyMu.Unlock()
	e, err := tm.keys.Seal(op, s.Epochs[s.Current].Tag)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
