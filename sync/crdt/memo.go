package crdt

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

// memoAdded updates the memo for op, just inserted under id.
func (l *Log) memoAdded(id OpID, op *Op) {
	mm := l.memo
	if mm == nil {
		return
	}
	if op.Kind == KindCreate || op.Kind == KindMember || l.parented[id] > 0 {
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
	if op.Kind == KindCreate || op.Kind == KindMember || l.parented[id] > 0 {
		l.memo = nil
		return
	}
	if !mm.none && mm.ms.anc != nil {
		delete(mm.ms.anc, id)
	}
}
