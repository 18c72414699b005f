package device

import (
	"errors"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// createSocial makes a social team with d as its creator.
func (h *harness) createSocial(name string) *hdev {
	h.t.Helper()
	d := h.device(name)
	tm, eff, err := Create(d.cfg, h.tick(time.Second), "Staff room", crdt.Social, name)
	if err != nil {
		h.t.Fatal(err)
	}
	d.team = tm
	d.apply(eff)
	return d
}

// TestSocialTeamRefusesPatientReference: the core will not make a message with a patient reference in
// a social team, and a member's forged one (sealed and signed by it, bypassing its core's check) is
// neither kept nor shown by another member.
func TestSocialTeamRefusesPatientReference(t *testing.T) {
	h := newHarness(t, 61)
	a := h.createSocial("Ann")
	b := h.join(a, "Ben", false)
	h.mesh(a, b)
	if _, _, err := b.team.Send(h.tick(time.Second), crdt.Message{Text: "bed 4", Patient: "PT-1"}); !errors.Is(err, ErrRefused) {
		t.Fatalf("Send with a patient reference in a social team = %v; want ErrRefused", err)
	}
	// The forgery: b builds and seals the op itself.
	s := b.team.State()
	ts := b.team.clock.Next()
	op := crdt.NewOp(b.dev, b.team.ID(), ts, b.team.lg.HeadsBefore(ts), crdt.KindMessage, crdt.Message{Text: "bed 4", Patient: "PT-1"}.Marshal())
	e, _, err := b.team.keys.Seal(op, s.Epochs[s.Current].ID)
	if err != nil {
		t.Fatal(err)
	}
	v := h.gossip(b, a, e.Marshal())
	if v[0] == Accepted {
		t.Errorf("a forged patient reference in a social team was accepted")
	}
	for _, m := range a.team.State().Messages {
		if m.Patient != "" {
			t.Errorf("Ann shows a patient reference in a social team")
		}
	}
	if a.store.ops[op.ID()] != nil {
		t.Errorf("Ann stored the forged op")
	}
	// A plain message goes through.
	h.send(b, "cake at four")
	h.mesh(a, b)
	if got := texts(a); len(got) != 1 || got[0] != "cake at four" {
		t.Errorf("Ann shows %q; want the plain message only", got)
	}
}

// TestMakeRotaNeedsAdmin: the core refuses to make a rota or review op for a member that is not an
// admin, and makes them for an admin.
func TestMakeRotaNeedsAdmin(t *testing.T) {
	h := newHarness(t, 62)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	h.mesh(a, b)
	rota := crdt.Rota{EscalateAfter: 10, RenotifyEvery: 5}.Marshal()
	review := crdt.Review{Persons: 2, Devices: 2}.Marshal()
	for kind, body := range map[crdt.Kind][]byte{crdt.KindRota: rota, crdt.KindReview: review} {
		if _, err := b.team.Make(h.tick(time.Second), kind, body); !errors.Is(err, ErrRefused) {
			t.Errorf("a member makes a %v op: %v; want ErrRefused", kind, err)
		}
		if _, err := a.team.Make(h.tick(time.Second), kind, body); err != nil {
			t.Errorf("an admin makes a %v op: %v", kind, err)
		}
	}
	if _, err := b.team.Make(h.tick(time.Second), crdt.KindDuty, crdt.Duty{}.Marshal()); err != nil {
		t.Errorf("a member publishes its duty hours: %v", err)
	}
}
