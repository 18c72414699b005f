package crdt

import (
	"cmp"
	"math"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// The membership of a log (Log.members: the genesis, the valid commits,
// persons, epochs, and the causal ancestry that the author rules read) is
// the costliest part of Log.State, and most ops cannot change it. It is a
// function of the log's create and commit ops, of whether those have
// impossible parents, and of the set of epoch ops in the causal past of
// each op. An op that is neither a create nor a commit and that no op of
// the log names as a parent (a new head: the usual message, ack, prekey,
// ...) changes none of those for the ops already there: it is nobody's
// ancestor or parent. Adding or removing such an op only adds or drops its
// own ancestry entry, so the log keeps the resolved membership and updates
// that entry; any other add or remove throws it away, and the next State
// resolves it afresh. Redact changes a message's body only, which the
// membership does not read.

// memberMemo is a log's resolved membership, valid for its current ops.
type memberMemo struct {
	// none says that the log has no genesis.
	none    bool
	genesis add
	create  Create
	ms      membership
	// index maps the id of each epoch op to its index in ms.ep.
	index map[OpID]int
	words int
}

// resolveMembers returns the membership memo of the log as it is. bad
// holds the ops with impossible parents.
func (l *Log) resolveMembers(bad map[OpID]bool) *memberMemo {
	var genesis *add
	for id, op := range l.ops {
		if op.Kind != KindCreate || len(op.Parents) != 0 || bad[id] {
			continue
		}
		c, err := UnmarshalCreate(op.Body)
		if err != nil || c.Creator.Device != op.Author || !noiseOK(c.Creator.Noise) {
			continue
		}
		g := add{id: id, op: op, info: c.Creator}
		if genesis == nil || later(*genesis, g) {
			genesis = &g
		}
	}
	if genesis == nil {
		return &memberMemo{none: true}
	}
	create, _ := UnmarshalCreate(genesis.op.Body)
	mm := &memberMemo{genesis: *genesis, create: create, ms: l.members(bad, *genesis)}
	mm.index = make(map[OpID]int, len(mm.ms.ep))
	for i := range mm.ms.ep {
		mm.index[mm.ms.ep[i].id] = i
	}
	mm.words = (len(mm.ms.ep) + 63) / 64
	return mm
}

// changesMembers reports whether adding or removing op, under id, may
// change the resolved membership: a create, a commit, or an op some op of
// the log names as a parent. The memo is dropped then.
func (l *Log) changesMembers(id OpID, op *Op) bool {
	return op.Kind == KindCreate || op.Kind == KindMember || l.parented[id] > 0
}

// memoAdded updates the memo for op, just inserted under id.
func (l *Log) memoAdded(id OpID, op *Op) {
	mm := l.memo
	if mm == nil {
		return
	}
	if l.changesMembers(id, op) {
		l.memo = nil
		return
	}
	if mm.none || mm.ms.anc == nil {
		return // no commit: Log.members keeps no ancestry
	}
	// As Log.ancestry: the union of the parents' sets, an epoch op's with
	// itself.
	var acc bitset
	owned := false
	for _, p := range op.Parents {
		var c bitset
		if i, ok := mm.index[p]; ok {
			c = mm.ms.ep[i].anc.with(i, mm.words)
		} else {
			c = mm.ms.anc[p] // nil for a parent the log does not hold
		}
		acc, owned = union(acc, owned, c, mm.words)
	}
	if acc != nil {
		mm.ms.anc[id] = acc
	}
}

// memoRemoving updates the memo for op, about to be removed from under id
// (still in the log, with its parents still counted).
func (l *Log) memoRemoving(id OpID, op *Op) {
	mm := l.memo
	if mm == nil {
		return
	}
	if l.changesMembers(id, op) {
		l.memo = nil
		return
	}
	if !mm.none && mm.ms.anc != nil {
		delete(mm.ms.anc, id)
	}
}

// The State a log keeps (Log.state) is also updated in place, not resolved
// afresh, for the ops that make up most of a team's history: a message or
// an ack that is a new head (no op of the log names it as a parent), added
// while the log keeps its membership (memberMemo) and that membership has
// no valid removal at all. Then the op changes nothing that State reads
// for the other ops:
//   - impossible parents, the author rule and the membership are those of
//     the ops' own parents and causal past, which the new head is not part
//     of (memoAdded keeps its ancestry entry);
//   - the partition window (rule 6a) reads witnesses, but only for
//     removed authors, and there are none;
//   - equivocation reads evidence ops only;
//   - display times follow parents and reply edges: none leads to a new
//     head unless a shown message replies to it (then it is resolved
//     afresh, as when a counting ack names it: its ReceivedBy would change).
// So the new op adds at most itself: to counted, as a shown message in
// its display place, its author to the ReceivedBy and ReadBy of the shown
// messages it acknowledges, and its Time to LastSeen. Taking back such an
// op that does not count (the device core's trial) changes nothing; any
// other add, remove or redaction drops the kept State, and the next State
// resolves it afresh. TestStateMatchesFresh checks both against fresh
// resolutions.

// stateMemo is what a log keeps beside its State to update it.
type stateMemo struct {
	disp map[OpID]HLC // display times known (Log.displayOrder)
	// shown holds the messages shown; acked the ids counting acks name;
	// replied the ids shown messages reply to.
	shown, acked, replied map[OpID]bool
	equivocated           map[OpID]bool // as opJudge.equivocated
	social                bool
	member                map[identity.DeviceID]bool // current member devices
	prekeys               map[identity.DeviceID]lastPrekey
}

// dropState forgets the kept State.
func (l *Log) dropState() { l.state, l.smemo = nil, nil }

// stateAdded updates the kept State for op, just inserted under id (after
// memoAdded), or drops it.
func (l *Log) stateAdded(id OpID, op *Op) {
	s, sm, mm := l.state, l.smemo, l.memo
	if s == nil || sm == nil || mm == nil || mm.none || mm.ms.removals || l.parented[id] > 0 ||
		!keptKind(op.Kind) || sm.acked[id] || sm.replied[id] {
		l.dropState()
		return
	}
	for _, p := range op.Parents {
		if po, ok := l.ops[p]; ok && op.Time <= po.Time {
			return // impossible parents: counts for nothing, changes nothing
		}
	}
	// opJudge.counts, without removals: the author rule, not equivocated.
	if op.Kind == KindMessage && sm.social && patientIn(op.Body) || !mm.ms.counts(id, op.Author) || sm.equivocated[id] {
		return
	}
	s.counted = s.counted.with(id)
	if sm.member[op.Author] && op.Time > s.LastSeen[op.Author] {
		if s.LastSeen == nil {
			s.LastSeen = make(map[identity.DeviceID]HLC)
		}
		s.LastSeen[op.Author] = op.Time
	}
	switch op.Kind {
	case KindMessage:
		m, err := l.message(id, op)
		if err != nil {
			return
		}
		v := MessageView{ID: id, Author: op.Author, AuthorName: mm.ms.name(op.Author), Time: op.Time, Message: m}
		if f, ok := s.Filed[id]; ok {
			v.Filed = &f
		}
		deps := op.Parents
		if m.ReplyTo != nil && *m.ReplyTo != id {
			if _, ok := l.ops[*m.ReplyTo]; ok {
				deps = append(slices.Clip(deps), *m.ReplyTo)
			}
		}
		if m.ReplyTo != nil {
			sm.replied[*m.ReplyTo] = true
		}
		t := op.Time
		for _, d := range deps {
			if _, ok := l.ops[d]; !ok {
				continue
			}
			if dt := l.dispOf(d); dt >= t {
				t = dt
				if t < math.MaxUint64 {
					t++
				}
			}
		}
		sm.disp[id], sm.shown[id] = t, true
		i, _ := slices.BinarySearchFunc(s.Messages, v, sm.displayCmp)
		s.Messages = slices.Insert(s.Messages, i, v)
	case KindPrekey:
		p, err := UnmarshalPrekey(op.Body)
		if err != nil || !sm.member[op.Author] {
			return
		}
		if cur, ok := sm.prekeys[op.Author]; ok && !cur.newer(id, op.Time) {
			return
		}
		sm.prekeys[op.Author] = lastPrekey{id, op.Time, p.Key}
		if s.Prekeys == nil {
			s.Prekeys = make(map[identity.DeviceID]identity.NoisePublic)
		}
		s.Prekeys[op.Author] = p.Key
	case KindAck:
		a, err := UnmarshalAck(op.Body)
		if err != nil {
			return
		}
		for _, mid := range a.IDs {
			sm.acked[mid] = true
			if !sm.shown[mid] {
				continue
			}
			i, found := slices.BinarySearchFunc(s.Messages, MessageView{ID: mid}, sm.displayCmp)
			if !found || s.Messages[i].Author == op.Author {
				continue
			}
			m := &s.Messages[i]
			m.ReceivedBy = insertDevice(m.ReceivedBy, op.Author)
			if a.Read {
				m.ReadBy = insertDevice(m.ReadBy, op.Author)
			}
		}
	}
}

// keptKind reports whether the kept State is updated for an added op of
// kind k (stateAdded).
func keptKind(k Kind) bool { return k == KindMessage || k == KindAck || k == KindPrekey }

// displayCmp orders shown messages as displayOrder does.
func (sm *stateMemo) displayCmp(a, b MessageView) int {
	return cmp.Or(cmp.Compare(sm.disp[a.ID], sm.disp[b.ID]), a.ID.Compare(b.ID))
}

// insertDevice adds d to the sorted set ds.
func insertDevice(ds []identity.DeviceID, d identity.DeviceID) []identity.DeviceID {
	i, found := slices.BinarySearchFunc(ds, d, compareDevice)
	if found {
		return ds
	}
	return slices.Insert(ds, i, d)
}

// dispOf returns the display time of op id of the log (not a shown
// message unless known), resolving and keeping those of its ancestors not
// known yet as displayOrder does: a non-message's deps are its parents.
func (l *Log) dispOf(id OpID) HLC {
	disp := l.smemo.disp
	if t, ok := disp[id]; ok {
		return t
	}
	type frame struct {
		id   OpID
		next int
	}
	visiting := map[OpID]bool{id: true}
	stack := []frame{{id: id}}
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		ps := l.ops[f.id].Parents
		if f.next < len(ps) {
			d := ps[f.next]
			f.next++
			if _, ok := l.ops[d]; ok && !visiting[d] {
				if _, known := disp[d]; !known {
					visiting[d] = true
					stack = append(stack, frame{id: d})
				}
			}
			continue
		}
		t := l.ops[f.id].Time
		for _, d := range ps {
			if dt, ok := disp[d]; ok && dt >= t {
				t = dt
				if t < math.MaxUint64 {
					t++
				}
			}
		}
		disp[f.id] = t
		stack = stack[:len(stack)-1]
	}
	return disp[id]
}

// stateRemoving keeps the kept State for op, about to be removed from under
// id (after memoRemoving), if it is a head message or ack that does not
// count and the membership has no removal (it witnesses nothing); else it
// drops it.
func (l *Log) stateRemoving(id OpID, op *Op) {
	s, sm, mm := l.state, l.smemo, l.memo
	if s == nil || sm == nil || mm == nil || mm.none || mm.ms.removals || l.parented[id] > 0 ||
		!keptKind(op.Kind) || s.counted.has(id) {
		l.dropState()
		return
	}
	delete(sm.disp, id)
}

// opSet is a set of op ids that States share and never change: adding
// copies one of its sixteen buckets (by the first four bits of the id: ids
// are hashes), not the set. Each bucket is sorted, nil when empty, so two
// sets with the same ids are equal under reflect.DeepEqual, however made.
type opSet struct {
	b [16][]OpID
}

func bucketOf(id OpID) int { return int(id[0] >> 4) }

// newOpSet returns the set of the ids in m.
func newOpSet(m map[OpID]bool) opSet {
	var s opSet
	for id := range m {
		k := bucketOf(id)
		s.b[k] = append(s.b[k], id)
	}
	for k := range s.b {
		slices.SortFunc(s.b[k], OpID.Compare)
	}
	return s
}

func (s *opSet) has(id OpID) bool {
	_, ok := slices.BinarySearchFunc(s.b[bucketOf(id)], id, OpID.Compare)
	return ok
}

// with returns the set with id added; s is unchanged.
func (s *opSet) with(id OpID) opSet {
	out := *s
	k := bucketOf(id)
	i, ok := slices.BinarySearchFunc(s.b[k], id, OpID.Compare)
	if !ok {
		out.b[k] = slices.Insert(slices.Clip(s.b[k]), i, id)
	}
	return out
}
