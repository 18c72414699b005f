package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/export"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Subject-access export: what this device still holds about one subject (package export renders
// it). The rule of what belongs to a subject is here:
//
//   - a patient: every message, queued ones included, whose patient reference is exactly the one
//     given (after trimming spaces), in every team;
//   - a member: in every team, the person whose display name is the one given (case-insensitive) or
//     whose person or device id starts with it (8+ hex characters) — their membership (admin,
//     devices) — and every message written by one of their devices; a removed person is found by
//     the name their messages carry, and shown as removed.
//
// The export is recorded in the audit trail (its kind of subject and the number of messages, never
// the subject) before it is returned; if the trail fails verification or cannot record it, no
// export is made.

// ExportRequest names the subject of an export: exactly one of Patient and Member.
type ExportRequest struct {
	Patient string
	Member  string
}

// ErrExportSubject is returned for an export request that does not name exactly one subject.
var ErrExportSubject = errors.New("node: name one subject: a patient reference or a member")

// Export returns everything this device holds about the subject, and records the export in the
// audit trail.
func (n *Node) Export(ctx context.Context, req ExportRequest) (export.Data, error) {
	patient, member := strings.TrimSpace(req.Patient), strings.TrimSpace(req.Member)
	if (patient == "") == (member == "") {
		return export.Data{}, ErrExportSubject
	}
	if len(patient) > crdt.MaxPatientLen || len(member) > 2*len(identity.DeviceID{}) {
		return export.Data{}, fmt.Errorf("%w: the reference is too long", ErrExportSubject)
	}
	if l, err := n.AuditTrail(); err == nil {
		if _, err := l.Verify(); err != nil {
			return export.Data{}, fmt.Errorf("node: the audit trail cannot record an export, so none is made: %w", err)
		}
	}
	me := n.id.Device.ID()
	d := export.Data{Device: hex.EncodeToString(me[:]), DeviceName: n.id.Name, Patient: patient, Member: member, Made: n.now()}
	teams := n.teamList()
	slices.SortFunc(teams, func(a, b *team) int { return slices.Compare(a.id[:], b.id[:]) })
	for _, t := range teams {
		msgs, err := n.messages(t)
		if err != nil {
			return export.Data{}, err
		}
		s := t.snapshot()
		short := t.id.Short()
		var (
			devices []identity.DeviceID
			ms      []export.Membership
		)
		if member != "" {
			var found []crdt.Person
			for _, p := range s.Persons {
				if strings.EqualFold(p.Name, member) || idPrefix(p.ID, member) || slices.ContainsFunc(p.Devices, func(d identity.DeviceID) bool { return idPrefix(d, member) }) {
					found = append(found, p)
				}
			}
			if len(found) > 1 {
				return export.Data{}, fmt.Errorf("node: %q matches %d members of team %s; use more of the id", member, len(found), short)
			}
			for _, p := range found {
				m := export.Membership{Team: short, Person: hex.EncodeToString(p.ID[:]), Name: p.Name, Admin: p.Admin}
				for _, dv := range p.Devices {
					info, _ := s.Member(dv)
					m.Devices = append(m.Devices, export.Device{ID: hex.EncodeToString(dv[:]), Label: info.Name})
					devices = append(devices, dv)
				}
				ms = append(ms, m)
			}
		}
		var picked []export.Message
		removed := map[identity.DeviceID]bool{}
		for _, m := range msgs {
			switch {
			case patient != "":
				if m.Patient != patient {
					continue
				}
			case slices.Contains(devices, m.Author):
			case len(devices) == 0 && slices.Contains(s.Removed, m.Author) && strings.EqualFold(m.AuthorName, member):
				removed[m.Author] = true
			default:
				continue
			}
			em := export.Message{
				ID: m.ID.String(), Team: short, Author: hex.EncodeToString(m.Author[:]), AuthorName: m.AuthorName,
				Time: m.Time.Time(), Text: m.Text, Priority: m.Priority.String(), Patient: m.Patient,
				Received: len(m.ReceivedBy), Read: len(m.ReadBy), Queued: m.Queued,
			}
			if m.ReplyTo != nil {
				em.ReplyTo = m.ReplyTo.String()
			}
			picked = append(picked, em)
		}
		for dv := range removed {
			ms = append(ms, export.Membership{Team: short, Person: hex.EncodeToString(dv[:]), Name: member, Removed: true,
				Devices: []export.Device{{ID: hex.EncodeToString(dv[:])}}})
		}
		if len(picked) == 0 && len(ms) == 0 {
			continue
		}
		d.Teams = append(d.Teams, export.Team{Short: short, Name: s.Name, Kind: s.Kind.String()})
		d.Messages = append(d.Messages, picked...)
		d.Memberships = append(d.Memberships, ms...)
	}
	e := audit.Event{Kind: audit.Exported, Subject: audit.Patient, Count: uint32(len(d.Messages))}
	if member != "" {
		e.Subject = audit.Member
	}
	if err := n.Audit(ctx, e); err != nil {
		return export.Data{}, fmt.Errorf("node: the audit trail cannot record the export, so none was made: %w", err)
	}
	return d, nil
}

// AuditExport returns the audit trail as a FHIR R4 Bundle of AuditEvents, after recording the
// export itself in it.
func (n *Node) AuditExport(ctx context.Context) ([]byte, error) {
	l, err := n.AuditTrail()
	if err != nil {
		return nil, err
	}
	s, err := l.Verify()
	if err != nil {
		return nil, err
	}
	if err := l.Append(ctx, audit.Event{Kind: audit.AuditExported, Count: uint32(min(s.Records+1, 1<<32-1))}); err != nil {
		return nil, err
	}
	recs, err := l.Records()
	if err != nil {
		return nil, err
	}
	return audit.Bundle(recs, n.DeviceShort(), n.now())
}
