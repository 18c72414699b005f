package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	stdsync "sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// teamRecord is what a device keeps about a team it belongs to, in the store's teams keyspace (so
// encrypted at rest). The team's name, kind and members are not here: they are ops in the team log,
// rebuilt from the stored ops at start; the epoch keys are the team's key state (teamkeys), a secret
// written in the same transaction as the ops it opened.
//
//	version 2 | team id 32 | genesis op id 32
//
// Genesis pins the team's Create op: a member could otherwise write a rival Create op with an earlier
// timestamp and make itself the creator. Envelopes carrying any other Create op are refused.
type teamRecord struct {
	ID      crdt.TeamID
	Genesis crdt.OpID
}

const teamRecordVersion = 2

func (r *teamRecord) marshal() []byte {
	b := make([]byte, 0, 1+64)
	b = append(b, teamRecordVersion)
	b = append(b, r.ID[:]...)
	return append(b, r.Genesis[:]...)
}

func unmarshalTeamRecord(b []byte) (*teamRecord, error) {
	if len(b) > 0 && b[0] == 1 {
		return nil, errors.New("node: team record from before key epochs (fieldmesh 0.1): create a new data directory and join the team again")
	}
	rd := reader{b: b}
	if v := rd.byte(); v != teamRecordVersion {
		return nil, fmt.Errorf("node: team record: unknown version %d", v)
	}
	r := &teamRecord{}
	copy(r.ID[:], rd.bytes(32))
	copy(r.Genesis[:], rd.bytes(32))
	if rd.err != nil {
		return nil, fmt.Errorf("node: team record: %w", rd.err)
	}
	if len(rd.b) != 0 {
		return nil, errors.New("node: team record: malformed")
	}
	return r, nil
}

// keysSecret names the store secret holding a team's key state.
func keysSecret(id crdt.TeamID) string { return "teamkeys/" + hex.EncodeToString(id[:]) }

// team is the running state of one team on this node.
type team struct {
	id     crdt.TeamID
	topic  envelope.Topic
	ptop   *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	// syncSem admits one outgoing catch-up session at a time (served sessions wait for it briefly).
	syncSem chan struct{}

	// keyMu serialises everything that reads or advances the key state: sealing, opening, and the
	// store transaction that persists the advanced state with what it opened. Lock order: keyMu, then mu.
	keyMu stdsync.Mutex
	keys  *teamkeys.Keys

	mu      stdsync.Mutex // guards the fields below
	rec     *teamRecord
	log     *crdt.Log
	state   *crdt.State // cached; nil when the log changed since
	waiters map[chan struct{}]struct{}
	// readMarks are messages the user was shown that are not yet acknowledged as read.
	readMarks map[crdt.OpID]struct{}
}

func newTeam(rec *teamRecord, keys *teamkeys.Keys) *team {
	return &team{
		keys:      keys,
		id:        rec.ID,
		topic:     envelope.TopicOf(rec.ID),
		rec:       rec,
		log:       crdt.NewLog(rec.ID),
		waiters:   make(map[chan struct{}]struct{}),
		readMarks: make(map[crdt.OpID]struct{}),
		syncSem:   make(chan struct{}, 1),
	}
}

// admissible checks an opened op before it is stored or forwarded: everything Log.Add would refuse.
// Those checks depend on the op alone, so every honest node refuses the same ops whatever the order
// they arrive in. An op with impossible parents (a parent not older than itself) is not refused here,
// because whether its parents are present depends on arrival order and refusing it would make honest
// nodes disagree on what to store (and drop each other as misbehaving): it is stored and relayed, and
// the team state ignores it on every node alike (crdt.Log.State).
func (t *team) admissible(op *crdt.Op) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.log.Check(op)
}

// headsBefore returns the parents for a new op stamped ts (see crdt.Log.HeadsBefore).
func (t *team) headsBefore(ts crdt.HLC) []crdt.OpID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.log.HeadsBefore(ts)
}

// addOps adds opened ops to the log and wakes the waiters if any was new.
func (t *team) addOps(ops []*crdt.Op) (added int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, op := range ops {
		ok, err := t.log.Add(op)
		if err == nil && ok {
			added++
		}
	}
	if added > 0 {
		t.state = nil
		for w := range t.waiters {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	return added
}

// teamList returns the node's teams, copied under n.mu so that the caller works on them unlocked.
func (n *Node) teamList() []*team {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Collect(maps.Values(n.teams))
}

// snapshot returns the team's current visible state. The caller must not modify it.
func (t *team) snapshot() *crdt.State {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == nil {
		s := t.log.State()
		t.state = &s
	}
	return t.state
}

func (t *team) has(id crdt.OpID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.log.Has(id)
}

// watch registers a channel that receives a value (coalesced) whenever the log grows.
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
