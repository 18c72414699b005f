package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The keyspace of opened ops (prefixOp, in keys.go):
//
//	0x20 | team id 32 | time u64 BE | id 16 -> marshalled op
//
// A device keeps the ops it has opened, so that its view of a team survives
// the destruction of old epoch keys (forward secrecy): envelopes stay sealed
// for relaying, the team state is rebuilt from the ops.

const opKeyLen = 1 + 32 + 8 + IDSize

// OpRecord is a stored op: its team, time (HLC), id and marshalled bytes.
type OpRecord struct {
	Team [32]byte
	Time uint64
	ID   [IDSize]byte
	Data []byte
}

func opKey(team [32]byte, t uint64, id [IDSize]byte) []byte {
	b := make([]byte, 0, opKeyLen)
	b = append(b, prefixOp)
	b = append(b, team[:]...)
	b = binary.BigEndian.AppendUint64(b, t)
	return append(b, id[:]...)
}

// Batch is a set of writes that Commit makes atomically and durably: sealed
// envelopes (skipped when their id is stored), opened ops, and secrets
// (replaced). The node uses it so that a message, the op it opened to and the
// advanced key state that opened it reach the disk together or not at all.
type Batch struct {
	Envelopes []EnvelopeRecord
	Ops       []OpRecord
	Secrets   map[string][]byte
}

// ErrBatchTooBig is returned by Commit for a batch that does not fit in one
// Badger transaction (about 1.2 MiB of inline data); the caller splits it.
var ErrBatchTooBig = errors.New("storage: batch too big for one transaction")

// Commit writes b in one transaction, so one fsync, and returns the keys of
// the envelopes it added (ids not stored before). Nothing is written on error.
func (s *Store) Commit(b Batch) (added []EnvelopeKey, err error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	secretKeys := make(map[string][]byte, len(b.Secrets))
	for name := range b.Secrets {
		k, err := nameKey(prefixSecret, name)
		if err != nil {
			return nil, err
		}
		secretKeys[name] = k
	}
	replaced := 0
	err = s.update(func(txn *badger.Txn) error {
		added = added[:0]
		for i := range b.Envelopes {
			r := &b.Envelopes[i]
			switch ok, err := putEnvelope(txn, r); {
			case err != nil:
				return err
			case ok:
				added = append(added, r.Key)
			}
		}
		replaced = 0
		for _, o := range b.Ops {
			k := opKey(o.Team, o.Time, o.ID)
			switch _, err := txn.Get(k); {
			case err == nil:
				replaced++ // a redaction: the old body stays as an older version until Collect
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
			if err := txn.Set(k, o.Data); err != nil {
				return err
			}
		}
		for name, v := range b.Secrets {
			if err := txn.Set(secretKeys[name], v); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, badger.ErrTxnTooBig):
		return nil, ErrBatchTooBig
	case err != nil:
		return nil, fmt.Errorf("storage: commit batch: %w", err)
	}
	// A secret written over (a key state whose used chain keys it drops) and an op written over (its
	// body redacted) leave the old value as an older version until Collect, like a deletion.
	s.deleted.Add(int64(len(b.Secrets) + replaced))
	return added, nil
}

// Ops calls fn with the data of each stored op of team, in (Time, ID) order,
// from one consistent snapshot. fn owns data. If fn returns an error, Ops
// stops and returns it unwrapped.
func (s *Store) Ops(team [32]byte, fn func(data []byte) error) error {
	return s.scan(append([]byte{prefixOp}, team[:]...), nil, func(k, v []byte) error {
		if len(k) != opKeyLen {
			return fmt.Errorf("%w: op key %x", ErrCorrupt, k)
		}
		return fn(v)
	})
}
