package attach

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

func TestPushTake(t *testing.T) {
	a, chunks := sealT(t, payload(5*crdt.ChunkSize+3, 11))
	src := newMemStore()
	for i, c := range chunks {
		src.chunks[a.Chunks[i]] = c
	}
	relay := newMemStore()
	relay.chunks[a.Chunks[1]] = chunks[1] // already held: not sent again
	o := Offer{Topic: [16]byte{1}, Owner: [OwnerSize]byte{2}, Chunks: a.Chunks}
	c1, c2 := net.Pipe()
	done := make(chan error, 1)
	var took int
	go func() {
		var err error
		took, err = Take(c2, func(got Offer) ([]bool, error) {
			want := make([]bool, len(got.Chunks))
			for i, c := range got.Chunks {
				ok, _ := relay.has(c)
				want[i] = !ok
			}
			return want, nil
		}, func(_ Offer, addr [32]byte, sealed []byte) error { return relay.PutChunk(addr, sealed) })
		c2.Close()
		done <- err
	}()
	sent, err := Push(c1, o, src.get)
	c1.Close()
	if err != nil || <-done != nil {
		t.Fatalf("push: %v", err)
	}
	if sent != len(chunks)-1 || took != sent || len(relay.chunks) != len(chunks) {
		t.Fatalf("sent %d, took %d, relay holds %d; want %d, %d, %d", sent, took, len(relay.chunks), len(chunks)-1, len(chunks)-1, len(chunks))
	}
}

// TestTakeRefusesBadChunks: a device that pushes a chunk other than the one offered, or one
// larger than a sealed chunk, is refused (ErrBadPeer); what the relay took before stays.
func TestTakeRefusesBadChunks(t *testing.T) {
	a, chunks := sealT(t, payload(3*crdt.ChunkSize, 12))
	o := Offer{Chunks: a.Chunks}
	for name, bad := range map[string][]byte{
		"another chunk": chunks[2],
		"oversized":     make([]byte, crdt.MaxSealedChunk+1),
	} {
		relay := newMemStore()
		c1, c2 := net.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := Take(c2, func(got Offer) ([]bool, error) { return []bool{true, true, true}, nil },
				func(_ Offer, addr [32]byte, sealed []byte) error { return relay.PutChunk(addr, sealed) })
			c2.Close()
			done <- err
		}()
		framing.Write(c1, o.Marshal())
		framing.Read(c1, 16)
		framing.Write(c1, chunks[0])
		framing.Write(c1, bad)
		err := <-done
		c1.Close()
		if !errors.Is(err, ErrBadPeer) {
			t.Errorf("%s: got %v; want ErrBadPeer", name, err)
		}
		if len(relay.chunks) != 1 || !bytes.Equal(relay.chunks[a.Chunks[0]], chunks[0]) {
			t.Errorf("%s: relay holds %d chunks; want the good one intact", name, len(relay.chunks))
		}
	}
}

func TestWantedCodec(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 512} {
		want := make([]bool, n)
		for i := range want {
			want[i] = i%3 == 0
		}
		got, err := UnmarshalWanted(MarshalWanted(want), n)
		if err != nil || !equalBools(got, want) {
			t.Fatalf("n=%d: %v", n, err)
		}
	}
	if _, err := UnmarshalWanted([]byte{0x80}, 7); !errors.Is(err, ErrBadPeer) {
		t.Errorf("bit past the offer: %v", err)
	}
	if _, err := UnmarshalWanted([]byte{0, 0}, 8); !errors.Is(err, ErrBadPeer) {
		t.Errorf("long bitmap: %v", err)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzUnmarshalOffer(f *testing.F) {
	f.Add(Offer{Topic: [16]byte{1}, Owner: [OwnerSize]byte{2}, Chunks: [][32]byte{{3}, {4}}}.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := UnmarshalOffer(b)
		if err != nil {
			if !errors.Is(err, ErrBadPeer) {
				t.Fatalf("error not ErrBadPeer: %v", err)
			}
			return
		}
		if len(o.Chunks) == 0 || len(o.Chunks) > MaxOfferChunks || !bytes.Equal(o.Marshal(), b) {
			t.Fatalf("decode-encode not identity, or %d chunks", len(o.Chunks))
		}
	})
}

func FuzzUnmarshalWanted(f *testing.F) {
	f.Add([]byte{0x05}, 3)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		want, err := UnmarshalWanted(b, n)
		if err != nil {
			return
		}
		if len(want) != n || !bytes.Equal(MarshalWanted(want), b) {
			t.Fatalf("decode-encode not identity")
		}
	})
}
