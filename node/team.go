package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	stdsync "sync"
	"sync/atomic"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// teamRecord is what a device keeps about a team it belongs to, in the store's teams keyspace (so
// encrypted at rest). The team's name, kind and members are not here: they are ops in the team log,
// rebuilt from the stored ops at start; the epoch keys are the team's key state (teamkeys), a secret
// written in the same transaction as the ops it opened.
//
//	version 4 | team id 32 | genesis op id 16
//
// Genesis pins the team's create op: a member could otherwise write a rival create op with an earlier
// timestamp and make itself the creator.
type teamRecord struct {
	ID      crdt.TeamID
	Genesis crdt.OpID
}

const (
	teamRecordVersion = 4
	teamRecordSize    = 1 + 32 + crdt.IDSize
)

func (r *teamRecord) marshal() []byte {
	b := make([]byte, 0, teamRecordSize)
	b = append(b, teamRecordVersion)
	b = append(b, r.ID[:]...)
	return append(b, r.Genesis[:]...)
}

func unmarshalTeamRecord(b []byte) (*teamRecord, error) {
	if len(b) != teamRecordSize || b[0] != teamRecordVersion {
		if len(b) > 0 && b[0] < teamRecordVersion {
			return nil, errors.New("node: team record of an earlier fieldmesh (before 16-byte op ids): create a new data directory and join the team again")
		}
		return nil, errors.New("node: team record: unknown version or malformed")
	}
	r := &teamRecord{}
	copy(r.ID[:], b[1:33])
	copy(r.Genesis[:], b[33:])
	return r, nil
}

// keysSecret names the store secret holding a team's key state.
func keysSecret(id crdt.TeamID) string { return "teamkeys/" + hex.EncodeToString(id[:]) }

// alertsSecret names the store's record of what the team's duty tracker alerted (device.Write.Alerts).
func alertsSecret(id crdt.TeamID) string { return "alerts/" + hex.EncodeToString(id[:]) }

// team is one team on this node: the device core that decides everything about it, and the I/O
// around the core (its gossip topic, the watchers of its state).
type team struct {
	id    crdt.TeamID
	topic envelope.Topic
	rec   *teamRecord

	ptop   *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	// syncSem admits one outgoing reconciliation at a time (served sessions wait for it briefly).
	syncSem chan struct{}
	// awaitSem bounds the gossiped envelopes whose validation waits for them to be kept.
	awaitSem chan struct{}

	// mu serialises every call of core and the store write of its effects. Lock order: mu, then
	// Node.mu.
	mu      stdsync.Mutex
	core    *device.Team
	waiters map[chan struct{}]struct{}

	// state is the core's last state, and members its member devices, for readers that must not wait
	// for mu (the gossip peer filter runs in pubsub's event loop).
	state   atomic.Pointer[crdt.State]
	members atomic.Pointer[map[identity.DeviceID]bool]
	// epoch is the number of the current epoch, and rosterMoved says it changed since act last looked:
	// an admin device then hands the team's relays its new roster (relayclient.go).
	epoch       atomic.Uint32
	rosterMoved atomic.Bool
	// stored counts the envelopes this node stored for the team since it started: relay status
	// compares it with what each relay is known to hold (relayState.synced).
	stored atomic.Uint64
}

func newTeam(rec *teamRecord, core *device.Team) *team {
	t := &team{
		id:       rec.ID,
		topic:    envelope.TopicOf(rec.ID),
		rec:      rec,
		core:     core,
		waiters:  make(map[chan struct{}]struct{}),
		syncSem:  make(chan struct{}, 1),
		awaitSem: make(chan struct{}, maxAwaiting),
	}
	t.publishState()
	return t
}

// publishState refreshes the state readers see without mu (the caller holds mu).
func (t *team) publishState() {
	s := t.core.State()
	t.state.Store(s)
	m := make(map[identity.DeviceID]bool, len(s.Members))
	for _, x := range s.Members {
		m[x.Device] = true
	}
	t.members.Store(&m)
	if s.Current >= 0 && t.epoch.Swap(s.Epochs[s.Current].Number) != s.Epochs[s.Current].Number {
		t.rosterMoved.Store(true)
	}
}

// snapshot returns the team's visible state. The caller must not modify it.
func (t *team) snapshot() *crdt.State { return t.state.Load() }

// has reports whether the team's core holds op id (stored, opened).
func (t *team) has(id crdt.OpID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.core.Has(id)
}

// removed reports whether the core says this device was removed from the team.
func (t *team) removed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.core.Removed()
}

// isMember reports whether d is a current member device, as the last state says.
func (t *team) isMember(d identity.DeviceID) bool { return (*t.members.Load())[d] }

// wake signals the watchers (the caller holds mu).
func (t *team) wake() {
	for w := range t.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// watch registers a channel that receives a value (coalesced) whenever the state changes.
func (t *team) watch() (ch chan struct{}, cancel func()) {
	ch = make(chan struct{}, 1)
	t.mu.Lock()
	t.waiters[ch] = struct{}{}
	t.mu.Unlock()
	return ch, func() {
		t.mu.Lock()
		delete(t.waiters, ch)
		t.mu.Unlock()
	}
}

// teamList returns the node's teams, copied under n.mu so that the caller works on them unlocked.
func (n *Node) teamList() []*team {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Collect(maps.Values(n.teams))
}

// coreConfig is the device core's configuration for team rec.
func (n *Node) coreConfig(rec *teamRecord) device.Config {
	return device.Config{
		Device:      n.id.Device,
		Team:        rec.ID,
		Genesis:     rec.Genesis,
		RotateEvery: n.cfg.RotateEvery,
		RetainKeys:  n.cfg.RetainKeys,
		AckInterval: n.cfg.AckInterval,
		ReviewEvery: n.cfg.ReviewEvery,
		FiledGrace:  n.cfg.FiledGrace,
		WarnUnfiled: n.cfg.WarnUnfiled,
		Logger:      n.log,
	}
}

// restoreCore makes a team's device core from what the store holds.
func (n *Node) restoreCore(rec *teamRecord) (*device.Team, error) {
	stored, err := n.storedOf(rec)
	if err != nil {
		return nil, err
	}
	core, err := device.New(n.coreConfig(rec), n.now(), stored)
	if err != nil {
		return nil, fmt.Errorf("node: team %s: %w", rec.ID.Short(), err)
	}
	return core, nil
}

// storedOf reads what the store holds of a team for its device core: the key and alert state, the
// opened ops, and the keys of the stored envelopes with each one's epoch tag and, for commits, the
// envelope itself.
func (n *Node) storedOf(rec *teamRecord) (device.Stored, error) {
	kb, err := n.st.Secret(keysSecret(rec.ID))
	if err != nil {
		return device.Stored{}, fmt.Errorf("node: load key state of team %s: %w", rec.ID.Short(), err)
	}
	stored := device.Stored{Keys: kb}
	switch ab, err := n.st.Secret(alertsSecret(rec.ID)); {
	case err == nil:
		stored.Alerts = ab
	case !errors.Is(err, storage.ErrNotFound):
		return device.Stored{}, fmt.Errorf("node: load alert state of team %s: %w", rec.ID.Short(), err)
	}
	err = n.st.Ops(rec.ID, func(b []byte) error {
		stored.Ops = append(stored.Ops, b)
		return nil
	})
	if err != nil {
		return device.Stored{}, fmt.Errorf("node: load team %s: %w", rec.ID.Short(), err)
	}
	err = n.st.Envelopes(envelope.TopicOf(rec.ID), func(r storage.EnvelopeRecord) error {
		h, err := envelope.PeekHeader(r.Data)
		if err != nil {
			return nil // the core stored only envelopes that decoded: not one of its own
		}
		stored.Envelopes = append(stored.Envelopes, device.Ref{Time: r.Key.Time, ID: r.Key.ID, Epoch: h.Epoch})
		if h.Form == envelope.FormCommit {
			stored.Commits = append(stored.Commits, r.Data)
		}
		return nil
	})
	if err != nil {
		return device.Stored{}, fmt.Errorf("node: load envelopes of team %s: %w", rec.ID.Short(), err)
	}
	return stored, nil
}

// batchOf is the store batch of a core's write.
func batchOf(t *team, w device.Write) storage.Batch {
	var b storage.Batch
	for _, r := range w.Envelopes {
		b.Envelopes = append(b.Envelopes, storage.EnvelopeRecord{Key: storage.EnvelopeKey{Topic: t.topic, Time: r.Time, ID: r.ID}, Data: r.Data})
	}
	for _, r := range w.Ops {
		b.Ops = append(b.Ops, storage.OpRecord{Team: t.id, Time: r.Time, ID: r.ID, Data: r.Data})
	}
	if w.Keys != nil || w.Alerts != nil {
		b.Secrets = make(map[string][]byte, 2)
	}
	if w.Keys != nil {
		b.Secrets[keysSecret(t.id)] = w.Keys
	}
	if w.Alerts != nil {
		b.Secrets[alertsSecret(t.id)] = w.Alerts
	}
	return b
}
