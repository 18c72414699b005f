package duty

import (
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestDutyAcrossDST: duty hours and rota in Europe/London on the Monday after the change to summer
// time (2025-03-31; 08:00 BST is 07:00 UTC). A routine message to b, off duty until 08:00 local,
// surfaces at 07:00 UTC; an urgent message at 07:30 UTC (08:30 local) falls in the 08:00 slot, so it
// goes to b and escalates to d, not to c of the early slot.
func TestDutyAcrossDST(t *testing.T) {
	const london = "Europe/London"
	mon := time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC)
	utc := func(h, m int) time.Time { return mon.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	tm := newTeam()
	tm.s.Duty = map[identity.DeviceID]crdt.DutyView{
		b: {Duty: crdt.Duty{Zone: london, Shifts: []crdt.Shift{{Day: 1, Start: 8 * 60, Length: 8 * 60}}}},
	}
	tm.s.Rota = &crdt.RotaView{Rota: crdt.Rota{Zone: london, EscalateAfter: 10, RenotifyEvery: 3, Slots: []crdt.RotaSlot{
		{Shift: crdt.Shift{Day: 1, Start: 0, Length: 8 * 60}, OnCall: []identity.DeviceID{c}},
		{Shift: crdt.Shift{Day: 1, Start: 8 * 60, Length: 16 * 60}, OnCall: []identity.DeviceID{b, d}},
	}}}
	tm.msg(1, a, crdt.Routine, utc(5, 0))
	trs := trackers(b, c, d)
	got := run(tm, trs, utc(5, 0), utc(7, 29))
	tm = &team{s: tm.s} // a new state, as the core gives (Due takes an unchanged pointer for an unchanged state)
	tm.msg(2, a, crdt.Urgent, utc(7, 30))
	for dv, more := range run(tm, trs, utc(7, 30), utc(7, 45)) {
		got[dv] = append(got[dv], more...)
	}
	want := map[identity.DeviceID][]string{
		b: {"07:00 routine shift-start", "07:30 urgent new"},
		c: {"05:00 routine new"},
		d: {"05:00 routine new", "07:40 urgent escalated"},
	}
	for _, dv := range []identity.DeviceID{b, c, d} {
		if !slices.Equal(got[dv], want[dv]) {
			t.Errorf("%s: %q; want %q", dv.Short(), got[dv], want[dv])
		}
	}
}
