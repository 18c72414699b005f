package duty

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// A Tracker's memory, stored so that a restart neither alerts again what
// was alerted nor forgets an escalation, a deferred routine message or an
// emergency repeat that is pending (the device core keeps it in the
// encrypted store beside the team's ops).
//
// Encoding (MarshalState), integers big-endian:
//
//	version      1 byte (1)
//	last review  8 bytes (Unix nanoseconds; 0: never)
//	since        8 bytes (Unix nanoseconds; 0: none)
//	count        uvarint (at most MaxTracked)
//	count × (message op id | flags 1 byte (1 done, 2 alerted, 4 deferred) |
//	         last alert 8 bytes (Unix nanoseconds; 0: none)),
//	         strictly ascending by id
const (
	stateVersion = 1
	// MaxTracked bounds the messages a stored state lists: far above what
	// a team sends within Horizon.
	MaxTracked   = 1 << 16
	flagDone     = 1
	flagAlerted  = 2
	flagDeferred = 4
)

// ErrState is returned by RestoreState for bytes that are not a Tracker's
// state.
var ErrState = errors.New("duty: bad tracker state")

var idLen = len(crdt.OpID{})

func appendTime(b []byte, t time.Time) []byte {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

func readTime(r *wire.Reader) time.Time {
	n := int64(r.Uint64())
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Changed reports whether what the Tracker remembers changed since the
// last MarshalState or RestoreState.
func (tr *Tracker) Changed() bool { return tr.dirty }

// MarshalState encodes what the Tracker remembers.
func (tr *Tracker) MarshalState() []byte {
	tr.dirty = false
	ids := make([]crdt.OpID, 0, len(tr.msgs))
	for id := range tr.msgs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, crdt.OpID.Compare)
	b := make([]byte, 0, 1+16+binary.MaxVarintLen64+len(ids)*(idLen+9))
	b = append(b, stateVersion)
	b = appendTime(b, tr.lastReview)
	b = appendTime(b, tr.since)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		tk := tr.msgs[id]
		var f byte
		if tk.done {
			f |= flagDone
		}
		if tk.alerted {
			f |= flagAlerted
		}
		if tk.deferred {
			f |= flagDeferred
		}
		b = append(b, id[:]...)
		b = append(b, f)
		b = appendTime(b, tk.last)
	}
	return b
}

// RestoreState replaces what the Tracker remembers with a state from
// MarshalState. On an error the Tracker is unchanged.
func (tr *Tracker) RestoreState(b []byte) error {
	if max := 1 + 16 + binary.MaxVarintLen64 + MaxTracked*(idLen+9); len(b) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrState, len(b), max)
	}
	r := wire.NewReader(b)
	r.Version("tracker state", stateVersion)
	lastReview := readTime(r)
	since := readTime(r)
	n := r.Count(MaxTracked, idLen+9)
	msgs := make(map[crdt.OpID]*track, n)
	var prev crdt.OpID
	for i := 0; i < n && r.Err() == nil; i++ {
		var id crdt.OpID
		copy(id[:], r.Fixed(idLen))
		f := r.Byte()
		last := readTime(r)
		if r.Err() != nil {
			break
		}
		if f&^(flagDone|flagAlerted|flagDeferred) != 0 {
			r.Fail(fmt.Errorf("%w: unknown flags %#x", ErrState, f))
			break
		}
		if i > 0 && prev.Compare(id) >= 0 {
			r.Fail(fmt.Errorf("%w: messages not strictly ascending", ErrState))
			break
		}
		prev = id
		msgs[id] = &track{done: f&flagDone != 0, alerted: f&flagAlerted != 0, deferred: f&flagDeferred != 0, last: last}
	}
	if err := r.Finish(); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	tr.lastReview, tr.since, tr.msgs = lastReview, since, msgs
	tr.last, tr.open, tr.dirty = 0, 0, false
	return nil
}
