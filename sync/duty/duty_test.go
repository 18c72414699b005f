package duty

import (
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// monday is 2025-03-03 00:00 UTC, a Monday.
var monday = time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)

func at(h, m int) time.Time {
	return monday.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
}

// team builds a state with persons a (admin), b, c and d, one device each
// (a person's id is its device's id).
type team struct{ s crdt.State }

var a, b, c, d = identity.DeviceID{0xa}, identity.DeviceID{0xb}, identity.DeviceID{0xc}, identity.DeviceID{0xd}

func newTeam() *team {
	s := crdt.State{Kind: crdt.Clinical, Current: 0}
	for _, p := range []identity.DeviceID{a, b, c, d} {
		s.Persons = append(s.Persons, crdt.Person{ID: p, Name: p.Short(), Admin: p == a, Devices: []identity.DeviceID{p}})
	}
	s.Epochs = []crdt.EpochView{{Number: 1, Time: crdt.MakeHLC(monday.Add(-24*time.Hour), 0)}}
	return &team{s: s}
}

func (tm *team) msg(id byte, from identity.DeviceID, p crdt.Priority, sent time.Time) {
	tm.s.Messages = append(tm.s.Messages, crdt.MessageView{ID: crdt.OpID{id}, Author: from, Time: crdt.MakeHLC(sent, 0),
		Message: crdt.Message{Text: "x", Priority: p}})
}

func (tm *team) read(id byte, by identity.DeviceID) {
	for i := range tm.s.Messages {
		if tm.s.Messages[i].ID == (crdt.OpID{id}) {
			tm.s.Messages[i].ReadBy = append(tm.s.Messages[i].ReadBy, by)
			slices.SortFunc(tm.s.Messages[i].ReadBy, func(x, y identity.DeviceID) int { return slices.Compare(x[:], y[:]) })
		}
	}
}

func (tm *team) duty(p identity.DeviceID, shifts ...crdt.Shift) {
	if tm.s.Duty == nil {
		tm.s.Duty = make(map[identity.DeviceID]crdt.DutyView)
	}
	tm.s.Duty[p] = crdt.DutyView{Duty: crdt.Duty{Shifts: shifts}}
}

func (tm *team) rota(onCall ...identity.DeviceID) {
	tm.s.Rota = &crdt.RotaView{Rota: crdt.Rota{EscalateAfter: 10, RenotifyEvery: 3,
		Slots: []crdt.RotaSlot{{Shift: crdt.Shift{Day: 1, Start: 0, Length: 24 * 60}, OnCall: onCall}}}}
}

// run asks each tracker what is due at each minute from..to, and returns
// the alerts raised, by minute, for each device.
func run(tm *team, trs map[identity.DeviceID]*Tracker, from, to time.Time) map[identity.DeviceID][]string {
	out := make(map[identity.DeviceID][]string)
	for now := from; !now.After(to); now = now.Add(time.Minute) {
		for dev, tr := range trs {
			for _, al := range tr.Due(now, &tm.s, 0, nil) {
				out[dev] = append(out[dev], now.Format("15:04")+" "+al.Priority.String()+" "+al.Reason.String())
			}
		}
	}
	return out
}

func trackers(ds ...identity.DeviceID) map[identity.DeviceID]*Tracker {
	m := make(map[identity.DeviceID]*Tracker)
	for _, dv := range ds {
		m[dv] = NewTracker(dv, -1)
	}
	return m
}

func TestRoutineWaitsForShift(t *testing.T) {
	tm := newTeam()
	tm.duty(b, crdt.Shift{Day: 1, Start: 8 * 60, Length: 8 * 60}) // b: Monday 08:00-16:00
	tm.msg(1, a, crdt.Routine, at(6, 0))
	got := run(tm, trackers(b, c), at(6, 0), at(9, 0))
	if want := []string{"08:00 routine shift-start"}; !slices.Equal(got[b], want) {
		t.Errorf("off-duty b: %q; want %q", got[b], want)
	}
	if want := []string{"06:00 routine new"}; !slices.Equal(got[c], want) {
		t.Errorf("c (no duty hours published: always on): %q; want %q", got[c], want)
	}
}

func TestUrgentEscalates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		readBy identity.DeviceID // read at 09:15, if set
		want   map[identity.DeviceID][]string
	}{
		{"nobody reads", identity.DeviceID{}, map[identity.DeviceID][]string{
			b: {"09:00 urgent new"}, c: {"09:10 urgent escalated"}, d: {"09:20 urgent escalated"}}},
		{"c reads after its alert", c, map[identity.DeviceID][]string{
			b: {"09:00 urgent new"}, c: {"09:10 urgent escalated"}}},
		{"d reads, never alerted", d, map[identity.DeviceID][]string{
			b: {"09:00 urgent new"}, c: {"09:10 urgent escalated"}, d: nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTeam()
			tm.rota(a, b, c) // a, the author, is skipped: b, then c, then everyone
			tm.duty(c)       // c is off duty: on call all the same
			tm.msg(1, a, crdt.Urgent, at(9, 0))
			trs := trackers(b, c, d)
			got := run(tm, trs, at(9, 0), at(9, 14))
			if tc.readBy != (identity.DeviceID{}) {
				tm.read(1, tc.readBy)
			}
			for dv, more := range run(tm, trs, at(9, 15), at(10, 0)) {
				got[dv] = append(got[dv], more...)
			}
			for _, dv := range []identity.DeviceID{b, c, d} {
				if w := tc.want[dv]; !slices.Equal(got[dv], w) {
					t.Errorf("%s: %q; want %q", dv.Short(), got[dv], w)
				}
			}
		})
	}
}

func TestUrgentWithoutRotaAlertsEveryone(t *testing.T) {
	tm := newTeam()
	tm.duty(c) // off duty
	tm.msg(1, a, crdt.Urgent, at(9, 0))
	got := run(tm, trackers(a, b, c), at(9, 0), at(9, 30))
	for _, dv := range []identity.DeviceID{b, c} {
		if want := []string{"09:00 urgent new"}; !slices.Equal(got[dv], want) {
			t.Errorf("%s: %q; want %q", dv.Short(), got[dv], want)
		}
	}
	if len(got[a]) != 0 {
		t.Errorf("the author is alerted of its own message: %q", got[a])
	}
}

func TestEmergencyRepeatsUntilRead(t *testing.T) {
	tm := newTeam()
	tm.rota(b) // RenotifyEvery 3 minutes
	tm.duty(c) // off duty: alerted all the same
	tm.msg(1, a, crdt.Emergency, at(9, 0))
	trs := trackers(b, c)
	got := run(tm, trs, at(9, 0), at(9, 7))
	tm.read(1, b)
	for dv, more := range run(tm, trs, at(9, 8), at(9, 30)) {
		got[dv] = append(got[dv], more...)
	}
	want := []string{"09:00 emergency new", "09:03 emergency repeat", "09:06 emergency repeat"}
	for _, dv := range []identity.DeviceID{b, c} {
		if !slices.Equal(got[dv], want) {
			t.Errorf("%s: %q; want %q", dv.Short(), got[dv], want)
		}
	}
	// Read locally (not yet acknowledged in the log) stops the repeats too.
	tm2 := newTeam()
	tm2.msg(2, a, crdt.Emergency, at(9, 0))
	tr := NewTracker(b, -1)
	if n := len(tr.Due(at(9, 0), &tm2.s, 0, nil)); n != 1 {
		t.Fatalf("%d alerts; want 1", n)
	}
	if al := tr.Due(at(9, 10), &tm2.s, 0, func(crdt.OpID) bool { return true }); len(al) != 0 {
		t.Errorf("alerted after the user read it: %v", al)
	}
}

func TestPrimeDoesNotRepeat(t *testing.T) {
	tm := newTeam()
	tm.rota(b, c)
	tm.msg(1, a, crdt.Routine, at(9, 0))
	tm.msg(2, a, crdt.Urgent, at(9, 0))
	tr := NewTracker(c, -1)
	tr.Prime(at(9, 5), &tm.s)
	got := run(tm, map[identity.DeviceID]*Tracker{c: tr}, at(9, 5), at(9, 15))
	if want := []string{"09:10 urgent escalated"}; !slices.Equal(got[c], want) {
		t.Errorf("after Prime: %q; want %q (the routine one was due before the restart)", got[c], want)
	}
}

func TestReviewReminder(t *testing.T) {
	tm := newTeam() // created Sunday; never reviewed
	admin, member := NewTracker(a, 0), NewTracker(b, 0)
	created := monday.Add(-24 * time.Hour)
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{created.Add(29 * 24 * time.Hour), 0},
		{created.Add(30 * 24 * time.Hour), 1},
		{created.Add(30*24*time.Hour + time.Hour), 0}, // once a day
		{created.Add(31 * 24 * time.Hour), 1},
	} {
		if got := len(admin.Due(tc.at, &tm.s, 0, nil)); got != tc.want {
			t.Errorf("admin at %v: %d alerts; want %d", tc.at, got, tc.want)
		}
		if got := len(member.Due(tc.at, &tm.s, 0, nil)); got != 0 {
			t.Errorf("a member who is not an admin is reminded")
		}
	}
	tm.s.LastReview = &crdt.ReviewView{Time: crdt.MakeHLC(created.Add(31*24*time.Hour), 0)}
	if got := admin.Due(created.Add(33*24*time.Hour), &tm.s, 0, nil); len(got) != 0 {
		t.Errorf("reminded two days after a review: %v", got)
	}
}

// BenchmarkDue measures one Due call (what a device does every tick) for a
// team showing 1,000 recent messages of all priorities, with a rota.
func BenchmarkDue(bb *testing.B) {
	tm := newTeam()
	tm.rota(b, c, d)
	for i := range 1000 {
		tm.msg(0, a, crdt.Priority(i%3), at(9, 0).Add(time.Duration(i)*time.Second))
		tm.s.Messages[i].ID = crdt.OpID{byte(i), byte(i >> 8)}
	}
	tr := NewTracker(c, 0)
	now := at(9, 30)
	bb.ReportAllocs()
	for bb.Loop() {
		now = now.Add(time.Minute)
		tr.Due(now, &tm.s, 0, nil)
	}
	bb.ReportMetric(float64(bb.Elapsed().Nanoseconds())/float64(bb.N)/1000, "ns/message")
}

// TestDueVersions: a Due at a new state version alerts for what the state
// gained, and so does one at version 0 (unknown), after Dues at an unchanged
// version had nothing to alert.
func TestDueVersions(t *testing.T) {
	tm := newTeam()
	tm.msg(1, a, crdt.Routine, at(9, 0))
	tr := NewTracker(b, -1)
	if al := tr.Due(at(9, 0), &tm.s, 1, nil); len(al) != 1 || al[0].Reason != New {
		t.Fatalf("first Due: %v; want the routine message's alert", al)
	}
	if al := tr.Due(at(9, 1), &tm.s, 1, nil); len(al) != 0 {
		t.Fatalf("unchanged version: %v; want none", al)
	}
	tm.msg(2, a, crdt.Emergency, at(9, 2))
	if al := tr.Due(at(9, 2), &tm.s, 2, nil); len(al) != 1 || al[0].Priority != crdt.Emergency {
		t.Fatalf("new version: %v; want the emergency's alert", al)
	}
	tm.read(2, b)
	tm.msg(3, a, crdt.Urgent, at(9, 3))
	if al := tr.Due(at(9, 3), &tm.s, 0, nil); len(al) != 1 || al[0].Priority != crdt.Urgent {
		t.Fatalf("version 0: %v; want the urgent message's alert", al)
	}
}
