package attach

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

func detRand(seed uint64) io.Reader { return rand.NewChaCha8([32]byte{byte(seed)}) }

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{seed, 0xaa})
	_, _ = r.Read(b)
	return b
}

func sealT(t testing.TB, data []byte) (crdt.Attachment, [][]byte) {
	t.Helper()
	a, chunks, err := Seal(detRand(1), "image/jpeg", data)
	if err != nil {
		t.Fatal(err)
	}
	return a, chunks
}

func TestSealOpen(t *testing.T) {
	skipNoSeal(t)
	for _, n := range []int{1, crdt.ChunkSize - 1, crdt.ChunkSize, crdt.ChunkSize + 1, 2<<20 + 123, crdt.MaxAttachmentSize} {
		data := payload(n, byte(n))
		a, chunks := sealT(t, data)
		if len(chunks) != crdt.ChunkCount(n) || len(a.Chunks) != len(chunks) {
			t.Fatalf("%d bytes: %d chunks; want %d", n, len(chunks), crdt.ChunkCount(n))
		}
		wire := 0
		for i, c := range chunks {
			if err := CheckChunk(a, i, c); err != nil {
				t.Fatalf("%d bytes: chunk %d: %v", n, i, err)
			}
			if err := CheckAddressed(a.Chunks[i], c); err != nil {
				t.Fatalf("%d bytes: chunk %d: %v", n, i, err)
			}
			wire += len(c)
		}
		if want := n + crdt.ChunkOverhead*len(chunks); wire != want {
			t.Errorf("%d bytes: sealed %d; want %d", n, wire, want)
		}
		got, err := Open(a, func(i int) ([]byte, error) { return chunks[i], nil })
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: open: %v (equal %v)", n, err, bytes.Equal(got, data))
		}
		// The plaintext appears in no sealed chunk.
		if n >= 64 {
			for _, c := range chunks {
				if bytes.Contains(c, data[:64]) {
					t.Fatalf("%d bytes: plaintext in a sealed chunk", n)
				}
			}
		}
	}
}

func TestSealRefuses(t *testing.T) {
	if _, _, err := Seal(nil, "a/b", make([]byte, crdt.MaxAttachmentSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: got %v; want ErrTooLarge", err)
	}
	if _, _, err := Seal(nil, "a/b", nil); err == nil {
		t.Errorf("empty: got nil error")
	}
	if _, _, err := Seal(nil, "", []byte{1}); err == nil {
		t.Errorf("no media type: got nil error")
	}
}

// TestTamper: whatever a relay or a member does to sealed chunks, a reader
// refuses them before it stores them, and opening fails rather than
// returning other bytes.
func TestTamper(t *testing.T) {
	skipNoSeal(t)
	data := payload(3*crdt.ChunkSize+10, 1)
	a, chunks := sealT(t, data)
	other, otherChunks := sealT(t, payload(3*crdt.ChunkSize+10, 2))
	flipped := bytes.Clone(chunks[1])
	flipped[5] ^= 1
	tests := []struct {
		name string
		i    int
		c    []byte
	}{
		{"flipped byte", 1, flipped},
		{"chunks swapped", 0, chunks[1]},
		{"last chunk for the first", 0, chunks[3]},
		{"chunk of another attachment", 1, otherChunks[1]},
		{"truncated", 3, chunks[3][:len(chunks[3])-1]},
		{"extended", 3, append(bytes.Clone(chunks[3]), 0)},
		{"index out of range", 4, chunks[3]},
	}
	for _, tt := range tests {
		if err := CheckChunk(a, tt.i, tt.c); !errors.Is(err, ErrBadChunk) {
			t.Errorf("%s: CheckChunk got %v; want ErrBadChunk", tt.name, err)
		}
		if _, err := OpenChunk(a, tt.i, tt.c); !errors.Is(err, ErrBadChunk) {
			t.Errorf("%s: OpenChunk got %v; want ErrBadChunk", tt.name, err)
		}
	}
	// A manifest whose addresses a member rewrote to match tampered chunks
	// still fails: the chunk does not open under the key.
	forged := a
	forged.Chunks = append([][32]byte(nil), a.Chunks...)
	forged.Chunks[1] = sha256.Sum256(flipped)
	if _, err := OpenChunk(forged, 1, flipped); !errors.Is(err, ErrBadChunk) {
		t.Errorf("forged address: got %v; want ErrBadChunk", err)
	}
	// Another attachment's chunks under this manifest's addresses: the
	// plaintext hash catches a manifest that mixes two attachments.
	mixed := other
	mixed.Hash = a.Hash
	if _, err := Open(mixed, func(i int) ([]byte, error) { return otherChunks[i], nil }); !errors.Is(err, ErrBadChunk) {
		t.Errorf("mixed manifest: got %v; want ErrBadChunk", err)
	}
	if err := CheckAddressed(a.Chunks[0], chunks[1]); !errors.Is(err, ErrBadChunk) {
		t.Errorf("relay check of a chunk under another address: got %v", err)
	}
	if err := CheckAddressed(sha256.Sum256(make([]byte, crdt.MaxSealedChunk+1)), make([]byte, crdt.MaxSealedChunk+1)); !errors.Is(err, ErrBadChunk) {
		t.Errorf("relay check of an oversized chunk: got %v", err)
	}
}

// memStore is a chunk store that can be told to fail after n puts (a
// contact lost, a process killed).
type memStore struct {
	mu     sync.Mutex
	chunks map[[32]byte][]byte
	failAt int // fail the put after this many stored; 0: never
}

func newMemStore() *memStore { return &memStore{chunks: map[[32]byte][]byte{}} }

func (m *memStore) PutChunk(addr [32]byte, sealed []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAt > 0 && len(m.chunks) >= m.failAt {
		return errors.New("killed")
	}
	m.chunks[addr] = sealed
	return nil
}

func (m *memStore) get(addr [32]byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chunks[addr], nil
}

func (m *memStore) has(addr [32]byte) (bool, error) {
	c, _ := m.get(addr)
	return c != nil, nil
}

// countingServer answers pull requests from st and counts the chunks it sends.
type countingServer struct {
	st   *memStore
	mu   sync.Mutex
	sent int
}

func (s *countingServer) chunk(addr [32]byte) ([]byte, error) {
	c, err := s.st.get(addr)
	if c != nil {
		s.mu.Lock()
		s.sent++
		s.mu.Unlock()
	}
	return c, err
}

func pullOverPipe(t *testing.T, wants []Want, dst Store, serve func(net.Conn) error) (int, error, error) {
	t.Helper()
	c1, c2 := net.Pipe()
	done := make(chan error, 1)
	go func() {
		err := serve(c2)
		c2.Close()
		done <- err
	}()
	n, err := Pull(c1, wants, dst)
	c1.Close()
	return n, err, <-done
}

func TestPullResumes(t *testing.T) {
	data := payload(2<<20, 3) // 64 chunks: two requests
	a, chunks := sealT(t, data)
	src := newMemStore()
	for i, c := range chunks {
		src.chunks[a.Chunks[i]] = c
	}
	srv := &countingServer{st: src}
	dst := newMemStore()
	dst.failAt = 40 // the receiver dies after 40 chunks
	wants, _ := Missing([]crdt.Attachment{a}, dst.has)
	n, err, _ := pullOverPipe(t, wants, dst, func(c net.Conn) error { return Answer(c, srv.chunk) })
	if err == nil || errors.Is(err, ErrBadPeer) || n != 40 {
		t.Fatalf("first pull: stored %d, err %v; want 40 and a store error", n, err)
	}
	first := srv.sent
	dst.failAt = 0
	wants, _ = Missing([]crdt.Attachment{a}, dst.has)
	if len(wants) != len(chunks)-40 {
		t.Fatalf("after the cut: %d wanted; want %d", len(wants), len(chunks)-40)
	}
	srv.sent = 0
	n, err, serr := pullOverPipe(t, wants, dst, func(c net.Conn) error { return Answer(c, srv.chunk) })
	if err != nil || serr != nil || n != len(chunks)-40 {
		t.Fatalf("resumed pull: stored %d, %v, %v", n, err, serr)
	}
	if srv.sent != len(chunks)-40 {
		t.Errorf("resumed pull sent %d chunks; want only the %d missing (first pull sent %d)", srv.sent, len(chunks)-40, first)
	}
	got, err := Open(a, func(i int) ([]byte, error) { return dst.get(a.Chunks[i]) })
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("open after resume: %v", err)
	}
}

func TestPullMissingChunks(t *testing.T) {
	a, chunks := sealT(t, payload(3*crdt.ChunkSize, 4))
	src := newMemStore()
	src.chunks[a.Chunks[1]] = chunks[1] // a peer holding only part of it
	dst := newMemStore()
	n, err, _ := pullOverPipe(t, Wants(a), dst, func(c net.Conn) error { return Answer(c, src.get) })
	if err != nil || n != 1 || len(dst.chunks) != 1 {
		t.Fatalf("stored %d, %v; want 1, nil", n, err)
	}
}

// TestHostileServer: a peer that answers with wrong, oversized, extra or
// malformed frames is refused (ErrBadPeer) and what was stored before
// stays stored, unchanged.
func TestHostileServer(t *testing.T) {
	a, chunks := sealT(t, payload(3*crdt.ChunkSize, 5))
	flipped := bytes.Clone(chunks[1])
	flipped[0] ^= 1
	// Each hostile server answers chunk 0 honestly, then misbehaves.
	tests := []struct {
		name  string
		after func(c net.Conn) error
	}{
		{"wrong chunk", func(c net.Conn) error { return framing.Write(c, MarshalResponse(chunks[2])) }},
		{"flipped chunk", func(c net.Conn) error { return framing.Write(c, MarshalResponse(flipped)) }},
		{"oversized frame", func(c net.Conn) error { return framing.Write(c, MarshalResponse(make([]byte, 4<<20))) }},
		{"status 7", func(c net.Conn) error { return framing.Write(c, append([]byte{7}, chunks[1]...)) }},
		{"missing with a body", func(c net.Conn) error { return framing.Write(c, []byte{0, 1}) }},
		{"empty frame", func(c net.Conn) error { return framing.Write(c, nil) }},
		{"bad length prefix", func(c net.Conn) error { _, err := c.Write(bytes.Repeat([]byte{0xff}, 11)); return err }},
	}
	for _, tt := range tests {
		dst := newMemStore()
		n, err, _ := pullOverPipe(t, Wants(a), dst, func(c net.Conn) error {
			if _, err := framing.Read(c, MaxRequestFrame); err != nil {
				return err
			}
			if err := framing.Write(c, MarshalResponse(chunks[0])); err != nil {
				return err
			}
			tt.after(c)
			io.Copy(io.Discard, c)
			return nil
		})
		if !errors.Is(err, ErrBadPeer) {
			t.Errorf("%s: got %v; want ErrBadPeer", tt.name, err)
		}
		if n != 1 || len(dst.chunks) != 1 || !bytes.Equal(dst.chunks[a.Chunks[0]], chunks[0]) {
			t.Errorf("%s: stored %d (%d kept); want the one good chunk intact", tt.name, n, len(dst.chunks))
		}
	}
}

// TestUnrequestedChunk: a chunk pushed when none was asked for is refused.
func TestUnrequestedChunk(t *testing.T) {
	a, chunks := sealT(t, payload(10, 6))
	f := NewFetch(Wants(a))
	if _, _, err := f.Handle(MarshalResponse(chunks[0])); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("before a request: got %v; want ErrBadPeer", err)
	}
	f.Request()
	if _, c, err := f.Handle(MarshalResponse(chunks[0])); err != nil || c == nil {
		t.Fatalf("asked: got %v", err)
	}
	if f.Limit() != 0 || !f.Done() {
		t.Fatalf("after the only chunk: limit %d, done %v", f.Limit(), f.Done())
	}
	if _, _, err := f.Handle(MarshalResponse(chunks[0])); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("after the answers: got %v; want ErrBadPeer", err)
	}
}

func TestRequestCodec(t *testing.T) {
	addrs := make([][32]byte, MaxRequest)
	for i := range addrs {
		addrs[i][0] = byte(i)
	}
	got, err := UnmarshalRequest(MarshalRequest(addrs))
	if err != nil || fmt.Sprint(got) != fmt.Sprint(addrs) {
		t.Fatalf("roundtrip: %v", err)
	}
	bad := [][]byte{
		nil,
		{1, 0},
		{2, 1},
		append([]byte{1, MaxRequest + 1}, make([]byte, 32*(MaxRequest+1))...),
		append(MarshalRequest(addrs[:1]), 0),
		MarshalRequest(addrs[:1])[:33],
	}
	for i, b := range bad {
		if _, err := UnmarshalRequest(b); !errors.Is(err, ErrBadPeer) {
			t.Errorf("bad request %d: got %v; want ErrBadPeer", i, err)
		}
	}
}

func TestFetchNow(t *testing.T) {
	tests := []struct {
		p             crdt.Priority
		lowData, free bool
		want          bool
	}{
		{crdt.Routine, false, false, true},
		{crdt.Routine, true, false, false},
		{crdt.Routine, true, true, true},
		{crdt.Urgent, true, false, true},
		{crdt.Emergency, true, false, true},
	}
	for _, tt := range tests {
		if got := FetchNow(tt.p, tt.lowData, tt.free); got != tt.want {
			t.Errorf("FetchNow(%v, low %v, free %v) = %v; want %v", tt.p, tt.lowData, tt.free, got, tt.want)
		}
	}
}

func FuzzUnmarshalRequest(f *testing.F) {
	f.Add(MarshalRequest([][32]byte{{1}, {2}}))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		addrs, err := UnmarshalRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadPeer) {
				t.Fatalf("error not ErrBadPeer: %v", err)
			}
			return
		}
		if len(addrs) == 0 || len(addrs) > MaxRequest {
			t.Fatalf("%d addresses", len(addrs))
		}
		if !bytes.Equal(MarshalRequest(addrs), b) {
			t.Fatalf("decode-encode not identity")
		}
	})
}

// FuzzFetchHandle: no response frame makes the requester panic or accept
// a chunk other than the one asked for.
func FuzzFetchHandle(f *testing.F) {
	a, chunks := sealT(f, payload(crdt.ChunkSize+100, 7))
	f.Add(MarshalResponse(chunks[0]), MarshalResponse(chunks[1]))
	f.Add(MarshalResponse(nil), MarshalResponse(chunks[0]))
	f.Add([]byte{2}, []byte{})
	f.Fuzz(func(t *testing.T, r1, r2 []byte) {
		fe := NewFetch(Wants(a))
		fe.Request()
		for i, r := range [][]byte{r1, r2} {
			addr, c, err := fe.Handle(r)
			if err != nil {
				if !errors.Is(err, ErrBadPeer) {
					t.Fatalf("error not ErrBadPeer: %v", err)
				}
				return
			}
			if c != nil && (addr != a.Chunks[i] || CheckChunk(a, i, c) != nil) {
				t.Fatalf("accepted a chunk that is not chunk %d", i)
			}
		}
	})
}

// FuzzOpenChunk: no sealed bytes make opening panic or return a plaintext
// for bytes that are not the chunk.
func FuzzOpenChunk(f *testing.F) {
	a, chunks := sealT(f, payload(100, 8))
	f.Add(chunks[0])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, c []byte) {
		pt, err := OpenChunk(a, 0, c)
		if err == nil && !bytes.Equal(c, chunks[0]) {
			t.Fatalf("opened bytes that are not the chunk")
		}
		if err != nil && pt != nil {
			t.Fatalf("plaintext with an error")
		}
	})
}
