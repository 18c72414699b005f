package relay

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// TestCollectDropsOldVersions: envelopes the relay dropped (retention, quota) are gone from its
// database files after collect, not only from its API: a thief with the relay's disk and key file
// reads every version of every key and finds none of them. The control run skips collect and finds
// them, so the scan can fail.
func TestCollectDropsOldVersions(t *testing.T) {
	for _, collect := range []bool{true, false} {
		name := "collect"
		if !collect {
			name = "control without collect"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestStore(t, dir)
			var topic envelope.Topic
			topic[0] = 7
			var dropped, kept [][]byte
			for i := range 40 {
				rec := testEnvelope(t, topic, uint64(1000+i), 600)
				if _, err := s.put([]record{rec}, func(envelope.Topic) uint64 { return 0 }); err != nil {
					t.Fatal(err)
				}
				if i < 30 {
					dropped = append(dropped, rec.Data)
				} else {
					kept = append(kept, rec.Data)
				}
			}
			d, err := s.evict(func(ts uint64, _ int64) bool { return ts >= 1030 })
			if err != nil || d.n != 30 {
				t.Fatalf("evict: dropped %d, %v; want 30", d.n, err)
			}
			if collect {
				if n, err := s.collect(); err != nil || n != 30 {
					t.Fatalf("collect: %d, %v; want 30 deletions made final", n, err)
				}
				if n, err := s.collect(); err != nil || n != 0 {
					t.Errorf("a second collect: %d, %v; want nothing to do", n, err)
				}
			}
			if err := s.db.Close(); err != nil {
				t.Fatal(err)
			}
			found := func(want [][]byte) int {
				t.Helper()
				key, err := loadKey(dir)
				if err != nil {
					t.Fatal(err)
				}
				db, err := badger.Open(storeOptions(filepath.Join(dir, dbDirName), key, nil).WithNumCompactors(0))
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				hits := 0
				err = db.View(func(txn *badger.Txn) error {
					it := txn.NewIterator(badger.IteratorOptions{AllVersions: true})
					defer it.Close()
					for it.Rewind(); it.Valid(); it.Next() {
						v, err := it.Item().ValueCopy(nil)
						if err != nil {
							return err
						}
						for _, w := range want {
							if bytes.Equal(v, w) {
								hits++
							}
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return hits
			}
			if got := found(kept); got != len(kept) {
				t.Errorf("the scan found %d of the %d kept envelopes; want all", got, len(kept))
			}
			switch got := found(dropped); {
			case collect && got != 0:
				t.Errorf("after collect, %d versions of dropped envelopes are still in the files; want 0", got)
			case !collect && got == 0:
				t.Errorf("control: without collect no dropped envelope was found; the scan cannot fail")
			}
		})
	}
}
