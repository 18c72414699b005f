package record

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// ErrEntry is returned by UnmarshalEntry for bytes that are not an Entry.
var ErrEntry = errors.New("record: malformed queue entry")

// Entry is one message in the filing queue, as the gateway stores it: no
// content, only which message, how it went and when to try again.
//
// Encoding (EntrySize bytes): version 2 | team 32 | op id 16 | code 1 |
// status u16 | attempts u32 | next u64 | queued u64, big-endian; next and
// queued are Unix milliseconds.
type Entry struct {
	Team     crdt.TeamID
	ID       crdt.OpID
	Code     Code   // the last attempt's outcome; Pending if none yet
	Status   uint16 // its HTTP status, 0 if none
	Attempts uint32
	Next     int64 // when it may be tried again, Unix ms (0: now)
	Queued   int64 // when it was queued, Unix ms
}

// EntrySize is the length of an encoded Entry.
const EntrySize = 1 + 32 + crdt.IDSize + 1 + 2 + 4 + 8 + 8

const entryVersion = 2

// Marshal encodes e.
func (e Entry) Marshal() []byte {
	b := make([]byte, 0, EntrySize)
	b = append(b, entryVersion)
	b = append(b, e.Team[:]...)
	b = append(b, e.ID[:]...)
	b = append(b, byte(e.Code))
	b = binary.BigEndian.AppendUint16(b, e.Status)
	b = binary.BigEndian.AppendUint32(b, e.Attempts)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Next))
	return binary.BigEndian.AppendUint64(b, uint64(e.Queued))
}

// UnmarshalEntry decodes Marshal's output. It refuses any other length,
// another version, a code it does not know (Filed included: filed entries
// are not kept) and negative times.
func UnmarshalEntry(b []byte) (Entry, error) {
	if len(b) != EntrySize {
		return Entry{}, fmt.Errorf("%w: %d bytes, want %d", ErrEntry, len(b), EntrySize)
	}
	r := wire.NewReader(b)
	r.Version("queue entry", entryVersion)
	var e Entry
	copy(e.Team[:], r.Fixed(len(e.Team)))
	copy(e.ID[:], r.Fixed(crdt.IDSize))
	e.Code = Code(r.Byte())
	e.Status = r.Uint16()
	e.Attempts = r.Uint32()
	e.Next = int64(r.Uint64())
	e.Queued = int64(r.Uint64())
	if err := r.Finish(); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrEntry, err)
	}
	switch {
	case e.Code >= maxCode || e.Code == Filed:
		return Entry{}, fmt.Errorf("%w: code %d", ErrEntry, e.Code)
	case e.Next < 0 || e.Queued < 0:
		return Entry{}, fmt.Errorf("%w: negative time", ErrEntry)
	}
	return e, nil
}

// Backoff says when a message is tried again. The zero value works.
type Backoff struct {
	// Min is the wait after the first failure; it doubles with each
	// failure up to Max. Defaults 5 s and 1 h.
	Min, Max time.Duration
	// Held is how long a held message (rejected, unknown or ambiguous
	// patient, partial failure, unmappable) waits before it is tried again:
	// an operator may have fixed the record meanwhile. Default 24 h.
	Held time.Duration
}

// Defaults of Backoff.
const (
	DefaultBackoffMin  = 5 * time.Second
	DefaultBackoffMax  = time.Hour
	DefaultBackoffHeld = 24 * time.Hour
)

func (b Backoff) filled() Backoff {
	if b.Min <= 0 {
		b.Min = DefaultBackoffMin
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Held <= 0 {
		b.Held = DefaultBackoffHeld
	}
	return b
}

// Wait returns how long to wait after the attempts-th failed attempt
// (attempts >= 1) with outcome c.
func (b Backoff) Wait(c Code, attempts uint32) time.Duration {
	b = b.filled()
	if !c.Retried() {
		return b.Held
	}
	d := b.Min
	for i := uint32(1); i < attempts && d < b.Max; i++ {
		d *= 2
	}
	if c == WaitingAttachments {
		// Looking again costs no request to the server, and the chunks may come any minute.
		return min(d, b.Max, MaxWaitAttachments)
	}
	return min(d, b.Max)
}

// MaxWaitAttachments is the longest a message waiting for its attachments waits before the
// gateway looks again whether they all came.
const MaxWaitAttachments = time.Minute

type entryKey struct {
	team crdt.TeamID
	id   crdt.OpID
}

// Queue is the state machine of filing: the messages due, how their last
// attempts went and when each may be tried next. The gateway persists
// every Entry it returns (Put) or drops (Delete) before it acts on it.
type Queue struct {
	backoff Backoff
	entries map[entryKey]*Entry
}

// NewQueue returns an empty queue.
func NewQueue(b Backoff) *Queue {
	return &Queue{backoff: b.filled(), entries: make(map[entryKey]*Entry)}
}

// Load adds a stored entry (at start-up).
func (q *Queue) Load(e Entry) {
	c := e
	q.entries[entryKey{e.Team, e.ID}] = &c
}

// Len returns the number of queued messages.
func (q *Queue) Len() int { return len(q.entries) }

// Changes are the entries to store and delete after a Queue call.
type Changes struct {
	Put    []Entry
	Delete []Entry
}

// Sync makes the queue's entries of team exactly the due messages (DueIDs
// of the team's state): it queues new ones, Pending and due now, and drops
// those no longer due (filed, by this gateway or another, or deleted).
func (q *Queue) Sync(team crdt.TeamID, due []crdt.OpID, now time.Time) Changes {
	var ch Changes
	want := make(map[crdt.OpID]bool, len(due))
	for _, id := range due {
		want[id] = true
		k := entryKey{team, id}
		if _, ok := q.entries[k]; ok {
			continue
		}
		e := &Entry{Team: team, ID: id, Queued: now.UnixMilli()}
		q.entries[k] = e
		ch.Put = append(ch.Put, *e)
	}
	for k, e := range q.entries {
		if k.team == team && !want[k.id] {
			delete(q.entries, k)
			ch.Delete = append(ch.Delete, *e)
		}
	}
	return ch
}

// Next returns up to n entries that may be tried now, in the order to try
// them: the longest waiting first (by next try, then queued time, then id).
func (q *Queue) Next(now time.Time, n int) []Entry {
	ms := now.UnixMilli()
	var out []Entry
	for _, e := range q.entries {
		if e.Next <= ms {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Next, b.Next), cmp.Compare(a.Queued, b.Queued), a.ID.Compare(b.ID))
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Done records the outcome of an attempt on an entry. A Filed entry leaves
// the queue (Delete); any other is kept with its outcome and its next try
// (Put). An entry no longer queued is ignored.
func (q *Queue) Done(team crdt.TeamID, id crdt.OpID, now time.Time, o Outcome) Changes {
	k := entryKey{team, id}
	e, ok := q.entries[k]
	if !ok {
		return Changes{}
	}
	if o.Code == Filed {
		delete(q.entries, k)
		return Changes{Delete: []Entry{*e}}
	}
	e.Code = o.Code
	e.Status = uint16(min(max(o.Status, 0), 999))
	e.Attempts++
	e.Next = now.Add(q.backoff.Wait(o.Code, e.Attempts)).UnixMilli()
	return Changes{Put: []Entry{*e}}
}

// Wait returns how long until the next entry may be tried, and false if
// the queue is empty.
func (q *Queue) Wait(now time.Time) (time.Duration, bool) {
	if len(q.entries) == 0 {
		return 0, false
	}
	next := int64(1<<63 - 1)
	for _, e := range q.entries {
		next = min(next, e.Next)
	}
	return max(0, time.Duration(next-now.UnixMilli())*time.Millisecond), true
}

// Entries returns every queued entry, sorted by team, then queued time,
// then id: the gateway's report.
func (q *Queue) Entries() []Entry {
	out := make([]Entry, 0, len(q.entries))
	for _, e := range q.entries {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(bytes.Compare(a.Team[:], b.Team[:]), cmp.Compare(a.Queued, b.Queued), a.ID.Compare(b.ID))
	})
	return out
}
