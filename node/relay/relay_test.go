package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/node/relay/relayclient"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	)
}

// deadline is how long a test waits for an event before it fails.
const deadline = 30 * time.Second

// logBuffer collects a relay's log lines, safely for concurrent writers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestRelay(t *testing.T, cfg Config) (*Relay, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("closing the relay: %v", err)
		}
	})
	return r, logs
}

// memSource is a device's envelopes of one topic, in memory.
type memSource struct {
	mu   sync.Mutex
	recs map[crdt.OpID]record
}

func newMemSource(recs ...record) *memSource {
	s := &memSource{recs: make(map[crdt.OpID]record)}
	s.add(recs...)
	return s
}

func (s *memSource) add(recs ...record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.recs[r.ID] = r
	}
}

func (s *memSource) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

func (s *memSource) Items() ([]recon.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []recon.Item
	for _, r := range s.recs {
		out = append(out, recon.Item{Time: r.Time, ID: r.ID})
	}
	return out, nil
}

func (s *memSource) Envelope(id [recon.IDSize]byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		return nil, errors.New("not found")
	}
	return r.Data, nil
}

// device is a bare libp2p host standing in for a fieldmesh device: it speaks the relay's protocols with
// the package's client functions and runs reconciliation sessions from an in-memory source.
type device struct {
	h host.Host
}

func newDevice(t testing.TB) *device {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &device{h: h}
}

func (d *device) connect(t testing.TB, r *Relay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := d.h.Connect(ctx, peer.AddrInfo{ID: r.Host().ID(), Addrs: r.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func (d *device) enrol(t testing.TB, r *Relay, keys map[envelope.Topic]relayproto.Key) []relayproto.EnrolResult {
	t.Helper()
	res, err := relayclient.Enrol(context.Background(), d.h, r.Host().ID(), keys, nil)
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	return res
}

// deviceSource is what a test device reconciles from; it takes what the device receives.
type deviceSource interface {
	recon.Source
	envelopeSink
}

// envelopeSink takes the envelopes a device receives.
type envelopeSink interface {
	add(recs ...record)
}

// sync runs one reconciliation session with the relay as initiator and adds what it receives to src.
func (d *device) sync(r *Relay, topic envelope.Topic, src deviceSource) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err := d.session(ctx, r, topic, src)
	return err
}

// session runs one reconciliation session with the relay as initiator, within ctx's deadline, adds what
// it receives to src, and returns the session (for its Stats). It returns once the relay has closed its
// side of the stream.
func (d *device) session(ctx context.Context, r *Relay, topic envelope.Topic, src deviceSource) (*recon.Session, error) {
	s, err := d.h.NewStream(ctx, r.Host().ID(), SyncProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := framing.Write(s, recon.Hello{Topic: topic, Mode: recon.ModeSync}.Marshal()); err != nil {
		return nil, err
	}
	br := bufio.NewReader(s)
	ab, err := framing.Read(br, 1)
	if err != nil {
		return nil, err
	}
	if a, err := recon.ParseAnswer(ab); err != nil || a != recon.AnswerSync {
		return nil, fmt.Errorf("relay answered %v, %v", a, err)
	}
	sess := recon.NewInitiator(src, 0)
	first, err := sess.Start()
	if err != nil {
		return nil, err
	}
	return sess, driveDeviceReader(s, br, sess, [][]byte{first}, src, topic)
}

// serveSync answers the relay's sessions from src; done receives each session's outcome.
func (d *device) serveSync(src *memSource, done chan<- error) {
	d.h.SetStreamHandler(SyncProtocol, func(s network.Stream) {
		defer s.Close()
		br := bufio.NewReader(s)
		hb, err := framing.Read(br, recon.HelloSize)
		if err != nil {
			done <- err
			return
		}
		h, err := recon.ParseHello(hb)
		if err != nil {
			done <- err
			return
		}
		if err := framing.Write(s, []byte{byte(recon.AnswerSync)}); err != nil {
			done <- err
			return
		}
		sess := recon.NewResponder(src, 0)
		done <- driveDeviceReader(s, br, sess, nil, src, envelope.Topic(h.Topic))
	})
}

func driveDeviceReader(s network.Stream, br io.Reader, sess *recon.Session, out [][]byte, src envelopeSink, topic envelope.Topic) error {
	for {
		for _, f := range out {
			if f != nil {
				if err := framing.Write(s, f); err != nil {
					return err
				}
			}
		}
		frame, err := framing.Read(br, recon.MaxFrameSize)
		if err != nil {
			return err
		}
		var recv [][]byte
		var done bool
		out, recv, done, err = sess.Handle(frame)
		if err != nil {
			return err
		}
		for _, raw := range recv {
			e, err := envelope.Unmarshal(topic, raw) // the session's topic: the wire names none
			if err != nil {
				return err
			}
			src.add(record{Topic: e.Topic, Time: uint64(e.Time), ID: e.ID, Data: raw})
		}
		if done {
			for _, f := range out {
				if f != nil {
					if err := framing.Write(s, f); err != nil {
						return err
					}
				}
			}
			if err := s.CloseWrite(); err != nil {
				return err
			}
			// The other end closes its side once it has taken the last frames, or resets the stream
			// if it refused them.
			_, err := io.Copy(io.Discard, br)
			return err
		}
	}
}

// waitStored waits until the relay holds n envelopes, woken by each store.
func waitStored(t *testing.T, r *Relay, n int64) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		sig := r.storedSignal()
		if got, _, _ := r.st.totals(); got >= n {
			return
		}
		select {
		case <-sig:
		case <-timer.C:
			got, _, _ := r.st.totals()
			t.Fatalf("the relay holds %d envelopes after %v; want %d", got, deadline, n)
		}
	}
}

var (
	teamA = [32]byte{0: 0xa}
	teamB = [32]byte{0: 0xb}
	// testAdmin is the admin device the tests' relay codes name; only TestRoster signs rosters.
	testAdmin = identity.DeviceID{0: 0xad}
)

// now is a recent envelope time, inside the default retention.
func now(offset time.Duration) uint64 { return uint64(time.Now().Add(offset).UnixMilli()) << 16 }

func TestEnrolment(t *testing.T) {
	r, logs := newTestRelay(t, Config{})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if added, err := r.Admit(ca); err != nil || !added {
		t.Fatalf("admit: %v, %v", added, err)
	}
	if added, err := r.Admit(ca); err != nil || added {
		t.Fatalf("admit again: added %v, %v; want a no-op", added, err)
	}
	good, bad := newDevice(t), newDevice(t)
	good.connect(t, r)
	bad.connect(t, r)

	res := good.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key, relayproto.CodeFor(teamB, testAdmin).Topic: relayproto.TeamKey(teamB)})
	for _, re := range res {
		switch re.Topic {
		case ca.Topic:
			if !re.OK() || re.Horizon == 0 || re.Horizon > now(0) {
				t.Errorf("enrolling a carried topic: %+v; want enrolled with a horizon in the past", re)
			}
		default:
			if re.Status != relayproto.StatusNotCarried || !strings.Contains(re.Message, "does not carry topic") {
				t.Errorf("enrolling a topic not carried: %+v; want StatusNotCarried with a reason", re)
			}
		}
	}
	res = bad.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: relayproto.TeamKey(teamB)})
	if len(res) != 1 || res[0].Status != relayproto.StatusBadProof || !strings.Contains(res[0].Message, "does not hold the team's relay key") {
		t.Errorf("enrolling with the wrong key: %+v; want StatusBadProof with a reason", res)
	}
	if !r.enrolledFor(good.h.ID(), ca.Topic) || r.enrolledFor(bad.h.ID(), ca.Topic) {
		t.Errorf("enrolled: good %v, bad %v; want true, false", r.enrolledFor(good.h.ID(), ca.Topic), r.enrolledFor(bad.h.ID(), ca.Topic))
	}
	st := r.Status()
	if st.Enrolled != 1 || st.PeersSeen != 1 || len(st.Topics) != 1 || st.Topics[0].Topic != ca.Topic.Short() || st.Topics[0].Connected != 1 || st.Topics[0].Devices != 1 {
		t.Errorf("status: %+v", st)
	}
	// Refusals are logged with short ids only.
	l := logs.String()
	if !strings.Contains(l, `msg="enrolment refused"`) || !strings.Contains(l, bad.h.ID().ShortString()) || strings.Contains(l, bad.h.ID().String()) {
		t.Errorf("the relay's log does not name the refused device by its short id:\n%s", l)
	}
	// Enrolment lasts as long as the connection.
	good.h.Network().ClosePeer(r.Host().ID())
	// The relay forgets the enrolment when it sees the disconnection (asynchronously): wait for that
	// before connecting again.
	gone := time.Now().Add(deadline)
	for r.enrolledFor(good.h.ID(), ca.Topic) {
		if time.Now().After(gone) {
			t.Fatalf("the relay still counts the device as enrolled %v after it disconnected", deadline)
		}
		time.Sleep(10 * time.Millisecond)
	}
	good.connect(t, r)
	if err := good.sync(r, ca.Topic, newMemSource()); err == nil {
		t.Errorf("sync on a new connection without enrolling again: succeeded; want refused")
	}
}

func TestNotEnrolledRefused(t *testing.T) {
	r, logs := newTestRelay(t, Config{})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	d.connect(t, r)
	src := newMemSource(testEnvelope(t, ca.Topic, now(-time.Hour), 300))
	if err := d.sync(r, ca.Topic, src); err == nil {
		t.Errorf("sync without enrolling: succeeded; want refused")
	}
	if _, err := relayclient.Directory(context.Background(), d.h, r.Host().ID(), ca.Topic, nil); !errors.Is(err, relayclient.ErrRefused) || !strings.Contains(err.Error(), "enrol first") {
		t.Errorf("directory without enrolling: %v; want ErrRefused saying to enrol first", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := client.Reserve(ctx, d.h, peer.AddrInfo{ID: r.Host().ID(), Addrs: r.Host().Addrs()}); err == nil {
		t.Errorf("circuit reservation without enrolling: granted; want refused")
	}
	// Gossip from a device that is not enrolled is ignored, not stored.
	v := r.validator(ca.Topic)
	raw := testEnvelope(t, ca.Topic, now(0), 300).Data
	if got := v(context.Background(), d.h.ID(), &pubsub.Message{Message: &pb.Message{Data: raw}}); got != pubsub.ValidationIgnore {
		t.Errorf("gossip from a device not enrolled: %v; want ignored", got)
	}
	if n, _, _ := r.st.totals(); n != 0 {
		t.Errorf("the relay stored %d envelopes from a device not enrolled", n)
	}
	for _, want := range []string{`msg="sync refused: device not enrolled for the topic"`, `msg="circuit reservation refused: device not enrolled"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the relay's log lacks %s", want)
		}
	}
	// A peer filter keeps it out of the gossip mesh.
	if r.peerFilter(d.h.ID(), meshconf.TopicName(ca.Topic)) {
		t.Errorf("peer filter admits a device not enrolled")
	}
}

func TestStoreAndForward(t *testing.T) {
	r, _ := newTestRelay(t, Config{})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	keys := map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key}
	a, b := newDevice(t), newDevice(t)
	srcA := newMemSource()
	for i := range 5 {
		srcA.add(testEnvelope(t, ca.Topic, now(time.Duration(i-10)*time.Minute), 200+i))
	}
	a.connect(t, r)
	a.enrol(t, r, keys)
	if err := a.sync(r, ca.Topic, srcA); err != nil {
		t.Fatalf("A's session: %v", err)
	}
	waitStored(t, r, 5)

	srcB := newMemSource(testEnvelope(t, ca.Topic, now(-time.Minute), 500))
	b.connect(t, r)
	b.enrol(t, r, keys)
	if err := b.sync(r, ca.Topic, srcB); err != nil {
		t.Fatalf("B's session: %v", err)
	}
	if srcB.len() != 6 {
		t.Errorf("B holds %d envelopes after its session; want its own and A's 5", srcB.len())
	}
	waitStored(t, r, 6)

	// The relay starts a session too: A, which serves sessions, gets B's envelope without asking.
	done := make(chan error, 1)
	a.serveSync(srcA, done)
	r.goRun(func() { r.syncWith(a.h.ID(), ca.Topic) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the relay's session with A: %v", err)
		}
	case <-time.After(deadline):
		t.Fatalf("the relay did not start a session with A within %v", deadline)
	}
	if srcA.len() != 6 {
		t.Errorf("A holds %d envelopes after the relay's session; want 6", srcA.len())
	}

	// A malformed envelope in a session is refused, and nothing of that session is stored. (The wire
	// names no topic: an envelope sealed for another team is stored under the session's topic, where
	// its layers, which bind the team's topic, open for no member.)
	bad := testEnvelope(t, ca.Topic, now(0), 300)
	bad.Data = bad.Data[:envelope.HeaderSize]
	wrong := newMemSource(bad)
	if err := a.sync(r, ca.Topic, wrong); err == nil {
		t.Errorf("a session carrying a malformed envelope: succeeded; want it dropped")
	}
	if n, _, _ := r.st.totals(); n != 6 {
		t.Errorf("the relay holds %d envelopes; want 6", n)
	}
}

func TestGossip(t *testing.T) {
	r, _ := newTestRelay(t, Config{})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	keys := map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type gossiper struct {
		d     *device
		top   *pubsub.Topic
		sub   *pubsub.Subscription
		ev    *pubsub.TopicEventHandler
		trace *meshTracer
	}
	// Devices enrol before they join the topic, so their GRAFTs reach a relay that admits them; the
	// tracer says when the relay is in a device's mesh.
	mk := func() gossiper {
		d := newDevice(t)
		tr := &meshTracer{relay: r.Host().ID(), topic: meshconf.TopicName(ca.Topic), meshed: make(chan struct{})}
		ps, err := pubsub.NewGossipSub(ctx, d.h, pubsub.WithRawTracer(tr),
			pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(), pubsub.WithMessageIdFn(meshconf.GossipMsgID))
		if err != nil {
			t.Fatal(err)
		}
		d.connect(t, r)
		d.enrol(t, r, keys)
		top, err := ps.Join(meshconf.TopicName(ca.Topic))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := top.EventHandler()
		if err != nil {
			t.Fatal(err)
		}
		sub, err := top.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Cancel(); ev.Cancel(); top.Close() })
		return gossiper{d, top, sub, ev, tr}
	}
	a, b := mk(), mk()
	wctx, wcancel := context.WithTimeout(ctx, deadline)
	defer wcancel()
	for _, g := range []gossiper{a, b} {
		ev, err := g.ev.NextPeerEvent(wctx)
		if err != nil || ev.Peer != r.Host().ID() || ev.Type != pubsub.PeerJoin {
			t.Fatalf("waiting for the relay to join the topic: %+v, %v", ev, err)
		}
	}
	// A publishes to its mesh only (flood publishing is off): the relay must be in A's mesh too, or
	// A's envelope goes nowhere (a graft arriving just after the publish lost it once in ~15 runs).
	for _, g := range []struct {
		name string
		gossiper
	}{{"A", a}, {"B", b}} {
		select {
		case <-g.trace.meshed:
		case <-wctx.Done():
			t.Fatalf("the relay is not in %s's mesh within %v", g.name, deadline)
		}
	}
	// B's GRAFT is queued; once the relay has stored a probe B published after it, the relay has taken
	// the GRAFT too (one queue per peer), so B is in the relay's mesh.
	if err := b.top.Publish(ctx, testEnvelope(t, ca.Topic, now(0), 300).Data); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 1)
	rec := testEnvelope(t, ca.Topic, now(0), 400)
	if err := a.top.Publish(ctx, rec.Data); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 2)
	if ok, _ := r.st.has(rec.ID); !ok {
		t.Fatalf("the relay did not store the gossiped envelope")
	}
	// B is connected to the relay only: the envelope reaches it through the relay.
	for {
		m, err := b.sub.Next(wctx)
		if err != nil {
			t.Fatalf("B did not receive the envelope through the relay: %v", err)
		}
		if bytes.Equal(m.Data, rec.Data) {
			if m.ReceivedFrom != r.Host().ID() {
				t.Errorf("B received it from %s; want the relay", m.ReceivedFrom.ShortString())
			}
			break
		}
	}
	// Malformed gossip is rejected by the validator.
	v := r.validator(ca.Topic)
	if got := v(ctx, a.d.h.ID(), &pubsub.Message{Message: &pb.Message{Data: []byte("garbage")}}); got != pubsub.ValidationReject {
		t.Errorf("garbage from an enrolled device: %v; want rejected", got)
	}
	short := testEnvelope(t, ca.Topic, now(0), 300).Data[:envelope.HeaderSize]
	if got := v(ctx, a.d.h.ID(), &pubsub.Message{Message: &pb.Message{Data: short}}); got != pubsub.ValidationReject {
		t.Errorf("an envelope cut to its header: %v; want rejected", got)
	}
}

// meshTracer closes meshed when the relay is grafted into the device's mesh for topic.
type meshTracer struct {
	relay  peer.ID
	topic  string
	meshed chan struct{}
	once   sync.Once
}

func (m *meshTracer) Graft(p peer.ID, topic string) {
	if p == m.relay && topic == m.topic {
		m.once.Do(func() { close(m.meshed) })
	}
}

func (*meshTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*meshTracer) OnClosedOutboundStream(peer.ID)                       {}
func (*meshTracer) Join(string)                                          {}
func (*meshTracer) Leave(string)                                         {}
func (*meshTracer) Prune(peer.ID, string)                                {}
func (*meshTracer) ValidateMessage(*pubsub.Message)                      {}
func (*meshTracer) DeliverMessage(*pubsub.Message)                       {}
func (*meshTracer) RejectMessage(*pubsub.Message, string)                {}
func (*meshTracer) DuplicateMessage(*pubsub.Message)                     {}
func (*meshTracer) ThrottlePeer(peer.ID)                                 {}
func (*meshTracer) RecvRPC(*pubsub.RPC)                                  {}
func (*meshTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (*meshTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (*meshTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*meshTracer) UndeliverableMessage(*pubsub.Message)                 {}

func TestQuotaAndRetention(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	quota := int64(6 * (1000 + EntryOverhead))
	r, logs := newTestRelay(t, Config{Quota: quota, Retention: 24 * time.Hour, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	keys := map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key}
	d := newDevice(t)
	d.connect(t, r)
	d.enrol(t, r, keys)
	src := newMemSource()
	var recs []record
	for i := range 10 {
		recs = append(recs, testEnvelope(t, ca.Topic, now(time.Duration(i-20)*time.Hour), 1000))
	}
	src.add(recs...)
	src.add(testEnvelope(t, ca.Topic, now(-48*time.Hour), 1000)) // beyond the retention: never taken
	if err := d.sync(r, ca.Topic, src); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 6)
	n, b, _ := r.st.totals()
	if n != 6 || b > quota {
		t.Fatalf("after the quota bit: %d envelopes, %d bytes; want 6 within %d", n, b, quota)
	}
	for i, rec := range recs {
		if has, _ := r.st.has(rec.ID); has != (i >= 4) {
			t.Errorf("envelope %d (time order): stored %v; want only the 6 newest", i, has)
		}
	}
	if !strings.Contains(logs.String(), `msg="topic quota reached: dropped the topic's oldest envelopes" topic=`) {
		t.Errorf("no clear log line when the quota bit:\n%s", logs.String())
	}
	// The horizon moved past what was dropped: a new session does not take those back.
	res := d.enrol(t, r, keys)
	if res[0].Horizon <= recs[3].Time || res[0].Horizon > recs[4].Time {
		t.Errorf("horizon %d after the quota bit; want just past the newest dropped (%d)", res[0].Horizon, recs[3].Time)
	}
	if err := d.sync(r, ca.Topic, src); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := r.st.totals(); n != 6 {
		t.Errorf("after a second session: %d envelopes; want the same 6", n)
	}

	// Retention: fifteen hours later, envelopes older than a day go.
	clock.Add(int64(15 * time.Hour))
	if err := r.expire(); err != nil {
		t.Fatal(err)
	}
	for i, rec := range recs {
		want := i >= 4 && rec.Time >= now(15*time.Hour-24*time.Hour)
		if has, _ := r.st.has(rec.ID); has != want {
			t.Errorf("envelope %d after retention: stored %v; want %v", i, has, want)
		}
	}
	if !strings.Contains(logs.String(), `msg="retention: dropped envelopes older than the retention period"`) {
		t.Errorf("no log line for the retention sweep")
	}
}

func TestCircuitAndDirectory(t *testing.T) {
	r, _ := newTestRelay(t, Config{})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	keys := map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key}
	x, y, z := newDevice(t), newDevice(t), newDevice(t)
	for _, d := range []*device{x, y, z} {
		d.connect(t, r)
	}
	x.enrol(t, r, keys)
	y.enrol(t, r, keys)
	rai := peer.AddrInfo{ID: r.Host().ID(), Addrs: r.Host().Addrs()}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	resv, err := client.Reserve(ctx, y.h, rai)
	if err != nil {
		t.Fatalf("Y's reservation: %v", err)
	}
	if resv.LimitDuration < time.Hour || resv.LimitData < 64<<20 {
		t.Errorf("relayed connection limits %v and %d bytes; want the clinic limits (an hour, 64 MiB)", resv.LimitDuration, resv.LimitData)
	}
	circuits := relayclient.CircuitAddrs(rai)
	if _, err := relayclient.Directory(ctx, y.h, rai.ID, ca.Topic, circuits); err != nil {
		t.Fatalf("Y's registration: %v", err)
	}
	peers, err := relayclient.Directory(ctx, x.h, rai.ID, ca.Topic, relayclient.CircuitAddrs(rai))
	if err != nil || len(peers) != 1 || peers[0].ID != y.h.ID() || len(peers[0].Addrs) != len(circuits) {
		t.Fatalf("X's directory: %v, %v; want Y with its circuit addresses", peers, err)
	}
	// X reaches Y through the relay.
	lctx := network.WithAllowLimitedConn(ctx, "test")
	if err := x.h.Connect(lctx, peers[0]); err != nil {
		t.Fatalf("X to Y through the relay: %v", err)
	}
	var relayed bool
	for _, c := range x.h.Network().ConnsToPeer(y.h.ID()) {
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err == nil && c.Stat().Limited {
			relayed = true
		}
	}
	if !relayed {
		t.Errorf("X's connection to Y is not relayed")
	}
	// Z, not enrolled, gets no reservation and no relayed connection.
	if _, err := client.Reserve(ctx, z.h, rai); err == nil {
		t.Errorf("Z's reservation: granted; want refused")
	}
	if err := z.h.Connect(lctx, peers[0]); err == nil {
		t.Errorf("Z to Y through the relay: connected; want refused")
	}
}

func TestMetricsAndAPI(t *testing.T) {
	r, _ := newTestRelay(t, Config{})
	srv := httptest.NewServer(r.MetricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"fieldmesh_relay_envelopes ", "fieldmesh_relay_enrolments_total", "libp2p_", "go_goroutines"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}

	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.ServeAPI(ctx, l) }()
	defer func() {
		cancel()
		<-served
	}()
	c := NewAPIClient(sock)
	code := relayproto.CodeFor(teamA, testAdmin).Encode()
	if a, err := c.Admit(context.Background(), code); err != nil || !a.Added || a.Topic != relayproto.CodeFor(teamA, testAdmin).Topic.Short() {
		t.Errorf("admit: %+v, %v", a, err)
	}
	if a, err := c.Admit(context.Background(), code); err != nil || a.Added {
		t.Errorf("admit again: %+v, %v; want not added", a, err)
	}
	if _, err := c.Admit(context.Background(), "fmr1garbage"); err == nil || !strings.Contains(err.Error(), "malformed relay code") {
		t.Errorf("admit garbage: %v; want a malformed code error", err)
	}
	st, err := c.Status(context.Background())
	if err != nil || len(st.Topics) != 1 || st.PeerID != r.Host().ID().String() {
		t.Errorf("status: %+v, %v", st, err)
	}
	if _, err := NewAPIClient(filepath.Join(t.TempDir(), "none.sock")).Status(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("status with no relay: %v; want ErrNotRunning", err)
	}
	// Usage per topic, under its short tag only, and refusals by reason.
	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	short := relayproto.CodeFor(teamA, testAdmin).Topic
	for _, want := range []string{`fieldmesh_relay_topic_bytes{topic="` + short.Short() + `"} 0`, `fieldmesh_relay_topic_enrolled{topic="` + short.Short() + `"} 0`, `fieldmesh_relay_enrolments_total{result="not_member"} 0`, `fieldmesh_relay_envelopes_refused_total{reason="future"} 0`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if bytes.Contains(body, []byte(fmt.Sprintf("%x", short[:]))) {
		t.Error("metrics name a topic in full")
	}
}

// TestRestart checks that what a relay was told and stored survives a restart: its identity, carried
// topics, envelopes and the devices it has seen.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	logs := &logBuffer{}
	cfg := Config{Dir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	d.connect(t, r)
	d.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key})
	if err := d.sync(r, ca.Topic, newMemSource(testEnvelope(t, ca.Topic, now(0), 300))); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 1)
	id := r.Host().ID()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := r.Status()
	if st.PeerID != id.String() || st.Envelopes != 1 || len(st.Topics) != 1 || st.PeersSeen != 1 || st.Enrolled != 0 {
		t.Errorf("after a restart: %+v; want the same peer id, 1 envelope, 1 topic, 1 device seen, none enrolled", st)
	}
}

// TestBrickingAttempt: a device enrolled for team A sends twice its topic's quota of envelopes stamped
// in the far future, then twice of envelopes stamped now. Every envelope of team B survives, and new
// ones of team B are stored; team A keeps its newest envelopes.
func TestBrickingAttempt(t *testing.T) {
	const size = 1000
	quota := int64(20 * (size + EntryOverhead)) // two topics: 10 envelopes each
	r, logs := newTestRelay(t, Config{Quota: quota})
	ca, cb := relayproto.CodeFor(teamA, testAdmin), relayproto.CodeFor(teamB, testAdmin)
	for _, c := range []relayproto.Code{ca, cb} {
		if _, err := r.Admit(c); err != nil {
			t.Fatal(err)
		}
	}
	mal, b := newDevice(t), newDevice(t)
	mal.connect(t, r)
	mal.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key})
	b.connect(t, r)
	b.enrol(t, r, map[envelope.Topic]relayproto.Key{cb.Topic: cb.Key})

	srcB := newMemSource()
	var genuine []record
	for i := range 5 {
		genuine = append(genuine, testEnvelope(t, cb.Topic, now(time.Duration(i-30)*time.Minute), size))
	}
	srcB.add(genuine...)
	if err := b.sync(r, cb.Topic, srcB); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 5)

	future := newMemSource()
	for i := range 20 {
		future.add(testEnvelope(t, ca.Topic, uint64(time.Date(2199, 1, 1, 0, i, 0, 0, time.UTC).UnixMilli())<<16, size))
	}
	if err := mal.sync(r, ca.Topic, future); err != nil {
		t.Fatal(err)
	}
	if n, _, topics := r.st.totals(); n != 5 || topics[ca.Topic].n != 0 {
		t.Fatalf("after the far-future flood the relay holds %d envelopes (%d of A); want only B's 5", n, topics[ca.Topic].n)
	}
	flood := newMemSource()
	var floodRecs []record
	for i := range 20 {
		floodRecs = append(floodRecs, testEnvelope(t, ca.Topic, now(time.Duration(i-20)*time.Second), size))
	}
	flood.add(floodRecs...)
	if err := mal.sync(r, ca.Topic, flood); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 15)
	for i, rec := range genuine {
		if has, _ := r.st.has(rec.ID); !has {
			t.Errorf("B's envelope %d was evicted by A's flood", i)
		}
	}
	_, _, topics := r.st.totals()
	if a := topics[ca.Topic]; a.n != 10 {
		t.Errorf("topic A holds %d envelopes; want its share, 10", a.n)
	}
	for i, rec := range floodRecs {
		if has, _ := r.st.has(rec.ID); has != (i >= 10) {
			t.Errorf("A's envelope %d (time order): stored %v; want only A's 10 newest", i, has)
		}
	}
	more := testEnvelope(t, cb.Topic, now(0), size)
	srcB.add(more)
	if err := b.sync(r, cb.Topic, srcB); err != nil {
		t.Fatal(err)
	}
	if has, _ := r.st.has(more.ID); !has {
		t.Error("a new envelope of B was not stored after A's flood")
	}
	if !strings.Contains(logs.String(), `msg="topic quota reached: dropped the topic's oldest envelopes" topic=`+ca.Topic.Short()) {
		t.Errorf("no log line naming the topic whose quota was reached:\n%s", logs.String())
	}
}

// TestPeerWriteRate: a peer over its write rate gets the rest of its envelopes refused, with a clear
// log line, and the session still ends cleanly (the device offers them again later).
func TestPeerWriteRate(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	r, logs := newTestRelay(t, Config{PeerRate: 1, PeerBurst: 3, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	d.connect(t, r)
	d.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key})
	src := newMemSource()
	for i := range 10 {
		src.add(testEnvelope(t, ca.Topic, now(time.Duration(i-20)*time.Minute), 300))
	}
	if err := d.sync(r, ca.Topic, src); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := r.st.totals(); n != 3 {
		t.Fatalf("the relay stored %d envelopes; want the burst, 3", n)
	}
	if l := logs.String(); !strings.Contains(l, `msg="peer is over its write rate: refusing its envelopes"`) || !strings.Contains(l, d.h.ID().ShortString()) {
		t.Errorf("no clear log line for the refused envelopes:\n%s", logs.String())
	}
	clock.Add(int64(time.Hour)) // the budget refills
	if err := d.sync(r, ca.Topic, src); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := r.st.totals(); n != 6 {
		t.Errorf("after the budget refilled: %d envelopes; want 6", n)
	}
}
