package device

import (
	"fmt"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Devices that disagree about who is a member do not sync (each refuses a
// peer it believes removed), so they need another way to converge: they
// exchange membership ops. A removed device gets no key of the commit that
// removes it, so it cannot read that commit: on its own it never learns that
// it was removed, and goes on writing ops that members refuse. And two
// devices can each hold a removal the other lacks (a partition where two
// admins removed each other, say): the one that thinks the other removed
// may be wrong, because the other holds the commit that cuts that removal.
//
// So when a sync is refused, each side hands the other the membership ops
// it may see (MembershipFor): the create and commit ops of its log, less
// those written knowing of the other's removal. Each op is sealed by its
// author (crdt.Seal), so the receiver checks them alone and judges them with
// its own log (AcceptMembership): a removed device then shows that it was
// removed, and a device that was wrong shows the other as a member again,
// and the next sync runs. Nothing is handed over that the receiver did not
// know while it was a member, or that was written in a partition that did
// not know of its removal.

// MembershipFor returns the membership ops this device hands peer device d
// when their sync is refused, oldest first, each crdt.Op.Marshal: the
// create and commit ops of the log, except those that have a counting
// removal of d (an unlink of d, or the removal of a person d was a device
// of) in their causal past.
func (t *Team) MembershipFor(d identity.DeviceID) [][]byte {
	s := t.snapshot()
	ops := t.lg.Ops()
	persons := personsOf(ops, d)
	byID := make(map[crdt.OpID]*crdt.Op, len(ops))
	for _, op := range ops {
		byID[op.ID()] = op
	}
	// after holds the ops with a removal of d in their causal past (the
	// removals included); ops are in (time, id) order, and an op with
	// possible parents comes after them.
	after := make(map[crdt.OpID]bool)
	for _, op := range ops {
		id := op.ID()
		if op.Kind == crdt.KindMember && s.Counts(id) && removes(op, d, persons) {
			after[id] = true
			continue
		}
		for _, p := range op.Parents {
			if after[p] {
				after[id] = true
				break
			}
		}
	}
	_, member := s.Member(d)
	var out [][]byte
	for _, op := range ops {
		if op.Kind.StartsEpoch() && (member || !after[op.ID()] || isRemovalOf(op, d, persons, s)) {
			out = append(out, op.Marshal())
		}
	}
	return out
}

// isRemovalOf reports whether op is itself a counting removal of d: the
// removal is handed over, what was written after it is not.
func isRemovalOf(op *crdt.Op, d identity.DeviceID, persons map[identity.DeviceID]bool, s *crdt.State) bool {
	return op.Kind == crdt.KindMember && s.Counts(op.ID()) && removes(op, d, persons)
}

// personsOf returns the persons device d was ever granted to by a commit
// in ops: itself (an add of a person whose first device it is) and the
// targets of the links that added it.
func personsOf(ops []*crdt.Op, d identity.DeviceID) map[identity.DeviceID]bool {
	out := map[identity.DeviceID]bool{d: true}
	for _, op := range ops {
		if op.Kind != crdt.KindMember {
			continue
		}
		c, err := crdt.UnmarshalCommit(op.Body)
		if err != nil {
			continue
		}
		for _, ch := range c.Changes {
			if ch.Action == crdt.ActLink && ch.Info.Device == d {
				out[ch.Target] = true
			}
		}
	}
	return out
}

// removes reports whether commit op unlinks device d or removes one of the
// persons it was a device of.
func removes(op *crdt.Op, d identity.DeviceID, persons map[identity.DeviceID]bool) bool {
	c, err := crdt.UnmarshalCommit(op.Body)
	if err != nil {
		return false
	}
	for _, ch := range c.Changes {
		switch ch.Action {
		case crdt.ActUnlink:
			if ch.Target == d {
				return true
			}
		case crdt.ActRemove:
			if persons[ch.Target] {
				return true
			}
		}
	}
	return false
}

// maxMembershipOps bounds what AcceptMembership takes at once: a team's
// whole membership history for years of weekly rotations.
const maxMembershipOps = 4096

// AcceptMembership takes the membership ops a peer handed over when a sync
// was refused (MembershipFor): it checks each (a create or commit op of
// this team, sealed by its author; the create op the pinned genesis), adds
// them to the log on trial, and keeps those that are permitted commits (and
// what they build on); the rest are taken back out. It reports how many it
// kept. The ops are kept without their envelopes (their keys come with the
// envelopes, through a later sync), so this device may learn, for
// instance, that it was removed, or that a peer it thought removed is a
// member. Once removed, the device makes no more ops in the team.
func (t *Team) AcceptMembership(now time.Time, ops [][]byte) (int, Effects, error) {
	t.now = now
	var eff Effects
	if len(ops) > maxMembershipOps {
		return 0, eff, fmt.Errorf("%w: %d ops, at most %d", ErrProof, len(ops), maxMembershipOps)
	}
	var added []*crdt.Op
	undo := func() {
		for _, op := range added {
			t.lg.Remove(op.ID())
		}
		t.state = nil
	}
	for _, b := range ops {
		op, err := crdt.UnmarshalOp(b)
		if err != nil || !op.Kind.StartsEpoch() || (op.Kind == crdt.KindCreate && op.ID() != t.cfg.Genesis) {
			undo()
			return 0, eff, fmt.Errorf("%w: not a membership op of this team", ErrProof)
		}
		ok, err := t.lg.Add(op)
		if err != nil {
			undo()
			return 0, eff, fmt.Errorf("%w: %w", ErrProof, err)
		}
		if ok {
			added = append(added, op)
		}
	}
	if len(added) == 0 {
		return 0, eff, nil
	}
	t.state = nil
	s := t.snapshot()
	keep := t.keepOnTrial(added, s.Permitted)
	s = t.snapshot()
	n := 0
	for _, op := range added {
		if !keep[op.ID()] {
			continue
		}
		n++
		eff.Write.Ops = append(eff.Write.Ops, Record{Time: uint64(op.Time), ID: op.ID(), Data: op.Marshal()})
		t.observe(op, s)
	}
	if n > 0 {
		eff.Changed = true
		if t.Removed() {
			t.log.Warn("this device was removed from the team")
		}
	}
	return n, eff, nil
}

// keepOnTrial judges added, ops just put in the log on trial: it keeps those that pass (judged on
// the state with all of them in) and every op of added they build on through their parents, takes
// the rest back out of the log (dropping the kept state if it took any out), and returns the ids
// kept.
func (t *Team) keepOnTrial(added []*crdt.Op, pass func(crdt.OpID) bool) map[crdt.OpID]bool {
	byID := make(map[crdt.OpID]*crdt.Op, len(added))
	for _, op := range added {
		byID[op.ID()] = op
	}
	keep := make(map[crdt.OpID]bool)
	var walk func(id crdt.OpID)
	walk = func(id crdt.OpID) {
		op := byID[id]
		if op == nil || keep[id] {
			return
		}
		keep[id] = true
		for _, p := range op.Parents {
			walk(p)
		}
	}
	for _, op := range added {
		if pass(op.ID()) {
			walk(op.ID())
		}
	}
	for _, op := range added {
		if !keep[op.ID()] {
			t.lg.Remove(op.ID())
			t.state = nil
		}
	}
	return keep
}
