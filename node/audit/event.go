package audit

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// ShortID is the first 4 bytes of a team, device or op id: the short form the logs print. It says
// which one without giving away a team id (a secret among members) or anything readable.
type ShortID [4]byte

// Short returns the short id of an id of at least 4 bytes (a team, device or op id); shorter input
// gives a zero ShortID.
func Short(id []byte) ShortID {
	var s ShortID
	if len(id) >= len(s) {
		copy(s[:], id)
	}
	return s
}

// String returns the 8 hex characters of the id, or "" for the zero id.
func (s ShortID) String() string {
	if s == (ShortID{}) {
		return ""
	}
	return hex.EncodeToString(s[:])
}

// Kind is what an event records.
type Kind uint8

// Event kinds. Never renumber one; add new kinds at the end.
const (
	// Created: a team's genesis was stored on this device (it created or joined the team); epoch 1.
	Created Kind = 1
	// Membership: a membership commit was stored: Changes (who was added, removed, promoted,
	// linked, unlinked), by Actor, starting Epoch. Op is the commit.
	Membership Kind = 2
	// Rekey: a commit with no change was stored: a new key epoch (rotation, or after a merge).
	Rekey Kind = 3
	// Filed: an admin's record gateway (Actor) published a filed op (Op) naming Count messages the health record accepted.
	Filed Kind = 4
	// Deleted: Count message bodies of Team were deleted past retention (their epochs' keys with
	// them).
	Deleted Kind = 5
	// Exported: a subject-access export was made on this device: Subject says of what kind of
	// subject, Count how many messages it holds.
	Exported Kind = 6
	// Wiped: this device, an admin's, ordered a remote wipe of device Actor of Team (beside the
	// removal the order makes, a Membership event).
	Wiped Kind = 7
	// RelayAdmitted: a clinic relay carries a team. On a device: an admin's relay op was stored
	// (Actor: the relay's short key, Op: the relay op). On the relay: it was admitted for a topic
	// (Team: the topic's short form, Actor: the admin the relay code names).
	RelayAdmitted Kind = 8
	// AuditExported: this audit trail was exported (Count events).
	AuditExported Kind = 9
	// Restarted: the trail failed verification and was started again (Log.Restart): the first
	// record of the new chain. Count is the number of records the old one's anchor vouched for.
	Restarted Kind = 10
	// RelayRevoked: a relay stopped carrying a topic (Team: the topic's short form).
	RelayRevoked Kind = 11
	// Reviewed: an admin (Actor) recorded a review of the team's membership (Op: the review op).
	Reviewed Kind = 12

	maxKind = Reviewed
)

var kindNames = [...]string{
	Created: "created", Membership: "membership", Rekey: "rekey", Filed: "filed", Deleted: "deleted",
	Exported: "exported", Wiped: "wiped", RelayAdmitted: "relay-admitted", AuditExported: "audit-exported",
	Restarted: "restarted", RelayRevoked: "relay-revoked", Reviewed: "reviewed",
}

// String returns the kind's name, or "kind(N)".
func (k Kind) String() string {
	if k >= 1 && k <= maxKind {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Action is what a membership change did.
type Action uint8

// Membership actions (the actions of sync/crdt's commits).
const (
	Add     Action = 1
	Remove  Action = 2
	Promote Action = 3
	Link    Action = 4
	Unlink  Action = 5
)

var actionNames = [...]string{Add: "add", Remove: "remove", Promote: "promote", Link: "link", Unlink: "unlink"}

// String returns the action's name, or "action(N)".
func (a Action) String() string {
	if a >= Add && a <= Unlink {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Change is one membership change: what was done to which device.
type Change struct {
	Action Action
	Device ShortID
}

// Subject is whom a subject-access export was about.
type Subject uint8

// Subjects of an export. The reference or name itself is never recorded.
const (
	Patient Subject = 1
	Member  Subject = 2
)

// String returns "patient", "member", or "" for none.
func (s Subject) String() string {
	switch s {
	case Patient:
		return "patient"
	case Member:
		return "member"
	}
	return ""
}

// MaxChanges bounds the changes of one event (a commit has at most crdt.MaxChanges; more are
// counted in Count and not listed).
const MaxChanges = 64

// Event is one audited event. It has no text field by design: see the package documentation.
type Event struct {
	Kind Kind
	// Time is when it happened on this device's clock; Append sets it when zero.
	Time time.Time
	// Team is the team's short id; zero for an event of the device (a wipe, an export).
	Team ShortID
	// Actor is the device (or relay) that did it: the author of a commit, the gateway that filed,
	// the relay admitted. Zero for this device.
	Actor ShortID
	// Op is the op concerned (a commit, a filed message), if any.
	Op ShortID
	// Epoch is the key epoch number a commit started.
	Epoch uint32
	// Count is how many items the event covers (messages deleted or exported, events exported).
	Count uint32
	// Subject is the kind of subject of an export.
	Subject Subject
	// Changes are a membership commit's changes.
	Changes []Change
}

// Validate checks the limits the decoder enforces.
func (e Event) Validate() error {
	if e.Kind < 1 || e.Kind > maxKind {
		return fmt.Errorf("%w: event kind %d", ErrBadEvent, uint8(e.Kind))
	}
	if e.Subject > Member {
		return fmt.Errorf("%w: subject %d", ErrBadEvent, uint8(e.Subject))
	}
	if len(e.Changes) > MaxChanges {
		return fmt.Errorf("%w: %d changes, limit %d", ErrBadEvent, len(e.Changes), MaxChanges)
	}
	for _, c := range e.Changes {
		if c.Action < Add || c.Action > Unlink {
			return fmt.Errorf("%w: action %d", ErrBadEvent, uint8(c.Action))
		}
	}
	return nil
}

// Record is an event as stored: its place in the chain and its mac.
type Record struct {
	Seq   uint64
	Event Event
	MAC   [32]byte
	body  []byte
}

// Errors.
var (
	// ErrBadEvent: an event breaks the format's limits (Append refuses it).
	ErrBadEvent = errors.New("audit: bad event")
	// ErrMalformed: the file is not an audit trail, or a record does not decode.
	ErrMalformed = errors.New("audit: malformed audit trail")
	// ErrTampered: the file decodes but is not the chain this device wrote (a mac, the sequence or
	// the anchored head does not match).
	ErrTampered = errors.New("audit: audit trail fails verification")

	// errShort marks a file that ends inside a record.
	errShort = errors.New("truncated record")
)

const (
	magic         = "FMAUDIT1"
	recordVersion = 1
	// bodyFixed is the size of a body without its changes.
	bodyFixed = 1 + 8 + 8 + 1 + 4 + 4 + 4 + 4 + 4 + 1 + 1
	// MaxRecord bounds a record's body: the fixed part and MaxChanges changes.
	MaxRecord = bodyFixed + MaxChanges*5
	macSize   = 32
)

// marshalBody encodes a validated event at seq.
func marshalBody(seq uint64, e Event) []byte {
	b := make([]byte, 0, bodyFixed+5*len(e.Changes))
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = append(b, byte(e.Kind))
	b = append(b, e.Team[:]...)
	b = append(b, e.Actor[:]...)
	b = append(b, e.Op[:]...)
	b = binary.BigEndian.AppendUint32(b, e.Epoch)
	b = binary.BigEndian.AppendUint32(b, e.Count)
	b = append(b, byte(e.Subject))
	b = append(b, byte(len(e.Changes)))
	for _, c := range e.Changes {
		b = append(b, byte(c.Action))
		b = append(b, c.Device[:]...)
	}
	return b
}

// unmarshalBody decodes a record body.
func unmarshalBody(b []byte) (uint64, Event, error) {
	r := wire.NewReader(b)
	r.Version("audit record", recordVersion)
	seq := r.Uint64()
	var e Event
	e.Time = time.Unix(0, int64(r.Uint64())).UTC()
	e.Kind = Kind(r.Byte())
	copy(e.Team[:], r.Fixed(4))
	copy(e.Actor[:], r.Fixed(4))
	copy(e.Op[:], r.Fixed(4))
	e.Epoch = r.Uint32()
	e.Count = r.Uint32()
	e.Subject = Subject(r.Byte())
	n := int(r.Byte())
	if r.Err() == nil && n > MaxChanges {
		return 0, Event{}, fmt.Errorf("%w: %d changes, limit %d", ErrMalformed, n, MaxChanges)
	}
	if r.Err() == nil && n > 0 {
		e.Changes = make([]Change, 0, min(n, r.Len()/5))
	}
	for range n {
		var c Change
		c.Action = Action(r.Byte())
		copy(c.Device[:], r.Fixed(4))
		if r.Err() != nil {
			break
		}
		e.Changes = append(e.Changes, c)
	}
	if err := r.Finish(); err != nil {
		return 0, Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if seq == 0 {
		return 0, Event{}, fmt.Errorf("%w: record sequence number 0", ErrMalformed)
	}
	if err := e.Validate(); err != nil {
		return 0, Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return seq, e, nil
}

// Decode reads an audit trail's records without checking its macs (it has no key): it is the
// parser Verify and Open use, for bytes read from a file anyone could have written. It returns the
// records that decode, in file order, and, if the file does not end cleanly after the last one, an
// error wrapping ErrMalformed with the byte offset of the first record that does not decode. It
// never panics and allocates at most a small multiple of len(data).
func Decode(data []byte) ([]Record, error) {
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: no audit trail header", ErrMalformed)
	}
	var recs []Record
	off := len(magic)
	for off < len(data) {
		rec, n, err := decodeRecord(data[off:])
		if err != nil {
			return recs, fmt.Errorf("record %d at byte %d: %w", len(recs)+1, off, err)
		}
		recs = append(recs, rec)
		off += n
	}
	return recs, nil
}

// decodeRecord decodes the record at the start of b and returns its size.
func decodeRecord(b []byte) (Record, int, error) {
	if len(b) < 4 {
		return Record{}, 0, fmt.Errorf("%w: %w (length)", ErrMalformed, errShort)
	}
	n := int(binary.BigEndian.Uint32(b))
	if n < bodyFixed || n > MaxRecord {
		return Record{}, 0, fmt.Errorf("%w: record body of %d bytes (want %d to %d)", ErrMalformed, n, bodyFixed, MaxRecord)
	}
	if len(b) < 4+n+macSize {
		return Record{}, 0, fmt.Errorf("%w: %w", ErrMalformed, errShort)
	}
	body := b[4 : 4+n : 4+n]
	seq, ev, err := unmarshalBody(body)
	if err != nil {
		return Record{}, 0, err
	}
	rec := Record{Seq: seq, Event: ev, body: body}
	copy(rec.MAC[:], b[4+n:])
	return rec, 4 + n + macSize, nil
}

// appendRecord appends the framed record of body and mac to b.
func appendRecord(b, body []byte, mac [32]byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return append(b, mac[:]...)
}
