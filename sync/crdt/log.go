package crdt

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// ErrWrongTeam is returned by Log.Add for an op of another team.
var ErrWrongTeam = errors.New("crdt: op belongs to another team")

// Log is the set of ops of one team. Its State is a pure function of that
// set: replicas that hold the same ops show the same state, whatever order
// the ops were added in. A Log is not safe for concurrent use.
type Log struct {
	team TeamID
	ops  map[OpID]*Op
	// parented counts, for every id named as a parent by an op in ops
	// (present or not), the ops that name it: for Heads.
	parented map[OpID]int
	// state caches State(); nil after an Add.
	state *State
	// memo caches the membership that State resolves (see memberMemo);
	// nil when it must be resolved afresh.
	memo *memberMemo
	// smemo is what updates state for an added message or ack (see
	// stateMemo); nil whenever state is.
	smemo *stateMemo
	// pool, if set, holds the ops this log shares with others (see Pool).
	pool *Pool
	// version counts the changes to ops (see Version).
	version uint64
}

// NewLog returns an empty log of team.
func NewLog(team TeamID) *Log {
	return &Log{team: team, ops: make(map[OpID]*Op), parented: make(map[OpID]int)}
}

// Team returns the log's team id.
func (l *Log) Team() TeamID { return l.team }

// Check reports whether Add would accept op: it returns an error wrapping
// ErrWrongTeam for an op of another team; ErrBadSignature, ErrMalformed or
// ErrTooLarge for an op that is not well formed and sealed by its author
// (see Op.Verify); or ErrBadBody for an op of a known kind (Create, Commit,
// Message, Ack, Evidence) whose body does not decode. These checks depend on the op
// alone, never on the rest of the log, so every replica refuses the same
// ops whatever order they arrive in. A caller that stores ops before adding
// them (the node) calls Check first, so that it never stores what Add
// refuses.
func (l *Log) Check(op *Op) error {
	return l.check(op, op.ID())
}

// check is Check of op, whose id is id.
func (l *Log) check(op *Op, id OpID) error {
	if op.Team != l.team {
		return fmt.Errorf("%w: op team %s, log team %s", ErrWrongTeam, op.Team.Short(), l.team.Short())
	}
	if err := op.check(); err != nil {
		return err
	}
	if err := op.verify(id); err != nil {
		return err
	}
	return checkBody(op.Kind, op.Body)
}

// Add adds a copy of op to the log, after the checks of Check; it returns
// false and Check's error for an op it refuses, which is not added. Adding
// an op already in the log returns false, nil (the op is byte for byte one
// that passed the checks: its id hashes all of it). Ops that pass the
// checks but do not count in State (ops by non-members, of unknown kinds,
// with impossible parents: see State) are kept, as part of the set that
// replicas reconcile and relay.
func (l *Log) Add(op *Op) (added bool, err error) {
	id := op.ID()
	if _, ok := l.ops[id]; ok && op.Team == l.team {
		return false, nil
	}
	if err := l.check(op, id); err != nil {
		return false, err
	}
	l.insert(id, op)
	return true, nil
}

// insert adds a copy of op under id (or the pool's: see Pool).
func (l *Log) insert(id OpID, op *Op) {
	op = l.keep(id, op)
	l.ops[id] = op
	l.version++
	for _, p := range op.Parents {
		l.parented[p]++
	}
	l.memoAdded(id, op)
	l.stateAdded(id, op)
}

// AddStored adds an op read back from this device's own store
// (UnmarshalStored): an op Add accepted once, or one redacted since, which
// keeps its id and seal and has no body to check. It checks nothing else.
func (l *Log) AddStored(op *Op) (added bool, err error) {
	if !op.Redacted() {
		return l.Add(op)
	}
	id := op.ID()
	if _, ok := l.ops[id]; ok {
		return false, nil
	}
	if op.Team != l.team {
		return false, fmt.Errorf("%w: op of another team", ErrMalformed)
	}
	l.insert(id, op)
	return true, nil
}

// Redact deletes the body of the message op with the given id, keeping its
// place in the log (id, author, time, parents, kind, seal): it still counts
// as an op of its author, as an ancestor and for acknowledgements, and is
// no longer among State's Messages. It reports whether it redacted one.
// Store the op's MarshalStored in place of the old record.
func (l *Log) Redact(id OpID) bool {
	op, ok := l.ops[id]
	if !ok || op.Kind != KindMessage || op.Redacted() {
		return false
	}
	r := op.Clone()
	if l.pool == nil || !l.pool.shared(id, op) {
		clear(op.Body) // the log's own copy: Op and Ops hand out clones
	}
	r.Body = nil
	r.redacted = id
	l.ops[id] = r
	l.version++
	l.dropState()
	return true
}

// Remove removes the op with the given id, if present, and reports whether
// it was. A replica that adds ops on trial (sync/device, which judges what
// it receives before it keeps it) takes back what it does not keep.
func (l *Log) Remove(id OpID) bool {
	op, ok := l.ops[id]
	if !ok {
		return false
	}
	l.memoRemoving(id, op)
	l.stateRemoving(id, op)
	delete(l.ops, id)
	l.version++
	for _, p := range op.Parents {
		if l.parented[p]--; l.parented[p] <= 0 {
			delete(l.parented, p)
		}
	}
	return true
}

// Version counts the changes to the log's set of ops (Add, AddStored,
// Remove and Redact that changed it): two States of one log resolved at the
// same Version are equal. An empty log is at version 0.
func (l *Log) Version() uint64 { return l.version }

// Parented reports whether an op of the log names id as a parent.
func (l *Log) Parented(id OpID) bool { return l.parented[id] > 0 }

// Children returns the ids of the ops of the log that name id as a parent,
// sorted ascending. It costs a pass over the log; Parented is cheaper.
func (l *Log) Children(id OpID) []OpID {
	if l.parented[id] == 0 {
		return nil
	}
	var out []OpID
	for cid, op := range l.ops {
		if slices.Contains(op.Parents, id) {
			out = append(out, cid)
		}
	}
	slices.SortFunc(out, OpID.Compare)
	return out
}

// Missing returns the ids that ops of the log name as parents and that are
// not in it, sorted ascending.
func (l *Log) Missing() []OpID {
	var out []OpID
	for id := range l.parented {
		if _, ok := l.ops[id]; !ok {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, OpID.Compare)
	return out
}

// Has reports whether the op with the given id is in the log.
func (l *Log) Has(id OpID) bool {
	_, ok := l.ops[id]
	return ok
}

// Op returns a copy of the op with the given id.
func (l *Log) Op(id OpID) (*Op, bool) {
	op, ok := l.ops[id]
	if !ok {
		return nil, false
	}
	return op.Clone(), true
}

// Ops returns copies of all ops, sorted by (Time, ID).
func (l *Log) Ops() []*Op {
	type entry struct {
		id OpID
		op *Op
	}
	es := make([]entry, 0, len(l.ops))
	for id, op := range l.ops {
		es = append(es, entry{id, op})
	}
	slices.SortFunc(es, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.op.Time, b.op.Time), a.id.Compare(b.id))
	})
	out := make([]*Op, len(es))
	for i, e := range es {
		out[i] = e.op.Clone()
	}
	return out
}

// EpochOps yields, for each create and commit op of the log (the ops that
// start epochs), its id and a copy of its parents, in no particular order.
// It costs a pass over the log without copying the other ops (Ops does).
func (l *Log) EpochOps() iter.Seq2[OpID, []OpID] {
	return func(yield func(OpID, []OpID) bool) {
		for id, op := range l.ops {
			if op.Kind.StartsEpoch() && !yield(id, slices.Clone(op.Parents)) {
				return
			}
		}
	}
}

// Heads returns the ids of the ops that no op in the log names as a parent,
// sorted ascending: the parents of the next op made on this replica. It is
// empty only for an empty log.
func (l *Log) Heads() []OpID {
	var heads []OpID
	for id := range l.ops {
		if l.parented[id] == 0 {
			heads = append(heads, id)
		}
	}
	slices.SortFunc(heads, OpID.Compare)
	return heads
}

// HeadsBefore returns the parents that a new op with timestamp t may name:
// the heads of the ops with a Time before t (the ops with Time < t that no
// other op with Time < t names as a parent), sorted ascending. When every
// head is older than t (the usual case) it is Heads. An op naming a parent
// whose Time is not before its own has an impossible parent and does not
// count in State, so a node makes a new op with
//
//	t := clock.Next()
//	op := NewOp(dev, team, t, log.HeadsBefore(t), kind, body)
//
// An op from a device whose clock runs far ahead stays out of the parents
// of new ops until the local clock passes it; it is still shown.
func (l *Log) HeadsBefore(t HLC) []OpID {
	heads := l.Heads()
	fresh := true
	for _, h := range heads {
		if l.ops[h].Time >= t {
			fresh = false
			break
		}
	}
	if fresh {
		return heads
	}
	named := make(map[OpID]struct{})
	for _, op := range l.ops {
		if op.Time < t {
			for _, p := range op.Parents {
				named[p] = struct{}{}
			}
		}
	}
	heads = heads[:0]
	for id, op := range l.ops {
		if _, ok := named[id]; !ok && op.Time < t {
			heads = append(heads, id)
		}
	}
	if len(heads) == 0 {
		return nil
	}
	slices.SortFunc(heads, OpID.Compare)
	return heads
}

// Len returns the number of ops in the log.
func (l *Log) Len() int { return len(l.ops) }

// State is what a team looks like given a set of ops.
type State struct {
	Name    string // from the genesis op; "" if the log has none
	Kind    TeamKind
	Creator identity.DeviceID
	// Members has one entry per current member device, sorted by Name then
	// Device: Name is its person's display name, Admin says whether its
	// person is an admin.
	Members  []MemberInfo
	Messages []MessageView // display order: see Log.State
	Persons  []Person      // current persons, sorted by Name then ID
	// Removed lists the devices once validly added and now removed,
	// sorted ascending.
	Removed []identity.DeviceID
	// Epochs lists the genesis epoch and the epoch of every valid commit,
	// sorted by (Number, Time, ID).
	Epochs []EpochView
	// Current is the index in Epochs of the greatest sound epoch, -1 if
	// none is sound.
	Current int
	// NeedsRekey says that some member should commit a re-key: no epoch is
	// sound, a newer epoch than the current one exists (Current !=
	// len(Epochs)-1), or a valid epoch lies outside the causal past of the
	// current one and lists fewer devices (the current commit did not hand
	// its outer key on, so devices added with the current epoch may be
	// unable to read its commit).
	NeedsRekey bool
	// Equivocations lists the devices shown, by evidence ops in the log, to
	// have signed two different ops for one position of their sender chain
	// (see Evidence), sorted by device, epoch and index. Both ops count for
	// nothing.
	Equivocations []Equivocation
	// Relays lists the clinic relays that carry the team, by relay op
	// (KindRelay) of a current admin's device that counts: for each relay
	// peer, the latest such op by (Time, ID), unless it says Removed. Sorted
	// by Peer.
	Relays []RelayView
	// Prekeys holds, for each member device that published one, its newest
	// prekey: the X25519 key of its latest prekey op (KindPrekey) by
	// (Time, ID) that counts. A commit seals the device's box to it, not to
	// its static key (see sync/teamkeys).
	Prekeys map[identity.DeviceID]identity.NoisePublic
	// Duty holds, for each current person that published duty hours, its
	// latest duty op (KindDuty) by (Time, ID) of its current devices that
	// counts, keyed by person id. A person without an entry has published
	// none.
	Duty map[identity.DeviceID]DutyView
	// Rota is the latest rota op (KindRota) by (Time, ID) of a current
	// admin's device that counts; nil if none.
	Rota *RotaView
	// LastReview is the latest membership review (KindReview) by (Time,
	// ID) of a current admin's device that counts; nil if none.
	LastReview *ReviewView
	// Policy is the latest team-policy op (KindPolicy) by (Time, ID) of a
	// current admin's device that counts; nil if none.
	Policy *PolicyView
	// LastSeen holds, for each current member device, the Time of its
	// latest op that counts (a message, ack, prekey, ...: any sign of
	// life the team replicated). A device with no such op has no entry.
	LastSeen map[identity.DeviceID]HLC
	// Filed holds, for each message id that a filed op (KindFiled) of a
	// current admin's device that counts names, where it was filed: the
	// first such op by (Time, ID). It lists messages the log lacks or has
	// deleted too. Only admins file: a filing makes every device delete
	// the message's body, so it takes a person the team trusts with its
	// membership (usually the clinic box, linked to an admin).
	Filed map[OpID]FiledView

	// counted holds the ids of the ops that count (see Counts); permitted
	// the commits that are permitted (see Permitted). Computed once, never
	// modified: clones share them.
	counted   opSet
	permitted map[OpID]bool
}

// Equivocation is one position of a device's sender chain at which it
// signed two different ops.
type Equivocation struct {
	Device identity.DeviceID
	Epoch  uint32
	Index  uint32
	IDs    [2]OpID
}

// Counts reports whether the op with the given id is in the log and counts
// in this state: the genesis, a valid commit, or a message, ack, evidence,
// relay, prekey or duty op whose author counts by the rules of Log.State
// (a rota or review op also needs a current admin as its author; a
// message with a patient reference in a social team never counts). Ops that do not count
// (by non-members, after their author's removal, outside a removed
// member's partition window, equivocated, of unknown kinds, with
// impossible parents) are kept in the log and ignored.
func (s State) Counts(id OpID) bool { return s.counted.has(id) }

// Permitted reports whether the op with the given id is a commit (or the
// genesis) that was permitted in its author's view: valid, or valid by the
// rules of its own causal past but cut (docs/membership.md, rules 1 and 3).
// The epoch of a permitted commit is a real epoch: members may have sealed
// in it before they learned of the removal that cut it.
func (s State) Permitted(id OpID) bool { return s.permitted[id] }

// Person is a current member: a person with one or more devices. Its ID is
// the DeviceID of its first device.
type Person struct {
	ID      identity.DeviceID
	Name    string // display name, unique among current persons (see Log.State)
	Admin   bool
	Devices []identity.DeviceID // sorted ascending
}

// EpochView is a key epoch: the genesis's (number 1) or a valid commit's.
type EpochView struct {
	ID         OpID   // the commit's op id (genesis: the create op id)
	Tag        uint32 // TagOf(ID): the epoch field of envelopes
	Number     uint32 // 1 for the genesis
	Author     identity.DeviceID
	Time       HLC
	Recipients []Recipient // ascending by Device
	// Sound says that Recipients are exactly the current member devices
	// with their current Noise keys.
	Sound bool
}

// TagOf returns the epoch tag of the epoch started by the op with the given
// id: its first four bytes, big-endian.
func TagOf(id OpID) uint32 { return binary.BigEndian.Uint32(id[:4]) }

// PersonOf returns the current person that device d belongs to, if any.
func (s State) PersonOf(d identity.DeviceID) (Person, bool) {
	for _, p := range s.Persons {
		if containsDevice(p.Devices, d) {
			return p, true
		}
	}
	return Person{}, false
}

// Epoch returns the epochs whose Tag is tag, in the order of Epochs
// (normally none or one; tags are 32 bits of an op id, so two can collide).
func (s State) Epoch(tag uint32) []EpochView {
	var out []EpochView
	for _, e := range s.Epochs {
		if e.Tag == tag {
			out = append(out, e)
		}
	}
	return out
}

// Member returns the member info of device d, if d is a member.
func (s State) Member(d identity.DeviceID) (MemberInfo, bool) {
	for _, m := range s.Members {
		if m.Device == d {
			return m, true
		}
	}
	return MemberInfo{}, false
}

// Unacked returns the ids of the messages shown in s, not written by d, that
// d has not acknowledged as read (read true) or received (read false),
// sorted ascending. It is the batching rule for acks (the node's, and the
// simulator's): once per batch window (for example 30 seconds after the
// first unacknowledged message arrives, or when the user leaves the
// conversation), a device publishes SplitAcks(true, s.Unacked(self, true))
// for what the user has seen, then SplitAcks(false, s.Unacked(self, false))
// for the rest: one op per 512 messages, whatever the team's size. Acks are
// never acknowledged, a message acked once is never listed again, and an op
// acking many messages costs 16 bytes per message, so a 30-person team
// sends at most 30 ack ops per window, not 30 per message.
func (s State) Unacked(d identity.DeviceID, read bool) []OpID {
	var out []OpID
	for _, m := range s.Messages {
		by := m.ReceivedBy
		if read {
			by = m.ReadBy
		}
		if m.Author != d && !containsDevice(by, d) {
			out = append(out, m.ID)
		}
	}
	slices.SortFunc(out, OpID.Compare)
	return out
}

func containsDevice(ds []identity.DeviceID, d identity.DeviceID) bool {
	_, ok := slices.BinarySearchFunc(ds, d, compareDevice)
	return ok
}

func compareDevice(a, b identity.DeviceID) int { return bytes.Compare(a[:], b[:]) }

// MessageView is a message as shown: its op's id, author and time, the
// author's current member name, the decoded body, and who acknowledged it.
type MessageView struct {
	ID         OpID
	Author     identity.DeviceID
	AuthorName string
	Time       HLC
	Message
	// Filed says where the message was filed to the health record, if a
	// filed op that counts names it (State.Filed); nil if not.
	Filed *FiledView
	// ReceivedBy and ReadBy are the members other than the author that
	// acknowledged the message as received or read, sorted ascending.
	// ReadBy is a subset of ReceivedBy. Nil when empty.
	ReceivedBy []identity.DeviceID
	ReadBy     []identity.DeviceID
}

// State returns the team state of the ops in the log (a deep copy: the
// caller may modify it). It is a pure function of the set of ops. The rules
// (issues #2, #3 and #4; docs/membership.md has worked examples):
//
//   - Impossible parents: an op that names itself as a parent, or whose Time
//     is not after the Time of a parent present in the log, is impossible:
//     no honest clock makes it (see Clock and HeadsBefore). It stays in the
//     log but counts for nothing below. Its own children are judged on
//     their own Time. "Causal past" below follows all parents.
//   - Genesis: the KindCreate op with no parents, a valid body and
//     Create.Creator.Device equal to its author; if several, the least by
//     (Time, ID). Its author is the creator, the first person (an admin)
//     and epoch 1's only recipient. Without a genesis the state is empty
//     (Current -1, NeedsRekey false).
//   - Commits: a KindMember op with a valid body counts (is valid) if it
//     descends from the genesis, its Number is greater than that of every
//     valid epoch in its causal past, and each of its changes, in order, is
//     permitted in the membership of the valid commits in its causal past
//     (what its author had seen): its author is a member device; add,
//     remove and promote need an admin; link and unlink an admin or the
//     person the device belongs to; and each change changes something (add
//     or link a device that is neither a current device nor a present
//     person's id, link to a present person, remove a present person,
//     promote one that is not an admin, unlink a current device). One change
//     not permitted invalidates the whole commit, epoch included. A commit
//     with no changes (a re-key) needs only a member.
//   - Removal cuts: a valid commit that removes a person or unlinks a device
//     cuts the commits concurrent with it (neither in the other's causal
//     past) whose author is that device or one of that person's devices
//     (as its author saw it). A cut commit does not count, and only valid
//     commits cut. Commits are judged in (Time, ID) order (kept causal), and
//     a removal is cut only by an earlier one, so of two mutually concurrent
//     removals the earlier wins; a removal cuts concurrent commits without
//     removals whatever their order: the judgement repeats with the cuts of
//     one removal more each time, the earliest first, until no valid
//     removal has more to cut. The cuts of a removal stand only if it, and
//     every removal whose cuts stand, is still valid with them; if not, the
//     removal is cut itself (its cuts would undo what it or those rely on)
//     and the judgement starts over. It ends: every step cuts something.
//   - Membership of a set of valid commits: removal wins. A person is
//     present if some add of it has every removal of it in its causal past
//     (a re-add counts only after the removal); it is an admin if such an
//     add says so or such a promote exists (the creator is). A device is
//     current if some grant of it (the add of the person it is the first
//     device of, or a link) is to a present person and has in its causal
//     past every removal of that person and every removal of the device
//     (its unlinks, and removals of a person it belonged to as the remover
//     saw it). Of several such adds or grants (concurrent), the greatest by
//     (Time, ID) gives the name, person and Noise key. A person left with no
//     current device is not present (it can be added again).
//   - Persons: the present persons with a current device. Display names are
//     unique: among persons with one name, taken in the (Time, ID) order of
//     the adds that name them, the first keeps it and the others show
//     "Name (abcd1234)" (their id's first 8 hex). Members: one MemberInfo per
//     current device, with its person's display name and admin flag.
//     Removed: the devices of every valid grant that are not current.
//   - Epochs: the genesis (number 1, recipients the creator's device and
//     Noise key) and every valid commit, sorted by (Number, Time, ID). An
//     epoch is Sound if its recipients are exactly the current member
//     devices with their current Noise keys. Current is the last sound one
//     (-1 if none), and NeedsRekey says that none is or a later one exists:
//     a member then commits a re-key (State.NextCommit).
//   - Messages: KindMessage ops with a valid body whose author device was
//     ever validly granted (the creator, or a valid add or link) and that
//     are not causally after a valid removal of that device (unlink, or
//     removal of a person it was granted to) without a later grant in
//     between: a leaver's earlier and concurrent messages stay. Listed by
//     (Time, ID) except that nothing is listed before what it answers or
//     builds on: each op's display time is the greatest of its Time and one
//     tick after the display times of its parents and of the op it replies
//     to, and messages are listed by (display time, ID). With honest clocks
//     (see Clock and HeadsBefore) that is (Time, ID); a reply to a message
//     from a clock far ahead comes right after that message. AuthorName is
//     the person's display name; for a removed device, the last name of its
//     last person, marked "Name (abcd1234)" if a current person shows it.
//   - Filed: KindFiled ops whose author counts by the rule of messages and
//     is a current admin's device name, for each message id, where it was
//     filed; of several, the first by (Time, ID) (State.Filed, and
//     MessageView.Filed of a shown message).
//   - Acks: KindAck ops whose author counts by the rule of messages and is
//     not the message's author add the author to ReceivedBy (and, with
//     Read, ReadBy) of each shown message they name; read implies received.
//     Ids of ops that are not shown messages are ignored.
//
// Ops by others, of unknown kinds, or with impossible parents are kept in
// the log and ignored here. An op is content-addressed, so a replayed
// commit is the same op and changes nothing.
//
// Cost: one pass over the causal DAG (sharing the sets of commits in each
// op's past), plus, per commit, work in the number of changes of the valid
// commits in its past: linear in the ops, quadratic only in commits.
//
// Caveat: the log does not know which Create op is the team's genesis; a
// member could write a rival Create op with an earlier Time. The node pins
// the genesis (the invite carries its id) and refuses other Create ops.
func (l *Log) State() State {
	return l.View().clone()
}

// View returns the State the log keeps, as State resolves it, without
// State's deep copy: a reader that is done with it before the log next
// changes saves copying every message of the team's history. The next Add
// may update it in place (Remove and Redact leave it as it is, and the log
// resolves a new one). The caller must not modify it or keep it past the
// log's next Add; State gives a copy to keep.
func (l *Log) View() *State {
	if l.state == nil {
		s := l.computeState()
		l.state = &s
	}
	return l.state
}

func (s State) clone() State {
	c := s
	c.Members = slices.Clone(s.Members)
	c.Messages = slices.Clone(s.Messages)
	c.Persons = slices.Clone(s.Persons)
	for i := range c.Persons {
		c.Persons[i].Devices = slices.Clone(c.Persons[i].Devices)
	}
	c.Removed = slices.Clone(s.Removed)
	c.Epochs = slices.Clone(s.Epochs)
	c.Equivocations = slices.Clone(s.Equivocations)
	c.Prekeys = maps.Clone(s.Prekeys)
	c.LastSeen = maps.Clone(s.LastSeen)
	if s.Duty != nil {
		c.Duty = make(map[identity.DeviceID]DutyView, len(s.Duty))
		for p, d := range s.Duty {
			d.Shifts = slices.Clone(d.Shifts)
			c.Duty[p] = d
		}
	}
	if s.Rota != nil {
		r := *s.Rota
		r.Slots = slices.Clone(r.Slots)
		for i := range r.Slots {
			r.Slots[i].OnCall = slices.Clone(r.Slots[i].OnCall)
		}
		c.Rota = &r
	}
	if s.LastReview != nil {
		r := *s.LastReview
		c.LastReview = &r
	}
	if s.Policy != nil {
		p := *s.Policy
		c.Policy = &p
	}
	c.Filed = maps.Clone(s.Filed)
	for i := range c.Epochs {
		c.Epochs[i].Recipients = slices.Clone(c.Epochs[i].Recipients)
	}
	// The messages' device lists share one new array (each capped at its
	// length, so that appending to one copies it); nil stays nil.
	n := 0
	for i := range c.Messages {
		n += len(c.Messages[i].ReceivedBy) + len(c.Messages[i].ReadBy)
	}
	devs := make([]identity.DeviceID, 0, n)
	share := func(ds []identity.DeviceID) []identity.DeviceID {
		if ds == nil {
			return nil
		}
		k := len(devs)
		devs = append(devs, ds...)
		return devs[k:len(devs):len(devs)]
	}
	for i := range c.Messages {
		m := &c.Messages[i]
		if m.ReplyTo != nil {
			id := *m.ReplyTo
			m.ReplyTo = &id
		}
		m.ReceivedBy = share(m.ReceivedBy)
		m.ReadBy = share(m.ReadBy)
		if m.Filed != nil {
			f := *m.Filed
			m.Filed = &f
		}
	}
	return c
}

// add is one valid-looking member add, before the admin check.
type add struct {
	id   OpID
	op   *Op
	info MemberInfo
}

func later(a, b add) bool {
	return cmp.Or(cmp.Compare(a.op.Time, b.op.Time), a.id.Compare(b.id)) > 0
}

// impossible returns the ids of the ops with impossible parents.
func (l *Log) impossible() map[OpID]bool {
	bad := make(map[OpID]bool)
	for id, op := range l.ops {
		for _, p := range op.Parents {
			if po, ok := l.ops[p]; p == id || ok && op.Time <= po.Time {
				bad[id] = true
				break
			}
		}
	}
	return bad
}

func (l *Log) computeState() State {
	bad := l.impossible()
	if l.memo == nil {
		l.memo = l.resolveMembers(bad)
	}
	mm := l.memo
	if mm.none {
		l.smemo = nil
		return State{Current: -1}
	}
	create, creator := mm.create, mm.genesis.op.Author
	ms := mm.ms
	// State hands these on; the memo keeps its own.
	ms.members, ms.removed = slices.Clone(ms.members), slices.Clone(ms.removed)
	ms.persons = slices.Clone(ms.persons)
	for i := range ms.persons {
		ms.persons[i].Devices = slices.Clone(ms.persons[i].Devices)
	}
	ms.epochs = slices.Clone(ms.epochs)
	for i := range ms.epochs {
		ms.epochs[i].Recipients = slices.Clone(ms.epochs[i].Recipients)
	}
	j := l.newJudge(bad, ms)
	j.social = create.Kind == Social

	// Messages by members, present or past, that count.
	var msgs []MessageView
	for id, op := range l.ops {
		if op.Kind != KindMessage || !j.counts(id) {
			continue
		}
		m, err := l.message(id, op)
		if err != nil {
			continue
		}
		msgs = append(msgs, MessageView{ID: id, Author: op.Author, AuthorName: ms.name(op.Author), Time: op.Time, Message: m})
	}
	disp := l.displayOrder(msgs)
	sm := &stateMemo{disp: disp, shown: make(map[OpID]bool, len(msgs)), acked: make(map[OpID]bool),
		replied: make(map[OpID]bool), equivocated: j.equivocated, social: j.social, member: make(map[identity.DeviceID]bool, len(ms.members))}
	for _, m := range msgs {
		sm.shown[m.ID] = true
		if m.ReplyTo != nil {
			sm.replied[*m.ReplyTo] = true
		}
	}
	for _, m := range ms.members {
		sm.member[m.Device] = true
	}

	// Acks by members, present or past, that count.
	index := make(map[OpID]int, len(msgs))
	for i, m := range msgs {
		index[m.ID] = i
	}
	received := make(map[OpID]map[identity.DeviceID]bool)
	read := make(map[OpID]map[identity.DeviceID]bool)
	for id, op := range l.ops {
		if op.Kind != KindAck || !j.counts(id) {
			continue
		}
		a, err := UnmarshalAck(op.Body)
		if err != nil {
			continue
		}
		for _, mid := range a.IDs {
			sm.acked[mid] = true
			i, ok := index[mid]
			if !ok || msgs[i].Author == op.Author {
				continue
			}
			mark(received, mid, op.Author)
			if a.Read {
				mark(read, mid, op.Author)
			}
		}
	}
	for i := range msgs {
		msgs[i].ReceivedBy = sortedDevices(received[msgs[i].ID])
		msgs[i].ReadBy = sortedDevices(read[msgs[i].ID])
	}

	// What counts: the genesis, valid commits, and the messages, acks and
	// evidence judged above.
	counted := make(map[OpID]bool, len(l.ops))
	for id := range ms.valid {
		counted[id] = true
	}
	for id, op := range l.ops {
		switch op.Kind {
		case KindMessage, KindAck, KindEvidence, KindRelay, KindPrekey, KindDuty, KindFiled:
			if j.counts(id) {
				counted[id] = true
			}
		case KindRota, KindReview, KindPolicy:
			// Only an admin publishes the rota or the policy, or records a review.
			if j.counts(id) && isAdmin(ms.members, op.Author) {
				counted[id] = true
			}
		}
	}
	relays := l.relays(j, ms.members)
	var prekeys map[identity.DeviceID]identity.NoisePublic
	prekeys, sm.prekeys = l.prekeys(j, ms.members)
	duty, rota, review, seen := l.duties(j, ms.members, ms.persons)
	filed := l.filed(j, ms.members)
	for i := range msgs {
		if f, ok := filed[msgs[i].ID]; ok {
			msgs[i].Filed = &f
		}
	}

	cur := ms.current
	l.smemo = sm
	return State{
		Name:          create.Name,
		Kind:          create.Kind,
		Creator:       creator,
		Members:       ms.members,
		Messages:      msgs,
		Persons:       ms.persons,
		Removed:       ms.removed,
		Epochs:        ms.epochs,
		Current:       cur,
		NeedsRekey:    cur == -1 || cur != len(ms.epochs)-1 || ms.detached,
		Equivocations: j.equivocations(),
		Relays:        relays,
		Prekeys:       prekeys,
		Duty:          duty,
		Rota:          rota,
		LastReview:    review,
		Policy:        l.policy(j, ms.members),
		LastSeen:      seen,
		Filed:         filed,
		counted:       newOpSet(counted),
		permitted:     ms.permitted,
	}
}

// lastPrekey is a device's latest prekey op that counts.
type lastPrekey struct {
	id  OpID
	at  HLC
	key identity.NoisePublic
}

// newer reports whether the prekey op id at time at replaces cur.
func (cur lastPrekey) newer(id OpID, at HLC) bool {
	return cur.at < at || cur.at == at && cur.id.Compare(id) <= 0
}

// prekeys computes State.Prekeys, and each device's latest prekey op.
func (l *Log) prekeys(j *opJudge, members []MemberInfo) (map[identity.DeviceID]identity.NoisePublic, map[identity.DeviceID]lastPrekey) {
	member := make(map[identity.DeviceID]bool, len(members))
	for _, m := range members {
		member[m.Device] = true
	}
	latest := make(map[identity.DeviceID]lastPrekey)
	for id, op := range l.ops {
		if op.Kind != KindPrekey || !member[op.Author] || !j.counts(id) {
			continue
		}
		p, err := UnmarshalPrekey(op.Body)
		if err != nil {
			continue
		}
		if cur, ok := latest[op.Author]; ok && !cur.newer(id, op.Time) {
			continue
		}
		latest[op.Author] = lastPrekey{id, op.Time, p.Key}
	}
	if len(latest) == 0 {
		return nil, latest
	}
	out := make(map[identity.DeviceID]identity.NoisePublic, len(latest))
	for d, v := range latest {
		out[d] = v.key
	}
	return out, latest
}

// RelayView is a relay the team's admins announced (State.Relays).
type RelayView struct {
	ID    OpID // the relay op
	By    identity.DeviceID
	Time  HLC
	Peer  []byte   // a libp2p peer id, unparsed
	Addrs [][]byte // binary multiaddrs, unparsed
}

// relays computes State.Relays.
func (l *Log) relays(j *opJudge, members []MemberInfo) []RelayView {
	admin := make(map[identity.DeviceID]bool)
	for _, m := range members {
		admin[m.Device] = m.Admin
	}
	type last struct {
		view    RelayView
		removed bool
	}
	latest := make(map[string]last)
	for id, op := range l.ops {
		if op.Kind != KindRelay || !admin[op.Author] || !j.counts(id) {
			continue
		}
		r, err := UnmarshalRelay(op.Body)
		if err != nil {
			continue
		}
		cur, ok := latest[string(r.Peer)]
		if ok && (cur.view.Time > op.Time || cur.view.Time == op.Time && cur.view.ID.Compare(id) > 0) {
			continue
		}
		latest[string(r.Peer)] = last{RelayView{ID: id, By: op.Author, Time: op.Time, Peer: r.Peer, Addrs: r.Addrs}, r.Removed}
	}
	var out []RelayView
	for _, v := range latest {
		if !v.removed {
			out = append(out, v.view)
		}
	}
	slices.SortFunc(out, func(a, b RelayView) int { return bytes.Compare(a.Peer, b.Peer) })
	return out
}

func isAdmin(members []MemberInfo, d identity.DeviceID) bool {
	for _, m := range members {
		if m.Device == d {
			return m.Admin
		}
	}
	return false
}

func mark(m map[OpID]map[identity.DeviceID]bool, id OpID, d identity.DeviceID) {
	if m[id] == nil {
		m[id] = make(map[identity.DeviceID]bool)
	}
	m[id][d] = true
}

func sortedDevices(set map[identity.DeviceID]bool) []identity.DeviceID {
	if len(set) == 0 {
		return nil
	}
	out := make([]identity.DeviceID, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	slices.SortFunc(out, compareDevice)
	return out
}

// displayOrder sorts msgs by display time, then ID. The display time of an
// op is the greatest of its Time, one tick after the display time of each of
// its parents in the log, and, for a message in msgs that replies to an op
// in the log, one tick after the display time of that op. As possible ops
// are later than their parents, the display time of an op from honest
// clocks is its Time; it differs only for replies to ops from clocks far
// ahead (and their descendants), which it moves after what they answer.
// The definition recurses over the causal DAG plus reply edges, which has
// no cycle short of a SHA-256 collision (ids hash parents and reply-to
// ids); if a collision made one, the edge that closes it is ignored.
func (l *Log) displayOrder(msgs []MessageView) map[OpID]HLC {
	replyTo := make(map[OpID]OpID)
	for _, m := range msgs {
		if m.ReplyTo != nil {
			if _, ok := l.ops[*m.ReplyTo]; ok && *m.ReplyTo != m.ID {
				replyTo[m.ID] = *m.ReplyTo
			}
		}
	}
	disp := make(map[OpID]HLC, len(l.ops))
	const (
		unvisited = iota
		visiting
		visited
	)
	seen := make(map[OpID]uint8, len(l.ops))
	deps := func(id OpID) []OpID {
		ps := l.ops[id].Parents
		if r, ok := replyTo[id]; ok {
			return append(slices.Clip(ps), r)
		}
		return ps
	}
	type frame struct {
		id   OpID
		deps []OpID
		next int
	}
	var stack []frame
	for _, m := range msgs {
		if seen[m.ID] != unvisited {
			continue
		}
		seen[m.ID] = visiting
		stack = append(stack[:0], frame{id: m.ID, deps: deps(m.ID)})
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.next < len(f.deps) {
				d := f.deps[f.next]
				f.next++
				if _, ok := l.ops[d]; ok && seen[d] == unvisited {
					seen[d] = visiting
					stack = append(stack, frame{id: d, deps: deps(d)})
				}
				continue
			}
			t := l.ops[f.id].Time
			for _, d := range f.deps {
				if seen[d] == visited && disp[d] >= t {
					t = disp[d]
					if t < math.MaxUint64 {
						t++
					}
				}
			}
			disp[f.id] = t
			seen[f.id] = visited
			stack = stack[:len(stack)-1]
		}
	}
	slices.SortFunc(msgs, func(a, b MessageView) int {
		return cmp.Or(cmp.Compare(disp[a.ID], disp[b.ID]), a.ID.Compare(b.ID))
	})
	return disp
}
