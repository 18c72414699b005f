package storage

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Errors returned by this package. Test them with errors.Is: most are wrapped
// with detail.
var (
	// ErrWrongPassphrase: the keyring did not open with the passphrase (or
	// was tampered with; the two cannot be told apart). Nothing was changed.
	ErrWrongPassphrase = errors.New("storage: wrong passphrase")
	// ErrNotFound: no value under that key.
	ErrNotFound = errors.New("storage: not found")
	// ErrExists: Create found a keyring in the directory.
	ErrExists = errors.New("storage: store exists")
	// ErrNotInitialized: Open found no keyring in the directory (never
	// created, or wiped).
	ErrNotInitialized = errors.New("storage: store not initialized")
	// ErrClosed: the Store was closed or wiped.
	ErrClosed = errors.New("storage: store closed")
	// ErrCorrupt: a keyring, index entry or metadata record is malformed.
	ErrCorrupt = errors.New("storage: store corrupt")
	// ErrBadOptions: Options are invalid (no passphrase, KDF out of range).
	ErrBadOptions = errors.New("storage: bad options")
	// ErrBadKey: a secret name or peer key is empty or too long.
	ErrBadKey = errors.New("storage: bad key")
	// ErrLocked: Open found the store open in another Store, in this process
	// or another one (Badger's directory lock). Nothing was changed.
	ErrLocked = errors.New("storage: store in use by another process")
)

// Options configure Create and Open. Only Passphrase is required.
type Options struct {
	// Passphrase wraps the data key through Argon2id. Required. The Store
	// keeps no reference to it.
	Passphrase []byte
	// Logger receives Badger's warnings and errors. nil = discard.
	Logger *slog.Logger
	// KDF are the Argon2id parameters Create wraps the data key with;
	// zero fields take the defaults (time 3, 64 MiB, 2 threads). Open ignores
	// it and uses the parameters stored in the keyring. Values far below the
	// defaults are for tests only.
	KDF KDFParams
	// Rand is the source of the data key, salt and nonce in Create.
	// nil = crypto/rand.
	Rand io.Reader
}

func (o *Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

const dbDirName = "db"

// Store is an open, encrypted store. Its methods are safe for concurrent use.
// Every write method returns only after its transaction is fsynced.
type Store struct {
	dir string
	log *slog.Logger
	db  *badger.DB // set before the Store is shared; closed once by Close or Wipe
	// dataKey is the unwrapped data key Badger was opened with (its options keep this slice);
	// Close and Wipe overwrite it once Badger is closed.
	dataKey []byte

	// wmu serialises the read-modify-write transactions (PutEnvelopes,
	// UseInvite) so they never fail with badger.ErrConflict.
	wmu sync.Mutex

	mu       sync.Mutex // guards closed and every inflight.Add
	closed   bool
	inflight sync.WaitGroup // calls in progress; Close waits for them

	// gate lets Collect hold writes off while it flushes the memtables (every write transaction
	// holds it shared); deleted counts the keys deleted since the last Collect.
	gate sync.RWMutex
	// collect serialises Collect: Badger's compaction pause (Flatten,
	// DropPrefix) swaps the database's compactor closer unguarded, so two
	// at once start compactors that Close never stops.
	collect sync.Mutex
	deleted atomic.Int64

	// memory: made by CreateMemory, no directory (memory.go).
	memory bool
}

// Create makes a new store in dir (created with mode 0700 if missing): a
// random 32-byte data key wrapped into dir/keyring, and an encrypted Badger
// database in dir/db. It returns ErrExists if dir already has a keyring. A
// dir/db without a keyring (left by an interrupted Wipe or Create) is
// unreadable and is removed.
func Create(dir string, opts Options) (*Store, error) {
	if len(opts.Passphrase) == 0 {
		return nil, fmt.Errorf("%w: passphrase required", ErrBadOptions)
	}
	params := opts.KDF.withDefaults()
	if err := params.validate(); err != nil {
		return nil, err
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	log := opts.logger()

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create dir: %w", err)
	}
	switch _, err := os.Lstat(filepath.Join(dir, keyringName)); {
	case err == nil:
		return nil, ErrExists
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("storage: stat keyring: %w", err)
	}
	dbPath := filepath.Join(dir, dbDirName)
	if _, err := os.Lstat(dbPath); err == nil {
		log.Warn("storage: removing database left without a keyring", "path", dbPath)
		if err := os.RemoveAll(dbPath); err != nil {
			return nil, fmt.Errorf("storage: remove stale database: %w", err)
		}
	}

	k, dataKey, err := newKeyring(rnd, opts.Passphrase, params)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(dbPath, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create database dir: %w", err)
	}
	db, err := badger.Open(badgerOptions(dbPath, dataKey, log))
	if err != nil {
		os.RemoveAll(dbPath)
		return nil, fmt.Errorf("storage: create database: %w", err)
	}
	// The keyring is written last: until it exists the store does not.
	err = db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaVersionKey, []byte{schemaVersion})
	})
	if err == nil {
		err = writeKeyring(dir, k)
	}
	if err != nil {
		db.Close()
		os.RemoveAll(dbPath)
		return nil, fmt.Errorf("storage: create: %w", err)
	}
	return &Store{dir: dir, log: log, db: db, dataKey: dataKey}, nil
}

// Open opens the store in dir. It returns ErrNotInitialized if dir has no
// keyring and ErrWrongPassphrase if the passphrase does not open it; in both
// cases nothing on disk is touched. Only one process may have a store open:
// Badger's directory lock refuses a second one, and Open returns ErrLocked.
func Open(dir string, opts Options) (*Store, error) {
	if len(opts.Passphrase) == 0 {
		return nil, fmt.Errorf("%w: passphrase required", ErrBadOptions)
	}
	k, err := readKeyring(dir)
	if err != nil {
		return nil, err
	}
	dataKey, err := k.unwrap(opts.Passphrase)
	if err != nil {
		return nil, err
	}
	dbPath := filepath.Join(dir, dbDirName)
	if _, err := os.Stat(dbPath); err != nil {
		return nil, fmt.Errorf("%w: database: %w", ErrCorrupt, err)
	}
	log := opts.logger()
	db, err := badger.Open(badgerOptions(dbPath, dataKey, log))
	if err != nil {
		if isLocked(err) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("storage: open database: %w", err)
	}
	var version []byte
	err = db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaVersionKey)
		if err != nil {
			return err
		}
		version, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		err = fmt.Errorf("%w: no schema version", ErrCorrupt)
	case err != nil:
		err = fmt.Errorf("storage: read schema version: %w", err)
	case len(version) != 1 || version[0] != schemaVersion:
		err = fmt.Errorf("%w: unsupported schema version %x", ErrCorrupt, version)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{dir: dir, log: log, db: db, dataKey: dataKey}, nil
}

// begin registers a call in progress, or returns ErrClosed. Every successful
// begin is paired with s.inflight.Done().
func (s *Store) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.inflight.Add(1)
	return nil
}

// shut marks the store closed and waits for calls in progress. It reports
// false if the store was already closed.
func (s *Store) shut() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait()
	return true
}

// WithDataKey calls fn with the unwrapped data key the open store uses (the slice Badger was opened
// with, not a copy), or does nothing if the store is closed. It exists for tests of erasure (node's
// TestLockLeavesNoKeyInHeap looks for the key in a heap dump); fn must not keep or change it.
func (s *Store) WithDataKey(fn func(key []byte)) {
	if s.begin() != nil {
		return
	}
	defer s.inflight.Done()
	fn(s.dataKey)
}

// Close waits for calls in progress, then closes the database. Later calls
// return ErrClosed; Close itself is idempotent (later Closes return nil).
// Close must not be called from an Envelopes callback.
func (s *Store) Close() error {
	if !s.shut() {
		return nil
	}
	err := s.db.Close()
	clear(s.dataKey)
	if err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// Wipe crypto-shreds the store: it waits for calls in progress, overwrites
// and deletes dir/keyring and fsyncs dir — from then on the data key exists
// nowhere and the database is unreadable ciphertext — then closes the
// database and removes dir/db. Other files in dir are left alone. Afterwards
// the Store is closed and Open(dir) returns ErrNotInitialized. If Wipe fails
// after the keyring is gone, the leftover dir/db is removed by the next Create
// or by the package-level Wipe. Wipe on a closed Store returns ErrClosed.
func (s *Store) Wipe() error {
	if !s.shut() {
		return ErrClosed
	}
	if s.memory {
		err := s.db.Close()
		clear(s.dataKey)
		return err
	}
	if err := shredKeyring(s.dir); err != nil {
		err = errors.Join(err, s.db.Close())
		clear(s.dataKey)
		return err
	}
	var errs []error
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("storage: close: %w", err))
	}
	clear(s.dataKey)
	if err := removeDB(s.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Wipe crypto-shreds the store in dir without opening it (no passphrase
// needed), in the same order as (*Store).Wipe: keyring first, then dir/db.
// The store must not be open in this process. A dir without a store is not an
// error.
func Wipe(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := shredKeyring(dir); err != nil {
		return err
	}
	return removeDB(dir)
}

func removeDB(dir string) error {
	if err := os.RemoveAll(filepath.Join(dir, dbDirName)); err != nil {
		return fmt.Errorf("storage: remove database: %w", err)
	}
	return syncDir(dir)
}

// isLocked reports whether badger.Open failed on its directory lock. Badger
// flattens the flock error into text (y.Wrapf outside its debug mode), so the
// text is all there is; TestOpenLocked notices if an upgrade rewords it.
func isLocked(err error) bool {
	return strings.Contains(err.Error(), "Cannot acquire directory lock")
}
