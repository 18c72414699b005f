package recon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errNotFound = errors.New("testsource: not found")

// testSource is a Source over a sorted slice of items. Its envelopes are generated from their
// ids (the id, then filler), so a receiver can tell which envelope it got and check its bytes
// without the source storing them.
type testSource struct {
	items    []Item
	index    map[[IDSize]byte]bool
	size     int   // envelope size, at least IDSize
	itemsErr error // returned by Items when set
	envErr   error // returned by Envelope when set
}

func newTestSource(size int, items []Item) *testSource {
	slices.SortFunc(items, compareItems)
	items = slices.Compact(items)
	s := &testSource{items: items, index: make(map[[IDSize]byte]bool, len(items)), size: max(size, IDSize)}
	for _, it := range items {
		s.index[it.ID] = true
	}
	return s
}

func (s *testSource) Items() ([]Item, error) {
	if s.itemsErr != nil {
		return nil, s.itemsErr
	}
	return s.items, nil
}

func (s *testSource) Envelope(id [IDSize]byte) ([]byte, error) {
	if s.envErr != nil {
		return nil, s.envErr
	}
	if !s.index[id] {
		return nil, fmt.Errorf("%w: %x", errNotFound, id[:4])
	}
	return testEnvelope(id, s.size), nil
}

func (s *testSource) has(id [IDSize]byte) bool { return s.index[id] }

// testEnvelope is the envelope of id: id followed by filler, size bytes in all.
func testEnvelope(id [IDSize]byte, size int) []byte {
	env := make([]byte, size)
	copy(env, id[:])
	for i := IDSize; i < size; i++ {
		env[i] = id[i%IDSize] + byte(i)
	}
	return env
}

// keyItem is test item k: time k*step (HLC-like when step is large), a pseudo-random id.
func keyItem(k int, step uint64) Item {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(k))
	r := rand.NewChaCha8(seed)
	var it Item
	r.Read(it.ID[:])
	it.Time = uint64(k+1) * step
	return it
}

// hlcStep is a realistic gap between messages: 30 seconds of unix milliseconds, shifted left by
// 16 like crdt.HLC.
const hlcStep = 30_000 << 16

func itemsOf(step uint64, ks ...int) []Item {
	items := make([]Item, len(ks))
	for i, k := range ks {
		items[i] = keyItem(k, step)
	}
	return items
}

func keys(from, to int) []int {
	ks := make([]int, 0, max(to-from, 0))
	for k := from; k < to; k++ {
		ks = append(ks, k)
	}
	return ks
}

// runResult is what an in-memory run produced.
type runResult struct {
	toInitiator, toResponder [][]byte // envelopes received, in order
	initiator, responder     Stats
	flights                  int // one-way trips, Start's included
	frames                   []sentFrame
}

// sentFrame is one frame of a transcript.
type sentFrame struct {
	toResponder bool
	b           []byte
}

// wireBytes is the frame bytes exchanged both ways, and without the envelope bodies.
func (r runResult) wireBytes() (total, overhead uint64) {
	total = r.initiator.BytesSent + r.responder.BytesSent
	return total, total - r.initiator.EnvelopeBytesSent - r.responder.EnvelopeBytesSent
}

// roundTrips is the exchange's length in round trips: flights/2, rounded up.
func (r runResult) roundTrips() int { return (r.flights + 1) / 2 }

// run drives ini and res against each other in memory until both are done, checking the
// protocol's shape on the way: every frame fits the sender's maxFrame, the exchange is
// half-duplex (only one side has frames in flight at a time), nothing reaches a finished side,
// and it ends.
func run(tb testing.TB, ini, res *Session, keepFrames bool) runResult {
	tb.Helper()
	var r runResult
	first, err := ini.Start()
	if err != nil {
		tb.Fatalf("initiator Start: %v", err)
	}
	if f, err := res.Start(); f != nil || err != nil {
		tb.Fatalf("responder Start = %x, %v; want nil, nil", f, err)
	}
	r.flights = 1
	toRes, toIni := [][]byte{first}, [][]byte(nil)
	var iniDone, resDone bool
	for steps := 0; len(toRes) > 0 || len(toIni) > 0; steps++ {
		if steps > 50_000_000 {
			tb.Fatalf("no end after %d frames", steps)
		}
		if len(toRes) > 0 && len(toIni) > 0 {
			tb.Fatalf("both sides have frames in flight")
		}
		toResponder := len(toRes) > 0
		s, q, done, sender := res, &toRes, &resDone, ini
		if !toResponder {
			s, q, done, sender = ini, &toIni, &iniDone, res
		}
		f := (*q)[0]
		*q = (*q)[1:]
		if len(f) > sender.maxFrame {
			tb.Fatalf("frame of %d bytes exceeds the sender's maxFrame %d", len(f), sender.maxFrame)
		}
		if *done {
			tb.Fatalf("frame %x sent to a side that is done", f[:min(len(f), 8)])
		}
		if keepFrames {
			r.frames = append(r.frames, sentFrame{toResponder, f})
		}
		out, recv, d, err := s.Handle(f)
		if err != nil {
			tb.Fatalf("Handle (to responder %v): %v", toResponder, err)
		}
		if len(out) > 0 {
			r.flights++
			if len(*q) > 0 {
				tb.Fatalf("answered before the end of the peer's flight")
			}
		}
		*done = d
		if toResponder {
			r.toResponder = append(r.toResponder, recv...)
			toIni = append(toIni, out...)
		} else {
			r.toInitiator = append(r.toInitiator, recv...)
			toRes = append(toRes, out...)
		}
	}
	if !iniDone || !resDone {
		tb.Fatalf("exchange stalled: initiator done %v, responder done %v", iniDone, resDone)
	}
	r.initiator, r.responder = ini.Stats(), res.Stats()
	return r
}

// checkReceived checks what one side received from its peer: each envelope is one the peer
// holds, with the peer's bytes, that this side lacked, and none arrives twice. It returns the
// ids received.
func checkReceived(tb testing.TB, who string, self, peer *testSource, received [][]byte) map[[IDSize]byte]bool {
	tb.Helper()
	got := make(map[[IDSize]byte]bool, len(received))
	for _, env := range received {
		if len(env) < IDSize {
			tb.Fatalf("%s received a %d-byte envelope", who, len(env))
		}
		id := [IDSize]byte(env)
		switch {
		case self.has(id):
			tb.Fatalf("%s received %x, which it had", who, id[:4])
		case !peer.has(id):
			tb.Fatalf("%s received %x, which the peer does not hold", who, id[:4])
		case got[id]:
			tb.Fatalf("%s received %x twice", who, id[:4])
		case !bytes.Equal(env, testEnvelope(id, peer.size)):
			tb.Fatalf("%s received %x with other bytes than the peer's", who, id[:4])
		}
		got[id] = true
	}
	return got
}

// missingFrom counts the items of b that a lacks.
func missingFrom(a, b *testSource) int {
	n := 0
	for _, it := range b.items {
		if !a.has(it.ID) {
			n++
		}
	}
	return n
}

// testRand is a deterministic salt source.
type testRand struct{ r *rand.ChaCha8 }

func (t testRand) Read(p []byte) (int, error) { return t.r.Read(p) }

func newRand(seed uint64) testRand {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return testRand{rand.NewChaCha8(s)}
}

// syncPair reconciles a (initiator) and b (responder) with frames of at most maxFrame bytes and
// checks the outcome: each side receives exactly the envelopes it lacked, once, and nothing it
// had.
func syncPair(tb testing.TB, a, b *testSource, maxFrame int) runResult {
	tb.Helper()
	ini := NewInitiatorConfig(a, Config{MaxFrame: maxFrame, Rand: newRand(1)})
	res := NewResponder(b, maxFrame)
	r := run(tb, ini, res, false)
	gotI := checkReceived(tb, "initiator", a, b, r.toInitiator)
	gotR := checkReceived(tb, "responder", b, a, r.toResponder)
	if got, want := len(gotI), missingFrom(a, b); got != want {
		tb.Errorf("initiator received %d envelopes; want %d (all it lacked)", got, want)
	}
	if got, want := len(gotR), missingFrom(b, a); got != want {
		tb.Errorf("responder received %d envelopes; want %d (all it lacked)", got, want)
	}
	return r
}
