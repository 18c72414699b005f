package audit

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	stdsync "sync"
	"time"

	"github.com/fieldmesh/fieldmesh/storage"
)

// Store is what the audit trail keeps in the encrypted store: its key (a secret) and its anchored
// head (a setting). *storage.Store implements it.
type Store interface {
	Secret(name string) ([]byte, error)
	PutSecret(name string, value []byte) error
	Setting(name string) ([]byte, error)
	PutSetting(name string, value []byte) error
}

var _ Store = (*storage.Store)(nil)

// Names of the store's records.
const (
	secretKey   = "audit-key"
	settingHead = "audit-head"
)

// FileName is the audit trail's file name in the data directory.
const FileName = "audit.log"

// maxFile bounds the file Open and Verify read whole: 64 MiB is about a million events.
const maxFile = 64 << 20

// Config configures a Log. The zero value works.
type Config struct {
	// Now is the clock events are stamped with. Nil is time.Now.
	Now func() time.Time
	// Rand is the source of the chain's key when Open creates it. Nil is crypto/rand.
	Rand io.Reader
}

// Log is an open audit trail: the file and its key and anchor in the store.
type Log struct {
	path string
	st   Store
	now  func() time.Time

	mu     stdsync.Mutex // guards the fields below, and the file's end
	key    []byte
	f      *os.File
	size   int64 // bytes of the file up to the end of the last record
	seq    uint64
	mac    [32]byte
	broken error // the chain failed verification at Open, or a write left it unknown: no appends
	closed bool
}

// Open opens the audit trail at path, keyed and anchored in st, creating both on first use. A file
// that fails verification does not fail Open: the device keeps working, the trail refuses appends
// (Append returns the reason) and Verify reports it, until someone looks into it. A torn last record
// past the anchored head (a crash mid-append) is cut off. Errors are I/O errors of the file or the
// store.
func Open(path string, st Store, cfg Config) (*Log, error) {
	l := &Log{path: path, st: st, now: cfg.Now}
	if l.now == nil {
		l.now = time.Now
	}
	key, err := st.Secret(secretKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		key = make([]byte, 32)
		r := cfg.Rand
		if r == nil {
			r = rand.Reader
		}
		if _, err := io.ReadFull(r, key); err != nil {
			return nil, fmt.Errorf("audit: make key: %w", err)
		}
		if err := st.PutSecret(secretKey, key); err != nil {
			return nil, fmt.Errorf("audit: store key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("audit: read key: %w", err)
	case len(key) != 32:
		return nil, fmt.Errorf("audit: stored key is %d bytes", len(key))
	}
	l.key = key
	head, err := l.head()
	if err != nil {
		return nil, err
	}
	data, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if head.seq > 0 {
			l.broken = fmt.Errorf("%w: the file is missing, and the store's anchor says it held %d records", ErrTampered, head.seq)
			return l, nil
		}
		if err := create(path); err != nil {
			return nil, err
		}
		data = []byte(magic)
	} else if err != nil {
		return nil, err
	}
	ch, err := check(data, key, head)
	if err != nil && errors.Is(err, errTorn) && ch.seq >= head.seq {
		// The last append was cut short before its anchor: drop its bytes.
		if terr := os.Truncate(path, ch.size); terr != nil {
			return nil, fmt.Errorf("audit: cut off a torn record: %w", terr)
		}
		err = nil
	}
	if err != nil {
		l.broken = err
		return l, nil
	}
	l.seq, l.mac, l.size = ch.seq, ch.mac, ch.size
	l.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	return l, nil
}

// create makes a new, empty trail file (its header) durably.
func create(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: create: %w", err)
	}
	_, err = f.Write([]byte(magic))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("audit: create: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readFile reads the trail, refusing one larger than maxFile.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("%w: the file is larger than %d bytes", ErrMalformed, maxFile)
	}
	return data, nil
}

// anchor is the head of the chain as the store holds it.
type anchor struct {
	seq uint64
	mac [32]byte
}

func (l *Log) head() (anchor, error) {
	b, err := l.st.Setting(settingHead)
	if errors.Is(err, storage.ErrNotFound) {
		return anchor{}, nil
	}
	if err != nil {
		return anchor{}, fmt.Errorf("audit: read anchor: %w", err)
	}
	if len(b) != 8+32 {
		return anchor{}, fmt.Errorf("audit: stored anchor is %d bytes", len(b))
	}
	a := anchor{seq: binary.BigEndian.Uint64(b)}
	copy(a.mac[:], b[8:])
	return a, nil
}

// errTorn marks a file that ends inside a record.
var errTorn = errors.New("the file ends inside a record")

// checked is how far check got: the last good record and where it ends.
type checked struct {
	seq     uint64
	mac     [32]byte
	size    int64
	records []Record
}

// check verifies data as the chain of key anchored at head: every record decodes, macs chain,
// sequence numbers grow by one from 1, and the anchored record is there with the anchored mac.
// Records after the anchor are accepted when they chain. On error it returns how far it got.
func check(data, key []byte, head anchor) (checked, error) {
	recs, derr := Decode(data)
	var c checked
	if len(data) >= len(magic) && string(data[:len(magic)]) == magic {
		c.size = int64(len(magic))
	}
	var prev [32]byte
	for _, r := range recs {
		if r.Seq != c.seq+1 {
			return c, fmt.Errorf("%w: record %d is numbered %d", ErrTampered, c.seq+1, r.Seq)
		}
		if want := chainMAC(key, prev, r.body); !hmac.Equal(want[:], r.MAC[:]) {
			return c, fmt.Errorf("%w: record %d does not match its mac (altered, moved or spliced)", ErrTampered, r.Seq)
		}
		prev = r.MAC
		c.seq, c.mac = r.Seq, r.MAC
		c.size += int64(4 + len(r.body) + macSize)
		c.records = append(c.records, r)
		if r.Seq == head.seq && r.MAC != head.mac {
			return c, fmt.Errorf("%w: record %d is not the one the store anchored", ErrTampered, r.Seq)
		}
	}
	if derr != nil {
		if errors.Is(derr, errShort) {
			derr = fmt.Errorf("%w: %w after record %d", ErrTampered, errTorn, c.seq)
		}
		if c.seq < head.seq {
			return c, fmt.Errorf("%w: it ends after record %d, but the store anchored %d records (truncated?): %w", ErrTampered, c.seq, head.seq, derr)
		}
		return c, derr
	}
	if c.seq < head.seq {
		return c, fmt.Errorf("%w: it ends after record %d, but the store anchored %d records (truncated or replaced)", ErrTampered, c.seq, head.seq)
	}
	return c, nil
}

// chainMAC is a record's mac: HMAC-SHA256(key, prev ‖ body).
func chainMAC(key []byte, prev [32]byte, body []byte) [32]byte {
	h := hmac.New(sha256.New, key)
	h.Write(prev[:])
	h.Write(body)
	var m [32]byte
	h.Sum(m[:0])
	return m
}

// ErrClosed is returned by a closed Log.
var ErrClosed = errors.New("audit: closed")

// Append records an event durably: it returns once the record is fsynced in the file and its head
// anchored in the store. It sets the event's Time when zero. An event that breaks the limits
// (ErrBadEvent), or a trail that failed verification, is refused and nothing is written.
func (l *Log) Append(ctx context.Context, e Event) error { return l.AppendAll(ctx, []Event{e}) }

// AppendAll records events in order as Append does, with one write, one fsync and one anchor for
// all of them. If one is refused, none is written.
func (l *Log) AppendAll(ctx context.Context, events []Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, e := range events {
		if err := e.Validate(); err != nil {
			return err
		}
	}
	if len(events) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.broken != nil {
		return fmt.Errorf("audit: not recording: %w", l.broken)
	}
	return l.appendLocked(events)
}

// appendLocked appends validated events; the caller holds l.mu.
func (l *Log) appendLocked(events []Event) error {
	seq, mac := l.seq, l.mac
	var recs []byte
	for _, e := range events {
		if e.Time.IsZero() {
			e.Time = l.now()
		}
		seq++
		body := marshalBody(seq, e)
		mac = chainMAC(l.key, mac, body)
		recs = appendRecord(recs, body, mac)
	}
	if _, err := l.f.Write(recs); err != nil {
		l.undo()
		return fmt.Errorf("audit: write: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		l.undo()
		return fmt.Errorf("audit: sync: %w", err)
	}
	l.seq, l.mac, l.size = seq, mac, l.size+int64(len(recs))
	a := binary.BigEndian.AppendUint64(nil, seq)
	if err := l.st.PutSetting(settingHead, append(a, mac[:]...)); err != nil {
		// The records are in the file and chain: Verify accepts them past the older anchor.
		return fmt.Errorf("audit: anchor: %w", err)
	}
	return nil
}

// undo cuts a failed append's bytes off the file, or, failing that, stops appends (the file's end
// is unknown). The caller holds l.mu.
func (l *Log) undo() {
	if err := l.f.Truncate(l.size); err != nil {
		l.broken = fmt.Errorf("a failed append left the file in an unknown state: %w", err)
	}
}

// Summary is what Verify found.
type Summary struct {
	// Records is the number of records in the chain.
	Records uint64
	// Anchored is the number of records the store's anchor vouches for (Records, or one fewer
	// after a crash between an append's two writes).
	Anchored uint64
}

// Verify reads the file again and checks the whole chain against the key and the anchored head.
// Any error wraps ErrTampered or ErrMalformed (the file was altered) or is an I/O error.
func (l *Log) Verify() (Summary, error) {
	_, s, err := l.read()
	return s, err
}

// Records returns the verified records of the trail, oldest first, reading the file again. It fails
// as Verify does.
func (l *Log) Records() ([]Record, error) {
	recs, _, err := l.read()
	if err != nil {
		return nil, err
	}
	return recs, nil
}

func (l *Log) read() ([]Record, Summary, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, Summary{}, ErrClosed
	}
	head, err := l.head()
	if err != nil {
		return nil, Summary{}, err
	}
	data, err := readFile(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, Summary{}, fmt.Errorf("%w: the file is missing", ErrTampered)
	}
	if err != nil {
		return nil, Summary{}, err
	}
	c, err := check(data, l.key, head)
	if err != nil {
		return nil, Summary{Records: c.seq, Anchored: head.seq}, err
	}
	if l.broken != nil {
		return nil, Summary{Records: c.seq, Anchored: head.seq}, l.broken
	}
	return c.records, Summary{Records: c.seq, Anchored: head.seq}, nil
}

// ErrIntact is returned by Restart for a trail that verifies.
var ErrIntact = errors.New("audit: the audit trail is intact: nothing to restart")

// Restart starts a new chain in place of one that fails verification: the old file is kept beside
// it, renamed to FILE.broken-TIME (UTC), as evidence; the new file's first record is a Restarted
// event saying how many records the old anchor vouched for, and the anchor moves to it. It returns
// the old file's new path ("" if it was missing). A trail that verifies is not restarted
// (ErrIntact).
func (l *Log) Restart(ctx context.Context) (string, error) {
	if _, err := l.Verify(); err == nil {
		return "", ErrIntact
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", ErrClosed
	}
	old, err := l.head()
	if err != nil {
		return "", err
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	kept := l.path + ".broken-" + l.now().UTC().Format("20060102T150405.000Z")
	if err := os.Rename(l.path, kept); errors.Is(err, os.ErrNotExist) {
		kept = ""
	} else if err != nil {
		return "", fmt.Errorf("audit: keep the old trail: %w", err)
	}
	if err := create(l.path); err != nil {
		return kept, err
	}
	l.f, err = os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return kept, fmt.Errorf("audit: open: %w", err)
	}
	l.seq, l.mac, l.size, l.broken = 0, [32]byte{}, int64(len(magic)), nil
	return kept, l.appendLocked([]Event{{Kind: Restarted, Count: uint32(min(old.seq, 1<<32-1))}})
}

// Close closes the file. It is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}
