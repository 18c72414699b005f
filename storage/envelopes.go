package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// EnvelopeKey places a sealed envelope: its topic, its time (the op's HLC) and
// its id (the op id). Within a topic, envelopes sort by (Time, ID).
type EnvelopeKey struct {
	Topic [16]byte
	Time  uint64
	ID    [IDSize]byte
}

// EnvelopeRecord is a stored envelope: its key and the marshalled envelope.
type EnvelopeRecord struct {
	Key  EnvelopeKey
	Data []byte
}

// PutEnvelopes stores recs in one transaction, so one fsync. Records whose ID
// is already stored, in any topic, or repeated earlier in recs, are skipped;
// added lists the new ones in the order of recs. A batch too big for one
// Badger transaction (about 1.2 MiB of inline data, see the package doc) is
// split into consecutive transactions; on error, added lists the records of
// the transactions that did commit, which are durable. Data may be reused
// once PutEnvelopes returns.
func (s *Store) PutEnvelopes(recs []EnvelopeRecord) (added []EnvelopeKey, err error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for len(recs) > 0 {
		n, keys, err := s.putEnvelopeTxn(recs)
		added = append(added, keys...)
		if err != nil {
			return added, fmt.Errorf("storage: put envelopes: %w", err)
		}
		recs = recs[n:]
	}
	return added, nil
}

// putEnvelopeTxn commits the longest prefix of recs that fits in one
// transaction and reports its length and the keys it added.
func (s *Store) putEnvelopeTxn(recs []EnvelopeRecord) (int, []EnvelopeKey, error) {
	limit := len(recs)
	for {
		var added []EnvelopeKey
		n := 0
		err := s.update(func(txn *badger.Txn) error {
			added = added[:0]
			for n = 0; n < limit; n++ {
				switch ok, err := putEnvelope(txn, &recs[n]); {
				case err != nil:
					return err
				case ok:
					added = append(added, recs[n].Key)
				}
			}
			return nil
		})
		if errors.Is(err, badger.ErrTxnTooBig) {
			// Records [0, n) fitted; if the commit itself was refused, one fewer.
			if n >= limit {
				n = limit - 1
			}
			if n > 0 {
				limit = n
				continue
			}
		}
		if err != nil {
			return 0, nil, err
		}
		return limit, added, nil
	}
}

// putEnvelope stores r and its id index entry in txn unless its id is stored,
// and reports whether it did. Get sees the transaction's own pending writes, so
// a repeat within one transaction is skipped too.
func putEnvelope(txn *badger.Txn, r *EnvelopeRecord) (bool, error) {
	ik := idKey(prefixEnvID, r.Key.ID[:])
	switch _, err := txn.Get(ik); {
	case err == nil:
		return false, nil
	case !errors.Is(err, badger.ErrKeyNotFound):
		return false, err
	}
	if err := txn.Set(envelopeKey(r.Key), r.Data); err != nil {
		return false, err
	}
	if err := txn.Set(ik, envIndexValue(r.Key)); err != nil {
		return false, err
	}
	return true, nil
}

// HasEnvelope reports whether an envelope with this id is stored, in any topic.
func (s *Store) HasEnvelope(id [IDSize]byte) (bool, error) {
	_, err := s.get(idKey(prefixEnvID, id[:]))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Envelope returns the stored envelope with this id, or ErrNotFound.
func (s *Store) Envelope(id [IDSize]byte) (EnvelopeRecord, error) {
	if err := s.begin(); err != nil {
		return EnvelopeRecord{}, err
	}
	defer s.inflight.Done()
	var rec EnvelopeRecord
	err := s.db.View(func(txn *badger.Txn) error {
		v, err := valueOf(txn, idKey(prefixEnvID, id[:]))
		if err != nil {
			return err
		}
		if rec.Key, err = parseEnvIndexValue(id, v); err != nil {
			return err
		}
		rec.Data, err = valueOf(txn, envelopeKey(rec.Key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: index entry without envelope", ErrCorrupt)
		}
		return err
	})
	if err != nil {
		return EnvelopeRecord{}, readError("envelope", err)
	}
	return rec, nil
}

// EnvelopeKeys returns a topic's keys sorted by (Time, ID) ascending. It reads
// keys only, not envelope data.
func (s *Store) EnvelopeKeys(topic [16]byte) ([]EnvelopeKey, error) {
	var keys []EnvelopeKey
	err := s.iterate(topicPrefix(topic), false, func(item *badger.Item) error {
		k, ok := parseEnvelopeKey(item.Key())
		if !ok {
			return fmt.Errorf("%w: envelope key %x", ErrCorrupt, item.Key())
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// Envelopes calls fn for each record of topic in (Time, ID) order, from one
// consistent snapshot. fn owns the record it is given. If fn returns an error,
// Envelopes stops and returns that error unwrapped. fn may call other Store
// methods, but not Close or Wipe (they wait for Envelopes to return).
func (s *Store) Envelopes(topic [16]byte, fn func(EnvelopeRecord) error) error {
	return s.scan(topicPrefix(topic), nil, func(key, data []byte) error {
		k, ok := parseEnvelopeKey(key)
		if !ok {
			return fmt.Errorf("%w: envelope key %x", ErrCorrupt, key)
		}
		return fn(EnvelopeRecord{Key: k, Data: data})
	})
}
