package storage

import (
	"crypto/rand"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
)

// CreateMemory makes a store that lives in memory only, for emulations
// and tests that run many devices (simulations/emul): Badger in its
// in-memory mode, encrypted as on disk under a fresh random data key that
// is kept nowhere but in the Store. No passphrase is needed (no keyring
// is written) and nothing reaches the disk; Close drops everything, and
// Wipe is Close. opts.Passphrase and opts.KDF are ignored; opts.Rand, if
// set, is the source of the data key.
func CreateMemory(opts Options) (*Store, error) {
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	dataKey := make([]byte, dataKeySize)
	if _, err := io.ReadFull(rnd, dataKey); err != nil {
		return nil, fmt.Errorf("storage: read random: %w", err)
	}
	log := opts.logger()
	db, err := badger.Open(badgerOptions("", dataKey, log).WithInMemory(true))
	if err != nil {
		return nil, fmt.Errorf("storage: create database in memory: %w", err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(metaVersionKey, []byte{schemaVersion}) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: create: %w", err)
	}
	return &Store{log: log, db: db, dataKey: dataKey, memory: true}, nil
}
