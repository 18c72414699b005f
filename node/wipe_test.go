package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/node/wipeproto/wipeprototest"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// wipeWatch records the orders a node acted on and the refusals it logged.
type wipeWatch struct {
	mu      sync.Mutex
	orders  []*wipeorder.Order
	refused int
	changed chan struct{}
}

func newWipeWatch() *wipeWatch { return &wipeWatch{changed: make(chan struct{}, 64)} }

func (w *wipeWatch) onWipe(o *wipeorder.Order) {
	w.mu.Lock()
	w.orders = append(w.orders, o)
	w.mu.Unlock()
	w.changed <- struct{}{}
}

func (w *wipeWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *wipeWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "wipe order refused") {
		w.mu.Lock()
		w.refused++
		w.mu.Unlock()
		w.changed <- struct{}{}
	}
	return nil
}
func (w *wipeWatch) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *wipeWatch) WithGroup(string) slog.Handler      { return w }

// wait waits, with a deadline, until cond holds.
func (w *wipeWatch) wait(t *testing.T, what string, cond func(orders []*wipeorder.Order, refused int) bool) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok := cond(w.orders, w.refused)
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-w.changed:
		case <-deadline.C:
			t.Fatalf("no %s within the deadline", what)
		}
	}
}

// waitCarried waits, with a deadline, until n carries an order naming target.
func waitCarried(t *testing.T, n *testNode, o *wipeorder.Order) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, c := range n.WipeOrders() {
			if c.Key() == o.Key() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not carry the order", n.id.Name)
		}
		<-tick.C
	}
}

// The lost device B is cut off when the admin orders its wipe. The admin re-keys the team without it
// and hands the order to C; the admin goes away; when B next meets C (no longer a member, it cannot
// sync with C), it fetches the order, checks the admin's signature, and wipes.
func TestRemoteWipeReachesRemovedDevice(t *testing.T) {
	watches := []*wipeWatch{newWipeWatch(), newWipeWatch(), newWipeWatch()}
	mn, ns := newMockNodesCfg(t, func(i int, c *Config) { c.OnWipe = watches[i].onWipe }, "Dr Banda", "Lost Phone", "CHW Tembo")
	a, b, c := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", b, c)
	cutOff(mn, b, a, c)
	if _, err := c.RemoteWipe(ref, b.id.Device.ID().String()[:16], 0); err == nil {
		t.Error("a member who is not an admin ordered a remote wipe")
	}
	order, err := a.RemoteWipe(ref, b.id.Device.ID().String()[:16], 0)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, a, ref, func(s *crdt.State) bool { _, ok := s.Member(b.id.Device.ID()); return !ok })
	if _, err := c.host.Network().DialPeer(context.Background(), a.host.ID()); err != nil {
		t.Fatal(err)
	}
	waitCarried(t, c, order)
	// The admin is gone; B comes back and meets only C.
	cutOff(mn, a, c)
	bringInReach(t, mn, b, c)
	watches[1].wait(t, "wipe of B", func(os []*wipeorder.Order, _ int) bool { return len(os) > 0 })
	watches[1].mu.Lock()
	got := watches[1].orders[0]
	watches[1].mu.Unlock()
	if got.Key() != order.Key() || got.Target != b.id.Device.ID() {
		t.Fatalf("B acted on %x; want the admin's order", got.Bytes()[:16])
	}
	for i, w := range []*wipeWatch{watches[0], watches[2]} {
		w.mu.Lock()
		if len(w.orders) != 0 {
			t.Errorf("node %d, not named by the order, wiped", i)
		}
		w.mu.Unlock()
	}
}

// A peer (any LAN peer, a relay gone bad, a removed member) hands C orders that are not for it: an
// admin's order for B replayed at C, one naming C signed by a member who is not an admin, and the
// admin's order for B with its target rewritten to C. C acts on none of them. The control, a real
// admin order naming C handed over the same way, makes C wipe.
func TestForgedAndReplayedWipeOrdersDoNothing(t *testing.T) {
	watch := newWipeWatch()
	mn, ns := newMockNodesCfg(t, func(i int, c *Config) {
		if i == 2 {
			c.OnWipe = watch.onWipe
			c.Logger = slog.New(watch)
		}
	}, "Dr Banda", "Nurse Phiri", "CHW Tembo")
	a, b, c := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", b, c)
	waitState(t, c, ref, func(s *crdt.State) bool { return len(s.Persons) == 3 })
	now := time.Now()
	forB, err := wipeorder.Issue(a.id.Device, b.id.Device.ID(), now, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	byMember, err := wipeorder.Issue(b.id.Device, c.id.Device.ID(), now, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	retargeted := forB.Bytes()
	cid := c.id.Device.ID()
	copy(retargeted[1:33], cid[:])
	good, err := wipeorder.Issue(a.id.Device, c.id.Device.ID(), now, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}

	carrier := func(t *testing.T, orders ...[]byte) {
		t.Helper()
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		h.SetStreamHandler(wipeproto.Protocol, func(s network.Stream) {
			defer s.Close()
			if _, err := framing.Read(s, 1); err != nil {
				return
			}
			ans := binary.AppendUvarint(nil, uint64(len(orders)))
			for _, o := range orders {
				ans = append(ans, o...)
			}
			_ = framing.Write(s, ans)
		})
		if _, err := mn.LinkPeers(h.ID(), c.host.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Network().DialPeer(context.Background(), c.host.ID()); err != nil {
			t.Fatal(err)
		}
	}
	// The member-signed order comes last: once C logs its refusal, C has judged the whole answer.
	carrier(t, forB.Bytes(), retargeted, byMember.Bytes())
	watch.wait(t, "refusal of the forged order", func(_ []*wipeorder.Order, refused int) bool { return refused >= 1 })
	watch.mu.Lock()
	acted := len(watch.orders)
	watch.mu.Unlock()
	if acted != 0 {
		t.Fatalf("C acted on %d forged or replayed orders", acted)
	}
	carrier(t, good.Bytes())
	watch.wait(t, "wipe on the admin's own order (control)", func(os []*wipeorder.Order, _ int) bool { return len(os) == 1 })
}

// Close and WipeKeys leave every epoch the cores held overwritten: the key slices the node owns hold
// zeros, and the cores hold no epoch.
func TestWipeKeysOverwritesTeamKeys(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	_, ref := clinicalTeam(t, a, "Ward", b)
	if _, _, err := a.Send(ref, crdt.Message{Text: "before the lock"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, ref, 1)
	tm, err := b.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	tm.mu.Lock()
	keys := tm.core.Keys()
	var held []interface{ Wiped() bool }
	for _, e := range keys.Epochs() {
		if ep, ok := keys.Epoch(e.Commit); ok {
			held = append(held, ep)
		}
	}
	tm.mu.Unlock()
	if len(held) == 0 {
		t.Fatal("B holds no epoch before the lock")
	}
	for _, ep := range held {
		if ep.Wiped() {
			t.Fatal("an epoch reads as wiped before WipeKeys: the check cannot fail")
		}
	}
	if err := b.WipeKeys(); err == nil {
		t.Error("WipeKeys ran on a running node")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.WipeKeys(); err != nil {
		t.Fatal(err)
	}
	for i, ep := range held {
		if !ep.Wiped() {
			t.Errorf("epoch %d still holds key material after WipeKeys", i)
		}
	}
	if n := keys.Len(); n != 0 {
		t.Errorf("the core still holds %d epochs", n)
	}
}

// B stays connected to a peer (here a bare host that carries orders, as a clinic relay does) that is
// handed an order for B after the connection began. B learns of it without a new connection: it asks
// its connected peers again each WipeAsk.
func TestWipeOrderReachesLongConnection(t *testing.T) {
	t.Run("alone", func(t *testing.T) { testWipeOverLastingConnection(t, 0) })
	// Any LAN peer can connect and hold a wipe stream open without answering. Asked one after another,
	// eight of them would hold the carrier's answer back by wipeproto.Timeout each.
	t.Run("beside peers that never answer", func(t *testing.T) { testWipeOverLastingConnection(t, 8) })
}

// lostPhone starts admin A and lost phone B (its wipes go to watch, it asks its peers every 50 ms) in
// one team, and cuts B off from A.
func lostPhone(t *testing.T, watch *wipeWatch) (mn mocknet.Mocknet, a, b *testNode) {
	t.Helper()
	mn, ns := newMockNodesCfg(t, func(i int, c *Config) {
		if i == 1 {
			c.OnWipe, c.WipeAsk = watch.onWipe, 50*time.Millisecond
		}
	}, "Dr Banda", "Lost Phone")
	a, b = ns[0], ns[1]
	clinicalTeam(t, a, "Ward", b)
	cutOff(mn, b, a)
	return mn, a, b
}

// newPeerOf starts a bare host linked and connected to b, prepared by serve before it connects.
func newPeerOf(t *testing.T, mn mocknet.Mocknet, b *testNode, serve func(host.Host)) (network.Conn, host.Host) {
	t.Helper()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mn.LinkPeers(h.ID(), b.host.ID()); err != nil {
		t.Fatal(err)
	}
	serve(h)
	c, err := mn.ConnectPeers(h.ID(), b.host.ID())
	if err != nil {
		t.Fatal(err)
	}
	return c, h
}

func testWipeOverLastingConnection(t *testing.T, stallers int) {
	watch := newWipeWatch()
	mn, a, b := lostPhone(t, watch)
	for range stallers {
		newPeerOf(t, mn, b, func(h host.Host) {
			h.SetStreamHandler(wipeproto.Protocol, func(s network.Stream) {
				_, _ = io.Copy(io.Discard, s) // reads the ask, answers nothing, until B gives up
			})
		})
	}
	var carried *wipeprototest.Carrier
	conn, carrier := newPeerOf(t, mn, b, func(h host.Host) { carried = wipeprototest.Serve(h) })
	select {
	case <-carried.Asked: // an ask (of the new connection, or a round), answered with nothing
	case <-time.After(30 * time.Second):
		t.Fatal("B did not ask the carrier for orders")
	}
	o, err := wipeorder.Issue(a.id.Device, b.id.Device.ID(), time.Now(), time.Hour, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	carried.Add(o)
	handed := time.Now()
	watch.wait(t, "wipe of B over the lasting connection", func(os []*wipeorder.Order, _ int) bool { return len(os) > 0 })
	if took := time.Since(handed); took >= wipeproto.Timeout {
		t.Errorf("B learned of the order %v after its carrier had it: peers that never answer held it back", took.Round(time.Second))
	}
	if cs := carrier.Network().ConnsToPeer(b.host.ID()); len(cs) != 1 || cs[0].ID() != conn.ID() {
		t.Fatalf("the order came over another connection (%d now): this test is about one that lasts", len(cs))
	}
}

// TestWipeActsOnce: two carriers each hand the lost device a valid order, and rounds keep asking
// both. The device acts on the first order it accepts and never again: OnWipe is called once.
func TestWipeActsOnce(t *testing.T) {
	watch := newWipeWatch()
	mn, a, b := lostPhone(t, watch)
	var carriers []*wipeprototest.Carrier
	for range 2 {
		newPeerOf(t, mn, b, func(h host.Host) { carriers = append(carriers, wipeprototest.Serve(h)) })
	}
	for _, c := range carriers {
		o, err := wipeorder.Issue(a.id.Device, b.id.Device.ID(), time.Now(), time.Hour, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c.Add(o)
	}
	// Asks of one peer run one after another (wipeproto.Rounds), each acting before the next starts:
	// by a carrier's fourth ask after the orders, at least two asks that found an order have ended.
	for i, c := range carriers {
		for range 4 {
			select {
			case <-c.Asked:
			case <-time.After(30 * time.Second):
				t.Fatalf("carrier %d: B stopped asking for orders", i)
			}
		}
	}
	watch.mu.Lock()
	got := len(watch.orders)
	watch.mu.Unlock()
	if got != 1 {
		t.Errorf("OnWipe called %d times; want once", got)
	}
}
