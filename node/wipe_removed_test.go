package node

import (
	"context"
	"encoding/binary"
	"log/slog"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// A device removed earlier (B, a leaver whose phone turns out lost) can still be ordered wiped: the
// admin issues the order without a new removal, C carries it, and B, meeting only C, wipes. Nothing
// about the team reopens: B stays removed, and C does not sync with it. The order replayed at E,
// another device removed earlier, is refused there; a member who is not an admin cannot issue one.
func TestRemoteWipeOfDeviceRemovedEarlier(t *testing.T) {
	watches := []*wipeWatch{newWipeWatch(), newWipeWatch(), newWipeWatch(), newWipeWatch()}
	mn, ns := newMockNodesCfg(t, func(i int, c *Config) {
		c.OnWipe = watches[i].onWipe
		c.Logger = slog.New(watches[i])
	}, "Dr Banda", "Lost Phone", "CHW Tembo", "Old Phone")
	a, b, c, e := ns[0], ns[1], ns[2], ns[3]
	_, ref := clinicalTeam(t, a, "Ward", b, c, e)
	bID, eID := b.id.Device.ID(), e.id.Device.ID()
	for _, who := range []string{bID.String()[:16], eID.String()[:16]} {
		if err := a.RemoveMember(ref, who); err != nil {
			t.Fatal(err)
		}
	}
	// The removals reach B and E (they learn of them), then B is cut off from everyone.
	waitState(t, b, ref, func(s *crdt.State) bool { _, ok := s.Member(bID); return !ok })
	waitState(t, e, ref, func(s *crdt.State) bool { _, ok := s.Member(eID); return !ok })
	cutOff(mn, b, a, c, e)

	if _, err := c.RemoteWipe(ref, bID.String()[:16], 0); err == nil {
		t.Error("a member who is not an admin ordered the wipe of a removed device")
	}
	epochs := len(a.Snapshot(t, ref).Epochs)
	order, err := a.RemoteWipe(ref, bID.String()[:16], 0)
	if err != nil {
		t.Fatalf("the admin orders the wipe of a device removed earlier: %v", err)
	}
	if got := len(a.Snapshot(t, ref).Epochs); got != epochs {
		t.Errorf("the order for a removed device made %d new epochs; want none (nothing to remove)", got-epochs)
	}
	if _, err := c.host.Network().DialPeer(context.Background(), a.host.ID()); err != nil {
		t.Fatal(err)
	}
	waitCarried(t, c, order)

	// Replayed at E, removed too, by a peer that answers E's fetch with B's order: refused (it
	// names B), and E does not wipe. An order naming E signed by C, not an admin, comes last: once E
	// logs its refusal, E has judged the whole answer.
	byMember, err := wipeorder.Issue(c.id.Device, eID, a.now(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	h.SetStreamHandler(wipeproto.Protocol, func(s network.Stream) {
		defer s.Close()
		if _, err := framing.Read(s, 1); err != nil {
			return
		}
		ans := append(binary.AppendUvarint(nil, 2), order.Bytes()...)
		_ = framing.Write(s, append(ans, byMember.Bytes()...))
	})
	if _, err := mn.LinkPeers(h.ID(), e.host.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Network().DialPeer(context.Background(), e.host.ID()); err != nil {
		t.Fatal(err)
	}
	watches[3].wait(t, "E's refusal of B's order", func(_ []*wipeorder.Order, refused int) bool { return refused >= 1 })

	// B comes back and meets only C.
	cutOff(mn, a, c)
	bringInReach(t, mn, b, c)
	watches[1].wait(t, "wipe of B", func(os []*wipeorder.Order, _ int) bool { return len(os) > 0 })
	watches[1].mu.Lock()
	got := watches[1].orders[0]
	watches[1].mu.Unlock()
	if got.Key() != order.Key() {
		t.Fatalf("B acted on another order")
	}
	if s := c.Snapshot(t, ref); func() bool { _, ok := s.Member(bID); return ok }() {
		t.Error("B is a member again in C's view")
	}
	for _, i := range []int{0, 2, 3} {
		watches[i].mu.Lock()
		if len(watches[i].orders) != 0 {
			t.Errorf("node %d, not named by the order, wiped", i)
		}
		watches[i].mu.Unlock()
	}
}

// Snapshot returns the node's state of a team.
func (n *testNode) Snapshot(t *testing.T, ref string) *crdt.State {
	t.Helper()
	tm, err := n.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return tm.snapshot()
}
