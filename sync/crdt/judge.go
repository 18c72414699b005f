package crdt

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// This file decides which messages, acks and evidence ops count, once the
// membership is resolved (members.go): the author rule (rule 6 of
// docs/membership.md), the partition window of a removed device (rule 6a)
// and equivocation (rule 9).

// opJudge answers, for one log and its resolved membership, whether an op
// counts. It memoises its answers; it is used only while a state is computed.
type opJudge struct {
	l   *Log
	bad map[OpID]bool
	ms  membership
	// social says the team is a social team: its messages may not carry
	// a patient reference.
	social bool

	// equivocated holds the ids named by counting evidence, ev the evidence.
	equivocated map[OpID]bool
	ev          []Equivocation

	// children lists, per op, the ops of the log that name it as a parent;
	// descEp holds, per op, the epoch ops (by index) that descend from it;
	// order lists the ops, each after its parents; gaps holds the ops that
	// name a parent the log does not hold. All are built on first use: only
	// removed devices' ops need them. darkBy memoises dark by removal.
	children map[OpID][]OpID
	descEp   map[OpID]bitset
	order    []OpID
	gaps     map[OpID]bool
	darkBy   map[int]map[OpID]bool

	// window memoises inWindow by op: 0 unknown, 1 inside, -1 outside, 2
	// being judged.
	window map[OpID]int8
}

func (l *Log) newJudge(bad map[OpID]bool, ms membership) *opJudge {
	j := &opJudge{l: l, bad: bad, ms: ms, equivocated: make(map[OpID]bool), window: make(map[OpID]int8)}
	// Rule 9: evidence that counts by the author and window rules (not by
	// the equivocation rule, so that evidence never depends on evidence)
	// marks both ops it names.
	seen := make(map[Equivocation]bool)
	for id, op := range l.ops {
		if op.Kind != KindEvidence || !j.base(id, op) || !j.inWindow(id, op.Author) {
			continue
		}
		e, err := UnmarshalEvidence(op.Body)
		if err != nil || !e.Verify(l.team) {
			continue
		}
		q := Equivocation{Device: e.Device, Epoch: e.Epoch, Index: e.Index, IDs: [2]OpID{e.A.ID, e.B.ID}}
		j.equivocated[e.A.ID], j.equivocated[e.B.ID] = true, true
		if !seen[q] {
			seen[q] = true
			j.ev = append(j.ev, q)
		}
	}
	return j
}

// equivocations returns the evidence found, sorted.
func (j *opJudge) equivocations() []Equivocation {
	out := slices.Clone(j.ev)
	slices.SortFunc(out, func(a, b Equivocation) int {
		return cmp.Or(bytes.Compare(a.Device[:], b.Device[:]), cmp.Compare(a.Epoch, b.Epoch),
			cmp.Compare(a.Index, b.Index), a.IDs[0].Compare(b.IDs[0]), a.IDs[1].Compare(b.IDs[1]))
	})
	return out
}

// base is the author rule (rule 6): a message, ack or evidence op without
// impossible parents, by a device that was ever validly granted, and not
// causally after a valid removal of it (short of a later grant between).
// A message with a patient reference in a social team counts for nothing:
// clinical and social are kept apart, whoever wrote the op.
func (j *opJudge) base(id OpID, op *Op) bool {
	switch op.Kind {
	case KindMessage:
		if j.social && patientIn(op.Body) {
			return false
		}
	case KindAck, KindEvidence, KindRelay, KindPrekey, KindDuty, KindRota, KindReview, KindPolicy, KindFiled:
	default:
		return false
	}
	return !j.bad[id] && j.ms.counts(id, op.Author)
}

// patientIn reports whether a message body carries a patient reference
// (or does not decode: it counts for nothing either way).
func patientIn(body []byte) bool {
	m, err := UnmarshalMessage(body)
	return err != nil || m.Patient != ""
}

// counts reports whether the message, ack or evidence op id counts: the
// author rule, not equivocated (rule 9), and inside its author's partition
// window for every removal of it that it is concurrent with (rule 6a).
func (j *opJudge) counts(id OpID) bool {
	op, ok := j.l.ops[id]
	return ok && j.base(id, op) && !j.equivocated[id] && j.inWindow(id, op.Author)
}

// witnessCounts reports whether op w counts as a witness: the genesis or a
// valid commit, or a message, ack or evidence op that passes the author and
// window rules (equivocation aside: a witness says when its author wrote,
// and the window rule must not depend on evidence).
func (j *opJudge) witnessCounts(w OpID) bool {
	if j.ms.valid[w] {
		return true
	}
	op, ok := j.l.ops[w]
	return ok && j.base(w, op) && j.inWindow(w, op.Author)
}

// inWindow checks rule 6a for op id by author: for every valid removal of
// the author that id is concurrent with, some op that counts as a witness,
// by a device that removal does not take out, has id in its causal past and
// not the removal. That is, a member that had not yet received the removal
// built on it (replied, acknowledged, wrote anything after receiving it).
// The log must show that the witness did not know the removal: an op whose
// causal past has a gap that may hide the removal is no witness (see dark).
// Witnesses are descendants, so the recursion ends.
func (j *opJudge) inWindow(id OpID, author identity.DeviceID) bool {
	switch j.window[id] {
	case 1:
		return true
	case -1, 2:
		return false
	}
	j.window[id] = 2
	ok := j.inWindowOf(id, author)
	j.window[id] = -1
	if ok {
		j.window[id] = 1
	}
	return ok
}

func (j *opJudge) inWindowOf(id OpID, author identity.DeviceID) bool {
	rs := j.ms.removalsOf(author)
	if len(rs) == 0 {
		return true
	}
	a := j.ms.anc[id]
	for _, r := range rs {
		if a.has(r) {
			continue // after the removal: the author rule decided
		}
		j.index()
		if j.descEp[id].has(r) {
			continue // before the removal: its author knew of it
		}
		if !j.witnessed(id, r) {
			return false
		}
	}
	return true
}

// witnessed searches the descendants of id that do not have removal r in
// their causal past for one that counts, by a device r does not take out.
func (j *opJudge) witnessed(id OpID, r int) bool {
	gone := j.ms.ep[r].fx.unlinked
	seen := map[OpID]bool{id: true}
	queue := slices.Clone(j.children[id])
	for len(queue) > 0 {
		w := queue[0]
		queue = queue[1:]
		if seen[w] {
			continue
		}
		seen[w] = true
		if j.bad[w] || j.ms.anc[w].has(r) {
			continue // written knowing of r, and so is everything after it
		}
		if op := j.l.ops[w]; !slices.Contains(gone, op.Author) && !j.dark(w, r) && j.witnessCounts(w) {
			return true
		}
		queue = append(queue, j.children[w]...)
	}
	return false
}

// dark reports whether the causal past of w, as far as the log holds it,
// cannot show that w was written without knowledge of removal r: some op p
// in it (w included) names a parent the log does not hold, p is not in r's
// causal past and p's Time is after r's. That parent may descend from r (a
// device holds only the ops it can read: one sealed in an epoch it is not
// a recipient of, or whose chain position it spent on an equivocating
// twin, is a gap in its log), and then so does w. A parent of an op in r's
// causal past is in r's causal past itself, and a descendant of r is later
// than r (clocks move forward along parents: see Clock), so the other gaps
// hide nothing. Without the rule a device that cannot read an op written
// after the removal takes that op's descendants for witnesses, and shows a
// removed member's message that counts nowhere the gap is filled; with it a
// gap only ever hides a witness.
func (j *opJudge) dark(w OpID, r int) bool {
	if len(j.gaps) == 0 {
		return false
	}
	d, ok := j.darkBy[r]
	if !ok {
		d = make(map[OpID]bool)
		rt := j.ms.ep[r].op.Time
		for _, id := range j.order {
			op := j.l.ops[id]
			if j.gaps[id] && op.Time > rt && !j.descEp[id].has(r) {
				d[id] = true
				continue
			}
			for _, p := range op.Parents {
				if d[p] {
					d[id] = true
					break
				}
			}
		}
		if j.darkBy == nil {
			j.darkBy = make(map[int]map[OpID]bool)
		}
		j.darkBy[r] = d
	}
	return d[w]
}

// index builds children, descEp, order and gaps, once.
func (j *opJudge) index() {
	if j.children != nil {
		return
	}
	l := j.l
	j.children = make(map[OpID][]OpID, len(l.ops))
	for id, op := range l.ops {
		for _, p := range op.Parents {
			if _, ok := l.ops[p]; ok {
				j.children[p] = append(j.children[p], id)
			}
		}
	}
	epochIndex := make(map[OpID]int, len(j.ms.ep))
	for i := range j.ms.ep {
		epochIndex[j.ms.ep[i].id] = i
	}
	words := (len(j.ms.ep) + 63) / 64
	// A post-order of the DAG over parents lists every op after its
	// parents; walked backwards, every op comes after its children.
	order := l.postOrder()
	j.descEp = make(map[OpID]bitset, len(l.ops))
	incl := make(map[OpID]bitset, len(j.ms.ep)) // an epoch op's set with itself
	for k := len(order) - 1; k >= 0; k-- {
		id := order[k]
		var acc bitset
		owned := false
		for _, c := range j.children[id] {
			s, ok := incl[c]
			if !ok {
				s = j.descEp[c]
			}
			acc, owned = union(acc, owned, s, words)
		}
		if acc != nil {
			j.descEp[id] = acc
		}
		if i, ok := epochIndex[id]; ok {
			incl[id] = acc.with(i, words)
		}
	}
	j.order = order
	j.gaps = make(map[OpID]bool)
	for id, op := range l.ops {
		for _, p := range op.Parents {
			if _, ok := l.ops[p]; !ok {
				j.gaps[id] = true
				break
			}
		}
	}
}
