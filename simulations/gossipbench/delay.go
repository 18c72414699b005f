package gossipbench

import (
	"context"
	"errors"
	stdsync "sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// delayHost adds a one-way latency to the streams a host opens: every write reaches the other end
// exactly its link's latency after it was made (after it has left the node's uplink, when the uplink
// is limited), in order.
//
// Why not mocknet's own LinkOptions.Latency: mocknet's stream holds small writes in one buffer whose
// timer every new write resets, so a write postpones the earlier ones on the same stream to its own
// arrival time, and once 256 bytes are pending the stream blocks for a whole latency. A gossip router
// that sends an IHAVE or IDONTWANT right after a message copy was then charged for it in latency, and
// floodsub itself measured up to 1.8 × the shortest path on a 20-node network. The mocknet links here
// have no latency; this wrapper is a plain FIFO delay line.
//
// Pubsub writes only on the streams it opens (one per peer) and only reads the streams it accepts, so
// delaying the opened streams delays every RPC.
type delayHost struct {
	host.Host
	latency map[peer.ID]time.Duration // to each neighbour
	uplink  *uplink                   // nil: unlimited

	mu      stdsync.Mutex
	streams []*delayStream
	aborted bool
}

// abortAll ends the delay lines of every stream the host opened, dropping what they hold; streams
// opened later start aborted.
func (h *delayHost) abortAll() {
	h.mu.Lock()
	ss := h.streams
	h.streams = nil
	h.aborted = true
	h.mu.Unlock()
	for _, s := range ss {
		s.abort()
	}
}

func (h *delayHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	lat, ok := h.latency[p]
	if !ok || lat <= 0 {
		return s, nil
	}
	ds := &delayStream{Stream: s, lat: lat, up: h.uplink, q: make(chan chunk, 4096), done: make(chan struct{}), reset: make(chan struct{})}
	go ds.run()
	h.mu.Lock()
	aborted := h.aborted
	if !aborted {
		h.streams = append(h.streams, ds)
	}
	h.mu.Unlock()
	if aborted {
		ds.abort()
	}
	return ds, nil
}

// uplink is a node's shared upstream bandwidth: writes on all its streams leave one after another.
type uplink struct {
	bitsPerSecond float64

	mu        stdsync.Mutex
	busyUntil time.Time
}

// depart returns when the last bit of an n-byte write made now has left.
func (u *uplink) depart(now time.Time, n int) time.Time {
	if u == nil {
		return now
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	start := now
	if u.busyUntil.After(start) {
		start = u.busyUntil
	}
	u.busyUntil = start.Add(time.Duration(float64(n*8) / u.bitsPerSecond * float64(time.Second)))
	return u.busyUntil
}

type chunk struct {
	b  []byte
	at time.Time
}

var errStreamClosed = errors.New("gossipbench: stream closed")

// delayStream delays the writes of a stream. Reads, deadlines and the rest pass through.
type delayStream struct {
	network.Stream
	lat   time.Duration
	up    *uplink // nil: unlimited
	q     chan chunk
	done  chan struct{} // closed when run has returned
	reset chan struct{} // closed by Reset: drop what is queued

	resetOnce stdsync.Once

	mu     stdsync.Mutex // held by Write while it queues: run never takes it
	closed bool

	errMu stdsync.Mutex
	err   error // the first write error of the underlying stream
}

func (s *delayStream) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errStreamClosed
	}
	s.errMu.Lock()
	err := s.err
	s.errMu.Unlock()
	if err != nil {
		return 0, err
	}
	dep := s.up.depart(time.Now(), len(b))
	s.q <- chunk{b: append([]byte(nil), b...), at: dep.Add(s.lat)}
	s.mu.Unlock()
	// Like a socket with a small send buffer, the write returns when its last byte has left the
	// uplink: a slow uplink pushes back on pubsub's per-peer outbound queue.
	if d := time.Until(dep); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.reset:
			t.Stop()
		}
	}
	s.mu.Lock()
	return len(b), nil
}

func (s *delayStream) run() {
	defer close(s.done)
	for c := range s.q {
		if d := time.Until(c.at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-s.reset:
				t.Stop()
				continue
			}
		}
		select {
		case <-s.reset:
			continue
		default:
		}
		if _, err := s.Stream.Write(c.b); err != nil {
			s.errMu.Lock()
			if s.err == nil {
				s.err = err
			}
			s.errMu.Unlock()
		}
	}
}

// stop closes the queue: run returns once it has gone through what is queued.
func (s *delayStream) stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	close(s.q)
	return true
}

// Close drops what is still in flight: pubsub closes its streams only when it stops or the peer is
// gone, and a delay line that outlived the run would hold the synctest bubble open.
func (s *delayStream) Close() error {
	s.abort()
	return s.Stream.Close()
}

func (s *delayStream) CloseWrite() error {
	s.abort()
	return s.Stream.CloseWrite()
}

func (s *delayStream) Reset() error {
	s.abort()
	return s.Stream.Reset()
}

func (s *delayStream) ResetWithError(code network.StreamErrorCode) error {
	s.abort()
	return s.Stream.ResetWithError(code)
}

// abort drops what is queued and ends the delay line.
func (s *delayStream) abort() {
	s.resetOnce.Do(func() { close(s.reset) })
	if s.stop() {
		<-s.done
	}
}
