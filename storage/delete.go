package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Deletion that means it. Deleting a Badger key writes a tombstone; the
// values it hides stay readable, as older versions of the key, in the
// memtable, its write-ahead log (a .mem file) and the SSTables, until a
// compaction puts the tombstone and those versions in the same table run
// and drops them. Values at least ValueThreshold big would also stay in the
// value log until its garbage collection rewrote their file, and never for
// the file being written; so the store keeps every value inline (the
// threshold is Badger's maximum, 1 MiB, above anything fieldmesh stores:
// decoders refuse larger frames), and the value log holds nothing.
//
// Collect finishes what deletions started: it flushes the memtables to
// tables (their .mem files are then removed) and compacts every level into
// one, so that no version older than a tombstone survives anywhere in the
// database; it then runs value-log garbage collection for anything that did
// reach the value log. What remains on the flash are the blocks of removed
// files, ciphertext under the store's data key, which the file system may
// not have overwritten (see docs/security.md).

// collectMarker is the one key of keyspace 0x30: Collect writes it and drops
// its prefix, because dropping a prefix is Badger's only public way to flush
// the memtables.
var collectMarker = []byte{prefixCollect}

// gcDiscardRatio is the share of a value-log file that must be garbage for
// Collect's value-log GC to rewrite it.
const gcDiscardRatio = 0.01

// OpKey places a stored op (see Commit): its team, its time and its id.
type OpKey struct {
	Team [32]byte
	Time uint64
	ID   [IDSize]byte
}

// DeleteOps deletes the opened ops at keys (absent ones are ignored). Their
// data stays readable in the files until the next Collect.
func (s *Store) DeleteOps(keys []OpKey) error {
	ks := make([][]byte, len(keys))
	for i, k := range keys {
		ks[i] = opKey(k.Team, k.Time, k.ID)
	}
	return s.deleteKeys("ops", ks)
}

// DeleteEnvelopes deletes the sealed envelopes with these ids, and their id
// index entries (absent ones are ignored). Their data stays readable in the
// files until the next Collect.
func (s *Store) DeleteEnvelopes(ids [][IDSize]byte) error {
	var ks [][]byte
	for _, id := range ids {
		r, err := s.Envelope(id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return err
		}
		ks = append(ks, envelopeKey(r.Key), idKey(prefixEnvID, id[:]))
	}
	return s.deleteKeys("envelopes", ks)
}

// Pending reports how many keys were deleted, and secrets written (each may
// replace an older value: a key state whose used chain keys it dropped),
// since the last Collect: when it is 0, Collect has nothing to remove.
func (s *Store) Pending() int64 { return s.deleted.Load() }

// Collected is what one Collect did.
type Collected struct {
	// Deleted is how many deletions it made final.
	Deleted int64
	// LSMBefore and LSMAfter are the sizes of the SSTables, ValueLog the size
	// of the value-log files after it, in bytes (the file being written is
	// counted at its preallocated size).
	LSMBefore, LSMAfter, ValueLog int64
	// Rewrites is how many value-log files its garbage collection rewrote.
	Rewrites int
	Took     time.Duration
}

// Collect makes the deletions so far final: no version of a deleted key is
// left in the memtables, their logs, the tables or the value log (see above).
// Writes wait while it flushes the memtables (a few milliseconds); reads go
// on. It costs a rewrite of the whole LSM tree, so callers run it on a
// schedule (the node: once Pending is non-zero, at most every
// collectEvery), not after every deletion.
func (s *Store) Collect() (Collected, error) {
	if err := s.begin(); err != nil {
		return Collected{}, err
	}
	defer s.inflight.Done()
	s.collect.Lock()
	defer s.collect.Unlock()
	start := time.Now()
	out := Collected{Deleted: s.deleted.Load()}
	out.LSMBefore, _ = s.fileSizes()

	s.gate.Lock()
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(collectMarker, nil) })
	if err == nil {
		err = s.db.DropPrefix(collectMarker)
	}
	s.gate.Unlock()
	if err != nil {
		return out, fmt.Errorf("storage: collect: flush: %w", err)
	}
	if !s.memory { // an in-memory store has no files a deletion must leave (memory.go)
		out.Rewrites, err = CompactDeleted(s.db)
		if err != nil {
			return out, err
		}
	}
	s.deleted.Add(-out.Deleted)
	out.LSMAfter, out.ValueLog = s.fileSizes()
	out.Took = time.Since(start)
	return out, nil
}

// fileSizes returns the bytes of the database's tables and value-log files,
// from the directory (Badger's own figures are refreshed once a minute).
func (s *Store) fileSizes() (lsm, vlog int64) {
	if s.memory {
		return 0, 0
	}
	_ = filepath.WalkDir(filepath.Join(s.dir, dbDirName), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		switch filepath.Ext(path) {
		case ".sst":
			lsm += info.Size()
		case ".vlog":
			vlog += info.Size()
		}
		return nil
	})
	return lsm, vlog
}

// CompactDeleted is the second half of Collect, for a Badger database that is not a Store (the
// relay's): it compacts every level into one (db.Flatten), so no old version or deletion marker of
// a key stays in the tables, then rewrites every value-log file whose garbage is over
// gcDiscardRatio (db.RunValueLogGC, until Badger finds none). Flush the memtable first (write a key
// and drop it with db.DropPrefix) so that recent deletions reach the tables. It returns how many
// value-log files were rewritten.
func CompactDeleted(db *badger.DB) (rewrites int, err error) {
	if err := db.Flatten(numCompactors); err != nil {
		return 0, fmt.Errorf("storage: collect: compact: %w", err)
	}
	for {
		err := db.RunValueLogGC(gcDiscardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return rewrites, nil
		}
		if err != nil {
			return rewrites, fmt.Errorf("storage: collect: value log: %w", err)
		}
		rewrites++
	}
}
