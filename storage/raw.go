package storage

import (
	"fmt"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// ScanVersions reads a closed store the way a thief who holds the device and its passphrase can:
// every version of every key still in the database files, deleted or not, with its value. It opens
// the database with no compactor, so nothing is merged away while it reads. Deletion tests use it to
// show that what was deleted is gone from the files, not only from the API (TestDeletionIsFinal does
// the same inside this package). fn's arguments are valid during the call only; an error of fn stops
// the scan and is returned.
func ScanVersions(dir string, passphrase []byte, fn func(key, value []byte, deleted bool) error) error {
	k, err := readKeyring(dir)
	if err != nil {
		return err
	}
	key, err := k.unwrap(passphrase)
	if err != nil {
		return err
	}
	db, err := badger.Open(badgerOptions(filepath.Join(dir, dbDirName), key, nil).WithNumCompactors(0))
	if err != nil {
		return fmt.Errorf("storage: open for a scan: %w", err)
	}
	defer db.Close()
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := fn(item.Key(), v, item.IsDeletedOrExpired()); err != nil {
				return err
			}
		}
		return nil
	})
}
