package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// PutSecret stores an opaque local secret (the device identity, ...) under
// name, replacing any previous value. name is 1 to 1024 bytes.
func (s *Store) PutSecret(name string, value []byte) error {
	k, err := nameKey(prefixSecret, name)
	if err != nil {
		return err
	}
	return s.put("secret", k, value)
}

// Secret returns the secret stored under name, or ErrNotFound.
func (s *Store) Secret(name string) ([]byte, error) {
	k, err := nameKey(prefixSecret, name)
	if err != nil {
		return nil, err
	}
	return s.get(k)
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
	err := s.iterate([]byte{prefixTeam}, true, func(item *badger.Item) error {
		var id [32]byte
		if len(item.Key()) != 1+len(id) {
			return fmt.Errorf("%w: team key %x", ErrCorrupt, item.Key())
		}
		copy(id[:], item.Key()[1:])
		v, err := item.ValueCopy(nil)
		teams[id] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	return teams, nil
}

// PutPeer stores an opaque blob about a peer under key (1 to 1024 bytes),
// replacing any previous value.
func (s *Store) PutPeer(key string, value []byte) error {
	k, err := nameKey(prefixPeer, key)
	if err != nil {
		return err
	}
	return s.put("peer", k, value)
}

// Peers returns every peer blob by peer key.
func (s *Store) Peers() (map[string][]byte, error) {
	peers := make(map[string][]byte)
	err := s.iterate([]byte{prefixPeer}, true, func(item *badger.Item) error {
		v, err := item.ValueCopy(nil)
		peers[string(item.Key()[1:])] = v
		return err
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
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		if v, err = item.ValueCopy(nil); err != nil {
			return err
		}
		return txn.Delete(k)
	})
	if err != nil {
		return nil, readError("use invite", err)
	}
	return v, nil
}

// put writes one key in its own durable transaction.
func (s *Store) put(what string, key, value []byte) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(key, value)
	})
	if err != nil {
		return fmt.Errorf("storage: put %s: %w", what, err)
	}
	return nil
}

// get reads one key; a missing key is ErrNotFound.
func (s *Store) get(key []byte) ([]byte, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, readError("get", err)
	}
	return v, nil
}

// iterate calls fn for every item whose key starts with prefix, in key order,
// in one read transaction. withValues prefetches values.
func (s *Store) iterate(prefix []byte, withValues bool, fn func(*badger.Item) error) error {
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
		for it.Rewind(); it.Valid(); it.Next() {
			if err := fn(it.Item()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return readError("iterate", err)
	}
	return nil
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
