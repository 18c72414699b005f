package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node/historyproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// historyTeam: Dr Banda and Nurse Phiri talk in a team; then Nurse Phiri links a laptop. It returns
// the nodes, the team and the texts shown before the link.
func historyTeam(t *testing.T) (a, b, b2, out *testNode, ref string, team crdt.TeamID, early []string) {
	t.Helper()
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "laptop", "outsider")
	a, b, b2, out = ns[0], ns[1], ns[2], ns[3]
	info, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref = info.ID.String()
	joinAll(t, a, ref, b)
	for i, s := range []string{"bed 4 needs fluids", "on it", "fluids started 14:10"} {
		sender := a
		if i == 1 {
			sender = b
		}
		if _, _, err := sender.Send(ref, crdt.Message{Text: s}); err != nil {
			t.Fatal(err)
		}
		waitMessages(t, a, ref, i+1)
		waitMessages(t, b, ref, i+1)
	}
	for _, m := range b.mustMessages(t, ref) {
		early = append(early, m.Text)
	}
	code, err := b.LinkDevice(ref, 0, "Phiri's laptop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Join(context.Background(), code.Code()); err != nil {
		t.Fatal(err)
	}
	return a, b, b2, out, ref, info.ID, early
}

// TestHistoryToLinkedDevice: a device linked to a person shows the messages that person's other
// device opened before the link (which it cannot open itself: it is no recipient of those epochs),
// without anyone asking, and a hand-over asked again keeps nothing twice.
func TestHistoryToLinkedDevice(t *testing.T) {
	_, b, b2, _, ref, _, early := historyTeam(t)
	ms := waitMessages(t, b2, ref, len(early))
	var got []string
	for _, m := range ms {
		got = append(got, m.Text)
	}
	if !slices.Equal(got, early) {
		t.Fatalf("the linked device shows %q; want %q", got, early)
	}
	n, err := b2.FetchHistory(context.Background(), ref, b.id.Device.ID().String())
	if err != nil || n != 0 {
		t.Errorf("asked again: kept %d, err %v; want 0, nil", n, err)
	}
}

// TestHistoryRefusedToOthers: the person's device hands its history to nobody else: not another
// member's device, not a device outside the team (any peer that connects), and not the linked device
// once it was unlinked. Each is refused by the serving device (historyproto.ErrRefused).
func TestHistoryRefusedToOthers(t *testing.T) {
	a, b, b2, out, ref, team, early := historyTeam(t)
	waitMessages(t, b2, ref, len(early))
	ctx := context.Background()
	if _, err := a.FetchHistory(ctx, ref, b.id.Device.ID().String()); !errors.Is(err, historyproto.ErrRefused) {
		t.Errorf("another member asks: err %v; want ErrRefused", err)
	}
	// An outsider knows the team id and asks directly.
	s, err := out.host.NewStream(ctx, b.host.ID(), historyproto.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	_, err = historyproto.Fetch(s, out.id.Device, b.id.Device.ID(), b.id.Device.NoisePublic(), historyproto.Ask{Team: team})
	s.Close()
	if !errors.Is(err, historyproto.ErrRefused) {
		t.Errorf("an outsider asks: err %v; want ErrRefused", err)
	}
	// The laptop is lost: its person unlinks it, and it is refused from then on.
	if err := b.RemoveDevice(ref, b2.id.Device.ID().String()); err != nil {
		t.Fatal(err)
	}
	s, err = b2.host.NewStream(ctx, b.host.ID(), historyproto.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	_, err = historyproto.Fetch(s, b2.id.Device, b.id.Device.ID(), b.id.Device.NoisePublic(), historyproto.Ask{Team: team})
	s.Close()
	if !errors.Is(err, historyproto.ErrRefused) {
		t.Errorf("the unlinked device asks: err %v; want ErrRefused", err)
	}
}

// TestHistoryResumesAfterCut: a hand-over cut off after its first page (the link to the person's
// other device goes) resumes from the cursor stored with that page once the devices meet again, not
// from the start, and the linked device ends with every message once.
func TestHistoryResumesAfterCut(t *testing.T) {
	mn, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "laptop")
	a, b, b2 := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", b)
	// More than one page (historyproto.PageBytes) of history.
	const sends = 24
	filler := strings.Repeat("fluids running well, review later. ", 120)
	for i := range sends {
		if _, _, err := a.Send(ref, crdt.Message{Text: fmt.Sprintf("round %c: %s", 'a'+i, filler)}); err != nil {
			t.Fatal(err)
		}
	}
	waitMessages(t, b, ref, sends)
	if sends*len(filler) < 3*historyproto.PageBytes/2 {
		t.Fatalf("history of %d bytes fits one page", sends*len(filler))
	}

	var mu stdsync.Mutex
	var asks []device.HistoryCursor
	firstEnded, resumed := make(chan struct{}), make(chan struct{})
	hook := func(n *Node, _ crdt.TeamID, asked device.HistoryCursor) {
		if n != b2.Node {
			return // the phone asking the laptop: nothing to hand over
		}
		mu.Lock()
		defer mu.Unlock()
		asks = append(asks, asked)
		if len(asks) == 1 {
			cutOff(mn, b2, b)
			b2.hist.mu.Lock()
			for _, done := range b2.hist.busy {
				go func() { <-done; close(firstEnded) }()
			}
			b2.hist.mu.Unlock()
		}
		if len(asks) == 2 {
			close(resumed)
		}
	}
	testHookHistoryPage.Store(&hook)
	t.Cleanup(func() { testHookHistoryPage.Store(nil) })

	code, err := b.LinkDevice(ref, 0, "Phiri's laptop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Join(context.Background(), code.Code()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-firstEnded:
	case <-time.After(60 * time.Second):
		t.Fatal("the first hand-over was not cut off and ended")
	}
	if got := len(b2.mustMessages(t, ref)); got >= sends {
		t.Fatalf("after the cut the laptop shows %d messages; want fewer than %d (the cut came after one page)", got, sends)
	}
	bringInReach(t, mn, b2, b)
	ms := waitMessages(t, b2, ref, sends)
	select {
	case <-resumed:
	case <-time.After(60 * time.Second):
		t.Fatal("no second hand-over page was stored")
	}
	seen := make(map[crdt.OpID]bool)
	for _, m := range ms {
		if seen[m.ID] {
			t.Errorf("message %s shown twice", m.ID)
		}
		seen[m.ID] = true
	}
	if len(ms) != sends {
		t.Errorf("the laptop shows %d messages; want %d", len(ms), sends)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asks) < 2 || asks[0] != (device.HistoryCursor{}) || asks[1] == (device.HistoryCursor{}) {
		t.Errorf("asks after cursors %v; want the start, then the cursor of the first page (resumed, not restarted)", asks)
	}
}
