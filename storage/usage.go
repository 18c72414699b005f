package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"

	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Keyspaces of data accounting, the low-data outbox and local settings (prefixes in keys.go):
//
//	0x10 usage    0x10 | day u32 BE | topic 16 | uvarint len | protocol | peer -> sent u64 BE | received u64 BE
//	0x11 outbox   0x11 | time u64 BE | id 16                             -> opaque queued op
//	0x12 settings 0x12 | name                                            -> opaque value
//
// A usage key names a calendar day (yyyymmdd, so days sort in order and a month is one key range),
// the team topic the bytes are attributed to (zero for the per-protocol, per-peer counts of the
// wire), a protocol label and a peer id (raw bytes; empty for "all other peers"). Topics and peer
// ids are not names: team names are resolved by the node at display time.

// Limits of usage keys.
const (
	// MaxUsageProtocolLen bounds a usage key's protocol label, in bytes.
	MaxUsageProtocolLen = 128
	// MaxUsagePeerLen bounds a usage key's peer id, in bytes (libp2p Ed25519 ids are 38).
	MaxUsagePeerLen = 64

	usageFixedLen  = 1 + 4 + 16
	usageValueLen  = 16
	outboxKeyLen   = 1 + 8 + IDSize
	maxOutboxValue = 1 << 20
)

// UsageKey names one pair of byte counters.
type UsageKey struct {
	// Day is a calendar day written as the number yyyymmdd (20250314): the node picks the time zone.
	Day uint32
	// Topic is the team topic the bytes are attributed to, or zero for counts of the wire as a whole.
	Topic [16]byte
	// Protocol is a label of at most MaxUsageProtocolLen bytes (a libp2p protocol id, "gossip", ...).
	Protocol string
	// Peer is a raw peer id of at most MaxUsagePeerLen bytes, or "" for all other peers.
	Peer string
}

// UsageCount is a pair of byte counters.
type UsageCount struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
}

// Add returns the sum of c and d, saturating at the largest uint64 instead of wrapping.
func (c UsageCount) Add(d UsageCount) UsageCount {
	return UsageCount{Sent: satAdd(c.Sent, d.Sent), Received: satAdd(c.Received, d.Received)}
}

// Total returns Sent + Received, saturating.
func (c UsageCount) Total() uint64 { return satAdd(c.Sent, c.Received) }

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func (k UsageKey) validate() error {
	if len(k.Protocol) > MaxUsageProtocolLen || len(k.Peer) > MaxUsagePeerLen {
		return fmt.Errorf("%w: usage protocol of %d bytes or peer of %d bytes (limits %d, %d)",
			ErrBadKey, len(k.Protocol), len(k.Peer), MaxUsageProtocolLen, MaxUsagePeerLen)
	}
	return nil
}

func usageKey(k UsageKey) []byte {
	b := make([]byte, 0, usageFixedLen+2+len(k.Protocol)+len(k.Peer))
	b = append(b, prefixUsage)
	b = binary.BigEndian.AppendUint32(b, k.Day)
	b = append(b, k.Topic[:]...)
	b = binary.AppendUvarint(b, uint64(len(k.Protocol)))
	b = append(b, k.Protocol...)
	return append(b, k.Peer...)
}

// parseUsageKey decodes a usage key; ok is false if b is not a well-formed one (including a
// non-minimal length varint, so each key has exactly one encoding).
func parseUsageKey(b []byte) (k UsageKey, ok bool) {
	if len(b) < usageFixedLen+1 || b[0] != prefixUsage {
		return k, false
	}
	k.Day = binary.BigEndian.Uint32(b[1:5])
	copy(k.Topic[:], b[5:21])
	r := wire.NewReader(b[usageFixedLen:])
	k.Protocol = string(r.Bytes(MaxUsageProtocolLen))
	peer := r.Fixed(r.Len())
	if r.Err() != nil || len(peer) > MaxUsagePeerLen {
		return UsageKey{}, false
	}
	k.Peer = string(peer)
	return k, true
}

func usageValue(c UsageCount) []byte {
	b := make([]byte, 0, usageValueLen)
	b = binary.BigEndian.AppendUint64(b, c.Sent)
	return binary.BigEndian.AppendUint64(b, c.Received)
}

func parseUsageValue(v []byte) (UsageCount, error) {
	if len(v) != usageValueLen {
		return UsageCount{}, fmt.Errorf("%w: usage value is %d bytes, want %d", ErrCorrupt, len(v), usageValueLen)
	}
	return UsageCount{Sent: binary.BigEndian.Uint64(v[:8]), Received: binary.BigEndian.Uint64(v[8:])}, nil
}

// AddUsage updates usage counters in one durable transaction: it first deletes the keys in remove,
// then adds each count in add to what is stored under its key (a missing key counts as zero; sums
// saturate). The caller uses remove to fold rows together (delete a row and add its count to
// another) without a window in which the bytes are counted twice or not at all. A key breaking the
// limits of UsageKey is refused with ErrBadKey before anything is written.
func (s *Store) AddUsage(add map[UsageKey]UsageCount, remove []UsageKey) error {
	for k := range add {
		if err := k.validate(); err != nil {
			return err
		}
	}
	for _, k := range remove {
		if err := k.validate(); err != nil {
			return err
		}
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.update(func(txn *badger.Txn) error {
		for _, k := range remove {
			if err := txn.Delete(usageKey(k)); err != nil {
				return err
			}
		}
		for k, c := range add {
			key := usageKey(k)
			var old UsageCount
			switch v, err := valueOf(txn, key); {
			case err == nil:
				if old, err = parseUsageValue(v); err != nil {
					return err
				}
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
			if err := txn.Set(key, usageValue(old.Add(c))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: add usage: %w", err)
	}
	s.deleted.Add(int64(len(remove)))
	return nil
}

// Usage calls fn for every usage counter of the days from through to (inclusive), in key order
// (by day, then topic, protocol and peer), from one consistent snapshot. If fn returns an error,
// Usage stops and returns it unwrapped. A malformed key or value is ErrCorrupt.
func (s *Store) Usage(from, to uint32, fn func(UsageKey, UsageCount) error) error {
	if from > to {
		return nil
	}
	return s.scan([]byte{prefixUsage}, usageDayKey(from), func(key, v []byte) error {
		k, ok := parseUsageKey(key)
		if !ok {
			return fmt.Errorf("%w: usage key %x", ErrCorrupt, key)
		}
		if k.Day > to {
			return errStopIteration
		}
		c, err := parseUsageValue(v)
		if err != nil {
			return err
		}
		return fn(k, c)
	})
}

// DeleteUsageBefore deletes the usage counters of every day before day, durably, and returns how
// many it deleted.
func (s *Store) DeleteUsageBefore(day uint32) (int, error) {
	var keys [][]byte
	err := s.iterate([]byte{prefixUsage}, false, func(item *badger.Item) error {
		k := item.Key()
		if len(k) >= 5 && binary.BigEndian.Uint32(k[1:5]) >= day {
			return errStopIteration
		}
		keys = append(keys, item.KeyCopy(nil))
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(keys), s.deleteKeys("usage", keys)
}

func usageDayKey(day uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixUsage}, day)
}

// OutboxKey places a queued op in the outbox: its time (the op's HLC) and its id. The outbox is
// read in (Time, ID) order, the order in which this device made its ops.
type OutboxKey struct {
	Time uint64
	ID   [IDSize]byte
}

func outboxKey(k OutboxKey) []byte {
	b := make([]byte, 0, outboxKeyLen)
	b = append(b, prefixOutbox)
	b = binary.BigEndian.AppendUint64(b, k.Time)
	return append(b, k.ID[:]...)
}

// PutOutbox stores a queued op (opaque, 1 byte to 1 MiB) under k, durably, replacing any previous
// value.
func (s *Store) PutOutbox(k OutboxKey, value []byte) error {
	if len(value) == 0 || len(value) > maxOutboxValue {
		return fmt.Errorf("%w: outbox value of %d bytes not in [1, %d]", ErrBadKey, len(value), maxOutboxValue)
	}
	return s.put("outbox", outboxKey(k), value)
}

// DeleteOutbox removes a queued op, durably. Removing a missing key is not an error.
func (s *Store) DeleteOutbox(k OutboxKey) error {
	return s.deleteKeys("outbox", [][]byte{outboxKey(k)})
}

// Outbox calls fn for each queued op in (Time, ID) order, from one consistent snapshot. fn owns
// the value. If fn returns an error, Outbox stops and returns it unwrapped. fn may call other Store
// methods (DeleteOutbox among them), but not Close or Wipe.
func (s *Store) Outbox(fn func(OutboxKey, []byte) error) error {
	return s.scan([]byte{prefixOutbox}, nil, func(b, v []byte) error {
		if len(b) != outboxKeyLen {
			return fmt.Errorf("%w: outbox key %x", ErrCorrupt, b)
		}
		k := OutboxKey{Time: binary.BigEndian.Uint64(b[1:9])}
		copy(k.ID[:], b[9:])
		return fn(k, v)
	})
}

// OutboxLen returns the number of queued ops. It reads keys only.
func (s *Store) OutboxLen() (int, error) {
	n := 0
	err := s.iterate([]byte{prefixOutbox}, false, func(*badger.Item) error {
		n++
		return nil
	})
	return n, err
}

// PutSetting stores a local setting (opaque; name is 1 to 1024 bytes), durably, replacing any
// previous value.
func (s *Store) PutSetting(name string, value []byte) error {
	return s.putNamed("setting", prefixSetting, name, value)
}

// Setting returns the setting stored under name, or ErrNotFound.
func (s *Store) Setting(name string) ([]byte, error) {
	return s.getNamed(prefixSetting, name)
}

// deleteChunk is how many keys deleteKeys removes per transaction: far below Badger's transaction
// limit (about 13,000 entries with our memtable size) whatever the key length.
const deleteChunk = 1000

// deleteKeys deletes keys durably, deleteChunk keys per transaction.
func (s *Store) deleteKeys(what string, keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), deleteChunk)]
		err := s.update(func(txn *badger.Txn) error {
			for _, k := range chunk {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("storage: delete %s: %w", what, err)
		}
		s.deleted.Add(int64(len(chunk)))
		keys = keys[len(chunk):]
	}
	return nil
}
