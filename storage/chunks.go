package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The keyspaces of attachment chunks (prefixes in keys.go):
//
//	0x40 chunk        0x40 | address 32             -> sealed chunk
//	0x41 chunk owner  0x41 | owner 16 | address 32  -> nothing
//	0x42 owner index  0x42 | address 32 | owner 16  -> nothing
//	0x43 held         0x43 | owner 16 | holder      -> nothing
//	0x44 evicted      0x44 | owner 16               -> nothing
//
// A chunk is stored under its address (the SHA-256 of its sealed bytes,
// which the caller checked) and belongs to one or more owners: the op ids
// of the messages (or, at a relay, the envelopes) whose attachments name
// it. It is deleted when its last owner goes (DeleteChunksOf), so
// attachments follow their message's deletion. Chunks are ciphertext the
// store encrypts again at rest; no attachment ever reaches a plain file.
//
// Held records that a holder (a relay, named by its peer id) confirmed it
// holds every chunk of an owner (SetHeld), so a device offers them to it
// once, not at every start. Evicted records that an owner's chunks were
// evicted to keep within a storage budget (Evict), so they are fetched
// again only when asked for. Both go with the owner (DeleteChunksOf).

// MaxChunk is the largest chunk the store accepts: 64 KiB, above any
// sealed chunk (32 KiB and a tag).
const MaxChunk = 64 << 10

// ErrChunkTooBig is PutChunk's error for a chunk above MaxChunk.
var ErrChunkTooBig = errors.New("storage: chunk too big")

func chunkKey(addr [32]byte) []byte { return idKey(prefixChunk, addr[:]) }

func chunkOwnerKey(owner [IDSize]byte, addr [32]byte) []byte {
	b := make([]byte, 0, 1+IDSize+32)
	b = append(b, prefixChunkOwner)
	b = append(b, owner[:]...)
	return append(b, addr[:]...)
}

func chunkHeldKey(owner [IDSize]byte, holder []byte) []byte {
	b := make([]byte, 0, 1+IDSize+len(holder))
	b = append(b, prefixChunkHeld)
	b = append(b, owner[:]...)
	return append(b, holder...)
}

func evictedKey(owner [IDSize]byte) []byte { return idKey(prefixEvicted, owner[:]) }

func chunkIndexKey(addr [32]byte, owner [IDSize]byte) []byte {
	b := make([]byte, 0, 1+32+IDSize)
	b = append(b, prefixChunkIndex)
	b = append(b, addr[:]...)
	return append(b, owner[:]...)
}

// PutChunk stores a sealed chunk at addr for owner, durably, in one
// transaction (the chunk and both index entries). Storing a chunk already
// stored only adds the owner. The store does not check that addr is the
// chunk's hash: the caller did (sync/attach).
func (s *Store) PutChunk(owner [IDSize]byte, addr [32]byte, sealed []byte) error {
	if len(sealed) == 0 || len(sealed) > MaxChunk {
		return fmt.Errorf("%w: %d bytes", ErrChunkTooBig, len(sealed))
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	err := s.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(chunkKey(addr)); errors.Is(err, badger.ErrKeyNotFound) {
			if err := txn.Set(chunkKey(addr), sealed); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if err := txn.Set(chunkOwnerKey(owner, addr), nil); err != nil {
			return err
		}
		return txn.Set(chunkIndexKey(addr, owner), nil)
	})
	if err != nil {
		return fmt.Errorf("storage: put chunk: %w", err)
	}
	return nil
}

// Chunk returns the sealed chunk at addr, or ErrNotFound.
func (s *Store) Chunk(addr [32]byte) ([]byte, error) { return s.get(chunkKey(addr)) }

// HasChunk reports whether a chunk is stored at addr. It does not read the chunk.
func (s *Store) HasChunk(addr [32]byte) (bool, error) { return s.has(chunkKey(addr)) }

// has reports whether key is stored, without reading its value.
func (s *Store) has(key []byte) (bool, error) {
	if err := s.begin(); err != nil {
		return false, err
	}
	defer s.inflight.Done()
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, readError("has", err)
	}
	return true, nil
}

// SetHeld records, durably, that holder (at most 255 bytes: a peer id) holds every chunk of owner.
func (s *Store) SetHeld(owner [IDSize]byte, holder []byte) error {
	if len(holder) == 0 || len(holder) > 255 {
		return fmt.Errorf("%w: holder of %d bytes", ErrBadKey, len(holder))
	}
	return s.setMarks("held", chunkHeldKey(owner, holder))
}

// Held reports whether SetHeld recorded that holder holds every chunk of owner.
func (s *Store) Held(owner [IDSize]byte, holder []byte) (bool, error) {
	if len(holder) == 0 || len(holder) > 255 {
		return false, fmt.Errorf("%w: holder of %d bytes", ErrBadKey, len(holder))
	}
	return s.has(chunkHeldKey(owner, holder))
}

// HeldByAny reports whether SetHeld recorded any holder of every chunk of owner.
func (s *Store) HeldByAny(owner [IDSize]byte) (bool, error) {
	found := false
	err := s.iterate(append([]byte{prefixChunkHeld}, owner[:]...), false, func(*badger.Item) error {
		found = true
		return errStopIteration
	})
	return found, err
}

// Evict deletes the chunks of owners, as DeleteChunksOf does, after it recorded, durably, that
// they were evicted (Evicted): their messages stay, and their chunks come back only when asked
// for. A crash between the two leaves the mark and the chunks, and the next Evict ends the job.
func (s *Store) Evict(owners [][IDSize]byte) (int, error) {
	keys := make([][]byte, len(owners))
	for i, o := range owners {
		keys[i] = evictedKey(o)
	}
	if err := s.setMarks("evicted", keys...); err != nil {
		return 0, err
	}
	return s.deleteChunks(owners, false)
}

// Evicted reports whether owner's chunks were evicted and not stored again since (Unevict).
func (s *Store) Evicted(owner [IDSize]byte) (bool, error) { return s.has(evictedKey(owner)) }

// Unevict removes owner's evicted mark: its chunks are all here again.
func (s *Store) Unevict(owner [IDSize]byte) error {
	return s.deleteKeys("evicted", [][]byte{evictedKey(owner)})
}

// setMarks stores empty values at keys, durably, in one transaction.
func (s *Store) setMarks(what string, keys ...[]byte) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.inflight.Done()
	err := s.update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Set(k, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: %s: %w", what, err)
	}
	return nil
}

// ChunksOf returns the addresses of the chunks stored for owner.
func (s *Store) ChunksOf(owner [IDSize]byte) ([][32]byte, error) {
	var out [][32]byte
	err := s.scan(append([]byte{prefixChunkOwner}, owner[:]...), nil, func(k, _ []byte) error {
		if len(k) != 1+IDSize+32 {
			return fmt.Errorf("%w: chunk owner key %x", ErrCorrupt, k)
		}
		var a [32]byte
		copy(a[:], k[1+IDSize:])
		out = append(out, a)
		return nil
	})
	return out, err
}

// ChunkBytes returns the number and total size of the stored chunks.
func (s *Store) ChunkBytes() (n int, bytes int64, err error) {
	err = s.scan([]byte{prefixChunk}, nil, func(_, v []byte) error {
		n++
		bytes += int64(len(v))
		return nil
	})
	return n, bytes, err
}

// DeleteChunksOf drops owners' claims on their chunks and deletes every
// chunk that no other owner claims, and owners' held and evicted marks. It
// returns how many chunks it deleted. Their data stays readable in the
// files until the next Collect.
func (s *Store) DeleteChunksOf(owners [][IDSize]byte) (int, error) {
	return s.deleteChunks(owners, true)
}

func (s *Store) deleteChunks(owners [][IDSize]byte, marks bool) (int, error) {
	var keys [][]byte
	gone := map[[32]byte]bool{}
	for _, owner := range owners {
		if marks {
			keys = append(keys, evictedKey(owner))
			err := s.scan(append([]byte{prefixChunkHeld}, owner[:]...), nil, func(k, _ []byte) error {
				keys = append(keys, append([]byte(nil), k...))
				return nil
			})
			if err != nil {
				return 0, err
			}
		}
		addrs, err := s.ChunksOf(owner)
		if err != nil {
			return 0, err
		}
		for _, a := range addrs {
			keys = append(keys, chunkOwnerKey(owner, a), chunkIndexKey(a, owner))
			others := 0
			err := s.scan(append([]byte{prefixChunkIndex}, a[:]...), nil, func(k, _ []byte) error {
				if len(k) != 1+32+IDSize {
					return fmt.Errorf("%w: chunk index key %x", ErrCorrupt, k)
				}
				if o := [IDSize]byte(k[33:]); o != owner && !containsOwner(owners, o) {
					others++
				}
				return nil
			})
			if err != nil {
				return 0, err
			}
			if others == 0 && !gone[a] {
				keys = append(keys, chunkKey(a))
				gone[a] = true
			}
		}
	}
	if err := s.deleteKeys("chunks", keys); err != nil {
		return 0, err
	}
	return len(gone), nil
}

func containsOwner(owners [][IDSize]byte, o [IDSize]byte) bool {
	for _, x := range owners {
		if x == o {
			return true
		}
	}
	return false
}
