// Package lowdata is a device's low-data mode: while it is on, the device sends only what cannot
// wait, and keeps the rest in the store's outbox until the mode goes off.
//
//   - Routine messages and acknowledgements are not sealed or sent: Mode.Defer keeps each op, as made
//     (its crdt.Op content encoding, which names its team), in the outbox, durably, before the send
//     returns; so a queued message is acknowledged like any other and survives a crash or restart.
//     When the mode is off, Mode.Flush hands each queued op to a Publisher, which seals it under the
//     team's then-current epoch and publishes it, in the order they were made, each once (an op
//     already in the team log is only dropped from the outbox). The periodic acknowledgement batch
//     is skipped while Mode.On (what to acknowledge is computed from the team state when the mode
//     goes off; read marks not yet published are lost on a restart and become "received").
//   - Urgent and emergency messages, and every other kind of op (membership, keys, ...), are sent at
//     once, and mark their team "urgent pending".
//   - Automatic reconciliation (on connect, on a peer joining a topic, periodic, repair of missing
//     parents) runs only for teams with an urgent op pending (Mode.AutoSync); the mark is cleared
//     once a session for the team completes (Mode.Synced: a session repairs both ends, so the urgent
//     op reached one more device, which gossips and reconciles it onwards). The user can still ask
//     for a full reconciliation. Sessions that peers open are still answered: refusing them would only
//     make them retry.
//   - Gossip is still received and relayed: envelopes are sealed, so their priority cannot be told
//     before they are opened.
//
// A queued op keeps its timestamp, parents and id: it sorts where it was written, and is published
// under the id it was queued with. It is not in the team's log until it is published; Mode.Queued
// lists a team's queued ops, so that the device can show its own queued messages as such. The mode and the urgent marks are kept in
// the store (setting "low-data"), so the mode survives restarts; Mode.Load can force it on at start.
//
// The package knows nothing of the network: teams are named by their gossip topic, and publishing
// is the caller's (Publisher). A Mode's methods are safe for concurrent use.
package lowdata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	stdsync "sync"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// setting is the name of the store setting holding the mode:
//
//	version 1 | on 1 | uvarint n | n × topic 16   (teams with an urgent op pending, strictly ascending)
const setting = "low-data"

// maxUrgentTopics bounds the urgent marks kept (a device belongs to far fewer teams).
const maxUrgentTopics = 4096

// ErrNoTeam is what a Publisher returns for an op of a team this device no longer has: Flush drops
// the op.
var ErrNoTeam = errors.New("lowdata: no such team")

// Publisher publishes op, an op of this device that waited in the outbox, to its team (sealed under
// the team's current epoch, stored and gossiped). It returns ErrNoTeam if this device no longer has
// op's team, and published false if op is in its team's log already (a crash came between publishing
// it and removing it from the outbox); either way Flush drops op from the outbox. Any other error
// keeps op, and the later ops of its team, queued.
type Publisher func(op *crdt.Op) (published bool, err error)

// Store is the part of the store the mode uses (*storage.Store).
type Store interface {
	Setting(name string) ([]byte, error)
	PutSetting(name string, value []byte) error
	PutOutbox(k storage.OutboxKey, value []byte) error
	DeleteOutbox(k storage.OutboxKey) error
	Outbox(fn func(storage.OutboxKey, []byte) error) error
	OutboxLen() (int, error)
}

var _ Store = (*storage.Store)(nil)

// Mode is the low-data mode of a device. It is off until Load reads it from the store.
type Mode struct {
	st   Store
	self identity.DeviceID
	log  *slog.Logger

	// mu guards the fields below and is held while an op is queued, so an op queued before the mode
	// went off is in the store before the outbox is read.
	mu     stdsync.Mutex
	on     bool
	urgent map[envelope.Topic]struct{}

	flushMu stdsync.Mutex // serialises outbox flushes
}

// New returns the low-data mode of device self, kept in st. log receives what the mode carries on
// past (nil: discard).
func New(st Store, self identity.DeviceID, log *slog.Logger) *Mode {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mode{st: st, self: self, log: log, urgent: make(map[envelope.Topic]struct{})}
}

func marshalSetting(on bool, urgent map[envelope.Topic]struct{}) []byte {
	topics := make([]envelope.Topic, 0, len(urgent))
	for t := range urgent {
		topics = append(topics, t)
	}
	slices.SortFunc(topics, func(a, b envelope.Topic) int { return strings.Compare(string(a[:]), string(b[:])) })
	b := []byte{1, 0}
	if on {
		b[1] = 1
	}
	b = binary.AppendUvarint(b, uint64(len(topics)))
	for _, t := range topics {
		b = append(b, t[:]...)
	}
	return b
}

func unmarshalSetting(b []byte) (on bool, urgent map[envelope.Topic]struct{}, err error) {
	bad := func(what string) error { return fmt.Errorf("lowdata: setting: %s", what) }
	if len(b) < 3 || b[0] != 1 {
		return false, nil, bad("unknown version or truncated")
	}
	if b[1] > 1 {
		return false, nil, bad("bad flag")
	}
	n, m := binary.Uvarint(b[2:])
	if m <= 0 || m != len(binary.AppendUvarint(nil, n)) {
		return false, nil, bad("bad count")
	}
	rest := b[2+m:]
	if n > maxUrgentTopics || uint64(len(rest)) != n*16 {
		return false, nil, bad("bad topic list")
	}
	urgent = make(map[envelope.Topic]struct{}, n)
	for i := 0; i < int(n); i++ {
		if i > 0 && string(rest[16*(i-1):16*i]) >= string(rest[16*i:16*(i+1)]) {
			return false, nil, bad("topics not strictly ascending")
		}
		urgent[envelope.Topic(rest[16*i:16*(i+1)])] = struct{}{}
	}
	return b[1] == 1, urgent, nil
}

// save stores the mode (the caller holds m.mu).
func (m *Mode) save() error {
	if err := m.st.PutSetting(setting, marshalSetting(m.on, m.urgent)); err != nil {
		return fmt.Errorf("lowdata: store low-data mode: %w", err)
	}
	return nil
}

// Load reads the mode from the store (none stored is off), turning it on durably if force, and
// reports whether it is on. When it is off, the caller then Flushes what a previous run left queued.
func (m *Mode) Load(force bool) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.st.Setting(setting)
	switch {
	case err == nil:
		on, urgent, err := unmarshalSetting(b)
		if err != nil {
			return false, err
		}
		m.on, m.urgent = on, urgent
		if !on {
			clear(m.urgent)
		}
	case !errors.Is(err, storage.ErrNotFound):
		return false, fmt.Errorf("lowdata: load low-data mode: %w", err)
	}
	if force && !m.on {
		m.on = true
		if err := m.save(); err != nil {
			return false, err
		}
	}
	return m.on, nil
}

// deferrable reports whether an op may wait for the end of low-data mode: acknowledgements and
// routine messages.
func deferrable(op *crdt.Op) bool {
	switch op.Kind {
	case crdt.KindAck:
		return true
	case crdt.KindMessage:
		msg, err := crdt.UnmarshalMessage(op.Body)
		return err == nil && msg.Priority == crdt.Routine
	}
	return false
}

// Defer queues op, a new op of this device for the team whose topic is topic, in the outbox if the
// mode is on and op can wait; it reports whether it did. Once it returned true the op is durably
// queued (that is its acknowledgement) and must not be published now. If it returns false the
// caller publishes op; while the mode is on that marks the team urgent pending (a failure to store
// the mark is logged: the op still goes out by gossip, only its reconciliation waits for the user).
func (m *Mode) Defer(topic envelope.Topic, op *crdt.Op) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.on {
		return false, nil
	}
	if !deferrable(op) {
		if _, ok := m.urgent[topic]; !ok && len(m.urgent) < maxUrgentTopics {
			m.urgent[topic] = struct{}{}
			if err := m.save(); err != nil {
				m.log.Warn("marking a team urgent failed", "team", op.Team, "err", err)
			}
		}
		return false, nil
	}
	if err := m.st.PutOutbox(storage.OutboxKey{Time: uint64(op.Time), ID: op.ID()}, op.MarshalContent()); err != nil {
		return false, fmt.Errorf("lowdata: queue in the outbox: %w", err)
	}
	return true, nil
}

// AutoSync reports whether automatic reconciliation of the team whose topic is topic may run:
// always, except while the mode is on, when only teams with an urgent op pending are reconciled.
func (m *Mode) AutoSync(topic envelope.Topic) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.on {
		return true
	}
	_, ok := m.urgent[topic]
	return ok
}

// Synced records that a reconciliation session of the team whose topic is topic completed: its
// urgent mark is cleared. An error storing that leaves the mark cleared in memory only.
func (m *Mode) Synced(topic envelope.Topic) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.urgent[topic]; !ok {
		return nil
	}
	delete(m.urgent, topic)
	return m.save()
}

// On reports whether the mode is on (and the periodic acknowledgement batch is to be skipped).
func (m *Mode) On() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on
}

// Queued returns the ops of team that wait in the outbox, in the order Flush will publish them.
// Entries that do not decode as ops of this device are skipped (Flush drops them).
func (m *Mode) Queued(team crdt.TeamID) ([]*crdt.Op, error) {
	var out []*crdt.Op
	err := m.st.Outbox(func(k storage.OutboxKey, b []byte) error {
		op, err := crdt.UnmarshalContent(b)
		if err == nil && op.Team == team && op.ID() == k.ID && uint64(op.Time) == k.Time && op.Author == m.self {
			out = append(out, op)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lowdata: read the outbox: %w", err)
	}
	return out, nil
}

// Status describes the low-data mode.
type Status struct {
	On bool `json:"on"`
	// Queued counts the ops waiting in the outbox.
	Queued int `json:"queued"`
	// UrgentTeams counts the teams with an urgent op not yet reconciled with anyone.
	UrgentTeams int `json:"urgent_teams"`
}

// Status returns the mode and what waits because of it. On an error reading the outbox, the Status
// returned still holds the mode.
func (m *Mode) Status() (Status, error) {
	m.mu.Lock()
	s := Status{On: m.on, UrgentTeams: len(m.urgent)}
	m.mu.Unlock()
	q, err := m.st.OutboxLen()
	if err != nil {
		return s, fmt.Errorf("lowdata: read the outbox: %w", err)
	}
	s.Queued = q
	return s, nil
}

// Set turns the mode on or off, durably, and reports whether it was on. Turning it off clears the
// urgent marks (reconciliation is no longer held back); the caller then Flushes the outbox. On an
// error the mode is unchanged.
func (m *Mode) Set(on bool) (was bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was, wasUrgent := m.on, m.urgent
	m.on = on
	if !on {
		m.urgent = make(map[envelope.Topic]struct{})
	}
	if err := m.save(); err != nil {
		m.on, m.urgent = was, wasUrgent
		return was, err
	}
	return was, nil
}

// Flush hands the queued ops to publish in (time, id) order and removes each from the outbox once
// publish returned; it returns how many publish reported published. An op publish reports as already
// published, or as of a team this device no longer has (ErrNoTeam), is only removed; one that does not
// decode as an op of this device is dropped with a warning. After a publish error the later ops of
// that team stay queued, and the other teams' go on. Flush stops early if the mode is turned back on.
func (m *Mode) Flush(publish Publisher) (int, error) {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	type queued struct {
		k storage.OutboxKey
		b []byte
	}
	var all []queued
	if err := m.st.Outbox(func(k storage.OutboxKey, b []byte) error {
		all = append(all, queued{k, b})
		return nil
	}); err != nil {
		return 0, fmt.Errorf("lowdata: read the outbox: %w", err)
	}
	published := 0
	var errs []error
	failed := make(map[crdt.TeamID]bool)
	for _, q := range all {
		if m.On() {
			break
		}
		op, err := crdt.UnmarshalContent(q.b)
		switch {
		case err != nil || op.ID() != q.k.ID || uint64(op.Time) != q.k.Time || op.Author != m.self:
			m.log.Warn("dropping an unreadable queued op")
		case failed[op.Team]:
			continue
		default:
			ok, err := publish(op)
			switch {
			case errors.Is(err, ErrNoTeam):
				m.log.Warn("dropping a queued op of a team this device left", "team", op.Team)
			case err != nil:
				// Keep this team's later ops behind it; other teams go on.
				failed[op.Team] = true
				errs = append(errs, fmt.Errorf("team %s: %w", op.Team.Short(), err))
				continue
			case ok:
				published++
			}
		}
		if err := m.st.DeleteOutbox(q.k); err != nil {
			return published, fmt.Errorf("lowdata: outbox: %w", err)
		}
	}
	if len(errs) > 0 {
		return published, fmt.Errorf("lowdata: publishing queued ops: %w", errors.Join(errs...))
	}
	return published, nil
}
