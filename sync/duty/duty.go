// Package duty decides when a device alerts its user about a team's
// messages: duty hours, the on-call rota and escalation, and the reminder
// that a membership review is due. It is pure: a [Tracker] takes the
// team's state (sync/crdt: the replicated duty hours, rota, messages with
// their read acknowledgements, and the last review) and the time, and
// returns the [Alert]s to raise now. Every device decides for itself from
// its own replica, with no server and no other device reachable: two
// devices partitioned from each other each escalate on their own clock.
//
// The rules (one device, whose person is P):
//   - Routine: alert P once, when P is on duty (no published duty hours:
//     always); a routine message that arrives off duty waits silently and
//     is alerted at the start of P's next shift.
//   - Urgent: the rota's slot containing the message's time lists the
//     persons on call in escalation order (the author's person and persons
//     no longer members left out). The first is alerted at once; each
//     EscalateAfter (rota; default 10 minutes) without a read
//     acknowledgement by anyone alerted so far, the next is alerted; after
//     the last, everyone. With no rota, or no slot for that time, everyone
//     is alerted at once. Duty hours do not hold back an urgent alert.
//   - Emergency: everyone is alerted at once, whatever their hours, and
//     again every RenotifyEvery (rota; default 5 minutes) until anyone but
//     the author has read it (or this device's user did: Due's read).
//   - A message P's person wrote, or read on any of its devices, or older
//     than Horizon, never alerts.
//   - Review: an admin device is reminded when the last review (or the
//     team's creation) is ReviewEvery old, and then once a day until a
//     review is recorded.
//
// An Alert carries a priority and a reason, never content: the node turns
// it into "new message in a clinical team" for the notification hook.
//
// Caveats: duty hours and rota are in an IANA time zone (daylight saving
// included; a device that does not know the zone uses the op's fixed UTC
// offset) or at a fixed offset; times are the ops' hybrid logical clocks, so a sender whose clock
// is wrong shifts when its messages escalate. What a Tracker alerted is
// its state (MarshalState), which the device core stores and restores
// (RestoreState): after a restart nothing alerted is alerted again, and
// pending escalations, shift starts and emergency repeats carry on. With
// no stored state (a device that just joined or restored an older store),
// Prime marks what was due as alerted instead.
//
// Concurrency: a Tracker is not safe for concurrent use (the device core
// holds it under the team's lock).
package duty

import (
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Defaults.
const (
	DefaultEscalateAfter = 10 * time.Minute
	DefaultRenotifyEvery = 5 * time.Minute
	DefaultReviewEvery   = 30 * 24 * time.Hour
	// ReviewRepeat is how often a due review is reminded again.
	ReviewRepeat = 24 * time.Hour
	// Horizon: messages older than this never alert (a device back after
	// a long absence does not ring for last month's messages).
	Horizon = 7 * 24 * time.Hour
)

// Reason says why an Alert is raised.
type Reason uint8

// Reasons.
const (
	New        Reason = iota + 1 // a message to alert at once
	ShiftStart                   // a routine message that waited for the shift to start
	Escalated                    // an urgent message nobody on call before this person acknowledged
	Repeat                       // an emergency message nobody acknowledged yet
	ReviewDue                    // the team's membership review is due
)

// String returns the reason's name.
func (r Reason) String() string {
	switch r {
	case New:
		return "new"
	case ShiftStart:
		return "shift-start"
	case Escalated:
		return "escalated"
	case Repeat:
		return "repeat"
	case ReviewDue:
		return "review-due"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Alert is one alert to raise: no text, name, team or patient reference.
type Alert struct {
	Priority crdt.Priority // routine for ReviewDue
	Reason   Reason
}

// Tracker remembers, for one device in one team, what it has alerted.
type Tracker struct {
	self identity.DeviceID
	// reviewEvery is how old a review may get; <0: never remind.
	reviewEvery time.Duration

	msgs       map[crdt.OpID]*track
	lastReview time.Time // when a ReviewDue was last raised
	since      time.Time // messages sent before never alert (see IgnoreBefore)
	// last is the version of the state of the last Due call (0: none
	// known) and open the number of its messages that may still alert:
	// with the same state and none open, only the review reminder can be
	// due.
	last uint64
	open int
	// gen counts Due calls that walked the messages; a track seen in the
	// current walk has its seen set to it (the others are dropped).
	gen uint64
	// dirty says the state changed since the last MarshalState.
	dirty bool
}

type track struct {
	seen     uint64    // the Due walk that last met its message (Tracker.gen)
	done     bool      // nothing more can alert: skipped on later calls
	alerted  bool      // the first alert was raised (or P was reached)
	deferred bool      // a routine message that arrived off duty
	last     time.Time // emergency: when last alerted
}

// NewTracker returns a Tracker for the device self. reviewEvery is how
// old a membership review may get before an admin device is reminded:
// 0 means DefaultReviewEvery, negative never.
func NewTracker(self identity.DeviceID, reviewEvery time.Duration) *Tracker {
	if reviewEvery == 0 {
		reviewEvery = DefaultReviewEvery
	}
	return &Tracker{self: self, reviewEvery: reviewEvery, msgs: make(map[crdt.OpID]*track)}
}

// Prime records everything due at now as alerted, without alerting: for a
// device restored from its store, or one that just joined with the team's
// history. Later escalations, shift starts and emergency repeats still
// alert.
func (tr *Tracker) Prime(now time.Time, s *crdt.State) {
	last := tr.lastReview
	tr.Due(now, s, 0, nil)
	tr.lastReview = last // a due review is reminded after a restart too
	tr.dirty = true
}

// IgnoreBefore makes messages sent before t never alert: for a device that
// just joined, whose first syncs bring the team's past.
func (tr *Tracker) IgnoreBefore(t time.Time) { tr.since, tr.dirty = t, true }

// Due returns the alerts to raise at now, in the order of s.Messages (a
// review reminder last). version identifies s (crdt.Log.Version: equal
// non-zero versions, equal states), so that a Due on an unchanged state with
// nothing left to alert skips its messages; 0 means unknown. read reports
// whether this device's user has been shown a message whose read
// acknowledgement is not in s yet; nil means none. Due keeps nothing of s.
func (tr *Tracker) Due(now time.Time, s *crdt.State, version uint64, read func(crdt.OpID) bool) []Alert {
	me, ok := s.PersonOf(tr.self)
	if !ok {
		return nil
	}
	if version != 0 && version == tr.last && tr.open == 0 {
		if tr.reviewDue(now, s, me) {
			tr.lastReview = now
			tr.dirty = true
			return []Alert{{crdt.Routine, ReviewDue}}
		}
		return nil
	}
	escalate, renotify := DefaultEscalateAfter, DefaultRenotifyEvery
	if s.Rota != nil {
		escalate = time.Duration(s.Rota.EscalateAfter) * time.Minute
		renotify = time.Duration(s.Rota.RenotifyEvery) * time.Minute
	}
	onDuty := true
	if d, ok := s.Duty[me.ID]; ok {
		onDuty = d.OnDuty(now)
	}
	var persons map[identity.DeviceID]crdt.Person // made when an urgent message needs the rota's
	readBy := func(p crdt.Person, m *crdt.MessageView) bool {
		for _, d := range p.Devices {
			if slices.Contains(m.ReadBy, d) {
				return true
			}
		}
		return false
	}

	var out []Alert
	tr.gen++
	for i := range s.Messages {
		m := &s.Messages[i]
		sent := m.Time.Time()
		if slices.Contains(me.Devices, m.Author) || now.Sub(sent) > Horizon || sent.Before(tr.since) {
			continue
		}
		tk := tr.msgs[m.ID]
		if tk == nil {
			tk = &track{}
			tr.msgs[m.ID] = tk
			tr.dirty = true
		}
		tk.seen = tr.gen
		if tk.done {
			continue
		}
		if readBy(me, m) || read != nil && read(m.ID) {
			tk.alerted, tk.done = true, true
			tr.dirty = true
			continue
		}
		switch m.Priority {
		case crdt.Routine:
			switch {
			case tk.alerted:
			case onDuty && tk.deferred:
				tk.alerted, tk.done = true, true
				tr.dirty = true
				out = append(out, Alert{crdt.Routine, ShiftStart})
			case onDuty:
				tk.alerted, tk.done = true, true
				tr.dirty = true
				out = append(out, Alert{crdt.Routine, New})
			default:
				if !tk.deferred {
					tk.deferred, tr.dirty = true, true
				}
			}
		case crdt.Urgent:
			if tk.alerted {
				continue
			}
			author, _ := s.PersonOf(m.Author)
			var list []crdt.Person
			if s.Rota != nil {
				if persons == nil {
					persons = make(map[identity.DeviceID]crdt.Person, len(s.Persons))
					for _, p := range s.Persons {
						persons[p.ID] = p
					}
				}
				for _, id := range s.Rota.OnCall(sent) {
					if p, ok := persons[id]; ok && id != author.ID {
						list = append(list, p)
					}
				}
			}
			// level: how far the escalation has gone; len(list) is everyone.
			level := len(list)
			if len(list) > 0 {
				level = min(int(max(now.Sub(sent), 0)/escalate), len(list))
			}
			acked := false
			for k := 0; k < len(list) && k <= level; k++ {
				if readBy(list[k], m) {
					level, acked = k, true
					break
				}
			}
			mine := slices.IndexFunc(list, func(p crdt.Person) bool { return p.ID == me.ID })
			switch {
			case mine >= 0 && mine <= level:
				tk.alerted, tk.done = true, true
				tr.dirty = true
				out = append(out, Alert{crdt.Urgent, reasonAt(mine)})
			case level == len(list) && !acked:
				tk.alerted, tk.done = true, true
				tr.dirty = true
				out = append(out, Alert{crdt.Urgent, reasonAt(len(list))})
			case acked:
				tk.done = true // acknowledged before it reached this person: it never will
				tr.dirty = true
			}
		case crdt.Emergency:
			switch {
			case len(m.ReadBy) > 0:
				tk.done = true
				tr.dirty = true
			case !tk.alerted:
				tk.alerted, tk.last = true, now
				tr.dirty = true
				out = append(out, Alert{crdt.Emergency, New})
			case now.Sub(tk.last) >= renotify:
				tk.last = now
				tr.dirty = true
				out = append(out, Alert{crdt.Emergency, Repeat})
			}
		}
	}
	tr.last, tr.open = version, 0
	for id, tk := range tr.msgs {
		switch {
		case tk.seen != tr.gen:
			delete(tr.msgs, id)
			tr.dirty = true
		case !tk.done:
			tr.open++
		}
	}
	if tr.reviewDue(now, s, me) {
		tr.lastReview = now
		tr.dirty = true
		out = append(out, Alert{crdt.Routine, ReviewDue})
	}
	return out
}

func reasonAt(level int) Reason {
	if level == 0 {
		return New
	}
	return Escalated
}

// reviewDue reports whether an admin device should be reminded now.
func (tr *Tracker) reviewDue(now time.Time, s *crdt.State, me crdt.Person) bool {
	if !me.Admin || tr.reviewEvery < 0 {
		return false
	}
	last, ok := ReviewedAt(s)
	if !ok {
		return false
	}
	return now.Sub(last) >= tr.reviewEvery && (tr.lastReview.IsZero() || now.Sub(tr.lastReview) >= ReviewRepeat)
}

// ReviewedAt returns when the team's membership was last reviewed: the
// latest review's time, or the team's creation if it never was. False for
// a state with no genesis.
func ReviewedAt(s *crdt.State) (time.Time, bool) {
	if s.LastReview != nil {
		return s.LastReview.Time.Time(), true
	}
	for _, e := range s.Epochs {
		if e.Number == 1 {
			return e.Time.Time(), true
		}
	}
	return time.Time{}, false
}

// ReviewDueAt returns when the next review is due, reviewEvery (0:
// DefaultReviewEvery) after the last.
func ReviewDueAt(s *crdt.State, reviewEvery time.Duration) (time.Time, bool) {
	if reviewEvery == 0 {
		reviewEvery = DefaultReviewEvery
	}
	last, ok := ReviewedAt(s)
	return last.Add(reviewEvery), ok
}
