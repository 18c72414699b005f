package node

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/node/historyproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
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
