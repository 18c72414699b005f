package chaos

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// RelayKeyFile is the relay's key file in its data directory: the hex encryption key of its
// Badger database (node/relay.KeyFileName).
const RelayKeyFile = "relay.key"

// RelayDBs opens every Badger database under a relay's data directory with the relay's own key
// file and scans every key and value of every version with sc. It is the strong form of "the relay
// cannot read what it holds": the raw files are encrypted at rest, so a raw scan of them proves
// little, but whoever holds the box holds the key file too; what it decrypts to must still be
// sealed. Each database is copied to a scratch directory first, so the relay's files are never
// touched (and one that was not closed cleanly can still be replayed). It returns the number of
// databases and of key and value bytes scanned, and each distinct needle found as "db: needle".
func RelayDBs(dir string, sc *Scanner) (dbs int, size int64, hits []string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, RelayKeyFile))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("chaos: relay key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return 0, 0, nil, fmt.Errorf("chaos: %s is not 64 hex characters", filepath.Join(dir, RelayKeyFile))
	}
	var paths []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "MANIFEST" {
			paths = append(paths, filepath.Dir(path))
		}
		return err
	})
	if err != nil {
		return 0, 0, nil, err
	}
	if len(paths) == 0 {
		return 0, 0, nil, fmt.Errorf("chaos: no Badger database (no MANIFEST) under %s", dir)
	}
	found := map[string]bool{}
	for _, p := range paths {
		n, err := scanBadger(p, key, sc, func(needle string) {
			rel, _ := filepath.Rel(dir, p)
			found[rel+": "+needle] = true
		})
		size += n
		if err != nil {
			return dbs, size, nil, err
		}
		dbs++
	}
	for h := range found {
		hits = append(hits, h)
	}
	sort.Strings(hits)
	return dbs, size, hits, nil
}

// scanBadger opens a copy of the database at path with key and scans its keys and values.
func scanBadger(path string, key []byte, sc *Scanner, found func(string)) (int64, error) {
	tmp, err := os.MkdirTemp("", "fmc-relaydb-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	if err := copyDir(path, tmp); err != nil {
		return 0, err
	}
	db, err := badger.Open(badger.DefaultOptions(tmp).WithEncryptionKey(key).
		WithIndexCacheSize(8 << 20).WithLogger(nil).WithMetricsEnabled(false))
	if err != nil {
		return 0, fmt.Errorf("chaos: open the relay database %s with its key file: %w", path, err)
	}
	var size int64
	err = db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.AllVersions = true
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			size += int64(len(k) + len(v))
			for _, b := range [][]byte{k, v} {
				sc.Bytes(b, func(i int) { found(sc.Needle(i)) })
			}
		}
		return nil
	})
	return size, errors.Join(err, db.Close())
}

// copyDir copies the regular files of one directory (Badger keeps no subdirectories).
func copyDir(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
