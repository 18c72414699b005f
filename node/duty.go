package node

import (
	"fmt"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/duty"
)

// Duty hours, the on-call rota and membership reviews: each is an op in the team's log (sync/crdt), so
// it replicates like a message and works offline; what they mean for alerts is sync/duty's, run by the
// device core. This file publishes them and reports them.

// SetDuty publishes this device's person's duty hours in a team (no shifts: off duty).
func (n *Node) SetDuty(teamRef string, d crdt.Duty) error {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("node: duty hours: %w", err)
	}
	_, err = n.publish(t, crdt.KindDuty, d.Marshal())
	return err
}

// RotaSlotRef is a rota slot whose persons on call are given as member references (names or id
// prefixes, as findPerson resolves them).
type RotaSlotRef struct {
	crdt.Shift
	OnCall []string
}

// SetRota publishes a team's on-call rota (admins only), its slots in the IANA time zone zone (empty:
// at the fixed offset; with a zone, offset is the fallback for a device that does not know it).
// Persons are resolved against the current members; escalateAfter and renotifyEvery are rounded to
// whole minutes.
func (n *Node) SetRota(teamRef, zone string, offset int16, escalateAfter, renotifyEvery time.Duration, slots []RotaSlotRef) error {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return err
	}
	s := t.snapshot()
	r := crdt.Rota{Zone: zone, Offset: offset, EscalateAfter: minutes(escalateAfter), RenotifyEvery: minutes(renotifyEvery)}
	for _, sl := range slots {
		rs := crdt.RotaSlot{Shift: sl.Shift}
		for _, ref := range sl.OnCall {
			p, err := findPerson(s, ref)
			if err != nil {
				return err
			}
			rs.OnCall = append(rs.OnCall, p.ID)
		}
		r.Slots = append(r.Slots, rs)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("node: rota: %w", err)
	}
	_, err = n.publish(t, crdt.KindRota, r.Marshal())
	return err
}

func minutes(d time.Duration) uint16 {
	m := (d + time.Minute/2) / time.Minute
	if m < 0 || m > crdt.MaxEscalate {
		return 0 // refused by Validate
	}
	return uint16(m)
}

// ReviewReport is what an admin reviews: the team's persons with their devices and when each device
// was last seen in the team's log (its latest op that counts: a message, an acknowledgement, a key),
// and when the membership was last reviewed and is next due.
type ReviewReport struct {
	Kind       crdt.TeamKind      `json:"kind"`
	Members    []ReviewMember     `json:"members"`
	LastReview time.Time          `json:"last_review,omitzero"` // zero: never
	ReviewedBy *identity.DeviceID `json:"reviewed_by,omitempty"`
	Due        time.Time          `json:"due"`
}

// ReviewMember is one person of a ReviewReport.
type ReviewMember struct {
	ID      identity.DeviceID `json:"id"`
	Name    string            `json:"name"`
	Admin   bool              `json:"admin"`
	Devices []ReviewDevice    `json:"devices"`
}

// ReviewDevice is one device of a ReviewMember.
type ReviewDevice struct {
	ID       identity.DeviceID `json:"id"`
	Label    string            `json:"label"`
	LastSeen time.Time         `json:"last_seen,omitzero"` // zero: no op of it counts yet
}

// MembershipReview returns what an admin reviews in a team.
func (n *Node) MembershipReview(teamRef string) (ReviewReport, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return ReviewReport{}, err
	}
	if t.removed() {
		return ReviewReport{}, ErrRemoved
	}
	return reviewReport(t.snapshot(), n.cfg.ReviewEvery), nil
}

func reviewReport(s *crdt.State, every time.Duration) ReviewReport {
	r := ReviewReport{Kind: s.Kind}
	labels := make(map[identity.DeviceID]string, len(s.Members))
	for _, m := range s.Members {
		labels[m.Device] = m.Name
	}
	for _, p := range s.Persons {
		rm := ReviewMember{ID: p.ID, Name: p.Name, Admin: p.Admin}
		for _, d := range p.Devices {
			rd := ReviewDevice{ID: d, Label: labels[d]}
			if h, ok := s.LastSeen[d]; ok {
				rd.LastSeen = h.Time().UTC()
			}
			rm.Devices = append(rm.Devices, rd)
		}
		r.Members = append(r.Members, rm)
	}
	if s.LastReview != nil {
		r.LastReview = s.LastReview.Time.Time().UTC()
		by := s.LastReview.By
		r.ReviewedBy = &by
	}
	if every >= 0 {
		r.Due, _ = duty.ReviewDueAt(s, every)
		r.Due = r.Due.UTC()
	}
	return r
}

// RecordReview records, as an op in the team's log, that this device's admin reviewed the team's
// membership as it stands now; every admin's next reminder is due ReviewEvery after it. The
// audit-trail hook (Config.OnReview) is called once the op is stored.
func (n *Node) RecordReview(teamRef string) (ReviewReport, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return ReviewReport{}, err
	}
	s := t.snapshot()
	rv := crdt.Review{Persons: uint16(min(len(s.Persons), 1<<16-1)), Devices: uint16(min(len(s.Members), 1<<16-1))}
	if s.Current >= 0 {
		rv.Epoch = s.Epochs[s.Current].ID
	}
	op, err := n.publish(t, crdt.KindReview, rv.Marshal())
	if err != nil {
		return ReviewReport{}, err
	}
	if n.cfg.OnReview != nil {
		n.cfg.OnReview(t.id, op.ID(), op.Time.Time())
	}
	return n.MembershipReview(teamRef)
}

// DutyReport is a team's duty hours and rota as the CLI shows them.
type DutyReport struct {
	Persons []PersonDuty `json:"persons"`
	Rota    *RotaReport  `json:"rota,omitempty"` // nil: no rota; urgent messages alert everyone
}

// PersonDuty is one person's duty hours.
type PersonDuty struct {
	ID        identity.DeviceID `json:"id"`
	Name      string            `json:"name"`
	Published bool              `json:"published"`      // false: none published, so always alerted
	Zone      string            `json:"zone,omitempty"` // IANA time zone; empty: Offset
	Offset    int16             `json:"utc_offset_minutes"`
	Shifts    []crdt.Shift      `json:"shifts"`
	OnDuty    bool              `json:"on_duty"`
}

// RotaReport is the team's on-call rota, with persons by name.
type RotaReport struct {
	Zone          string     `json:"zone,omitempty"` // IANA time zone; empty: Offset
	Offset        int16      `json:"utc_offset_minutes"`
	EscalateAfter int        `json:"escalate_after_minutes"`
	RenotifyEvery int        `json:"renotify_every_minutes"`
	Slots         []RotaLine `json:"slots"`
	OnCallNow     []string   `json:"on_call_now"`
}

// RotaLine is one slot of a RotaReport.
type RotaLine struct {
	crdt.Shift
	OnCall []string `json:"on_call"`
}

// Duty reports a team's duty hours and on-call rota.
func (n *Node) Duty(teamRef string) (DutyReport, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return DutyReport{}, err
	}
	s := t.snapshot()
	now := n.now()
	names := make(map[identity.DeviceID]string, len(s.Persons))
	var rep DutyReport
	for _, p := range s.Persons {
		names[p.ID] = p.Name
		pd := PersonDuty{ID: p.ID, Name: p.Name, OnDuty: true, Shifts: []crdt.Shift{}}
		if d, ok := s.Duty[p.ID]; ok {
			pd.Published, pd.Zone, pd.Offset, pd.Shifts, pd.OnDuty = true, d.Zone, d.Offset, d.Shifts, d.OnDuty(now)
		}
		rep.Persons = append(rep.Persons, pd)
	}
	nameOf := func(ids []identity.DeviceID) []string {
		out := []string{}
		for _, id := range ids {
			if nm, ok := names[id]; ok {
				out = append(out, nm)
			} else {
				out = append(out, id.Short()+" (not a member)")
			}
		}
		return out
	}
	if r := s.Rota; r != nil {
		rr := &RotaReport{Zone: r.Zone, Offset: r.Offset, EscalateAfter: int(r.EscalateAfter), RenotifyEvery: int(r.RenotifyEvery),
			OnCallNow: nameOf(r.OnCall(now)), Slots: []RotaLine{}}
		for _, sl := range r.Slots {
			rr.Slots = append(rr.Slots, RotaLine{Shift: sl.Shift, OnCall: nameOf(sl.OnCall)})
		}
		rep.Rota = rr
	}
	return rep, nil
}
