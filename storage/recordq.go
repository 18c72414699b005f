package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The record gateway's filing queue (keyspace 0x13): one entry per message of a team waiting to be
// filed to the health record, keyed by team and op id. The value is opaque here (the gateway's
// record.Entry: which message, how its last attempt went, when to try again; no content).

// maxRecordQValue bounds a queue entry's value.
const maxRecordQValue = 1024

// RecordQKey names a queue entry.
type RecordQKey struct {
	Team [32]byte
	ID   [IDSize]byte
}

func recordQKey(k RecordQKey) []byte {
	b := make([]byte, 0, 1+32+IDSize)
	b = append(b, prefixRecordQ)
	b = append(b, k.Team[:]...)
	return append(b, k.ID[:]...)
}

// RecordQOp is one change of the queue: Value nil deletes the entry.
type RecordQOp struct {
	Key   RecordQKey
	Value []byte
}

// UpdateRecordQ applies ops to the queue durably, in one transaction per 1,000 ops. A value longer
// than 1 KiB is ErrBadKey, and nothing is written.
func (s *Store) UpdateRecordQ(ops []RecordQOp) error {
	for _, o := range ops {
		if len(o.Value) > maxRecordQValue {
			return fmt.Errorf("%w: record queue value of %d bytes", ErrBadKey, len(o.Value))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	deleted := 0
	for len(ops) > 0 {
		chunk := ops[:min(len(ops), deleteChunk)]
		err := s.update(func(txn *badger.Txn) error {
			for _, o := range chunk {
				var err error
				if o.Value == nil {
					err = txn.Delete(recordQKey(o.Key))
					deleted++
				} else {
					err = txn.Set(recordQKey(o.Key), o.Value)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("storage: update record queue: %w", err)
		}
		ops = ops[len(chunk):]
	}
	s.deleted.Add(int64(deleted))
	return nil
}

// RecordQ calls fn for each queue entry, by team and op id, from one consistent snapshot. fn owns
// the value; an error of fn stops the scan and is returned unwrapped.
func (s *Store) RecordQ(fn func(RecordQKey, []byte) error) error {
	return s.scan([]byte{prefixRecordQ}, nil, func(b, v []byte) error {
		if len(b) != 1+32+IDSize {
			return fmt.Errorf("%w: record queue key %x", ErrCorrupt, b)
		}
		var k RecordQKey
		copy(k.Team[:], b[1:33])
		copy(k.ID[:], b[33:])
		return fn(k, v)
	})
}
