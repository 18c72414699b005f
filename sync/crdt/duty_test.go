package crdt

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

func TestShiftContainsAndNextStart(t *testing.T) {
	// 2025-03-03 is a Monday.
	mon := func(h, m int) time.Time { return time.Date(2025, 3, 3, h, m, 0, 0, time.UTC) }
	day := Shift{Day: 1, Start: 8 * 60, Length: 8 * 60}     // Monday 08:00-16:00
	night := Shift{Day: 0, Start: 22 * 60, Length: 10 * 60} // Sunday 22:00 - Monday 08:00
	for _, tc := range []struct {
		s      Shift
		off    int16
		at     time.Time
		inside bool
		next   time.Time
	}{
		{day, 0, mon(7, 59), false, mon(8, 0)},
		{day, 0, mon(8, 0), true, mon(8, 0).AddDate(0, 0, 7)},
		{day, 0, mon(15, 59), true, mon(8, 0).AddDate(0, 0, 7)},
		{day, 0, mon(16, 0), false, mon(8, 0).AddDate(0, 0, 7)},
		// UTC+2: 08:00 local is 06:00 UTC.
		{day, 120, mon(6, 0), true, mon(6, 0).AddDate(0, 0, 7)},
		{day, 120, mon(5, 59), false, mon(6, 0)},
		// UTC-5: Monday 08:00 local is 13:00 UTC.
		{day, -300, mon(12, 0), false, mon(13, 0)},
		// Across midnight and across the end of the week.
		{night, 0, mon(7, 0), true, mon(22, 0).AddDate(0, 0, 6)},
		{night, 0, mon(8, 0), false, mon(22, 0).AddDate(0, 0, 6)},
		{night, 0, mon(0, 0).Add(-time.Minute), true, mon(22, 0).AddDate(0, 0, 6)},
	} {
		loc := Duty{Offset: tc.off}.Location()
		if got := tc.s.Contains(tc.at, loc); got != tc.inside {
			t.Errorf("%+v offset %d: Contains(%v) = %v; want %v", tc.s, tc.off, tc.at, got, tc.inside)
		}
		if got := tc.s.NextStart(tc.at, loc); !got.Equal(tc.next) {
			t.Errorf("%+v offset %d: NextStart(%v) = %v; want %v", tc.s, tc.off, tc.at, got, tc.next)
		}
	}
}

// TestShiftAcrossDST: a shift in Europe/London starts at 08:00 wall-clock time on both sides of the
// change to summer time (2025-03-30, 01:00 UTC), so 07:00 UTC on Monday 31 March, and 08:00 UTC the
// Monday before; a night shift that spans the change lasts its length in elapsed minutes.
func TestShiftAcrossDST(t *testing.T) {
	d := Duty{Zone: "Europe/London", Shifts: []Shift{{Day: 1, Start: 8 * 60, Length: 8 * 60}}}
	utc := func(m time.Month, day, h, min int) time.Time { return time.Date(2025, m, day, h, min, 0, 0, time.UTC) }
	for _, tc := range []struct {
		at     time.Time
		onDuty bool
		next   time.Time
	}{
		{utc(3, 24, 7, 59), false, utc(3, 24, 8, 0)},
		{utc(3, 24, 8, 0), true, utc(3, 31, 7, 0)},
		{utc(3, 31, 6, 59), false, utc(3, 31, 7, 0)},
		{utc(3, 31, 7, 0), true, utc(4, 7, 7, 0)},
		{utc(3, 31, 14, 59), true, utc(4, 7, 7, 0)},
		{utc(3, 31, 15, 0), false, utc(4, 7, 7, 0)},
		// Back to winter time on 2025-10-26.
		{utc(10, 20, 7, 0), true, utc(10, 27, 8, 0)},
		{utc(10, 27, 7, 30), false, utc(10, 27, 8, 0)},
	} {
		if got := d.OnDuty(tc.at); got != tc.onDuty {
			t.Errorf("OnDuty(%v) = %v; want %v", tc.at, got, tc.onDuty)
		}
		if got, _ := d.NextStart(tc.at); !got.Equal(tc.next) {
			t.Errorf("NextStart(%v) = %v; want %v", tc.at, got, tc.next)
		}
	}
	// Saturday 22:00 to Sunday 08:00 local over the spring change: 9 hours of elapsed time, but the
	// shift lasts its 600 minutes, to 09:00 BST.
	night := Duty{Zone: "Europe/London", Shifts: []Shift{{Day: 6, Start: 22 * 60, Length: 600}}}
	if !night.OnDuty(utc(3, 30, 7, 59)) || night.OnDuty(utc(3, 30, 8, 0)) {
		t.Errorf("the night shift over the change: on duty at 07:59 UTC %v, at 08:00 UTC %v; want true, false",
			night.OnDuty(utc(3, 30, 7, 59)), night.OnDuty(utc(3, 30, 8, 0)))
	}
	// A zone this device does not know falls back to the offset the publisher gave.
	unknown := Duty{Zone: "Mars/Olympus_Mons", Offset: 120, Shifts: []Shift{{Day: 1, Start: 8 * 60, Length: 60}}}
	if !unknown.OnDuty(utc(3, 24, 6, 30)) {
		t.Errorf("an unknown zone did not fall back to its UTC+2 offset")
	}
}

func TestDutyBodies(t *testing.T) {
	p1, p2 := identity.DeviceID{1}, identity.DeviceID{2}
	ok := []interface {
		Validate() error
		Marshal() []byte
	}{
		Duty{},
		Duty{Offset: -300, Shifts: []Shift{{1, 480, 480}, {2, 480, 480}}},
		Duty{Zone: "Africa/Blantyre", Offset: 120, Shifts: []Shift{{1, 480, 480}}},
		Rota{Zone: "Europe/London", EscalateAfter: 10, RenotifyEvery: 2},
		Rota{EscalateAfter: 10, RenotifyEvery: 2, Slots: []RotaSlot{{Shift{0, 0, 1440}, []identity.DeviceID{p1, p2}}}},
		Review{Persons: 2, Devices: 3},
	}
	for _, v := range ok {
		if err := v.Validate(); err != nil {
			t.Errorf("%+v: %v", v, err)
		}
	}
	bad := []struct {
		name string
		v    interface{ Validate() error }
	}{
		{"offset past UTC+14", Duty{Offset: 841}},
		{"day 7", Duty{Shifts: []Shift{{7, 0, 60}}}},
		{"start at 24:00", Duty{Shifts: []Shift{{1, 1440, 60}}}},
		{"empty shift", Duty{Shifts: []Shift{{1, 0, 0}}}},
		{"shift over a day", Duty{Shifts: []Shift{{1, 0, 1441}}}},
		{"shifts out of order", Duty{Shifts: []Shift{{2, 0, 60}, {1, 0, 60}}}},
		{"shift twice", Duty{Shifts: []Shift{{1, 0, 60}, {1, 0, 60}}}},
		{"no escalation timeout", Rota{RenotifyEvery: 1}},
		{"no re-notify interval", Rota{EscalateAfter: 1}},
		{"slot with nobody", Rota{EscalateAfter: 1, RenotifyEvery: 1, Slots: []RotaSlot{{Shift: Shift{0, 0, 60}}}}},
		{"person twice", Rota{EscalateAfter: 1, RenotifyEvery: 1, Slots: []RotaSlot{{Shift{0, 0, 60}, []identity.DeviceID{p1, p1}}}}},
		{"more persons than devices", Review{Persons: 3, Devices: 2}},
		{"zone Local", Duty{Zone: "Local"}},
		{"zone with ..", Duty{Zone: "Europe/../etc"}},
		{"zone with a space", Rota{Zone: "Europe/Lon don", EscalateAfter: 1, RenotifyEvery: 1}},
		{"zone too long", Duty{Zone: string(bytes.Repeat([]byte("a"), MaxZone+1))}},
	}
	for _, tc := range bad {
		if err := tc.v.Validate(); err == nil {
			t.Errorf("%s: Validate passed", tc.name)
		}
	}
	// The decoders refuse what Validate refuses, from the bytes.
	for _, tc := range []struct {
		name string
		kind Kind
		b    []byte
	}{
		{"duty offset", KindDuty, Duty{Offset: -841}.Marshal()},
		{"duty order", KindDuty, Duty{Shifts: []Shift{{2, 0, 60}, {1, 0, 60}}}.Marshal()},
		{"duty trailing", KindDuty, append(Duty{}.Marshal(), 0)},
		{"duty oversize", KindDuty, make([]byte, maxDutySize+1)},
		{"rota repeat", KindRota, Rota{EscalateAfter: 1, RenotifyEvery: 1, Slots: []RotaSlot{{Shift{0, 0, 60}, []identity.DeviceID{p1, p1}}}}.Marshal()},
		{"rota zero timeout", KindRota, Rota{RenotifyEvery: 1}.Marshal()},
		{"review short", KindReview, Review{}.Marshal()[:10]},
	} {
		if err := CheckBody(tc.kind, tc.b); !errors.Is(err, ErrBadBody) {
			t.Errorf("%s: CheckBody = %v; want ErrBadBody", tc.name, err)
		}
	}
}

// TestDutyState checks how duty hours, the rota and reviews resolve: the
// latest op counts; a rota or review by a member who is not an admin, or
// a duty op by a non-member, counts for nothing.
func TestDutyState(t *testing.T) {
	r := detRand(41)
	A, B, X := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	g := createOp(A, team, hlcAt(0, 0), "Ward")
	addB := memberOp(A, team, hlcAt(1, 0), []OpID{g.ID()}, info(B, "Ben", false))
	p := []OpID{addB.ID()}
	early := Duty{Shifts: []Shift{{1, 0, 60}}}
	late := Duty{Shifts: []Shift{{2, 0, 60}}}
	rota := Rota{EscalateAfter: 10, RenotifyEvery: 5, Slots: []RotaSlot{{Shift{0, 0, 1440}, []identity.DeviceID{B.ID(), A.ID()}}}}
	dutyB1 := newOp(B, team, hlcAt(2, 0), p, KindDuty, early.Marshal())
	dutyB2 := newOp(B, team, hlcAt(3, 0), p, KindDuty, late.Marshal())
	dutyX := newOp(X, team, hlcAt(3, 0), p, KindDuty, early.Marshal())
	rotaA := newOp(A, team, hlcAt(4, 0), p, KindRota, rota.Marshal())
	rotaB := newOp(B, team, hlcAt(5, 0), p, KindRota, Rota{EscalateAfter: 1, RenotifyEvery: 1}.Marshal())
	reviewA := newOp(A, team, hlcAt(6, 0), p, KindReview, Review{Epoch: addB.ID(), Persons: 2, Devices: 2}.Marshal())
	reviewB := newOp(B, team, hlcAt(7, 0), p, KindReview, Review{Epoch: addB.ID(), Persons: 2, Devices: 2}.Marshal())

	ops := []*Op{g, addB, dutyB1, dutyB2, dutyX, rotaA, rotaB, reviewA, reviewB}
	for _, order := range [][]*Op{ops, reversed(ops)} {
		l := NewLog(team)
		mustAdd(t, l, order...)
		s := l.State()
		if len(s.Duty) != 1 {
			t.Fatalf("Duty has %d persons; want 1 (B's)", len(s.Duty))
		}
		if d := s.Duty[B.ID()]; d.ID != dutyB2.ID() {
			t.Errorf("B's duty is op %v; want the later %v", d.ID.Short(), dutyB2.ID().Short())
		}
		if s.Rota == nil || s.Rota.ID != rotaA.ID() {
			t.Errorf("Rota = %+v; want the admin's %v (the member's later one does not count)", s.Rota, rotaA.ID().Short())
		}
		if s.LastReview == nil || s.LastReview.ID != reviewA.ID() {
			t.Errorf("LastReview = %+v; want the admin's", s.LastReview)
		}
		for _, op := range []*Op{dutyX, rotaB, reviewB} {
			if s.Counts(op.ID()) {
				t.Errorf("op %v %v by a non-admin or non-member counts", op.Kind, op.ID().Short())
			}
		}
		if s.LastSeen[B.ID()] != dutyB2.Time {
			t.Errorf("B last seen %v; want %v", s.LastSeen[B.ID()], dutyB2.Time)
		}
	}
}

func reversed(ops []*Op) []*Op {
	out := make([]*Op, len(ops))
	for i, op := range ops {
		out[len(ops)-1-i] = op
	}
	return out
}

// TestSocialPatientForged: a member's op that puts a patient reference in
// a social team is not shown and does not count, whoever receives it; the
// same message in a clinical team does.
func TestSocialPatientForged(t *testing.T) {
	for _, kind := range []TeamKind{Social, Clinical} {
		r := detRand(43)
		A, B := newDevice(t, r), newDevice(t, r)
		team, _ := NewTeamID(r)
		g := NewOp(A, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "Staff room", Kind: kind, Creator: info(A, "Ann", true)}.Marshal())
		addB := memberOp(A, team, hlcAt(1, 0), []OpID{g.ID()}, info(B, "Ben", false))
		forged := newOp(B, team, hlcAt(2, 0), []OpID{addB.ID()}, KindMessage, Message{Text: "bed 4", Patient: "pt-123"}.Marshal())
		plain := newOp(B, team, hlcAt(3, 0), []OpID{addB.ID()}, KindMessage, Message{Text: "cake at 4"}.Marshal())
		l := NewLog(team)
		mustAdd(t, l, g, addB, forged, plain)
		s := l.State()
		want := kind == Clinical
		if got := s.Counts(forged.ID()); got != want {
			t.Errorf("%v team: a message with a patient reference counts = %v; want %v", kind, got, want)
		}
		if !s.Counts(plain.ID()) {
			t.Errorf("%v team: a plain message does not count", kind)
		}
		for _, m := range s.Messages {
			if m.Patient != "" && kind == Social {
				t.Errorf("social team shows a patient reference")
			}
		}
	}
}

func fuzzRoundTrip[T interface {
	Validate() error
	Marshal() []byte
}](f *testing.F, dec func([]byte) (T, error), seeds ...T) {
	for _, s := range seeds {
		f.Add(s.Marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := dec(b)
		if err != nil {
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("decoded an invalid body: %v", err)
		}
		if got := v.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}

func FuzzUnmarshalDuty(f *testing.F) {
	fuzzRoundTrip(f, UnmarshalDuty, Duty{}, Duty{Offset: 60, Shifts: []Shift{{1, 480, 480}, {3, 1200, 720}}},
		Duty{Zone: "Africa/Blantyre", Offset: 120, Shifts: []Shift{{1, 480, 480}}})
}

func FuzzUnmarshalRota(f *testing.F) {
	fuzzRoundTrip(f, UnmarshalRota,
		Rota{EscalateAfter: 10, RenotifyEvery: 5},
		Rota{Zone: "Europe/London", EscalateAfter: 10, RenotifyEvery: 5, Slots: []RotaSlot{{Shift{0, 0, 1440}, []identity.DeviceID{{1}}}}},
		Rota{Offset: -60, EscalateAfter: 10, RenotifyEvery: 5, Slots: []RotaSlot{
			{Shift{0, 0, 1440}, []identity.DeviceID{{1}, {2}}},
			{Shift{1, 0, 60}, []identity.DeviceID{{3}}},
		}})
}

func FuzzUnmarshalReview(f *testing.F) {
	fuzzRoundTrip(f, UnmarshalReview, Review{}, Review{Epoch: OpID{9}, Persons: 4, Devices: 7})
}

// TestMisleadingNamesRefused: a peer's op that names a member or team with
// a direction override, an invisible character or a mixed-script word does
// not enter any log, so no screen shows it.
func TestMisleadingNamesRefused(t *testing.T) {
	r := detRand(44)
	A, B := newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	g := createOp(A, team, hlcAt(0, 0), "Ward")
	for _, name := range []string{"Dr \u202eadnaB", "Dr Ban\u200bda", "Dr B\u0430nda"} {
		add := memberOp(A, team, hlcAt(1, 0), []OpID{g.ID()}, info(B, name, false))
		l := NewLog(team)
		mustAdd(t, l, g)
		if _, err := l.Add(add); !errors.Is(err, ErrBadBody) {
			t.Errorf("member name %q: Add = %v; want ErrBadBody", name, err)
		}
		bad := NewOp(A, team, hlcAt(0, 0), nil, KindCreate, Create{Name: name, Kind: Clinical, Creator: info(A, "Ann", true)}.Marshal())
		if _, err := NewLog(team).Add(bad); !errors.Is(err, ErrBadBody) {
			t.Errorf("team name %q: Add = %v; want ErrBadBody", name, err)
		}
	}
}
