package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// TestRemovalEndsAccess: after an admin removes C, C stays connected, yet it cannot open anything sent
// after its removal, from gossip or from a full catch-up, while B reads it; C is not held to be a
// misbehaving peer for asking.
func TestRemovalEndsAccess(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "CHW Tembo")
	a, b, c := ns[0], ns[1], ns[2]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b, c)
	if _, _, err := c.Send(ref, crdt.Message{Text: "before removal"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, ref, 1)
	waitMessages(t, a, ref, 1)

	if err := b.RemoveMember(ref, "CHW Tembo"); err == nil {
		t.Error("a non-admin removed a member")
	}
	if err := a.RemoveMember(ref, "CHW Tembo"); err != nil {
		t.Fatal(err)
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

	tc, _ := c.teamByRef(ref)
	// A no longer reconciles with C (not a member); C asking is not misbehaviour on either side.
	_ = c.syncTeamErr(context.Background(), a.host.ID(), tc, true)
	_ = c.syncTeamErr(context.Background(), b.host.ID(), tc, true)
	if tc.has(id) {
		t.Fatal("the removed device opened a message sent after its removal")
	}
	if c.isBanned(a.host.ID()) || a.isBanned(c.host.ID()) {
		t.Error("a peer was banned over envelopes of an epoch the other does not hold")
	}
	// With the envelope in hand and everything C ever held, the message does not open.
	rec, err := a.st.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	e, err := envelope.Unmarshal(rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	tc.keyMu.Lock()
	_, err = tc.keys.Open(e)
	tc.keyMu.Unlock()
	if !errors.Is(err, teamkeys.ErrUnknownEpoch) {
		t.Errorf("C opening the envelope: %v; want ErrUnknownEpoch", err)
	}
}

// TestLinkAndRemoveDevice: a member links a second device, which appears under the member's name and
// can send; the member then removes it (a lost phone), and it no longer reads the team.
func TestLinkAndRemoveDevice(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri", "laptop")
	a, b, b2 := ns[0], ns[1], ns[2]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b)
	code, err := b.LinkDevice(ref, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Join(context.Background(), code.Code()); err != nil {
		t.Fatal(err)
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
// the retention window are destroyed, the messages they opened stay, after a restart too.
func TestRotationAndRetention(t *testing.T) {
	_, ns := newMockNodesCfg(t, func(c *Config) {
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
	genesisTag := crdt.TagOf(ta.rec.Genesis)
	ch, cancel := ta.watch()
	defer cancel()
	deadline := time.After(30 * time.Second)
	for {
		s := ta.snapshot()
		ta.keyMu.Lock()
		held := ta.keys.Tags()
		ta.keyMu.Unlock()
		forgotten := true
		for _, tag := range held {
			forgotten = forgotten && tag != genesisTag
		}
		if len(s.Epochs) >= 3 && forgotten {
			break
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("after the deadline: %d epochs, keys held %v (genesis %v)", len(s.Epochs), held, genesisTag)
		}
	}
	if ms := a.mustMessages(t, ref); len(ms) != 1 {
		t.Fatalf("%d messages after old keys were destroyed; want 1", len(ms))
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
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b)
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

	code, err := b.LinkDevice(ref, 0)
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
