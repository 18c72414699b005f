package crdt

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the zone database, for devices without one (phones)

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// This file holds the bodies of the clinical-duty ops: a member's duty
// hours (KindDuty), a team's on-call rota (KindRota) and an admin's record
// of a membership review (KindReview). What they mean for notifications is
// package sync/duty's; here they are only encoded, validated and resolved
// into the State (latest op wins, by (Time, ID)).

// Limits of the duty bodies.
const (
	MaxShifts     = 64  // shifts in a Duty, slots in a Rota
	MaxOnCall     = 8   // persons in one rota slot
	MaxOffset     = 840 // minutes east or west of UTC (UTC+14)
	MinutesPerDay = 24 * 60
	// MaxEscalate bounds Rota.EscalateAfter and Rota.RenotifyEvery, in
	// minutes (one day).
	MaxEscalate = MinutesPerDay
)

// Shift is a weekly period: it starts on Day (0 Sunday .. 6 Saturday) at
// Start minutes after local midnight and lasts Length minutes; it may run
// past midnight into the next day (and past Saturday into Sunday).
//
// Encoding: day byte | start uint16 | length uint16.
type Shift struct {
	Day    uint8  // 0 (Sunday) .. 6 (Saturday)
	Start  uint16 // minutes after local midnight, 0..1439
	Length uint16 // minutes, 1..1440
}

func (s Shift) validate() error {
	switch {
	case s.Day > 6:
		return fmt.Errorf("%w: shift day %d", ErrInvalid, s.Day)
	case s.Start >= MinutesPerDay:
		return fmt.Errorf("%w: shift start %d minutes", ErrInvalid, s.Start)
	case s.Length == 0 || s.Length > MinutesPerDay:
		return fmt.Errorf("%w: shift length %d minutes", ErrInvalid, s.Length)
	}
	return nil
}

func (s Shift) compare(o Shift) int {
	switch {
	case s.Day != o.Day:
		return int(s.Day) - int(o.Day)
	case s.Start != o.Start:
		return int(s.Start) - int(o.Start)
	}
	return int(s.Length) - int(o.Length)
}

// Contains reports whether the instant t falls in the shift, in the time
// zone loc: the shift starts at the wall-clock time Start on Day in loc
// (a start that daylight saving skips moves forward, as time.Date
// normalises it) and lasts Length minutes of elapsed time.
func (s Shift) Contains(t time.Time, loc *time.Location) bool {
	local := t.In(loc)
	// The shift's starts in the last 8 days, latest first; one is enough.
	for k := 0; k <= 8; k++ {
		day := time.Date(local.Year(), local.Month(), local.Day()-k, 12, 0, 0, 0, loc)
		if int(day.Weekday()) != int(s.Day) {
			continue
		}
		start := s.startOn(day, loc)
		if start.After(t) {
			continue
		}
		return t.Sub(start) < time.Duration(s.Length)*time.Minute
	}
	return false
}

// startOn returns the shift's start on the local date of day.
func (s Shift) startOn(day time.Time, loc *time.Location) time.Time {
	return time.Date(day.Year(), day.Month(), day.Day(), int(s.Start)/60, int(s.Start)%60, 0, 0, loc)
}

// NextStart returns the first start of the shift strictly after t, in the
// time zone loc, to the minute.
func (s Shift) NextStart(t time.Time, loc *time.Location) time.Time {
	local := t.In(loc)
	for k := 0; k <= 8; k++ {
		day := time.Date(local.Year(), local.Month(), local.Day()+k, 12, 0, 0, 0, loc)
		if int(day.Weekday()) != int(s.Day) {
			continue
		}
		if start := s.startOn(day, loc); start.After(t) {
			return start
		}
	}
	return time.Time{} // not reached: a weekday recurs within 8 days
}

func appendShift(b []byte, s Shift) []byte {
	b = append(b, s.Day)
	b = binary.BigEndian.AppendUint16(b, s.Start)
	return binary.BigEndian.AppendUint16(b, s.Length)
}

func readShift(d *wire.Reader) Shift {
	s := Shift{Day: d.Byte(), Start: d.Uint16(), Length: d.Uint16()}
	if d.Err() == nil {
		if err := s.validate(); err != nil {
			d.Fail(err)
		}
	}
	return s
}

func checkOffset(o int16) error {
	if o < -MaxOffset || o > MaxOffset {
		return fmt.Errorf("%w: UTC offset of %d minutes", ErrInvalid, o)
	}
	return nil
}

// MaxZone bounds the length of a time zone name (the longest IANA name
// is about 30 bytes).
const MaxZone = 64

// CheckZone checks the form of an IANA time zone name ("Africa/Blantyre",
// "Europe/London", "UTC"): 1..MaxZone bytes of ASCII letters, digits and
// "/_+-", no empty part, no "." or "..", and not "Local" (which would mean
// each device's own zone). Whether the zone is known is not checked here:
// a device that does not know it uses the op's fixed offset (see Zone).
func CheckZone(z string) error {
	bad := z == "" || len(z) > MaxZone || z == "Local"
	for _, part := range strings.Split(z, "/") {
		if part == "" || part == "." || part == ".." {
			bad = true
		}
	}
	for i := 0; i < len(z) && !bad; i++ {
		c := z[i]
		bad = !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/_+-", c) >= 0)
	}
	if bad {
		return fmt.Errorf("%w: time zone name %q", ErrInvalid, z)
	}
	return nil
}

func checkZoneOffset(zone string, offset int16) error {
	if err := checkOffset(offset); err != nil {
		return err
	}
	if zone != "" {
		return CheckZone(zone)
	}
	return nil
}

func appendZone(b []byte, zone string, offset int16) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(offset))
	return wire.AppendString(b, zone)
}

func readZone(r *wire.Reader) (string, int16) {
	offset := int16(r.Uint16())
	zone := r.String("time zone", MaxZone)
	if r.Err() == nil {
		if err := checkZoneOffset(zone, offset); err != nil {
			r.Fail(err)
		}
	}
	return zone, offset
}

// zones caches loaded time zones by name (a failed load as nil).
var zones sync.Map

// location returns the time zone of a duty or rota body: the IANA zone
// if set and known to this device (the binary embeds the zone database,
// time/tzdata), else the fixed offset.
func location(zone string, offset int16) *time.Location {
	if zone != "" {
		v, ok := zones.Load(zone)
		if !ok {
			loc, err := time.LoadLocation(zone)
			if err != nil {
				loc = nil
			}
			v, _ = zones.LoadOrStore(zone, loc)
		}
		if loc := v.(*time.Location); loc != nil {
			return loc
		}
	}
	return time.FixedZone("", int(offset)*60)
}

// Duty is the body of a duty-hours op (KindDuty): the weekly hours during
// which the author's person is on duty, in local time of the IANA time
// zone Zone (daylight saving included), or, with no Zone or on a device
// that does not know it, at Offset minutes east of UTC. No shifts means
// off duty until the next Duty op. Any device of a person may publish its
// person's hours; the latest op by (Time, ID) of the person's current
// devices counts.
//
// Encoding: version 1 | offset int16 | zone (uvarint length 0..MaxZone,
// ASCII, see CheckZone) | uvarint count (0..MaxShifts) | count × Shift,
// strictly ascending by (Day, Start, Length).
type Duty struct {
	Zone   string
	Offset int16
	Shifts []Shift
}

// Location returns the time zone the shifts are in (see Duty).
func (d Duty) Location() *time.Location { return location(d.Zone, d.Offset) }

// Validate checks the limits that UnmarshalDuty enforces.
func (d Duty) Validate() error {
	if err := checkZoneOffset(d.Zone, d.Offset); err != nil {
		return err
	}
	return checkShifts(len(d.Shifts), func(i int) Shift { return d.Shifts[i] })
}

func checkShifts(n int, at func(int) Shift) error {
	if n > MaxShifts {
		return fmt.Errorf("%w: %d shifts, limit %d", ErrTooLarge, n, MaxShifts)
	}
	for i := range n {
		if err := at(i).validate(); err != nil {
			return err
		}
		if i > 0 && at(i-1).compare(at(i)) >= 0 {
			return fmt.Errorf("%w: shifts not strictly ascending", ErrMalformed)
		}
	}
	return nil
}

// Marshal encodes d. It does not validate; call Validate first.
func (d Duty) Marshal() []byte {
	b := make([]byte, 0, 1+2+1+len(d.Zone)+1+5*len(d.Shifts))
	b = append(b, bodyVersion)
	b = appendZone(b, d.Zone, d.Offset)
	b = binary.AppendUvarint(b, uint64(len(d.Shifts)))
	for _, s := range d.Shifts {
		b = appendShift(b, s)
	}
	return b
}

// OnDuty reports whether t falls in one of the shifts.
func (d Duty) OnDuty(t time.Time) bool {
	loc := d.Location()
	for _, s := range d.Shifts {
		if s.Contains(t, loc) {
			return true
		}
	}
	return false
}

// NextStart returns the first shift start strictly after t, and false if
// there are no shifts.
func (d Duty) NextStart(t time.Time) (time.Time, bool) {
	var best time.Time
	loc := d.Location()
	for _, s := range d.Shifts {
		if n := s.NextStart(t, loc); best.IsZero() || n.Before(best) {
			best = n
		}
	}
	return best, !best.IsZero()
}

const maxDutySize = 1 + 2 + 1 + MaxZone + 1 + 5*MaxShifts

// UnmarshalDuty decodes and validates a Duty body.
func UnmarshalDuty(b []byte) (Duty, error) {
	if len(b) > maxDutySize {
		return Duty{}, fmt.Errorf("%w: duty body is %d bytes, limit %d", ErrTooLarge, len(b), maxDutySize)
	}
	r := wire.NewReader(b)
	r.Version("duty", bodyVersion)
	var d Duty
	d.Zone, d.Offset = readZone(r)
	n := r.Count(MaxShifts, 5)
	for i := 0; i < n && r.Err() == nil; i++ {
		d.Shifts = append(d.Shifts, readShift(r))
		if i > 0 && r.Err() == nil && d.Shifts[i-1].compare(d.Shifts[i]) >= 0 {
			r.Fail(fmt.Errorf("%w: shifts not strictly ascending", ErrMalformed))
		}
	}
	if err := r.Finish(); err != nil {
		return Duty{}, err
	}
	return d, nil
}

// RotaSlot is one weekly on-call period of a Rota: during the shift,
// OnCall are the persons on call (by person id), in escalation order.
type RotaSlot struct {
	Shift
	OnCall []identity.DeviceID // 1..MaxOnCall person ids, no repeats
}

// Rota is the body of an on-call rota op (KindRota), which only an admin
// may publish; the latest op by (Time, ID) of a current admin's device
// counts. An urgent message goes to the first person on call when it was
// sent and escalates to the next after EscalateAfter minutes without a read
// acknowledgement; an emergency message notifies again every RenotifyEvery
// minutes until someone reads it (package sync/duty).
//
// Times are in the zone Zone, or at Offset, as for Duty.
//
// Encoding: version 1 | offset int16 | zone (as in Duty) | escalate-after uint16 (minutes,
// 1..MaxEscalate) | renotify-every uint16 (minutes, 1..MaxEscalate) |
// uvarint count (0..MaxShifts) | count × (Shift | uvarint count
// (1..MaxOnCall) | count × person id 32 bytes), slots strictly ascending by
// (Day, Start, Length).
type Rota struct {
	Zone          string
	Offset        int16
	EscalateAfter uint16
	RenotifyEvery uint16
	Slots         []RotaSlot
}

// Validate checks the limits that UnmarshalRota enforces.
func (r Rota) Validate() error {
	if err := checkZoneOffset(r.Zone, r.Offset); err != nil {
		return err
	}
	if err := checkMinutes("escalation timeout", r.EscalateAfter); err != nil {
		return err
	}
	if err := checkMinutes("re-notification interval", r.RenotifyEvery); err != nil {
		return err
	}
	if err := checkShifts(len(r.Slots), func(i int) Shift { return r.Slots[i].Shift }); err != nil {
		return err
	}
	for _, s := range r.Slots {
		if err := checkOnCall(s.OnCall); err != nil {
			return err
		}
	}
	return nil
}

func checkMinutes(what string, m uint16) error {
	if m == 0 || m > MaxEscalate {
		return fmt.Errorf("%w: %s of %d minutes (want 1..%d)", ErrInvalid, what, m, MaxEscalate)
	}
	return nil
}

func checkOnCall(ps []identity.DeviceID) error {
	if len(ps) == 0 || len(ps) > MaxOnCall {
		return fmt.Errorf("%w: %d persons on call (want 1..%d)", ErrInvalid, len(ps), MaxOnCall)
	}
	for i, p := range ps {
		for _, q := range ps[:i] {
			if p == q {
				return fmt.Errorf("%w: a person on call twice in one slot", ErrInvalid)
			}
		}
	}
	return nil
}

// Marshal encodes r. It does not validate; call Validate first.
func (r Rota) Marshal() []byte {
	b := make([]byte, 0, 1+6+1+len(r.Zone)+1+len(r.Slots)*(6+32))
	b = append(b, bodyVersion)
	b = appendZone(b, r.Zone, r.Offset)
	b = binary.BigEndian.AppendUint16(b, r.EscalateAfter)
	b = binary.BigEndian.AppendUint16(b, r.RenotifyEvery)
	b = binary.AppendUvarint(b, uint64(len(r.Slots)))
	for _, s := range r.Slots {
		b = appendShift(b, s.Shift)
		b = binary.AppendUvarint(b, uint64(len(s.OnCall)))
		for _, p := range s.OnCall {
			b = append(b, p[:]...)
		}
	}
	return b
}

// OnCall returns the persons on call at t, in escalation order: those of
// the first slot (in encoding order) that contains t, or nil.
func (r Rota) OnCall(t time.Time) []identity.DeviceID {
	loc := r.Location()
	for _, s := range r.Slots {
		if s.Contains(t, loc) {
			return s.OnCall
		}
	}
	return nil
}

// Location returns the time zone of the rota's slots (see Rota).
func (r Rota) Location() *time.Location { return location(r.Zone, r.Offset) }

const maxRotaSize = 1 + 6 + 1 + MaxZone + 1 + MaxShifts*(5+1+MaxOnCall*32)

// UnmarshalRota decodes and validates a Rota body.
func UnmarshalRota(b []byte) (Rota, error) {
	if len(b) > maxRotaSize {
		return Rota{}, fmt.Errorf("%w: rota body is %d bytes, limit %d", ErrTooLarge, len(b), maxRotaSize)
	}
	d := wire.NewReader(b)
	d.Version("rota", bodyVersion)
	var r Rota
	r.Zone, r.Offset = readZone(d)
	r.EscalateAfter = d.Uint16()
	r.RenotifyEvery = d.Uint16()
	if d.Err() == nil {
		if err := checkMinutes("escalation timeout", r.EscalateAfter); err != nil {
			d.Fail(err)
		} else if err := checkMinutes("re-notification interval", r.RenotifyEvery); err != nil {
			d.Fail(err)
		}
	}
	n := d.Count(MaxShifts, 5+1+32)
	for i := 0; i < n && d.Err() == nil; i++ {
		s := RotaSlot{Shift: readShift(d)}
		k := d.Count(MaxOnCall, 32)
		for j := 0; j < k && d.Err() == nil; j++ {
			var p identity.DeviceID
			copy(p[:], d.Fixed(32))
			s.OnCall = append(s.OnCall, p)
		}
		if d.Err() == nil {
			if err := checkOnCall(s.OnCall); err != nil {
				d.Fail(err)
			}
		}
		r.Slots = append(r.Slots, s)
		if i > 0 && d.Err() == nil && r.Slots[i-1].compare(s.Shift) >= 0 {
			d.Fail(fmt.Errorf("%w: rota slots not strictly ascending", ErrMalformed))
		}
	}
	if err := d.Finish(); err != nil {
		return Rota{}, err
	}
	return r, nil
}

// Review is the body of a membership-review op (KindReview): an admin
// records that it reviewed the team's membership as it stood in the epoch
// Epoch (the current epoch's commit, or the genesis), with Persons persons
// and Devices devices. Only a current admin's review counts; the latest by
// (Time, ID) is State.LastReview, from which every admin's next reminder is
// due (package sync/duty).
//
// Encoding: version 1 | epoch op id 16 bytes | persons uint16 | devices uint16.
type Review struct {
	Epoch   OpID
	Persons uint16
	Devices uint16
}

const reviewSize = 1 + IDSize + 2 + 2

// Validate checks what UnmarshalReview checks.
func (r Review) Validate() error {
	if r.Devices < r.Persons {
		return fmt.Errorf("%w: review of %d persons with %d devices", ErrInvalid, r.Persons, r.Devices)
	}
	return nil
}

// Marshal encodes r. It does not validate; call Validate first.
func (r Review) Marshal() []byte {
	b := make([]byte, 0, reviewSize)
	b = append(b, bodyVersion)
	b = append(b, r.Epoch[:]...)
	b = binary.BigEndian.AppendUint16(b, r.Persons)
	return binary.BigEndian.AppendUint16(b, r.Devices)
}

// UnmarshalReview decodes and validates a Review body.
func UnmarshalReview(b []byte) (Review, error) {
	if len(b) != reviewSize {
		return Review{}, fmt.Errorf("%w: review body of %d bytes, want %d", ErrMalformed, len(b), reviewSize)
	}
	d := wire.NewReader(b)
	d.Version("review", bodyVersion)
	var r Review
	copy(r.Epoch[:], d.Fixed(IDSize))
	r.Persons = d.Uint16()
	r.Devices = d.Uint16()
	if err := d.Finish(); err != nil {
		return Review{}, err
	}
	if err := r.Validate(); err != nil {
		return Review{}, err
	}
	return r, nil
}

// DutyView is a person's duty hours as the State shows them.
type DutyView struct {
	ID   OpID // the duty op
	By   identity.DeviceID
	Time HLC
	Duty
}

// RotaView is the team's on-call rota as the State shows it.
type RotaView struct {
	ID   OpID
	By   identity.DeviceID
	Time HLC
	Rota
}

// ReviewView is the team's latest membership review.
type ReviewView struct {
	ID   OpID
	By   identity.DeviceID
	Time HLC
	Review
}

// newer reports whether (t, id) is later than (t0, id0).
func newer(t HLC, id OpID, t0 HLC, id0 OpID) bool {
	return t > t0 || t == t0 && id.Compare(id0) > 0
}

// duties computes State.Duty, State.Rota, State.LastReview and
// State.LastSeen from the ops that count.
func (l *Log) duties(j *opJudge, members []MemberInfo, persons []Person) (map[identity.DeviceID]DutyView, *RotaView, *ReviewView, map[identity.DeviceID]HLC) {
	admin := make(map[identity.DeviceID]bool, len(members))
	isMember := make(map[identity.DeviceID]bool, len(members))
	for _, m := range members {
		admin[m.Device] = m.Admin
		isMember[m.Device] = true
	}
	personOf := make(map[identity.DeviceID]identity.DeviceID)
	for _, p := range persons {
		for _, d := range p.Devices {
			personOf[d] = p.ID
		}
	}
	var (
		duty   map[identity.DeviceID]DutyView
		rota   *RotaView
		review *ReviewView
		seen   map[identity.DeviceID]HLC
	)
	for id, op := range l.ops {
		if !isMember[op.Author] || !j.counts(id) || (op.Kind == KindRota || op.Kind == KindReview) && !admin[op.Author] {
			continue
		}
		if op.Time > seen[op.Author] {
			if seen == nil {
				seen = make(map[identity.DeviceID]HLC)
			}
			seen[op.Author] = op.Time
		}
		switch op.Kind {
		case KindDuty:
			d, err := UnmarshalDuty(op.Body)
			p := personOf[op.Author]
			if err != nil {
				continue
			}
			if cur, ok := duty[p]; ok && !newer(op.Time, id, cur.Time, cur.ID) {
				continue
			}
			if duty == nil {
				duty = make(map[identity.DeviceID]DutyView)
			}
			duty[p] = DutyView{ID: id, By: op.Author, Time: op.Time, Duty: d}
		case KindRota:
			r, err := UnmarshalRota(op.Body)
			if err != nil || !admin[op.Author] || rota != nil && !newer(op.Time, id, rota.Time, rota.ID) {
				continue
			}
			rota = &RotaView{ID: id, By: op.Author, Time: op.Time, Rota: r}
		case KindReview:
			r, err := UnmarshalReview(op.Body)
			if err != nil || !admin[op.Author] || review != nil && !newer(op.Time, id, review.Time, review.ID) {
				continue
			}
			review = &ReviewView{ID: id, By: op.Author, Time: op.Time, Review: r}
		}
	}
	return duty, rota, review, seen
}
