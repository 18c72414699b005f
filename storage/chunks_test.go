package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestChunks(t *testing.T) {
	s, dir := newStore(t)
	msgA, msgB := opID(1), opID(2)
	c1 := bytes.Repeat([]byte("CHUNK-ONE-PLAINTEXT-MARKER-4b1f"), 1000)
	c2 := bytes.Repeat([]byte("CHUNK-TWO-PLAINTEXT-MARKER-77e0"), 1000)
	shared := bytes.Repeat([]byte("SHARED-CHUNK-MARKER-90aa"), 100)
	a1, a2, as := sha256.Sum256(c1), sha256.Sum256(c2), sha256.Sum256(shared)
	for _, p := range []struct {
		owner [IDSize]byte
		addr  [32]byte
		c     []byte
	}{{msgA, a1, c1}, {msgA, as, shared}, {msgB, a2, c2}, {msgB, as, shared}, {msgB, as, shared}} {
		if err := s.PutChunk(p.owner, p.addr, p.c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutChunk(msgA, id32(9), make([]byte, MaxChunk+1)); !errors.Is(err, ErrChunkTooBig) {
		t.Fatalf("oversized chunk: got %v; want ErrChunkTooBig", err)
	}
	if got, err := s.Chunk(a1); err != nil || !bytes.Equal(got, c1) {
		t.Fatalf("Chunk: %v", err)
	}
	if n, b, err := s.ChunkBytes(); err != nil || n != 3 || b != int64(len(c1)+len(c2)+len(shared)) {
		t.Fatalf("ChunkBytes: %d, %d, %v", n, b, err)
	}
	s = reopen(t, s, dir)
	// Deleting A removes its own chunk and keeps the one B still names.
	if n, err := s.DeleteChunksOf([][IDSize]byte{msgA}); err != nil || n != 1 {
		t.Fatalf("DeleteChunksOf(A): %d, %v; want 1", n, err)
	}
	if ok, _ := s.HasChunk(a1); ok {
		t.Errorf("A's chunk survived A's deletion")
	}
	for _, a := range [][32]byte{a2, as} {
		if ok, err := s.HasChunk(a); !ok || err != nil {
			t.Errorf("B's chunk went with A: %v", err)
		}
	}
	if n, err := s.DeleteChunksOf([][IDSize]byte{msgB}); err != nil || n != 2 {
		t.Fatalf("DeleteChunksOf(B): %d, %v; want 2", n, err)
	}
	if n, _, _ := s.ChunkBytes(); n != 0 {
		t.Fatalf("%d chunks left", n)
	}
	if _, err := s.Chunk(as); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Chunk after deletion: %v; want ErrNotFound", err)
	}
	// After Collect nothing of the deleted chunks is left in the files.
	if _, err := s.Collect(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if hits := findMarkers(t, dir, [][]byte{[]byte("CHUNK-ONE-PLAINTEXT-MARKER-4b1f"), []byte("SHARED-CHUNK-MARKER-90aa")}); len(hits) > 0 {
		t.Fatalf("chunk bytes in the files: %v", hits)
	}
}

// TestChunkMarks: held and evicted marks survive a reopen, Evict deletes the chunks but keeps the
// evicted mark, and DeleteChunksOf removes both marks with their owner.
func TestChunkMarks(t *testing.T) {
	s, dir := newStore(t)
	msgA, msgB := opID(1), opID(2)
	ca := bytes.Repeat([]byte("A"), 500)
	cb := bytes.Repeat([]byte("B"), 500)
	aa, ab := sha256.Sum256(ca), sha256.Sum256(cb)
	if err := s.PutChunk(msgA, aa, ca); err != nil {
		t.Fatal(err)
	}
	if err := s.PutChunk(msgB, ab, cb); err != nil {
		t.Fatal(err)
	}
	relay := []byte("relay-peer-id")
	if err := s.SetHeld(msgA, relay); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHeld(msgA, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("SetHeld with no holder: %v; want ErrBadKey", err)
	}
	if n, err := s.Evict([][IDSize]byte{msgB}); err != nil || n != 1 {
		t.Fatalf("Evict(B): %d, %v; want 1", n, err)
	}
	s = reopen(t, s, dir)
	if ok, err := s.Held(msgA, relay); !ok || err != nil {
		t.Errorf("Held(A) after a reopen: %v, %v; want true", ok, err)
	}
	if ok, _ := s.Held(msgA, []byte("another relay")); ok {
		t.Error("Held(A) by a relay never recorded: true")
	}
	if ok, _ := s.Held(msgB, relay); ok {
		t.Error("Held(B): true; want false")
	}
	if ok, err := s.HeldByAny(msgA); !ok || err != nil {
		t.Errorf("HeldByAny(A): %v, %v; want true", ok, err)
	}
	if ok, _ := s.HeldByAny(msgB); ok {
		t.Error("HeldByAny(B): true; want false")
	}
	if ok, err := s.Evicted(msgB); !ok || err != nil {
		t.Errorf("Evicted(B) after a reopen: %v, %v; want true", ok, err)
	}
	if ok, _ := s.HasChunk(ab); ok {
		t.Error("B's chunk survived its eviction")
	}
	if ok, _ := s.HasChunk(aa); !ok {
		t.Error("A's chunk went with B's eviction")
	}
	if err := s.Unevict(msgB); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Evicted(msgB); ok {
		t.Error("Evicted(B) after Unevict: true")
	}
	if _, err := s.Evict([][IDSize]byte{msgB}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteChunksOf([][IDSize]byte{msgA, msgB}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Held(msgA, relay); ok {
		t.Error("A's held mark survived its deletion")
	}
	if ok, _ := s.Evicted(msgB); ok {
		t.Error("B's evicted mark survived its deletion")
	}
}
