package chaos

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestRelayDBs writes a needle into an encrypted Badger database laid out like a relay's data
// directory and checks that the raw files do not show it and RelayDBs, with the key file, does.
func TestRelayDBs(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, RelayKeyFile), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "relay-db")).
		WithEncryptionKey(key).WithIndexCacheSize(1 << 20).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	const needle = "MRN-relaydb-0001"
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("k1"), []byte("sealed bytes, nothing to see")); err != nil {
			return err
		}
		return txn.Set([]byte("k2"), []byte("xx"+needle+"yy"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	sc, err := NewScanner([]string{needle, "Chaos Ward relaydb"})
	if err != nil {
		t.Fatal(err)
	}
	if raw, _, _, err := sc.Files(dir); err != nil || len(raw) != 0 {
		t.Fatalf("raw scan of the encrypted files: %v, %v; want no hits (the test needs encryption at rest)", raw, err)
	}
	dbs, size, hits, err := RelayDBs(dir, sc)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"relay-db: " + needle}; dbs != 1 || size == 0 || !slices.Equal(hits, want) {
		t.Errorf("RelayDBs = %d dbs, %d bytes, %q; want 1 db, some bytes, %q", dbs, size, hits, want)
	}

	os.WriteFile(filepath.Join(dir, RelayKeyFile), []byte(hex.EncodeToString(make([]byte, 32))), 0o600)
	if _, _, _, err := RelayDBs(dir, sc); err == nil {
		t.Error("RelayDBs with the wrong key: no error")
	}
	os.Remove(filepath.Join(dir, RelayKeyFile))
	if _, _, _, err := RelayDBs(dir, sc); err == nil {
		t.Error("RelayDBs with no key file: no error")
	}
}
