package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	stdsync "sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// teamRecord is what a device keeps about a team it belongs to, in the store's teams keyspace (so
// encrypted at rest). The team's name, kind and members are not here: they are ops in the team log,
// which is rebuilt from the sealed envelopes at start.
//
//	version 1 | team id 32 | genesis op id 32 | uvarint n | n × (epoch u32 BE | key 32)
//
// Genesis pins the team's Create op: a member holding the team key could otherwise write a rival Create
// op with an earlier timestamp and make itself the creator. Envelopes carrying any other Create op are
// refused.
type teamRecord struct {
	ID      crdt.TeamID
	Genesis crdt.OpID
	Epochs  []epochKey // ascending by Epoch; the last one seals new ops
}

type epochKey struct {
	Epoch uint32
	Key   seal.EpochKey
}

const maxEpochsPerTeam = 1024

func (r *teamRecord) marshal() []byte {
	b := make([]byte, 0, 1+64+2+len(r.Epochs)*36)
	b = append(b, 1)
	b = append(b, r.ID[:]...)
	b = append(b, r.Genesis[:]...)
	b = binary.AppendUvarint(b, uint64(len(r.Epochs)))
	for _, e := range r.Epochs {
		b = binary.BigEndian.AppendUint32(b, e.Epoch)
		b = append(b, e.Key.Bytes()...)
	}
	return b
}

func unmarshalTeamRecord(b []byte) (*teamRecord, error) {
	rd := reader{b: b}
	if v := rd.byte(); v != 1 {
		return nil, fmt.Errorf("node: team record: unknown version %d", v)
	}
	r := &teamRecord{}
	copy(r.ID[:], rd.bytes(32))
	copy(r.Genesis[:], rd.bytes(32))
	n := rd.uvarint()
	if n > maxEpochsPerTeam {
		return nil, errors.New("node: team record: too many epochs")
	}
	for i := uint64(0); i < n && rd.err == nil; i++ {
		ep := rd.uint32()
		k, err := seal.EpochKeyFromBytes(rd.bytes(32))
		if err != nil {
			return nil, fmt.Errorf("node: team record: %w", err)
		}
		r.Epochs = append(r.Epochs, epochKey{Epoch: ep, Key: k})
	}
	if rd.err != nil {
		return nil, fmt.Errorf("node: team record: %w", rd.err)
	}
	if len(rd.b) != 0 || len(r.Epochs) == 0 {
		return nil, errors.New("node: team record: malformed")
	}
	sort.Slice(r.Epochs, func(i, j int) bool { return r.Epochs[i].Epoch < r.Epochs[j].Epoch })
	return r, nil
}

// team is the running state of one team on this node.
type team struct {
	id     crdt.TeamID
	topic  envelope.Topic
	ptop   *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	// syncSem admits one outgoing catch-up session at a time (served sessions wait for it briefly).
	syncSem chan struct{}

	mu      stdsync.Mutex // guards the fields below
	rec     *teamRecord
	log     *crdt.Log
	state   *crdt.State // cached; nil when the log changed since
	waiters map[chan struct{}]struct{}
	// readMarks are messages the user was shown that are not yet acknowledged as read.
	readMarks map[crdt.OpID]struct{}
}

func newTeam(rec *teamRecord) *team {
	return &team{
		id:        rec.ID,
		topic:     envelope.TopicOf(rec.ID),
		rec:       rec,
		log:       crdt.NewLog(rec.ID),
		waiters:   make(map[chan struct{}]struct{}),
		readMarks: make(map[crdt.OpID]struct{}),
		syncSem:   make(chan struct{}, 1),
	}
}

// key returns the key of an epoch, if this device holds it.
func (t *team) key(epoch uint32) (seal.EpochKey, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.rec.Epochs {
		if e.Epoch == epoch {
			return e.Key, true
		}
	}
	return seal.EpochKey{}, false
}

// current returns the epoch that seals new ops.
func (t *team) current() epochKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rec.Epochs[len(t.rec.Epochs)-1]
}

// open checks and opens an envelope of this team: it returns the op, or an error if the envelope is
// malformed, of another team, under an epoch this device does not hold, tampered with or badly signed.
func (t *team) open(e *envelope.Envelope) (*crdt.Op, error) {
	if e.Topic != t.topic {
		return nil, errors.New("node: envelope of another topic")
	}
	k, ok := t.key(e.Epoch)
	if !ok {
		return nil, fmt.Errorf("node: envelope under unknown epoch %d", e.Epoch)
	}
	op, err := envelope.Open(e, k, t.id)
	if err != nil {
		return nil, err
	}
	if op.Kind == crdt.KindCreate && op.ID() != t.rec.Genesis {
		return nil, errors.New("node: a second Create op for the team")
	}
	if err := t.admissible(op); err != nil {
		return nil, err
	}
	return op, nil
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
