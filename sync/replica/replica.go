package replica

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Errors of a Replica. They are wrapped with detail (use errors.Is).
var (
	// ErrRejected: an envelope given to Accept failed validation (it does not
	// decode, is of another topic or an unknown epoch, does not open, or its
	// op is refused by crdt.Log.Check). It was not stored.
	ErrRejected = errors.New("replica: envelope rejected")
	// ErrNotFound: Envelope was asked for an id the replica does not store.
	ErrNotFound = errors.New("replica: envelope not found")
	// ErrConfig: New was given an incomplete Config.
	ErrConfig = errors.New("replica: bad config")
)

// Config describes a Replica. Device is required; the zero value of every
// other field works.
type Config struct {
	// Device is the replica's identity: it signs the ops the replica makes.
	Device *identity.Device
	// Team is the team (and so the topic) the replica holds.
	Team crdt.TeamID
	// Epoch and Key are the team's epoch tag and key. The replica models the
	// sync layer, not key epochs: every replica holds Key, seals its
	// messages in chain form under (Epoch, Key) with its own sender chain,
	// seals create and commit ops in commit form under Key (whatever their
	// own tag), and accepts chain-form envelopes of Epoch only.
	Epoch uint32
	Key   seal.EpochKey
	// Now is the device's wall clock; nil means time.Now. Tests and the
	// simulator give each replica a virtual, possibly skewed, clock.
	Now func() time.Time
}

// Replica is one device's copy of one team: its identity, the team's epoch
// key, a map-backed store of sealed envelopes (what the device has
// acknowledged), the crdt.Log rebuilt from them and the device's clock. It
// implements Source over its store. A Replica is not safe for concurrent
// use.
type Replica struct {
	dev   *identity.Device
	team  crdt.TeamID
	topic envelope.Topic
	epoch uint32
	key   seal.EpochKey
	outer seal.EpochKey
	now   func() time.Time

	store  map[[32]byte]stored // envelopes by id: the durable part
	opened map[[32]byte]*crdt.Op
	// sender is this device's chain; recv the other senders' chains. Both
	// are durable (a node stores them with what they opened).
	sender *senderkey.SenderState
	recv   map[identity.DeviceID]*senderkey.ReceiverState
	items  []Item // sorted cache of the store's items; nil when stale

	log     *crdt.Log // in-memory, rebuilt by Restart
	clock   crdt.Clock
	members map[identity.DeviceID]bool // cache of the state's members; nil when stale
	ahead   []stamp                    // timestamps the clock did not merge, for observeAhead
}

// stamp is an op's author and time.
type stamp struct {
	author identity.DeviceID
	time   crdt.HLC
}

// stored is one envelope as kept: its time and marshalled bytes.
type stored struct {
	time uint64
	raw  []byte
}

var _ Source = (*Replica)(nil)

// New returns an empty replica.
func New(cfg Config) (*Replica, error) {
	if cfg.Device == nil {
		return nil, fmt.Errorf("%w: no device", ErrConfig)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	r := &Replica{
		dev:    cfg.Device,
		team:   cfg.Team,
		topic:  envelope.TopicOf(cfg.Team),
		epoch:  cfg.Epoch,
		key:    cfg.Key,
		outer:  envelope.OuterKey(cfg.Key),
		now:    now,
		store:  make(map[[32]byte]stored),
		opened: make(map[[32]byte]*crdt.Op),
		sender: senderkey.NewSender(cfg.Key, cfg.Device.ID()),
		recv:   make(map[identity.DeviceID]*senderkey.ReceiverState),
	}
	r.reset()
	return r, nil
}

func (r *Replica) reset() {
	r.log = crdt.NewLog(r.team)
	r.clock = crdt.Clock{Now: r.now}
	r.members = nil
	r.ahead = nil
}

// add adds a checked op to the log.
func (r *Replica) add(op *crdt.Op) error {
	if _, err := r.log.Add(op); err != nil {
		return err
	}
	if op.Kind == crdt.KindCreate || op.Kind == crdt.KindMember {
		r.members = nil
	}
	return nil
}

// isMember reports whether d is a member in the log's state.
func (r *Replica) isMember(d identity.DeviceID) bool {
	if r.members == nil {
		r.members = make(map[identity.DeviceID]bool)
		for _, m := range r.log.State().Members {
			r.members[m.Device] = true
		}
	}
	return r.members[d]
}

// Device returns the replica's device id.
func (r *Replica) Device() identity.DeviceID { return r.dev.ID() }

// Info returns the replica's member info with the given display name.
func (r *Replica) Info(name string, admin bool) crdt.MemberInfo {
	return crdt.MemberInfo{Device: r.dev.ID(), Noise: r.dev.NoisePublic(), Name: name, Admin: admin}
}

// Create makes the team's genesis op, with this device as the creator.
func (r *Replica) Create(name string, kind crdt.TeamKind, creatorName string) (*crdt.Op, error) {
	c := crdt.Create{Name: name, Kind: kind, Creator: r.Info(creatorName, true)}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("replica: create: %w", err)
	}
	return r.Publish(crdt.KindCreate, c.Marshal())
}

// AddMember makes a commit op adding m as a new person: the next epoch,
// whose recipients are the current member devices and m.Device (see
// crdt.State.NextCommit).
func (r *Replica) AddMember(m crdt.MemberInfo) (*crdt.Op, error) {
	body, err := r.log.State().NextCommit(r.dev.ID(), crdt.Change{Action: crdt.ActAdd, Info: m})
	if err != nil {
		return nil, fmt.Errorf("replica: add member: %w", err)
	}
	return r.Publish(crdt.KindMember, body.Marshal())
}

// Send makes a message op.
func (r *Replica) Send(m crdt.Message) (*crdt.Op, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("replica: send: %w", err)
	}
	return r.Publish(crdt.KindMessage, m.Marshal())
}

// Ack acknowledges, following the batching rule of crdt.State.Unacked,
// every shown message by others that this device has not yet acknowledged
// as read (read true) or received: one op per crdt.MaxAckIDs messages, none
// if there is nothing new. It returns the ops made.
func (r *Replica) Ack(read bool) ([]*crdt.Op, error) {
	var ops []*crdt.Op
	for _, a := range crdt.SplitAcks(read, r.log.State().Unacked(r.dev.ID(), read)) {
		op, err := r.Publish(crdt.KindAck, a.Marshal())
		if err != nil {
			return ops, err
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// Publish makes an op of kind with body, as a node does: it takes the next
// timestamp, names crdt.Log.HeadsBefore it as parents, signs, seals, stores
// the envelope (the acknowledgement) and adds the op to the log. It refuses
// a body the log would refuse, and an envelope larger than envelope.MaxSize.
func (r *Replica) Publish(kind crdt.Kind, body []byte) (*crdt.Op, error) {
	r.observeAhead()
	t := r.clock.Next()
	op := crdt.NewOp(r.dev, r.team, t, r.log.HeadsBefore(t), kind, body)
	if err := r.log.Check(op); err != nil {
		return nil, fmt.Errorf("replica: publish: %w", err)
	}
	e, err := r.seal(op)
	if err != nil {
		return nil, fmt.Errorf("replica: publish: %w", err)
	}
	raw := e.Marshal()
	r.put(e, raw, op)
	if err := r.add(op); err != nil {
		return nil, fmt.Errorf("replica: publish: %w", err) // unreachable: Check passed
	}
	return op, nil
}

// Accept validates a received envelope and, if it is new, stores it and
// adds its op to the log, as a node does with what gossip or
// reconciliation delivers. It returns added=false, nil for an envelope
// already stored, and an error wrapping ErrRejected (and the cause) for one
// that does not decode, is of another topic or epoch, does not open, or
// whose op the log refuses: a rejected envelope is never stored and leaves
// the replica unchanged. Ops with impossible parents are accepted and
// stored (every replica must hold the same set) but do not count in State.
func (r *Replica) Accept(raw []byte) (added bool, err error) {
	e, err := envelope.Unmarshal(raw)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	switch {
	case e.Topic != r.topic:
		return false, fmt.Errorf("%w: topic %s, want %s", ErrRejected, e.Topic.Short(), r.topic.Short())
	case e.Form() == envelope.FormChain && e.Epoch != r.epoch:
		return false, fmt.Errorf("%w: unknown epoch %d", ErrRejected, e.Epoch)
	}
	if _, ok := r.store[e.ID]; ok {
		return false, nil
	}
	op, undo, err := r.open(e)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if err := r.log.Check(op); err != nil {
		undo()
		return false, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	r.put(e, bytes.Clone(raw), op)
	if err := r.add(op); err != nil {
		return false, fmt.Errorf("replica: accept: %w", err) // unreachable: Check passed
	}
	r.observe(op)
	return true, nil
}

// observe merges op's time into the clock: unconditionally for this
// device's own ops, and within crdt.MaxDrift for others'. An op further
// ahead waits in r.ahead until the clock is next used (observeAhead), so
// that membership, which only a member's vote needs, is worked out once per
// op made rather than once per op received.
func (r *Replica) observe(op *crdt.Op) {
	if op.Author == r.dev.ID() {
		r.clock.ObserveOwn(op.Time)
		return
	}
	r.clock.Observe(op.Time)
	if r.clock.Last() < op.Time {
		r.ahead = append(r.ahead, stamp{op.Author, op.Time})
	}
}

// observeAhead gives the clock the far-ahead timestamps of members' ops as
// votes (crdt.Clock.ObserveFrom); non-members' do not count.
func (r *Replica) observeAhead() {
	for _, s := range r.ahead {
		if r.clock.Last() < s.time && r.isMember(s.author) {
			r.clock.ObserveFrom(s.author, s.time)
		}
	}
	r.ahead = r.ahead[:0]
}

func (r *Replica) put(e *envelope.Envelope, raw []byte, op *crdt.Op) {
	r.store[e.ID] = stored{time: uint64(e.Time), raw: raw}
	r.opened[e.ID] = op
	r.items = nil
}

// seal seals one of this device's ops as a node does: commit form for
// create and commit ops, chain form (advancing the sender chain) otherwise.
func (r *Replica) seal(op *crdt.Op) (*envelope.Envelope, error) {
	if op.Kind == crdt.KindCreate || op.Kind == crdt.KindMember {
		return envelope.SealCommit(op, r.dev, r.key, []identity.NoisePublic{r.dev.NoisePublic()}, nil, nil)
	}
	return envelope.SealChain(op, r.epoch, r.outer, r.sender)
}

// open opens an envelope; undo puts back the receiver chain it advanced.
func (r *Replica) open(e *envelope.Envelope) (op *crdt.Op, undo func(), err error) {
	if e.Form() == envelope.FormCommit {
		op, _, err := envelope.OpenCommit(e, r.outer, r.team)
		return op, func() {}, err
	}
	ch, err := envelope.OpenChain(e, r.outer, r.team)
	if err != nil {
		return nil, nil, err
	}
	rs, ok := r.recv[ch.Sender]
	if !ok {
		rs = senderkey.NewReceiver(r.key, ch.Sender)
		r.recv[ch.Sender] = rs
	}
	saved, err := rs.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	op, err = ch.Open(rs)
	if err != nil {
		return nil, nil, err
	}
	return op, func() {
		if old, err := senderkey.UnmarshalReceiver(saved); err == nil {
			r.recv[ch.Sender] = old
		}
	}, nil
}

// Restart simulates a restart of the device: it drops the log and the clock
// (everything in memory) and rebuilds them from the stored ops, which are
// what the device acknowledged (a node keeps the ops it opened, because the
// message keys that opened them are deleted). The key chains are durable
// and stay.
func (r *Replica) Restart() error {
	r.reset()
	items, _ := r.Items()
	ops := make([]*crdt.Op, 0, len(items))
	for _, it := range items {
		op := r.opened[it.ID]
		if op == nil {
			return fmt.Errorf("replica: restart: no op for stored envelope %x", it.ID[:4])
		}
		if err := r.add(op); err != nil {
			return fmt.Errorf("replica: restart: %w", err)
		}
		ops = append(ops, op)
	}
	for _, op := range ops {
		r.observe(op)
	}
	return nil
}

// Items returns the stored envelopes' items sorted by (Time, ID) (Source).
func (r *Replica) Items() ([]Item, error) {
	if r.items == nil {
		r.items = make([]Item, 0, len(r.store))
		for id, s := range r.store {
			r.items = append(r.items, Item{Time: s.time, ID: id})
		}
		slices.SortFunc(r.items, compareItems)
	}
	return slices.Clone(r.items), nil
}

func compareItems(a, b Item) int {
	return cmp.Or(cmp.Compare(a.Time, b.Time), bytes.Compare(a.ID[:], b.ID[:]))
}

// Envelope returns the stored envelope with the given id (Source), or an
// error wrapping ErrNotFound. The slice is the replica's own: the caller
// must not modify it (sessions only copy it into frames).
func (r *Replica) Envelope(id [32]byte) ([]byte, error) {
	s, ok := r.store[id]
	if !ok {
		return nil, fmt.Errorf("%w: %x", ErrNotFound, id[:4])
	}
	return s.raw, nil
}

// Has reports whether the envelope of the op with the given id is stored
// (acknowledged).
func (r *Replica) Has(id crdt.OpID) bool {
	_, ok := r.store[id]
	return ok
}

// Len returns the number of stored envelopes.
func (r *Replica) Len() int { return len(r.store) }

// State returns the team state of the replica's log.
func (r *Replica) State() crdt.State { return r.log.State() }

// Ops returns copies of the ops in the replica's log, sorted by (Time, ID).
func (r *Replica) Ops() []*crdt.Op { return r.log.Ops() }

// Clock returns the last timestamp the replica's clock issued or merged.
func (r *Replica) Clock() crdt.HLC { return r.clock.Last() }
