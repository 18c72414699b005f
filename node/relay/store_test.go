package relay

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// testEnvelope returns a structurally valid envelope (it parses; nothing opens it) of topic at time ts.
func testEnvelope(t testing.TB, topic envelope.Topic, ts uint64, size int) record {
	t.Helper()
	rec, err := randomEnvelope(rand.Reader, topic, ts, size)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// randomEnvelope returns a structurally valid envelope of topic at time ts, of size bytes (at least
// envelope.HeaderSize+96), whose id and body are read from rnd.
func randomEnvelope(rnd io.Reader, topic envelope.Topic, ts uint64, size int) (record, error) {
	// The chain form (form byte 1) with a random body of at least its fixed overhead: it parses whatever
	// the envelope version, and nothing opens it.
	e := &envelope.Envelope{Topic: topic, Epoch: 1, Time: crdt.HLC(ts)}
	e.Ciphertext = make([]byte, max(size-e.HeaderLen()+1, 97)) // the form byte is in the header on the wire
	if _, err := io.ReadFull(rnd, e.ID[:]); err != nil {
		return record{}, err
	}
	if _, err := io.ReadFull(rnd, e.Ciphertext); err != nil {
		return record{}, err
	}
	e.Ciphertext[0] = 1
	raw := e.Marshal()
	if _, err := envelope.Unmarshal(topic, raw); err != nil {
		return record{}, fmt.Errorf("test envelope does not parse: %w", err)
	}
	return record{Topic: topic, Time: ts, ID: e.ID, Data: raw}, nil
}

func openTestStore(t *testing.T, dir string) *store {
	t.Helper()
	key, err := loadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStore(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStorePutItems(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	ta, tb := envelope.Topic{1}, envelope.Topic{2}
	recs := []record{testEnvelope(t, ta, 300, 200), testEnvelope(t, ta, 100, 200), testEnvelope(t, tb, 200, 300), testEnvelope(t, ta, 50, 200)}
	added, err := s.put(append(recs, recs[0]), func(envelope.Topic) uint64 { return 100 }) // a duplicate, and one below the horizon
	if err != nil || len(added) != 3 {
		t.Fatalf("put: added %d, %v; want 3", len(added), err)
	}
	if added, err := s.put(recs, func(envelope.Topic) uint64 { return 0 }); err != nil || len(added) != 1 || added[0].ID != recs[3].ID {
		t.Fatalf("put again: added %d, %v; want only the one that was below the horizon", len(added), err)
	}
	items, err := s.items(ta)
	if err != nil || len(items) != 3 || items[0].Time != 50 || items[1].Time != 100 || items[2].Time != 300 {
		t.Fatalf("items: %v, %v; want times 50, 100, 300", items, err)
	}
	got, err := s.envelope(ta, recs[1].ID)
	if err != nil || !bytes.Equal(got, recs[1].Data) {
		t.Fatalf("envelope: %v", err)
	}
	if _, err := s.envelope(tb, recs[1].ID); err == nil {
		t.Errorf("envelope of another topic was returned")
	}
	count, bytesN, per := s.totals()
	if count != 4 || per[ta].n != 3 || per[tb].n != 1 || bytesN != 200*3+300+4*EntryOverhead {
		t.Errorf("totals: %d envelopes, %d bytes, %v", count, bytesN, per)
	}
	s.close()
	s = openTestStore(t, dir)
	defer s.close()
	if c2, b2, _ := s.totals(); c2 != count || b2 != bytesN {
		t.Errorf("after reopening: %d envelopes, %d bytes; want %d, %d", c2, b2, count, bytesN)
	}
}

func TestStoreEvict(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	topic := envelope.Topic{7}
	var recs []record
	for i := range 10 {
		recs = append(recs, testEnvelope(t, topic, uint64(1000+i), 1000))
	}
	if _, err := s.put(recs, func(envelope.Topic) uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	quota := int64(6 * (1000 + EntryOverhead))
	d, err := s.evict(func(_ uint64, b int64) bool { return b <= quota })
	if err != nil || d.n != 4 || d.newest != 1003 {
		t.Fatalf("quota eviction dropped %+v, %v; want the 4 oldest (newest 1003)", d, err)
	}
	d, err = s.evict(func(ts uint64, _ int64) bool { return ts >= 1006 })
	if err != nil || d.n != 2 {
		t.Fatalf("retention eviction dropped %+v, %v; want 2", d, err)
	}
	items, _ := s.items(topic)
	if len(items) != 4 || items[0].Time != 1006 {
		t.Fatalf("left %v; want times 1006..1009", items)
	}
	if has, _ := s.has(recs[0].ID); has {
		t.Errorf("a dropped envelope is still indexed")
	}
	// A topic's own eviction, oldest first, leaves other topics alone.
	other := envelope.Topic{0xee}
	if _, err := s.put([]record{{Topic: other, Time: 1001, ID: crdt.OpID{0xee}, Data: []byte("other")}}, func(envelope.Topic) uint64 { return 0 }); err != nil {
		t.Fatal(err)
	}
	if o, ok := s.oldest(topic); !ok || o != 1006 {
		t.Fatalf("oldest of the topic: %d, %v; want 1006", o, ok)
	}
	keep := s.topicBytes(topic) - 2*(int64(len(recs[6].Data))+EntryOverhead)
	d, err = s.evictTopic(topic, func(_ uint64, b int64) bool { return b <= keep })
	if err != nil || d.n != 2 || d.newest != 1007 {
		t.Fatalf("topic eviction dropped %+v, %v; want the topic's 2 oldest", d, err)
	}
	if has, _ := s.has(crdt.OpID{0xee}); !has {
		t.Errorf("a topic's eviction dropped another topic's older envelope")
	}
	s.close()
	s = openTestStore(t, dir)
	defer s.close()
	if c, _, _ := s.totals(); c != 3 {
		t.Errorf("count after reopening: %d; want 3", c)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	k2, err := loadKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v; want the same key", err)
	}
	s, err := openStore(dir, k1, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.close()

	// (Another key does not open the database: openStore says so, but Badger leaks goroutines on that
	// failed open, which goleak would report, so it is not exercised here.)
	// A key file others can read is refused.
	os.Chmod(filepath.Join(dir, KeyFileName), 0o644)
	if _, err := loadKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("key file mode 0644: %v; want a refusal", err)
	}
	// A missing key file next to a database is an error, not a new key.
	os.Remove(filepath.Join(dir, KeyFileName))
	if _, err := loadKey(dir); err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Errorf("missing key file: %v; want an error", err)
	}
	os.WriteFile(filepath.Join(dir, KeyFileName), []byte("not hex\n"), 0o600)
	if _, err := loadKey(dir); err == nil || !strings.Contains(err.Error(), "not a relay key") {
		t.Errorf("garbage key file: %v; want an error", err)
	}
}

// TestStoreOptions holds the relay's Badger tuning: storage's, with larger caches.
func TestStoreOptions(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	got := storeOptions("db", key, nil)
	want := storage.BadgerOptions("db", key, nil)
	if got.BlockCacheSize != 8<<20 || got.IndexCacheSize != 8<<20 {
		t.Errorf("caches: block %d, index %d; want 8 MiB each", got.BlockCacheSize, got.IndexCacheSize)
	}
	if !got.SyncWrites || !bytes.Equal(got.EncryptionKey, key) {
		t.Errorf("sync writes %v, encryption key set %v; want both", got.SyncWrites, bytes.Equal(got.EncryptionKey, key))
	}
	got.BlockCacheSize, got.IndexCacheSize = want.BlockCacheSize, want.IndexCacheSize
	got.Logger, want.Logger = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("options differ from storage.BadgerOptions beyond the caches:\n got %+v\nwant %+v", got, want)
	}
}
