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
//
// A chunk is stored under its address (the SHA-256 of its sealed bytes,
// which the caller checked) and belongs to one or more owners: the op ids
// of the messages (or, at a relay, the envelopes) whose attachments name
// it. It is deleted when its last owner goes (DeleteChunksOf), so
// attachments follow their message's deletion. Chunks are ciphertext the
// store encrypts again at rest; no attachment ever reaches a plain file.

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

func chunkIndexKey(addr [32]byte, owner [IDSize]byte) []byte {
	b := make([]byte, 0, 1+IDSize+32)
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

// HasChunk reports whether a chunk is stored at addr.
func (s *Store) HasChunk(addr [32]byte) (bool, error) {
	_, err := s.get(chunkKey(addr))
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
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
// chunk that no other owner claims. It returns how many chunks it deleted.
// Their data stays readable in the files until the next Collect.
func (s *Store) DeleteChunksOf(owners [][IDSize]byte) (int, error) {
	var keys [][]byte
	gone := map[[32]byte]bool{}
	for _, owner := range owners {
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
