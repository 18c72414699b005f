package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// TestRemovalEndsAccess: after an admin removes C, C stays connected, yet it cannot open anything sent
// after its removal, from gossip or from a sync, while B reads it; what C posts before it learns of
// its removal shows on neither A nor B; a sync C asks for turns into a membership exchange, after
// which C shows that it was removed and refuses to send; no one is held to be misbehaving for it.
func TestRemovalEndsAccess(t *testing.T) {
	mn, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "CHW Tembo")
	a, b, c := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", b, c)
	if _, _, err := c.Send(ref, crdt.Message{Text: "before removal"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, ref, 1)
	waitMessages(t, a, ref, 1)

	if err := b.RemoveMember(ref, "CHW Tembo"); err == nil {
		t.Error("a non-admin removed a member")
	}
	// C is out of reach while A removes it, so it has not learned of its removal: it still posts.
	cutOff(mn, c, a, b)
	if err := a.RemoveMember(ref, "CHW Tembo"); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, ref, func(s *crdt.State) bool { _, ok := s.Member(c.id.Device.ID()); return !ok })
	late, _, err := c.Send(ref, crdt.Message{Text: "after my removal"})
	if err != nil {
		t.Fatalf("C, not yet aware of its removal, could not post: %v", err)
	}
	id, _, err := a.Send(ref, crdt.Message{Text: "after removal", Patient: "MRN-1"})
	if err != nil {
		t.Fatal(err)
	}
	ms := waitMessages(t, b, ref, 2)
	if ms[len(ms)-1].ID != id {
		t.Fatalf("B's last message is %v; want the one sent after the removal", ms[len(ms)-1].ID)
	}
	sb := b.snapshot(ref)
	if _, ok := sb.Member(c.id.Device.ID()); ok || len(sb.Persons) != 2 {
		t.Errorf("B still lists C as a member: %+v", sb.Persons)
	}
	if sb.Current < 0 || len(sb.Epochs[sb.Current].Recipients) != 2 {
		t.Errorf("B's current epoch does not have exactly the two remaining devices: %+v", sb.Epochs)
	}
	// C's history keeps C's own earlier message and the author name.
	if ms[0].AuthorName != "CHW Tembo" {
		t.Errorf("the removed member's earlier message shows author %q", ms[0].AuthorName)
	}
	// C's late message, handed to A and B directly, is not kept.
	lateRec, err := c.st.Envelope(late)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{a, b} {
		tm, _ := n.teamByRef(ref)
		vs, err := n.receive(tm, c.host.ID(), [][]byte{lateRec.Data})
		if err != nil {
			t.Fatal(err)
		}
		if vs[0] == device.Accepted || tm.has(late) {
			t.Errorf("%s kept the removed member's late message (%v)", n.id.Name, vs[0])
		}
	}

	for _, o := range []*testNode{a, b} {
		if _, err := mn.LinkPeers(c.host.ID(), o.host.ID()); err != nil {
			t.Fatal(err)
		}
	}
	tc, _ := c.teamByRef(ref)
	// A and B no longer reconcile with C; C asking turns into a membership exchange.
	if err := c.syncTeamErr(context.Background(), a.host.ID(), tc, true); err != nil {
		t.Fatalf("C's sync with A: %v", err)
	}
	_ = c.syncTeamErr(context.Background(), b.host.ID(), tc, true)
	if tc.has(id) {
		t.Fatal("the removed device opened a message sent after its removal")
	}
	tc.mu.Lock()
	removed := tc.core.Removed()
	tc.mu.Unlock()
	if !removed {
		t.Error("after the membership exchange C does not show that it was removed")
	}
	if _, _, err := c.Send(ref, crdt.Message{Text: "still here?"}); !errors.Is(err, ErrRemoved) {
		t.Errorf("C sends after learning of its removal: %v; want ErrRemoved", err)
	}
	if c.isBanned(a.host.ID()) || a.isBanned(c.host.ID()) || b.isBanned(c.host.ID()) {
		t.Error("a peer was banned over a removal")
	}
	// With the envelope in hand, the message does not open for C.
	rec, err := a.st.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := c.receive(tc, a.host.ID(), [][]byte{rec.Data})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0] == device.Accepted || tc.has(id) {
		t.Errorf("C kept a message sent after its removal (%v)", vs[0])
	}
	for _, n := range []*testNode{a, b} {
		for _, m := range n.mustMessages(t, ref) {
			if m.ID == late {
				t.Errorf("%s shows the removed member's late message", n.id.Name)
			}
		}
	}
}

// TestLinkAndRemoveDevice: a member links a second device, which appears under the member's name and
// can send; the member then removes it (a lost phone), and it no longer reads the team.
func TestLinkAndRemoveDevice(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "laptop")
	a, b, b2 := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", b)
	if _, err := b.LinkDevice(ref, 0, "nurse phiri"); err == nil {
		t.Error("a link code naming the device as the person's first device is named was made")
	}
	code, err := b.LinkDevice(ref, 0, "Phiri's laptop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Join(context.Background(), code.Code()); err != nil {
		t.Fatal(err)
	}
	// Every member sees the person's two devices under their own names (the new device's own name,
	// "laptop", given at its init, is not the one its person's device chose).
	waitState(t, a, ref, func(s *crdt.State) bool {
		p, _ := s.PersonOf(b2.id.Device.ID())
		return len(p.Devices) == 2
	})
	for _, n := range []*testNode{a, b, b2} {
		ms, err := n.Members(ref)
		if err != nil {
			t.Fatal(err)
		}
		labels := map[string]bool{}
		for _, m := range ms {
			if m.Name == "Nurse Phiri" {
				for _, d := range m.Devices {
					labels[d.Label] = true
				}
			}
		}
		if !labels["Nurse Phiri"] || !labels["Phiri's laptop"] || len(labels) != 2 {
			t.Errorf("%s shows Nurse Phiri's devices as %v; want \"Nurse Phiri\" and \"Phiri's laptop\"", n.id.Name, labels)
		}
	}
	if _, _, err := b2.Send(ref, crdt.Message{Text: "from the laptop"}); err != nil {
		t.Fatal(err)
	}
	ms := waitMessages(t, a, ref, 1)
	if ms[0].AuthorName != "Nurse Phiri" {
		t.Errorf("the linked device's message shows author %q; want its person's name", ms[0].AuthorName)
	}
	sa := a.snapshot(ref)
	p, ok := sa.PersonOf(b2.id.Device.ID())
	if !ok || p.ID != b.id.Device.ID() || len(p.Devices) != 2 || len(sa.Persons) != 2 {
		t.Fatalf("after the link: persons %+v; want Nurse Phiri with two devices", sa.Persons)
	}

	if err := b.RemoveDevice(ref, b2.id.Device.ID().String()[:12]); err != nil {
		t.Fatal(err)
	}
	// A sends once it has seen the removal (before that, it would still be the partition window).
	waitState(t, a, ref, func(s *crdt.State) bool {
		p, _ := s.PersonOf(b.id.Device.ID())
		return len(p.Devices) == 1 && s.Current >= 0
	})
	id, _, err := a.Send(ref, crdt.Message{Text: "after the laptop was lost"})
	if err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, ref, 2)
	tb2, _ := b2.teamByRef(ref)
	_ = b2.syncTeamErr(context.Background(), a.host.ID(), tb2, true)
	if tb2.has(id) {
		t.Error("a removed device opened a message sent after its removal")
	}
	if p, _ := a.snapshot(ref).PersonOf(b.id.Device.ID()); len(p.Devices) != 1 {
		t.Errorf("Nurse Phiri still has %d devices", len(p.Devices))
	}
}

// TestRotationAndRetention: with a short rotation period the admin re-keys on schedule; epoch keys past
// the retention window are destroyed, and the messages they opened are deleted with them; sending goes on.
func TestRotationAndRetention(t *testing.T) {
	_, ns := newMockNodesCfg(t, func(_ int, c *Config) {
		c.RotateEvery = 100 * time.Millisecond
		c.RetainKeys = time.Millisecond
		c.EpochCheck = 40 * time.Millisecond
	}, "Dr Banda")
	a := ns[0]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	if _, _, err := a.Send(ref, crdt.Message{Text: "in the first epoch"}); err != nil {
		t.Fatal(err)
	}
	ta, _ := a.teamByRef(ref)
	ch, cancel := ta.watch()
	defer cancel()
	deadline := time.After(30 * time.Second)
	for {
		s := ta.snapshot()
		ta.mu.Lock()
		held := ta.core.HoldsKey(ta.rec.Genesis)
		ta.mu.Unlock()
		if len(s.Epochs) >= 3 && !held {
			break
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("after the deadline: %d epochs, genesis key held %v", len(s.Epochs), held)
		}
	}
	if ms := a.mustMessages(t, ref); len(ms) != 0 {
		t.Fatalf("%d messages after old keys were destroyed; want 0 (deleted at retention)", len(ms))
	}
	if _, _, err := a.Send(ref, crdt.Message{Text: "in a later epoch"}); err != nil {
		t.Fatal(err)
	}
}

// waitState waits, on the team's watch events with a deadline, until cond holds for n's state.
func waitState(t *testing.T, n *testNode, ref string, cond func(*crdt.State) bool) {
	t.Helper()
	tm, err := n.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel := tm.watch()
	defer cancel()
	deadline := time.After(30 * time.Second)
	for !cond(tm.snapshot()) {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: the state did not reach the condition before the deadline", n.id.Name)
		}
	}
}

// TestVerifyAndKeyChangeWarning: both ends of a pair compute the same safety number; marking it needs
// the scanned code to match; a verified member shows as verified until a device is added to them, then
// as keys-changed with that device named.
func TestVerifyAndKeyChangeWarning(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "laptop")
	a, b, b2 := ns[0], ns[1], ns[2]
	_, ref := clinicalTeam(t, a, "Ward", b)
	waitState(t, b, ref, func(s *crdt.State) bool { return len(s.Persons) == 2 })

	fromA, err := a.SafetyNumbers(ref, "Nurse Phiri")
	if err != nil || len(fromA) != 1 {
		t.Fatalf("A's safety numbers: %+v, %v", fromA, err)
	}
	fromB, err := b.SafetyNumbers(ref, "Dr Banda")
	if err != nil || len(fromB) != 1 {
		t.Fatalf("B's safety numbers: %+v, %v", fromB, err)
	}
	if fromA[0].Number != fromB[0].Number || fromA[0].QR != fromB[0].QR {
		t.Fatalf("the two ends show different numbers: %q / %q", fromA[0].Number, fromB[0].Number)
	}
	if _, err := a.MarkVerified(ref, "Nurse Phiri", "FIELDMESH:SN0:not-the-code"); err == nil {
		t.Fatal("a scanned code that does not match was accepted")
	}
	if ms, _ := a.Members(ref); statusOf(ms, "Nurse Phiri") != Unverified {
		t.Fatalf("after a refused scan: %v; want unverified", statusOf(ms, "Nurse Phiri"))
	}
	if _, err := a.MarkVerified(ref, "Nurse Phiri", fromB[0].QR); err != nil {
		t.Fatal(err)
	}
	if ms, _ := a.Members(ref); statusOf(ms, "Nurse Phiri") != Verified {
		t.Fatalf("after marking: %v; want verified", statusOf(ms, "Nurse Phiri"))
	}

	code, err := b.LinkDevice(ref, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Join(context.Background(), code.Code()); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, ref, func(s *crdt.State) bool { _, ok := s.Member(b2.id.Device.ID()); return ok })
	ms, err := a.Members(ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == "Nurse Phiri" && (m.Status != KeysChanged || len(m.Changed) != 1 || m.Changed[0] != b2.id.Device.ID()) {
			t.Errorf("after B linked a device: %+v; want keys-changed naming the new device", m)
		}
	}
}

func statusOf(ms []MemberView, name string) VerificationStatus {
	for _, m := range ms {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}
