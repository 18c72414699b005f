package device

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// A device linked to a person (crdt.ActLink) is a recipient only of the
// epochs from the one its link started: it cannot open anything sealed
// before. The person's other devices opened that history, and hand it over
// (node/historyproto carries it): HistoryFor picks what a device of the
// same person may be given, AcceptHistory judges what one was given. The
// ops travel opened, each with its author's seal (crdt.Seal), so the
// receiver checks every signature itself and judges each op by its own log,
// with the same membership rules as the ops it opens (crdt.State.Counts):
// a device of the person can hand over only what the authors signed, and
// nothing that does not count. Both ends refuse anyone but another current
// device of this device's person.

// Limits of a history hand-over. Each says why.
const (
	// MaxHistoryBytes bounds the history one device hands another (the sum
	// of crdt.Op.Marshal sizes): the newest ops within it are handed over,
	// the older left out. What a device holds is bounded anyway by key
	// retention (RetainKeys, 30 days: older bodies are deleted and older
	// epochs' ops are not handed over); 32 MiB holds a month of a busy
	// team (30 people, 50 messages each a day, about 300 bytes each, with
	// their acknowledgements) and is what a new phone may fairly download
	// once over a clinic's Wi-Fi.
	MaxHistoryBytes = 32 << 20
	// MaxHistoryOps bounds the ops one AcceptHistory call takes: a page.
	MaxHistoryOps = 4096
)

// ErrNotSamePerson: a history hand-over with a device that is not another
// current device of this device's person (another member, a removed or
// unlinked device, an outsider). It says nothing else.
var ErrNotSamePerson = errors.New("device: history is handed over only between current devices of one person")

// HistoryCursor is a place in the (time, id) order of a team's ops: a
// hand-over resumes after it. The zero value is the start.
type HistoryCursor struct {
	Time crdt.HLC
	ID   crdt.OpID
}

func (c HistoryCursor) before(op *crdt.Op) bool {
	return cmp.Or(cmp.Compare(c.Time, op.Time), c.ID.Compare(op.ID())) < 0
}

// samePerson reports whether d is another current device of this device's
// person.
func (t *Team) samePerson(d identity.DeviceID) bool {
	if d == t.self.ID() {
		return false
	}
	s := t.snapshot()
	me, ok := s.PersonOf(t.self.ID())
	if !ok {
		return false
	}
	other, ok := s.PersonOf(d)
	return ok && other.ID == me.ID
}

// MemberNoise returns the Noise static key the team's membership lists for
// device d, a current member: a hand-over is sealed to it and checked
// against it.
func (t *Team) MemberNoise(d identity.DeviceID) (identity.NoisePublic, bool) {
	m, ok := t.snapshot().Member(d)
	return m.Noise, ok
}

// HistoryFor returns the next page of the history this device hands device
// d, another current device of its person: the ops after the cursor, in
// (time, id) order, each crdt.Op.Marshal, whose total is at most maxBytes
// (at least one op, unless none is left or the first is larger), and the
// cursor after the last one. more says whether ops remain after it. The
// history is the ops of the log that count (crdt.State.Counts), are not
// create or commit ops (those reach d with their envelopes), still have
// their bodies (never those deleted past retention or once filed), and
// were sealed in an epoch this device still holds keys of and d is not a
// recipient of (what d cannot open itself); the newest that fit in
// Config.HistoryBytes (MaxHistoryBytes by default), over all pages. Anyone else gets ErrNotSamePerson.
func (t *Team) HistoryFor(d identity.DeviceID, after HistoryCursor, maxBytes int) (page [][]byte, next HistoryCursor, more bool, err error) {
	if !t.samePerson(d) || t.Removed() {
		return nil, after, false, ErrNotSamePerson
	}
	s := t.snapshot()
	readable := make(map[uint32]bool) // tags of epochs d is a recipient of
	for _, ep := range s.Epochs {
		if slices.ContainsFunc(ep.Recipients, func(r crdt.Recipient) bool { return r.Device == d }) {
			readable[ep.Tag] = true
		}
	}
	var all []*crdt.Op
	for _, op := range t.lg.Ops() {
		if op.Kind.StartsEpoch() || op.Redacted() || !s.Counts(op.ID()) || readable[op.Seal.Epoch] || !t.keys.Held(op.Seal.Epoch) {
			continue
		}
		all = append(all, op)
	}
	if after == (HistoryCursor{}) {
		// The first page starts at the oldest op of the newest MaxHistoryBytes; later pages go on
		// from their cursor.
		total := 0
		for i := len(all) - 1; i >= 0; i-- {
			total += len(all[i].Marshal())
			if total > t.cfg.HistoryBytes {
				all = all[i+1:]
				break
			}
		}
	}
	next = after
	used := 0
	for _, op := range all {
		if !after.before(op) {
			continue
		}
		b := op.Marshal()
		if used > 0 && used+len(b) > maxBytes {
			return page, next, true, nil
		}
		next = HistoryCursor{op.Time, op.ID()}
		if len(b) > maxBytes {
			// Larger than a page can carry: left out (no message body
			// comes near it; see node/historyproto).
			t.log.Warn("an op too large for a history page is not handed over", "bytes", len(b))
			continue
		}
		page = append(page, b)
		used += len(b)
	}
	return page, next, false, nil
}

// AcceptHistory takes a page of history that device from, another current
// device of this device's person, handed over (HistoryFor), and reports how
// many ops it kept. Each op must decode, belong to this team, be no create
// or commit op, carry its author's valid signature (crdt.Log.Add), and be
// sealed in an epoch that the membership lists its author as a recipient of
// and whose keys have not been destroyed past retention here (an epoch
// whose retention ended is not taken back in through a hand-over). The ops
// are added to the log on trial and those that count by the membership
// rules are kept, with what they build on; the rest are taken back out. An
// op at a chain position where this device holds another op is evidence of
// equivocation, not history. Ops already held are skipped, so a page given
// twice keeps nothing the second time. A page from anyone else, or one
// that breaks these checks, is refused whole with an error, and the Team
// is unchanged.
func (t *Team) AcceptHistory(now time.Time, from identity.DeviceID, page [][]byte) (int, Effects, error) {
	t.now = now
	var eff Effects
	if !t.samePerson(from) || t.Removed() {
		return 0, eff, ErrNotSamePerson
	}
	if len(page) > MaxHistoryOps {
		return 0, eff, fmt.Errorf("%w: a history page of %d ops, at most %d", ErrHistory, len(page), MaxHistoryOps)
	}
	s := t.snapshot()
	cutoff := now.Add(-t.cfg.RetainKeys)
	var ops []*crdt.Op
	for _, b := range page {
		op, err := crdt.UnmarshalOp(b)
		switch {
		case err != nil:
			return 0, eff, fmt.Errorf("%w: %w", ErrHistory, err)
		case op.Team != t.id || op.Kind.StartsEpoch():
			return 0, eff, fmt.Errorf("%w: not a message-like op of this team", ErrHistory)
		case t.keys.Forgotten(op.Seal.Epoch):
			return 0, eff, fmt.Errorf("%w: an op of an epoch past retention", ErrHistory)
		}
		if err := t.lg.Check(op); err != nil {
			return 0, eff, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		listed := false
		for _, ep := range s.Epoch(op.Seal.Epoch) {
			if slices.ContainsFunc(ep.Recipients, func(r crdt.Recipient) bool { return r.Device == op.Author }) {
				if end, ended := epochEnd(s, ep.ID); ended && end.Before(cutoff) {
					return 0, eff, fmt.Errorf("%w: an op of an epoch past retention", ErrHistory)
				}
				listed = true
			}
		}
		if !listed {
			return 0, eff, fmt.Errorf("%w: an op sealed in an epoch that does not list its author", ErrHistory)
		}
		ops = append(ops, op)
	}
	var added []*crdt.Op
	for _, op := range ops {
		id := op.ID()
		if other, ok := t.sealAt(position{op.Seal.Epoch, op.Author, op.Seal.Index}); ok && other != id {
			if prev, ok := t.lg.Op(other); ok {
				t.equivocated(position{op.Seal.Epoch, op.Author, op.Seal.Index}, crdt.SealedOf(other, prev.Seal), crdt.SealedOf(id, op.Seal))
			}
			continue
		}
		ok, err := t.lg.Add(op)
		if err != nil {
			for _, a := range added {
				t.lg.Remove(a.ID())
			}
			t.state = nil
			return 0, Effects{}, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		if ok {
			added = append(added, op)
		}
	}
	t.state = nil
	s = t.snapshot()
	keep := t.keepOnTrial(added, s.Counts)
	s = t.snapshot()
	n := 0
	for _, op := range added {
		id := op.ID()
		if !keep[id] {
			continue
		}
		n++
		delete(t.carried, id) // its envelope, if stored, is read now
		delete(t.reopenAt, id)
		t.indexSeal(op)
		t.observe(op, s)
		eff.Write.Ops = append(eff.Write.Ops, Record{Time: uint64(op.Time), ID: id, Data: op.Marshal()})
	}
	if n > 0 {
		eff.Changed = true
	}
	return n, eff, nil
}

// retireHistory deletes the bodies of the messages sealed in every epoch
// that ended more than RetainKeys ago, once per epoch, whether or not this
// device holds its keys (history handed over, an epoch evicted to make
// room, one known by its outer key only): retention reaches them as it
// reaches the epochs forgetOld destroys.
func (t *Team) retireHistory(s *crdt.State, cutoff time.Time, eff *Effects) {
	tags := make(map[uint32]bool)
	for _, ep := range s.Epochs {
		if t.retired[ep.Tag] {
			continue
		}
		if end, ok := epochEnd(s, ep.ID); ok && end.Before(cutoff) {
			tags[ep.Tag] = true
			t.retired[ep.Tag] = true
		}
	}
	t.redactEpochs(tags, eff)
}
