package emul

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// TestGuardKeepsStreamsToContacts: over a mocknet connection the trace does not allow (the pair is
// out of contact), a stream the node opens is refused and one it would accept is reset before its
// handler sees it; during a contact both go through, and the contact's close resets them, so no byte
// crosses after it (mocknet alone would let a stream outlive its connection).
func TestGuardKeepsStreamsToContacts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn, err := mocknet.FullMeshConnected(2)
		if err != nil {
			t.Fatal(err)
		}
		defer mn.Close()
		hs := mn.Hosts()
		e := &emulation{open: map[[2]int]int{}, byPeer: map[peer.ID]int{hs[0].ID(): 0, hs[1].ID(): 1},
			streams: map[[2]int][]network.Stream{}, degree: make([]int, 2)}
		a, b := &guardedHost{Host: hs[0], e: e, idx: 0}, &guardedHost{Host: hs[1], e: e, idx: 1}
		handled := make(chan network.Stream, 4)
		b.SetStreamHandler("/test/1", func(s network.Stream) { handled <- s })

		// Out of contact: refused on the opening side, and the accepting side's handler never runs.
		if _, err := a.NewStream(context.Background(), hs[1].ID(), "/test/1"); !errors.Is(err, errNoContact) {
			t.Fatalf("stream out of contact: %v; want errNoContact", err)
		}
		// An unguarded opener: the accepting side resets the stream, during the protocol's
		// negotiation (an error here) or after it (an error on reading).
		raw, err := hs[0].NewStream(context.Background(), hs[1].ID(), "/test/1")
		synctest.Wait()
		if len(handled) != 0 {
			t.Fatal("the accepting side handled a stream out of contact")
		}
		if err == nil {
			_, _ = raw.Write([]byte("x"))
			synctest.Wait()
			if _, err := raw.Read(make([]byte, 1)); err == nil {
				t.Error("a stream out of contact stayed open on the accepting side")
			}
		}

		// In contact: through; after the close: reset, both ways.
		e.open[[2]int{0, 1}] = 1
		s, err := a.NewStream(context.Background(), hs[1].ID(), "/test/1")
		if err != nil {
			t.Fatalf("stream in contact: %v", err)
		}
		if _, err := s.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		r := <-handled
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("read %q, %v in contact", buf, err)
		}
		e.open[[2]int{0, 1}] = 0
		e.cut(0, 1)
		synctest.Wait()
		_, _ = s.Write([]byte("after"))
		synctest.Wait()
		if n, err := r.Read(buf); err == nil {
			t.Errorf("read %q after the contact closed", buf[:n])
		}
		if _, err := r.Write([]byte("back")); err == nil {
			synctest.Wait()
			if n, err := s.Read(buf); err == nil {
				t.Errorf("the opener read %q after the contact closed", buf[:n])
			}
		}
		_ = s.Reset()
		_ = r.Reset()
	})
}
