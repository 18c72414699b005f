package device

import (
	"fmt"
	"log/slog"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/duty"
)

// Peer is a peer as the core sees it: the caller's name for it, the device
// behind it and whether it is a clinic relay enrolled for the team. The
// core decides what a peer may cost and whether it misbehaved; the caller
// connects, syncs and bans.
type Peer struct {
	// ID is the caller's name for the peer (the node uses the libp2p peer
	// id). Budgets and bans are kept by ID. Empty for the device itself.
	ID string
	// Device is the device behind the peer: its Ed25519 key (a libp2p peer
	// id embeds it). Zero if the peer is not a device.
	Device identity.DeviceID
	// Relay says the peer is a clinic relay enrolled for this team: it
	// stores what devices give it and cannot check it, so it is never
	// penalised for what it carries.
	Relay bool
}

// LogValue logs the peer's short device id, or "relay".
func (p Peer) LogValue() slog.Value {
	if p.Relay {
		return slog.StringValue("relay")
	}
	return slog.StringValue(p.Device.Short())
}

// Write is what a call asks the caller to store, in one atomic and durable
// transaction, before it acts on the rest of the Effects. Nothing in it is
// plaintext but Ops and Keys, which the store encrypts at rest.
type Write struct {
	// Envelopes are sealed envelopes to keep for this team's topic (opened,
	// or carried for others), keyed by (Time, ID).
	Envelopes []Record
	// Ops are the opened ops (crdt.Op.Marshal, seal included), keyed by
	// (Time, ID).
	Ops []Record
	// Keys, if not nil, replaces the team's stored key state (teamkeys).
	Keys []byte
	// DropChunks are messages whose bodies were deleted (their manifests
	// with them): delete the attachment chunks they own, after the Ops.
	DropChunks []crdt.OpID
	// Alerts, if not nil, replaces the team's stored alert state (what the
	// duty tracker alerted: duty.Tracker.MarshalState), to give to New as
	// Stored.Alerts. Store it before raising the Effects' alerts.
	Alerts []byte
}

// Record is one stored value: an envelope or an op, with its key.
type Record struct {
	Time uint64
	ID   crdt.OpID
	Data []byte
}

// Empty reports whether there is nothing to write.
func (w *Write) Empty() bool {
	return len(w.Envelopes) == 0 && len(w.Ops) == 0 && w.Keys == nil && len(w.DropChunks) == 0 && w.Alerts == nil
}

// Effects is what a call of the core asks the caller to do, in order: make
// the Write durable (and, if that fails, discard the Team and restore it
// from the store with New: its memory is ahead of the disk), then publish,
// sync and ban. A call that returns an error has no effects.
type Effects struct {
	Write Write
	// Publish are envelopes to gossip on the team's topic, after the Write.
	Publish [][]byte
	// Sync are peers to reconcile the team with: they sent something whose
	// parents or epoch this device lacks.
	Sync []Peer
	// Ban are peers that sent invalid data beyond their budget: disconnect
	// and refuse them for a while.
	Ban []Peer
	// Reopen are stored envelopes this device carried sealed and can now
	// read (it learned their epoch's chains): give them to Receive again,
	// from the store, with Arrival.Reopen set. They stay carried until
	// their ops are kept, so Tick asks again for those that were held and
	// expired, or whose Reopen a restart lost.
	Reopen []crdt.OpID
	// Changed says the team's visible state changed (new ops): wake
	// watchers.
	Changed bool
	// Alerts are the alerts to raise for the user now (duty hours, rota,
	// escalation, review reminders: package sync/duty), set by Tick (see
	// Team.Alerts). They carry a priority and a reason, never content.
	Alerts []duty.Alert
}

// merge appends o's effects to e's.
func (e *Effects) merge(o Effects) {
	e.Write.Envelopes = append(e.Write.Envelopes, o.Write.Envelopes...)
	e.Write.Ops = append(e.Write.Ops, o.Write.Ops...)
	if o.Write.Keys != nil {
		e.Write.Keys = o.Write.Keys
	}
	e.Write.DropChunks = append(e.Write.DropChunks, o.Write.DropChunks...)
	if o.Write.Alerts != nil {
		e.Write.Alerts = o.Write.Alerts
	}
	e.Publish = append(e.Publish, o.Publish...)
	for _, p := range o.Sync {
		e.addSync(p)
	}
	for _, p := range o.Ban {
		e.addBan(p)
	}
	e.Reopen = append(e.Reopen, o.Reopen...)
	e.Changed = e.Changed || o.Changed
	e.Alerts = append(e.Alerts, o.Alerts...)
}

func (e *Effects) addSync(p Peer) {
	for _, q := range e.Sync {
		if q.ID == p.ID {
			return
		}
	}
	e.Sync = append(e.Sync, p)
}

func (e *Effects) addBan(p Peer) {
	for _, q := range e.Ban {
		if q.ID == p.ID {
			return
		}
	}
	e.Ban = append(e.Ban, p)
}

// Verdict is what became of one received envelope.
type Verdict uint8

// Verdicts. A gossip validator accepts (passes on) only Accepted.
const (
	// Accepted: judged and stored, opened or carried sealed for others.
	Accepted Verdict = iota + 1
	// Duplicate: already stored here.
	Duplicate
	// Held: kept in memory until it can be judged (its parents, its epoch
	// or a witness has not arrived, or it is ahead of its sender's chain).
	// It is not stored, passed on or shown; it may be Accepted later.
	Held
	// Refused: not for this device to keep (its author may not write it, it
	// opens to something invalid, or it is of an epoch this device will
	// never hold). The peer that sent it is not at fault.
	Refused
	// Rejected: the peer sent something no honest peer passes on
	// (malformed, of another topic, failing the authentication an honest
	// peer checks). It counts against the peer's budget.
	Rejected
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case Accepted:
		return "accepted"
	case Duplicate:
		return "duplicate"
	case Held:
		return "held"
	case Refused:
		return "refused"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}
