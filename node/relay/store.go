package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// The relay's store: Badger with encryption at rest (AES-256 under the 32 random bytes of DIR/relay.key),
// in DIR/relay-db. It is not a storage.Store: a relay has no passphrase and no device identity, and it
// needs what a device store does not offer (dropping envelopes by age for retention and the quota, a
// global time index, byte accounting).
//
// Keyspaces (the first byte of every key):
//
//	0x01 meta      0x01 | name                        -> value ("version" = 4, "identity")
//	0x02 envelope  0x02 | topic 16 | time u64 | id 16 -> marshalled envelope
//	0x03 by id     0x03 | id 16                       -> topic 16 | time u64 | size u32
//	0x04 by time   0x04 | time u64 | id 16            -> topic 16 | size u32
//	0x05 topic     0x05 | topic 16                    -> relay key 32 | admitted unix seconds u64 | admin 32
//	0x06 device    0x06 | topic 16 | peer id          -> last enrolled unix seconds u64
//	0x07 roster    0x07 | topic 16                    -> the topic's roster (relayproto.Roster.Marshal)
//
// Integers are big-endian, so a prefix scan of 0x02|topic walks a topic in (time, id) order, which is
// what reconciliation reads and what a topic's quota drops first, and a scan of 0x04 walks every
// envelope oldest first, which is what retention and the relay's total quota drop.
const (
	pMeta     byte = 0x01
	pEnvelope byte = 0x02
	pByID     byte = 0x03
	pByTime   byte = 0x04
	pTopic    byte = 0x05
	pDevice   byte = 0x06
	pRoster   byte = 0x07

	storeVersion = 8 // 8: envelopes of format version 9 (the form and a variable time in the header; compact messages)

	// idSize is the length of an envelope id (a crdt.OpID), and
	// envKeyLen and timeKeyLen those of the keys of 0x02 and 0x04.
	idSize     = len(crdt.OpID{})
	envKeyLen  = 1 + 16 + 8 + idSize
	timeKeyLen = 1 + 8 + idSize

	dbDirName = "relay-db"
	// EntryOverhead is what the quota counts for one stored envelope on top of its own bytes: its three
	// keys and index values.
	EntryOverhead = 192
	// evictBatch is the most envelopes dropped in one transaction.
	evictBatch = 1000
	// putChunk is the most envelope bytes written in one transaction.
	putChunk = 512 << 10
)

// Badger tuning: storage's phone tuning (storage.BadgerOptions, see storage/doc.go), which also suits a
// Raspberry Pi class box, except for the caches: 8 MiB each where a device has 4 MiB.
const (
	blockCacheSize = 8 << 20
	indexCacheSize = 8 << 20
)

type topicCount struct{ n, bytes int64 }

// store is safe for concurrent use.
type store struct {
	dir string
	db  *badger.DB

	wmu sync.Mutex // serialises writes, so read-modify-write transactions never conflict
	// pause serialises Badger's compaction pauses (DropPrefix, Flatten): each swaps the database's
	// compactor closer unguarded, so two at once start compactors that Close never stops.
	pause sync.Mutex

	// dropped counts the envelopes deleted since the last collect: their old versions stay in the
	// database files until then.
	dropped atomic.Int64

	mu     sync.Mutex // guards the fields below
	count  int64
	bytes  int64 // envelope bytes plus EntryOverhead each, and chunk bytes plus chunkOverhead each
	topics map[envelope.Topic]*topicCount
	owners map[crdt.OpID]int64 // envelope id -> its chunks' bytes as counted (chunks.go)
}

// record is an envelope to store.
type record struct {
	Topic envelope.Topic
	Time  uint64
	ID    crdt.OpID
	Data  []byte
}

// storeOptions returns the Badger options of the relay's database in path, encrypted under key.
func storeOptions(path string, key []byte, logger *slog.Logger) badger.Options {
	return storage.BadgerOptions(path, key, logger).
		WithIndexCacheSize(indexCacheSize).
		WithBlockCacheSize(blockCacheSize)
}

func openStore(dir string, key []byte, logger *slog.Logger) (*store, error) {
	path := filepath.Join(dir, dbDirName)
	db, err := badger.Open(storeOptions(path, key, logger))
	if err != nil {
		if strings.Contains(err.Error(), "Encryption key mismatch") {
			return nil, fmt.Errorf("relay: the key file does not open the relay's database in %s", path)
		}
		return nil, fmt.Errorf("relay: open database: %w", err)
	}
	s := &store{dir: path, db: db, topics: make(map[envelope.Topic]*topicCount)}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *store) init() error {
	v, err := s.meta("version")
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		if err := s.putMeta("version", []byte{storeVersion}); err != nil {
			return err
		}
	case err != nil:
		return err
	case len(v) != 1 || v[0] != storeVersion:
		return fmt.Errorf("relay: unsupported database version %x", v)
	}
	if err := s.scan([]byte{pByID}, func(k, v []byte) error {
		if len(v) != 16+8+4 {
			return fmt.Errorf("relay: corrupt index entry %x", k)
		}
		s.count1(envelope.Topic(v[:16]), int64(binary.BigEndian.Uint32(v[24:])), 1)
		return nil
	}); err != nil {
		return err
	}
	return s.countChunks()
}

// count1 adds (sign > 0) or removes one envelope of size n to the counters; the caller holds no lock.
func (s *store) count1(t envelope.Topic, n int64, sign int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.topics[t]
	if c == nil {
		c = &topicCount{}
		s.topics[t] = c
	}
	c.n += sign
	c.bytes += sign * n
	s.count += sign
	s.bytes += sign * (n + EntryOverhead)
}

func (s *store) close() error { return s.db.Close() }

func (s *store) meta(name string) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(append([]byte{pMeta}, name...))
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	return v, err
}

func (s *store) putMeta(name string, v []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(append([]byte{pMeta}, name...), v) })
}

func envKey(t envelope.Topic, time uint64, id crdt.OpID) []byte {
	b := make([]byte, 0, envKeyLen)
	b = append(b, pEnvelope)
	b = append(b, t[:]...)
	b = binary.BigEndian.AppendUint64(b, time)
	return append(b, id[:]...)
}

func idKey(id crdt.OpID) []byte { return append([]byte{pByID}, id[:]...) }

func timeKey(time uint64, id crdt.OpID) []byte {
	b := make([]byte, 0, timeKeyLen)
	b = append(b, pByTime)
	b = binary.BigEndian.AppendUint64(b, time)
	return append(b, id[:]...)
}

// put stores the records whose id is not stored yet and whose time is not below their topic's
// horizon, durably, and returns the ones it added. Records are checked by the caller (envelope.Unmarshal, topic). It writes
// chunks of at most putChunk bytes per transaction, well inside Badger's transaction limit.
func (s *store) put(recs []record, horizon func(envelope.Topic) uint64) (added []record, err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	seen := make(map[crdt.OpID]bool, len(recs))
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+len(recs[n].Data) <= putChunk) && n < 1000 {
			size += len(recs[n].Data)
			n++
		}
		chunk := recs[:n]
		recs = recs[n:]
		var stored []record
		err := s.db.Update(func(txn *badger.Txn) error {
			stored = stored[:0]
			for _, r := range chunk {
				if r.Time < horizon(r.Topic) || seen[r.ID] {
					continue
				}
				switch _, err := txn.Get(idKey(r.ID)); {
				case err == nil:
					continue
				case !errors.Is(err, badger.ErrKeyNotFound):
					return err
				}
				idx := make([]byte, 0, 28)
				idx = append(idx, r.Topic[:]...)
				idx = binary.BigEndian.AppendUint64(idx, r.Time)
				idx = binary.BigEndian.AppendUint32(idx, uint32(len(r.Data)))
				byTime := append(append(make([]byte, 0, 20), r.Topic[:]...), idx[24:]...)
				if err := txn.Set(envKey(r.Topic, r.Time, r.ID), r.Data); err != nil {
					return err
				}
				if err := txn.Set(idKey(r.ID), idx); err != nil {
					return err
				}
				if err := txn.Set(timeKey(r.Time, r.ID), byTime); err != nil {
					return err
				}
				stored = append(stored, r)
			}
			return nil
		})
		if err != nil {
			return added, fmt.Errorf("relay: store envelopes: %w", err)
		}
		for _, r := range stored {
			seen[r.ID] = true
			s.count1(r.Topic, int64(len(r.Data)), 1)
		}
		added = append(added, stored...)
	}
	return added, nil
}

// has reports whether an envelope with this id is stored.
func (s *store) has(id crdt.OpID) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(idKey(id))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// items returns a topic's envelopes as reconciliation items, sorted by (time, id).
func (s *store) items(t envelope.Topic) ([]recon.Item, error) {
	var out []recon.Item
	prefix := append([]byte{pEnvelope}, t[:]...)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != envKeyLen {
				return fmt.Errorf("relay: corrupt envelope key %x", k)
			}
			var item recon.Item
			item.Time = binary.BigEndian.Uint64(k[17:25])
			copy(item.ID[:], k[25:])
			out = append(out, item)
			if len(out) > recon.MaxItems {
				return recon.ErrTooManyItems
			}
		}
		return nil
	})
	return out, err
}

// envelope returns the stored envelope with this id if it belongs to topic t.
func (s *store) envelope(t envelope.Topic, id crdt.OpID) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(idKey(id))
		if err != nil {
			return err
		}
		idx, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(idx) != 28 || envelope.Topic(idx[:16]) != t {
			return badger.ErrKeyNotFound
		}
		it, err = txn.Get(envKey(t, binary.BigEndian.Uint64(idx[16:24]), id))
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("relay: envelope %x is not stored", id[:4])
	}
	return v, err
}

// dropped is what one eviction removed.
type dropped struct {
	n, bytes int64
	newest   uint64 // the time of the newest envelope dropped
}

// victim is a stored envelope to drop.
type victim struct {
	time  uint64
	id    crdt.OpID
	topic envelope.Topic
	size  int64
}

// evict drops envelopes of every topic oldest first while keep says so: keep is called with the time
// of the oldest envelope left and the store's current byte count, and returns false to drop it.
func (s *store) evict(keep func(time uint64, bytes int64) bool) (dropped, error) {
	return s.evictScan([]byte{pByTime}, func() int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.bytes
	}, keep, func(k, v []byte) (victim, error) {
		if len(k) != timeKeyLen || len(v) != 20 {
			return victim{}, fmt.Errorf("relay: corrupt time entry %x", k)
		}
		vi := victim{time: binary.BigEndian.Uint64(k[1:9]), topic: envelope.Topic(v[:16]), size: int64(binary.BigEndian.Uint32(v[16:]))}
		copy(vi.id[:], k[9:])
		return vi, nil
	})
}

// evictTopic drops envelopes of topic t oldest first while keep says so: keep is called with the time
// of t's oldest envelope left and the bytes t counts (see topicBytes).
func (s *store) evictTopic(t envelope.Topic, keep func(time uint64, bytes int64) bool) (dropped, error) {
	prefix := append([]byte{pEnvelope}, t[:]...)
	return s.evictScan(prefix, func() int64 { return s.topicBytes(t) }, keep, func(k, v []byte) (victim, error) {
		if len(k) != envKeyLen {
			return victim{}, fmt.Errorf("relay: corrupt envelope key %x", k)
		}
		vi := victim{time: binary.BigEndian.Uint64(k[17:25]), topic: t, size: int64(len(v))}
		copy(vi.id[:], k[25:])
		return vi, nil
	})
}

// evictScan walks the keys under prefix in order, in batches, and drops envelopes while keep says so.
func (s *store) evictScan(prefix []byte, bytesNow func() int64, keep func(time uint64, bytes int64) bool, parse func(k, v []byte) (victim, error)) (dropped, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var d dropped
	for {
		var vs []victim
		bytes := bytesNow()
		err := s.db.View(func(txn *badger.Txn) error {
			o := badger.DefaultIteratorOptions
			o.Prefix = prefix
			it := txn.NewIterator(o)
			defer it.Close()
			for it.Rewind(); it.Valid() && len(vs) < evictBatch; it.Next() {
				k := it.Item().Key()
				val, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				v, err := parse(k, val)
				if err != nil {
					return err
				}
				if keep(v.time, bytes) {
					break
				}
				bytes -= v.size + EntryOverhead + s.ownerChunkBytes(v.id)
				vs = append(vs, v)
			}
			return nil
		})
		if err != nil {
			return d, err
		}
		if len(vs) == 0 {
			return d, nil
		}
		chunkBytes := make([]int64, len(vs))
		err = s.db.Update(func(txn *badger.Txn) error {
			for i, v := range vs {
				for _, k := range [][]byte{envKey(v.topic, v.time, v.id), idKey(v.id), timeKey(v.time, v.id)} {
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
				n, err := dropChunksTxn(txn, v.id)
				if err != nil {
					return err
				}
				chunkBytes[i] = n
			}
			return nil
		})
		if err != nil {
			return d, fmt.Errorf("relay: drop envelopes: %w", err)
		}
		s.dropped.Add(int64(len(vs)))
		for i, v := range vs {
			if chunkBytes[i] > 0 {
				s.dropChunkBytes(v.topic, v.id, chunkBytes[i])
			}
			s.count1(v.topic, v.size, -1)
			d.n++
			d.bytes += v.size
			d.newest = max(d.newest, v.time)
		}
	}
}

// topicBytes is what topic t counts against its share of the quota: its envelope bytes plus
// EntryOverhead each.
func (s *store) topicBytes(t envelope.Topic) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.topics[t]
	if c == nil {
		return 0
	}
	return c.bytes + c.n*EntryOverhead
}

// oldest returns the time of topic t's oldest stored envelope.
func (s *store) oldest(t envelope.Topic) (uint64, bool) {
	var time uint64
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = append([]byte{pEnvelope}, t[:]...)
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		it.Rewind()
		if it.Valid() {
			if k := it.Item().Key(); len(k) == envKeyLen {
				time, found = binary.BigEndian.Uint64(k[17:25]), true
			}
		}
		return nil
	})
	return time, found && err == nil
}

// totals returns the envelope count, the bytes the quota counts, and per-topic counts.
func (s *store) totals() (count, bytes int64, topics map[envelope.Topic]topicCount) {
	s.mu.Lock()
	defer s.mu.Unlock()
	topics = make(map[envelope.Topic]topicCount, len(s.topics))
	for t, c := range s.topics {
		if c.n > 0 {
			topics[t] = *c
		}
	}
	return s.count, s.bytes, topics
}

// diskUsage sums the space the database's files take on disk: allocated blocks where the system says
// (Badger's value log is a sparse, mostly empty file), else their sizes.
func (s *store) diskUsage() int64 {
	var n int64
	_ = filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		n += allocated(info)
		return nil
	})
	return n
}

// carried topics

func (s *store) addTopic(c relayproto.Code, now int64) (added bool, err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	key := append([]byte{pTopic}, c.Topic[:]...)
	err = s.db.Update(func(txn *badger.Txn) error {
		switch it, err := txn.Get(key); {
		case err == nil:
			old, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if t, ok := parseTopicEntry(old); ok && t.key.Equal(c.Key) && t.admin == c.Admin {
				return nil
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		added = true
		// A new code starts the roster over from its admin (the operator's way out of a roster an
		// admin who was since removed signed).
		if err := txn.Delete(append([]byte{pRoster}, c.Topic[:]...)); err != nil {
			return err
		}
		kb := c.Key.Bytes()
		v := append(append([]byte(nil), kb[:]...), binary.BigEndian.AppendUint64(nil, uint64(now))...)
		return txn.Set(key, append(v, c.Admin[:]...))
	})
	return added, err
}

// topicEntry is what the store keeps of a carried topic.
type topicEntry struct {
	key    relayproto.Key
	admin  identity.DeviceID
	roster *relayproto.Roster // nil until an admin sent one
}

func parseTopicEntry(v []byte) (topicEntry, bool) {
	var t topicEntry
	if len(v) != relayproto.KeySize+8+32 {
		return t, false
	}
	var kb [relayproto.KeySize]byte
	copy(kb[:], v)
	t.key = relayproto.KeyFromBytes(kb)
	copy(t.admin[:], v[relayproto.KeySize+8:])
	return t, true
}

// dropTopic forgets a carried topic: its entry, roster, enrolled devices and envelopes.
func (s *store) dropTopic(t envelope.Topic) error {
	s.pause.Lock()
	defer s.pause.Unlock()
	for _, p := range [][]byte{{pTopic}, {pRoster}, {pDevice}} {
		k := append(p, t[:]...)
		if err := s.db.DropPrefix(k); err != nil {
			return err
		}
	}
	s.dropped.Add(1)
	_, err := s.evictTopic(t, func(uint64, int64) bool { return false })
	return err
}

func (s *store) carried() (map[envelope.Topic]topicEntry, error) {
	out := make(map[envelope.Topic]topicEntry)
	err := s.scan([]byte{pTopic}, func(k, v []byte) error {
		t, ok := parseTopicEntry(v)
		if len(k) != 17 || !ok {
			return fmt.Errorf("relay: corrupt topic entry %x", k)
		}
		out[envelope.Topic(k[1:])] = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.scan([]byte{pRoster}, func(k, v []byte) error {
		ro, err := relayproto.ParseRoster(v)
		if len(k) != 17 || err != nil || ro.Topic != envelope.Topic(k[1:]) {
			return fmt.Errorf("relay: corrupt roster entry %x: %v", k, err)
		}
		if t, ok := out[ro.Topic]; ok {
			t.roster = ro
			out[ro.Topic] = t
		}
		return nil
	})
	return out, err
}

// putRoster keeps a topic's roster.
func (s *store) putRoster(ro *relayproto.Roster) error {
	k := append([]byte{pRoster}, ro.Topic[:]...)
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(k, ro.Marshal()) })
}

// enrolled devices

func (s *store) putDevice(t envelope.Topic, p peer.ID, now int64) error {
	k := append(append([]byte{pDevice}, t[:]...), p...)
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(k, binary.BigEndian.AppendUint64(nil, uint64(now)))
	})
}

// devices returns the devices ever enrolled, by topic.
func (s *store) devices() (map[envelope.Topic][]peer.ID, error) {
	out := make(map[envelope.Topic][]peer.ID)
	err := s.scan([]byte{pDevice}, func(k, _ []byte) error {
		if len(k) <= 17 {
			return fmt.Errorf("relay: corrupt device entry %x", k)
		}
		id, err := peer.IDFromBytes(k[17:])
		if err != nil {
			return fmt.Errorf("relay: corrupt device entry: %w", err)
		}
		t := envelope.Topic(k[1:17])
		out[t] = append(out[t], id)
		return nil
	})
	return out, err
}

func (s *store) scan(prefix []byte, fn func(k, v []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := fn(it.Item().KeyCopy(nil), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// collectMarker is the key collect writes and drops to flush the memtable.
var collectMarker = []byte{pMeta, 'c', 'o', 'l', 'l', 'e', 'c', 't'}

// collect makes the deletions since the last collect final, as a device's store does
// (storage.Store.Collect): it flushes the memtable, then compacts the tables and rewrites the value
// log (storage.CompactDeleted), so no old version of a dropped envelope stays in the database files.
// It does nothing when nothing was dropped. It returns the number of deletions it made final.
func (s *store) collect() (int64, error) {
	n := s.dropped.Load()
	if n == 0 {
		return 0, nil
	}
	s.pause.Lock()
	defer s.pause.Unlock()
	s.wmu.Lock()
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(collectMarker, nil) })
	if err == nil {
		err = s.db.DropPrefix(collectMarker)
	}
	s.wmu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("relay: collect: flush: %w", err)
	}
	if _, err := storage.CompactDeleted(s.db); err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	s.dropped.Add(-n)
	return n, nil
}
