package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// PutSecret stores an opaque local secret (the device identity, ...) under
// name, replacing any previous value. name is 1 to 1024 bytes.
func (s *Store) PutSecret(name string, value []byte) error {
	if err := s.putNamed("secret", prefixSecret, name, value); err != nil {
		return err
	}
	s.deleted.Add(1) // the value replaced, if any, waits for Collect like a deletion
	return nil
}

// Secret returns the secret stored under name, or ErrNotFound.
func (s *Store) Secret(name string) ([]byte, error) {
	return s.getNamed(prefixSecret, name)
}

// PutTeam stores the opaque state of team id, replacing any previous value.
func (s *Store) PutTeam(id [32]byte, value []byte) error {
	return s.put("team", idKey(prefixTeam, id[:]), value)
}

// Team returns the state of team id, or ErrNotFound.
func (s *Store) Team(id [32]byte) ([]byte, error) {
	return s.get(idKey(prefixTeam, id[:]))
}

// Teams returns every team's state by team id.
func (s *Store) Teams() (map[[32]byte][]byte, error) {
	teams := make(map[[32]byte][]byte)
	err := s.scan([]byte{prefixTeam}, nil, func(k, v []byte) error {
		var id [32]byte
		if len(k) != 1+len(id) {
			return fmt.Errorf("%w: team key %x", ErrCorrupt, k)
		}
		copy(id[:], k[1:])
		teams[id] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return teams, nil
}

// PutPeer stores an opaque blob about a peer under key (1 to 1024 bytes),
// replacing any previous value.
func (s *Store) PutPeer(key string, value []byte) error {
	return s.putNamed("peer", prefixPeer, key, value)
}

// DeletePeer deletes the peer blob under key; a missing key is not an error.
func (s *Store) DeletePeer(key string) error {
	k, err := nameKey(prefixPeer, key)
	if err != nil {
		return err
	}
	return s.deleteKeys("peer", [][]byte{k})
}

// Peers returns every peer blob by peer key.
func (s *Store) Peers() (map[string][]byte, error) {
	peers := make(map[string][]byte)
	err := s.scan([]byte{prefixPeer}, nil, func(k, v []byte) error {
		peers[string(k[1:])] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return peers, nil
}

// PutInvite stores a one-time invite under id, replacing any previous value.
func (s *Store) PutInvite(id [16]byte, value []byte) error {
	return s.put("invite", idKey(prefixInvite, id[:]), value)
}

// UseInvite atomically returns the invite and deletes it, durably: of any
// number of calls, concurrent or not, exactly one gets the invite and the
// others ErrNotFound.
func (s *Store) UseInvite(id [16]byte) ([]byte, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k := idKey(prefixInvite, id[:])
	var v []byte
	err := s.update(func(txn *badger.Txn) error {
		var err error
		if v, err = valueOf(txn, k); err != nil {
			return err
		}
		return txn.Delete(k)
	})
	if err != nil {
		return nil, readError("use invite", err)
	}
	s.deleted.Add(1)
	return v, nil
}

// update runs fn in a durable read-write transaction, unless Collect is
// flushing the memtables (then it waits).
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.db.Update(fn)
}

// put writes one key in its own durable transaction.
func (s *Store) put(what string, key, value []byte) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	err := s.update(func(txn *badger.Txn) error {
		return txn.Set(key, value)
	})
	if err != nil {
		return fmt.Errorf("storage: put %s: %w", what, err)
	}
	return nil
}

// putNamed writes the name key of prefix in its own durable transaction; a
// name breaking the limits of nameKey is ErrBadKey.
func (s *Store) putNamed(what string, prefix byte, name string, value []byte) error {
	k, err := nameKey(prefix, name)
	if err != nil {
		return err
	}
	return s.put(what, k, value)
}

// getNamed reads the name key of prefix; a missing key is ErrNotFound.
func (s *Store) getNamed(prefix byte, name string) ([]byte, error) {
	k, err := nameKey(prefix, name)
	if err != nil {
		return nil, err
	}
	return s.get(k)
}

// get reads one key; a missing key is ErrNotFound.
func (s *Store) get(key []byte) ([]byte, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		v, err = valueOf(txn, key)
		return err
	})
	if err != nil {
		return nil, readError("get", err)
	}
	return v, nil
}

// valueOf returns a copy of the value of key in txn, or badger.ErrKeyNotFound.
func valueOf(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// errStopIteration, returned by the fn of an iteration, ends it early without
// being an error to the caller.
var errStopIteration = errors.New("storage: stop iteration")

// iterate calls fn for every item whose key starts with prefix, in key order,
// in one read transaction. withValues prefetches values.
func (s *Store) iterate(prefix []byte, withValues bool, fn func(*badger.Item) error) error {
	return s.iterateFrom(prefix, nil, withValues, fn)
}

// iterateFrom is iterate starting at the first key at or after seek (which
// must start with prefix; nil starts at the first key of prefix).
func (s *Store) iterateFrom(prefix, seek []byte, withValues bool, fn func(*badger.Item) error) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = withValues
		o.PrefetchSize = 16
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(seek); it.Valid(); it.Next() {
			if err := fn(it.Item()); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errStopIteration):
		return nil
	case err != nil:
		return readError("iterate", err)
	}
	return nil
}

// scan is iterateFrom for the methods that call back their caller: fn gets
// each key (valid during the call only) and a copy of its value (fn's to
// keep). An error of fn is returned unwrapped, where iterateFrom wraps its
// own; errStopIteration ends the scan without error.
func (s *Store) scan(prefix, seek []byte, fn func(key, value []byte) error) error {
	var fnErr error
	err := s.iterateFrom(prefix, seek, true, func(item *badger.Item) error {
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := fn(item.Key(), v); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil && fnErr != errStopIteration {
		return fnErr
	}
	return err
}

// readError maps badger.ErrKeyNotFound to ErrNotFound and wraps the rest.
func readError(what string, err error) error {
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return ErrNotFound
	case errors.Is(err, ErrCorrupt):
		return err
	default:
		return fmt.Errorf("storage: %s: %w", what, err)
	}
}
