package node

import (
	"context"
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// The node's glue to the audit trail (package audit): what it records, and when. Events are taken
// from what the store keeps, after it is durable: a create or commit op stored (a team created or
// joined, a membership change, a new key epoch), a relay op of an admin stored, message bodies
// deleted past retention (the core writes their redacted form), and the exports made through the
// node. An event holds short ids, counts and kinds only.

// ErrNoAudit is returned by the audit methods of a node run without an audit trail
// (Config.AuditFile empty).
var ErrNoAudit = errors.New("node: this node keeps no audit trail")

// Audit appends an event to the device's audit trail, durably (see audit.Log.Append). With no trail
// configured it does nothing and returns nil: a node in a test without a data directory.
func (n *Node) Audit(ctx context.Context, e audit.Event) error {
	if n.audit == nil {
		return nil
	}
	return n.audit.Append(ctx, e)
}

// AuditTrail returns the device's audit trail, or ErrNoAudit.
func (n *Node) AuditTrail() (*audit.Log, error) {
	if n.audit == nil {
		return nil, ErrNoAudit
	}
	return n.audit, nil
}

// DeviceShort is this device's short id in the audit trail.
func (n *Node) DeviceShort() audit.ShortID {
	d := n.id.Device.ID()
	return audit.Short(d[:])
}

// record appends events, logging (not returning) a failure: the events happened, and the write that
// made them is durable; a trail that cannot record says so in the log and in `audit verify`.
func (n *Node) record(events ...audit.Event) {
	if n.audit == nil || len(events) == 0 {
		return
	}
	if err := n.audit.AppendAll(n.ctx, events); err != nil && n.ctx.Err() == nil {
		n.log.Error("audit trail: events not recorded", "events", len(events), "err", err)
	}
}

// auditWrite records the events of a durable Write of team t.
func (n *Node) auditWrite(t *team, w device.Write) {
	if n.audit == nil || len(w.Ops) == 0 {
		return
	}
	team := audit.Short(t.id[:])
	deleted := uint32(0)
	var events []audit.Event
	for _, r := range w.Ops {
		op, err := crdt.UnmarshalStored(r.Data)
		if err != nil {
			continue
		}
		if op.Redacted() {
			deleted++
			continue
		}
		id := op.ID()
		e := audit.Event{Team: team, Actor: audit.Short(op.Author[:]), Op: audit.Short(id[:])}
		switch op.Kind {
		case crdt.KindCreate:
			e.Kind, e.Epoch = audit.Created, 1
		case crdt.KindMember:
			c, err := crdt.UnmarshalCommit(op.Body)
			if err != nil {
				continue
			}
			e.Kind, e.Epoch = audit.Rekey, c.Number
			if len(c.Changes) > 0 {
				e.Kind = audit.Membership
			}
			for _, ch := range c.Changes {
				d := ch.Target
				if ch.Action == crdt.ActAdd || ch.Action == crdt.ActLink {
					d = ch.Info.Device
				}
				if len(e.Changes) < audit.MaxChanges {
					e.Changes = append(e.Changes, audit.Change{Action: audit.Action(ch.Action), Device: audit.Short(d[:])})
				}
			}
			e.Count = uint32(len(c.Changes))
		case crdt.KindRelay:
			rl, err := crdt.UnmarshalRelay(op.Body)
			if err != nil || rl.Removed || t.core == nil {
				continue
			}
			if p, ok := t.core.State().PersonOf(op.Author); !ok || !p.Admin {
				continue
			}
			pid, err := peer.IDFromBytes(rl.Peer)
			if err != nil {
				continue
			}
			d, err := deviceOf(pid)
			if err != nil {
				continue
			}
			e.Kind, e.Actor, e.Op = audit.RelayAdmitted, audit.Short(d[:]), audit.Short(id[:])
		case crdt.KindFiled:
			if t.core == nil {
				continue
			}
			if p, ok := t.core.State().PersonOf(op.Author); !ok || !p.Admin {
				continue
			}
			f, err := crdt.UnmarshalFiled(op.Body)
			if err != nil {
				continue
			}
			e.Kind, e.Count = audit.Filed, uint32(len(f.Entries))
		case crdt.KindReview:
			if t.core == nil {
				continue
			}
			if p, ok := t.core.State().PersonOf(op.Author); !ok || !p.Admin {
				continue
			}
			e.Kind = audit.Reviewed
		default:
			continue
		}
		events = append(events, e)
	}
	if deleted > 0 {
		events = append(events, audit.Event{Kind: audit.Deleted, Team: team, Count: deleted})
	}
	n.record(events...)
}
