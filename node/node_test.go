package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/node/join"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
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
	st  *storage.Store
	dir string // the store's data directory
}

// cutOff takes x out of reach of each of others: their mocknet links go, and so do open
// connections. Pairs not linked are skipped. Each side's connections are closed by that side:
// mocknet closes the far side of a connection in a goroutine of its own, and until it runs, the
// far side can still open streams over it (TestAttackReseal once found Cat holding a message Ben
// sent after Cat was cut off).
func cutOff(mn mocknet.Mocknet, x *testNode, others ...*testNode) {
	for _, o := range others {
		_ = mn.UnlinkPeers(x.host.ID(), o.host.ID())
		_ = mn.DisconnectPeers(x.host.ID(), o.host.ID())
		_ = mn.DisconnectPeers(o.host.ID(), x.host.ID())
	}
}

// bringInReach links x and y on the mocknet and connects them.
func bringInReach(t testing.TB, mn mocknet.Mocknet, x, y *testNode) {
	t.Helper()
	if _, err := mn.LinkPeers(x.host.ID(), y.host.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := mn.ConnectPeers(x.host.ID(), y.host.ID()); err != nil {
		t.Fatal(err)
	}
}

// newMockNodes starts n nodes, each with its own store, on one mocknet with every pair linked (not
// connected).
func newMockNodes(t testing.TB, names ...string) (mocknet.Mocknet, []*testNode) {
	t.Helper()
	return newMockNodesCfg(t, nil, names...)
}

// newMockNodesCfg is newMockNodes with a hook that adjusts each node's Config (i is its index in names).
func newMockNodesCfg(t testing.TB, adjust func(i int, c *Config), names ...string) (mocknet.Mocknet, []*testNode) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var out []*testNode
	for i, name := range names {
		dir := t.TempDir()
		st, err := storage.Create(dir, storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
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
			adjust(i, &cfg)
		}
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		out = append(out, &testNode{Node: n, st: st, dir: dir})
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	return mn, out
}

// waitMessages waits, on the node's watch events with a deadline, until the team shows want messages.
func waitMessages(t *testing.T, n *testNode, team string, want int) []Message {
	t.Helper()
	return waitMessagesWithin(t, n, team, want, 30*time.Second)
}

// waitMessagesWithin is waitMessages with another deadline.
func waitMessagesWithin(t *testing.T, n *testNode, team string, want int, within time.Duration) []Message {
	t.Helper()
	ch, cancel, err := n.Watch(team)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer cancel()
	deadline := time.NewTimer(within)
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

// clinicalTeam has admin create a clinical team and every joiner join it; it returns the team and
// its id as a reference.
func clinicalTeam(t testing.TB, admin *testNode, name string, joiners ...*testNode) (TeamInfo, string) {
	t.Helper()
	team, err := admin.CreateTeam(name, crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, admin, ref, joiners...)
	return team, ref
}

// joinAll has each joiner use a fresh invite of the admin's team, and fails the test on any error.
// It returns once the admin and every joiner know all the members the admin knows: a member that
// has not yet learned of a join seals its next message under the epoch before it, which the joiner
// is not a recipient of and never reads (docs/security.md, "A message sent as someone joins").
func joinAll(t testing.TB, admin *testNode, team string, joiners ...*testNode) {
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
	if len(joiners) > 0 {
		waitPersons(t, append([]*testNode{admin}, joiners...), team, len(admin.snapshot(team).Persons))
	}
}

// waitPersons waits, on each node's watch events with a deadline, until each node's view of the
// team holds want persons.
func waitPersons(t testing.TB, ns []*testNode, team string, want int) {
	t.Helper()
	for _, n := range ns {
		ch, cancel, err := n.Watch(team)
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		deadline := time.NewTimer(30 * time.Second)
		for len(n.snapshot(team).Persons) < want {
			select {
			case <-ch:
			case <-deadline.C:
				cancel()
				t.Fatalf("%s knows %d persons after 30 s; want %d", n.id.Name, len(n.snapshot(team).Persons), want)
			}
		}
		deadline.Stop()
		cancel()
	}
}

func ids(ms []Message) []crdt.OpID {
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
	// The senders must know Tembo joined before they send, or their message is sealed to the epoch
	// before it (see joinAll).
	waitPersons(t, ns, ref, 3)
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
	var skew atomic.Int64 // how far the admin's clock is ahead
	_, ns := newMockNodesCfg(t, func(i int, c *Config) {
		if i == 0 {
			c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		}
	}, "Admin", "Joiner", "Late")
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
	skew.Store(int64(2 * time.Minute))
	_, ns2 := newMockNodes(t, "Someone")
	_ = ns2
	if _, err := join.ParseInvite(inv3.Code()); err != nil {
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
	bringInReach(t, mn, c, a)
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

func (n *testNode) mustMessages(t *testing.T, ref string) []Message {
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
	// B, a member, forges a Create op dated before the real one, naming itself creator, and seals it as a
	// genesis is sealed: in commit form, a new epoch boxed to B alone.
	body := crdt.Create{Name: "Ward", Kind: crdt.Clinical, Creator: crdt.MemberInfo{Device: b.id.Device.ID(), Noise: b.id.Device.NoisePublic(), Name: "Member", Admin: true}}
	forged := crdt.NewOp(b.id.Device, team.ID, crdt.MakeHLC(time.Unix(1, 0), 0), nil, crdt.KindCreate, body.Marshal())
	e, err := teamkeys.New(team.ID, b.id.Device).SealCommit(forged, rand.Reader, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ta, err := a.teamByRef(team.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	vs, err := a.receive(ta, b.host.ID(), [][]byte{e.Marshal()})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0] == device.Accepted || ta.has(forged.ID()) {
		t.Fatalf("a rival Create op was accepted (%v)", vs[0])
	}
	if got := ta.snapshot().Creator; got != a.id.Device.ID() {
		t.Errorf("creator = %s; want %s", got.Short(), a.id.Device.ID().Short())
	}
}

// TestValidatorRejectsBadEnvelopes gives the gossip validator malformed, tampered, foreign and
// oversized envelopes from a member's peer: none is accepted (so none is delivered or forwarded), the
// malformed ones are rejected, and nothing is stored.
func TestValidatorRejectsBadEnvelopes(t *testing.T) {
	mn, ns := newMockNodes(t, "Admin", "Member")
	a, b := ns[0], ns[1]
	_, ref := clinicalTeam(t, a, "Ward", b)
	// B's message must not reach A but through the validator below.
	cutOff(mn, a, b)
	id, _, err := b.Send(ref, crdt.Message{Text: "a real message"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := b.st.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.CreateTeam("Elsewhere", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	oid, _, err := b.Send(other.ID.String(), crdt.Message{Text: "of another team"})
	if err != nil {
		t.Fatal(err)
	}
	orec, err := b.st.Envelope(oid)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := a.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	if tm.has(id) {
		t.Fatal("the message reached A before the test gave it")
	}
	flip := func(i int) []byte {
		c := slices.Clone(rec.Data)
		c[i] ^= 1
		return c
	}
	recE, err := envelope.Unmarshal(tm.topic, rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	before, err := a.st.EnvelopeKeys(tm.topic)
	if err != nil {
		t.Fatal(err)
	}
	validate := a.validator(tm)
	for _, c := range []struct {
		name   string
		data   []byte
		reject bool
	}{
		{"garbage", []byte("not an envelope"), true},
		{"empty", []byte{}, true},
		{"oversized", make([]byte, envelope.MaxSize+1), true},
		// The wire names no topic: another team's envelope reads as one of an epoch this team does not
		// know (held, never accepted: its layers bind the other team's topic).
		{"other team's envelope", orec.Data, false},
		{"tampered last byte", flip(len(rec.Data) - 1), true},
		{"tampered epoch tag", flip(1), false},
		{"tampered sender", flip(recE.HeaderLen()), true}, // the slot: the outer layer's first byte
	} {
		m := &pubsub.Message{Message: &pb.Message{Data: c.data}}
		got := validate(context.Background(), b.host.ID(), m)
		if got == pubsub.ValidationAccept || (c.reject && got != pubsub.ValidationReject) {
			t.Errorf("%s: validator says %v", c.name, got)
		}
	}
	after, err := a.st.EnvelopeKeys(tm.topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("store holds %d envelopes after bad envelopes; want %d", len(after), len(before))
	}
	if got := validate(context.Background(), b.host.ID(), &pubsub.Message{Message: &pb.Message{Data: rec.Data}}); got != pubsub.ValidationAccept || !tm.has(id) {
		t.Errorf("the untampered envelope: validator says %v, stored %v", got, tm.has(id))
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
	open := func() (network.Stream, *bufio.Reader, []byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := bad.host.NewStream(ctx, a.host.ID(), SyncProtocol)
		if err != nil {
			return nil, nil, nil, err
		}
		br := bufio.NewReader(s)
		if err := framing.Write(s, recon.Hello{Topic: ta.topic, Mode: recon.ModeSync}.Marshal()); err != nil {
			s.Reset()
			return nil, nil, nil, err
		}
		ans, err := framing.Read(br, 1)
		if err != nil {
			s.Reset()
		}
		return s, br, ans, err
	}
	s, br, ans, err := open()
	if err != nil || len(ans) != 1 || ans[0] != byte(recon.AnswerSync) {
		t.Fatalf("the honest node answered a member's hello with %v, %v", ans, err)
	}
	_ = framing.Write(s, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	// The honest side must reset the stream: a read ends with an error, not with data.
	if _, err := framing.Read(br, recon.MaxFrameSize); err == nil {
		t.Error("honest node answered garbage")
	}
	s.Reset()
	// Banned: the next session gets no answer.
	if _, _, ans, err := open(); err == nil {
		t.Errorf("a banned peer's hello was answered with %v", ans)
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
	if err := a.openSession(context.Background(), bad.host.ID(), ta, recon.ModeSync); err == nil {
		t.Error("sync with a banned peer was attempted")
	}
}

// TestAcksAreBatched: many messages are acknowledged by one ack op per device and kind, and the
// acknowledgements show on the author's side.
func TestAcksAreBatched(t *testing.T) {
	_, ns := newMockNodes(t, "Author", "Reader", "Other")
	a, r, o := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", r, o)
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
	_, ns := newMockNodesCfg(t, func(i int, c *Config) {
		switch i {
		case 1:
			c.Now = func() time.Time { return time.Now().Add(24 * time.Hour) }
		case 2:
			c.Now = func() time.Time { return time.Unix(0, 0) }
		}
	}, "Normal", "Fast", "Dead battery")
	a, fast, old := ns[0], ns[1], ns[2]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	for _, j := range []*testNode{fast, old} {
		// The fast device's clock is a day ahead of the inviter's: a two-day invite is still valid.
		inv, err := a.Invite(ref, 48*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Join(context.Background(), inv.Code()); err != nil {
			t.Fatalf("%s joins: %v", j.id.Name, err)
		}
	}
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
	_, last, err := a.Send(ref, crdt.Message{Text: "later still"})
	if err != nil {
		t.Fatal(err)
	}
	if last.Time().After(time.Now().Add(2 * time.Hour)) {
		t.Errorf("the normal device's clock was pulled to %v by the fast device", last.Time())
	}
}

// TestImpossibleParentsIgnored: an op naming a parent that is not older than itself never counts, so a
// device does not keep it, pass it on or show it.
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
	// B's core seals it as it seals its own ops (B's node would never make it).
	tb.mu.Lock()
	_, eff, err := tb.core.Publish(time.Now(), op)
	tb.mu.Unlock()
	if err != nil || len(eff.Publish) != 1 {
		t.Fatalf("sealing: %v (%d envelopes)", err, len(eff.Publish))
	}
	vs, err := a.receive(tm, b.host.ID(), eff.Publish)
	if err != nil {
		t.Fatal(err)
	}
	if vs[0] == device.Accepted || tm.has(op.ID()) {
		t.Fatalf("an op with impossible parents was kept (%v)", vs[0])
	}
	for _, m := range a.mustMessages(t, team.ID.String()) {
		if m.ID == op.ID() {
			t.Error("an op with impossible parents is shown")
		}
	}
}

// TestDeletionsMadeFinal: the node makes the store's deletions final on its schedule (CollectEvery):
// after a deletion, the store's pending count returns to 0 without anyone calling Collect.
func TestDeletionsMadeFinal(t *testing.T) {
	_, nodes := newMockNodesCfg(t, func(_ int, c *Config) { c.CollectEvery = 50 * time.Millisecond }, "a")
	st := nodes[0].st
	if err := st.PutPeer("gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePeer("gone"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for st.Pending() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the store still has %d deletions pending after 30s; want the node to collect them", st.Pending())
		}
		select {
		case <-time.After(20 * time.Millisecond): // polling the store, which has no event for this
		case <-nodes[0].ctx.Done():
			t.Fatal("the node closed")
		}
	}
}
