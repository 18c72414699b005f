package device

import (
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// alertsAt ticks d at now and returns the alerts raised, as "priority reason".
func alertsAt(d *hdev, now time.Time) []string {
	eff := d.team.Tick(now, TickOptions{NoAcks: true})
	d.apply(eff)
	var out []string
	for _, a := range eff.Alerts {
		out = append(out, a.Priority.String()+" "+a.Reason.String())
	}
	return out
}

// TestAlertsSurviveRestart: what the duty tracker alerted is stored with the team (Write.Alerts) and
// restored by New. Ann (admin, reminded of a due review), Ben (first on call) and Cat (second on
// call) get an urgent message from Dee. Each restarts: Ann is not reminded again of the review, Ben is
// not alerted again of the message; Cat, down while the escalation fell due, is alerted of it at
// restart, and an emergency's repeat keeps its time.
func TestAlertsSurviveRestart(t *testing.T) {
	h := newHarness(t, 64)
	a := h.device("Ann")
	a.cfg.ReviewEvery = time.Hour
	tm, eff, err := Create(a.cfg, h.tick(time.Second), "Ward 3", crdt.Clinical, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	a.team = tm
	a.apply(eff)
	b := h.join(a, "Ben", false)
	c := h.join(a, "Cat", false)
	d := h.join(a, "Dee", false)
	all := []*hdev{a, b, c, d}
	h.mesh(all...)
	person := func(x *hdev) identity.DeviceID {
		p, _ := x.team.State().PersonOf(x.dev.ID())
		return p.ID
	}
	rota := crdt.Rota{EscalateAfter: 10, RenotifyEvery: 5, Slots: []crdt.RotaSlot{
		{Shift: crdt.Shift{Day: 0, Start: 0, Length: crdt.MinutesPerDay}, OnCall: []identity.DeviceID{person(b), person(c)}},
	}}
	for day := uint8(1); day < 7; day++ {
		rota.Slots = append(rota.Slots, crdt.RotaSlot{Shift: crdt.Shift{Day: day, Start: 0, Length: crdt.MinutesPerDay}, OnCall: rota.Slots[0].OnCall})
	}
	op, err := a.team.Make(h.tick(time.Second), crdt.KindRota, rota.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if _, eff, err = a.team.Publish(h.tick(time.Second), op); err != nil {
		t.Fatal(err)
	}
	a.apply(eff)
	h.mesh(all...)

	sent := h.tick(time.Hour) // Ann's review falls due
	_, eff, err = d.team.Send(sent, crdt.Message{Text: "bed 4 BP 190/120", Priority: crdt.Urgent})
	if err != nil {
		t.Fatal(err)
	}
	d.apply(eff)
	h.mesh(all...)
	now := h.tick(time.Minute)
	if got := alertsAt(a, now); !slices.Contains(got, "routine review-due") {
		t.Fatalf("Ann: %q; want the review reminder", got)
	}
	if got := alertsAt(b, now); !slices.Equal(got, []string{"urgent new"}) {
		t.Fatalf("Ben: %q; want the urgent alert", got)
	}
	if got := alertsAt(c, now); len(got) != 0 {
		t.Fatalf("Cat before the escalation: %q; want none", got)
	}

	// Ann and Ben restart: nothing again.
	now = h.tick(time.Minute)
	for _, x := range []*hdev{a, b} {
		x.restart(now)
		if got := alertsAt(x, h.tick(time.Second)); len(got) != 0 {
			t.Errorf("%s after a restart: %q; want nothing again", x.name, got)
		}
	}
	// Cat is down while the escalation falls due (10 minutes after the send), and restarts after it.
	now = sent.Add(15 * time.Minute)
	h.now = now
	c.restart(now)
	if got := alertsAt(c, h.tick(time.Second)); !slices.Equal(got, []string{"urgent escalated"}) {
		t.Errorf("Cat after a restart past the escalation: %q; want it escalated", got)
	}
	if got := alertsAt(c, h.tick(time.Minute)); len(got) != 0 {
		t.Errorf("Cat again: %q; want nothing", got)
	}

	// An emergency: alerted at once; a restart 3 minutes later keeps the repeat at 5 minutes.
	em := h.tick(time.Minute)
	if _, eff, err = d.team.Send(em, crdt.Message{Text: "arrest bay 2", Priority: crdt.Emergency}); err != nil {
		t.Fatal(err)
	}
	d.apply(eff)
	h.mesh(all...)
	if got := alertsAt(b, em.Add(time.Second)); !slices.Equal(got, []string{"emergency new"}) {
		t.Fatalf("Ben: %q; want the emergency", got)
	}
	b.restart(em.Add(3 * time.Minute))
	if got := alertsAt(b, em.Add(3*time.Minute)); len(got) != 0 {
		t.Errorf("Ben after a restart within the repeat interval: %q; want nothing", got)
	}
	if got := alertsAt(b, em.Add(5*time.Minute+time.Second)); !slices.Equal(got, []string{"emergency repeat"}) {
		t.Errorf("Ben 5 minutes after the emergency, restarted between: %q; want the repeat", got)
	}
}
