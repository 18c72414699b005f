package catchup

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestCatchup(t *testing.T) {
	tests := []struct {
		name       string
		a, b       []int // initiator's and responder's envelopes
		size       int   // bytes per envelope
		maxFrame   int
		wantFrames int    // frames exchanged, both ways
		wantRT     [2]int // round trips: initiator, responder
	}{
		{name: "both empty", wantFrames: 3, wantRT: [2]int{1, 0}},
		{name: "identical", a: keys(0, 100), b: keys(0, 100), size: 100, wantFrames: 3, wantRT: [2]int{1, 0}},
		{name: "initiator empty", b: keys(0, 100), size: 100, wantFrames: 3, wantRT: [2]int{1, 0}},
		{name: "responder empty", a: keys(0, 100), size: 100, wantFrames: 4, wantRT: [2]int{1, 1}},
		{name: "disjoint", a: keys(0, 50), b: keys(50, 120), size: 100, wantFrames: 4, wantRT: [2]int{1, 1}},
		{name: "overlapping", a: keys(0, 80), b: keys(40, 120), size: 100, wantFrames: 4, wantRT: [2]int{1, 1}},
		{name: "one missing each", a: []int{1, 2, 3}, b: []int{2, 3, 4}, size: 100, wantFrames: 4, wantRT: [2]int{1, 1}},
		// 4 KiB frames: 127 ids per HAVE/WANT frame; 17 envelopes of 200 bytes or 12 of 300
		// per GIVE frame.
		{name: "4KiB overlapping", a: keys(0, 1000), b: keys(500, 2000), size: 200, maxFrame: 4 << 10,
			wantFrames: 8 + 7 + 59 + 4 + 30, wantRT: [2]int{8, 8}},
		{name: "4KiB initiator empty", b: keys(0, 1000), size: 300, maxFrame: 4 << 10,
			wantFrames: 1 + 84 + 1, wantRT: [2]int{1, 0}},
		{name: "4KiB responder empty", a: keys(0, 1000), size: 300, maxFrame: 4 << 10,
			wantFrames: 8 + 7 + 1 + 8 + 84, wantRT: [2]int{8, 8}},
		{name: "4KiB identical", a: keys(0, 1000), b: keys(0, 1000), size: 300, maxFrame: 4 << 10,
			wantFrames: 8 + 7 + 1 + 1, wantRT: [2]int{8, 7}},
		{name: "4KiB largest envelopes", a: keys(0, 5), b: keys(3, 9), size: 4<<10 - EnvelopeOverhead, maxFrame: 4 << 10,
			wantFrames: 1 + 4 + 1 + 3, wantRT: [2]int{1, 1}},
		// 1 MiB frames: 32767 ids per HAVE/WANT frame, 10809 envelopes of 64 bytes per GIVE.
		{name: "default frames large", a: keys(0, 33000), b: keys(13000, 40000), size: 64,
			wantFrames: 2 + 1 + 1 + 1 + 2, wantRT: [2]int{2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := syncPair(t, sourceOf(tt.size, tt.a...), sourceOf(tt.size, tt.b...), tt.maxFrame)
			if got, want := len(r.transcript), tt.wantFrames; got != want {
				t.Errorf("frames exchanged = %d; want %d", got, want)
			}
			if got, want := [2]int{int(r.initiator.RoundTrips), int(r.responder.RoundTrips)}, tt.wantRT; got != want {
				t.Errorf("round trips (initiator, responder) = %v; want %v", got, want)
			}
			checkStats(t, r)
		})
	}
}

// checkStats checks that the two sides' counters mirror each other and the transcript.
func checkStats(t *testing.T, r runResult) {
	t.Helper()
	i, s := r.initiator, r.responder
	var toRes, toIni, bytesToRes, bytesToIni uint64
	for _, m := range r.transcript {
		if m.toResponder {
			toRes++
			bytesToRes += uint64(len(m.frame))
		} else {
			toIni++
			bytesToIni += uint64(len(m.frame))
		}
	}
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"initiator FramesSent", i.FramesSent, toRes},
		{"responder FramesReceived", s.FramesReceived, toRes},
		{"responder FramesSent", s.FramesSent, toIni},
		{"initiator FramesReceived", i.FramesReceived, toIni},
		{"initiator BytesSent", i.BytesSent, bytesToRes},
		{"responder BytesReceived", s.BytesReceived, bytesToRes},
		{"responder BytesSent", s.BytesSent, bytesToIni},
		{"initiator BytesReceived", i.BytesReceived, bytesToIni},
		{"initiator EnvelopesReceived", i.EnvelopesReceived, uint64(len(r.toInitiator))},
		{"responder EnvelopesSent", s.EnvelopesSent, uint64(len(r.toInitiator))},
		{"responder EnvelopesReceived", s.EnvelopesReceived, uint64(len(r.toResponder))},
		{"initiator EnvelopesSent", i.EnvelopesSent, uint64(len(r.toResponder))},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d; want %d", c.name, c.got, c.want)
		}
	}
}

// TestKnownFrames pins the wire format with known-answer vectors.
func TestKnownFrames(t *testing.T) {
	id1 := keyID(1)
	env1 := testEnvelope(1, 40)
	r := syncPair(t, sourceOf(40, 1), newSource(), 0)
	want := []message{
		{true, cat([]byte{1, 1, 0, 1}, id1[:])},                   // HAVE, last, 1 id
		{false, []byte{1, 3, 0, 0}},                               // GIVE, last, nothing
		{false, cat([]byte{1, 4, 0, 1}, id1[:])},                  // WANT, last, 1 id
		{true, cat([]byte{1, 3, 0, 1}, id1[:], []byte{40}, env1)}, // GIVE, last, 1 envelope
	}
	if got := r.transcript; !slices.EqualFunc(got, want, func(a, b message) bool {
		return a.toResponder == b.toResponder && bytes.Equal(a.frame, b.frame)
	}) {
		t.Errorf("transcript = %v; want %v", got, want)
	}
	if got, want := nextFrame(), []byte{1, 2}; !bytes.Equal(got, want) {
		t.Errorf("NEXT = %x; want %x", got, want)
	}
}

func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func TestFrameSizeClamp(t *testing.T) {
	for _, tt := range []struct{ in, want int }{
		{-1, DefaultFrameSize},
		{0, DefaultFrameSize},
		{1, MinFrameSize},
		{MinFrameSize - 1, MinFrameSize},
		{MinFrameSize, MinFrameSize},
		{64 << 10, 64 << 10},
		{MaxFrameSize, MaxFrameSize},
		{MaxFrameSize + 1, MaxFrameSize},
	} {
		if got := NewInitiator(newSource(), tt.in).maxFrame; got != tt.want {
			t.Errorf("NewInitiator(src, %d).maxFrame = %d; want %d", tt.in, got, tt.want)
		}
		if got := NewResponder(newSource(), tt.in).maxFrame; got != tt.want {
			t.Errorf("NewResponder(src, %d).maxFrame = %d; want %d", tt.in, got, tt.want)
		}
	}
}

// TestMixedFrameSizes: ends with different maxFrame still converge; each sends frames within
// its own limit.
func TestMixedFrameSizes(t *testing.T) {
	a, b := sourceOf(500, keys(0, 700)...), sourceOf(500, keys(300, 1200)...)
	for _, sizes := range [][2]int{{MinFrameSize, MaxFrameSize}, {MaxFrameSize, MinFrameSize}} {
		a, b := a.clone(), b.clone()
		r := run(t, NewInitiator(a, sizes[0]), NewResponder(b, sizes[1]))
		store(t, "initiator", a, b.clone(), r.toInitiator)
		store(t, "responder", b, a.clone(), r.toResponder)
		if got, want := len(a.envs), 1200; got != want {
			t.Errorf("sizes %v: initiator holds %d; want %d", sizes, got, want)
		}
		if got, want := len(b.envs), 1200; got != want {
			t.Errorf("sizes %v: responder holds %d; want %d", sizes, got, want)
		}
	}
}

// TestSourceDuplicates: a Source listing an id twice (or out of order) does not make the session
// announce, ask for or send anything twice.
func TestSourceDuplicates(t *testing.T) {
	a, b := sourceOf(64, 1, 2, 3), sourceOf(64, 3, 4)
	r := run(t, NewInitiator(dupSource{a}, 0), NewResponder(dupSource{b}, 0))
	if got, want := len(r.toInitiator), 1; got != want {
		t.Errorf("initiator received %d; want %d", got, want)
	}
	if got, want := len(r.toResponder), 2; got != want {
		t.Errorf("responder received %d; want %d", got, want)
	}
}

// dupSource lists every item twice, newest first.
type dupSource struct{ *memSource }

func (d dupSource) Items() ([]Item, error) {
	items, err := d.memSource.Items()
	items = append(items, items...)
	slices.Reverse(items)
	return items, err
}

var seedFlag = flag.Uint64("catchup.seed", 0, "seed for TestRandomSets (0: from the clock)")

// TestRandomSets runs catch-ups between random pairs of sets; the seed is logged so a failure
// replays with -catchup.seed.
func TestRandomSets(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -catchup.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range 40 {
		universe := rng.IntN(600)
		a, b := newSource(), newSource()
		size := 32 + rng.IntN(600)
		for k := range universe {
			switch rng.IntN(4) {
			case 0:
				a.put(uint64(rng.IntN(50)), testEnvelope(k, size))
			case 1:
				b.put(uint64(rng.IntN(50)), testEnvelope(k, size))
			case 2:
				a.put(uint64(k), testEnvelope(k, size))
				b.put(uint64(k), testEnvelope(k, size))
			}
		}
		maxFrame := []int{0, MinFrameSize, 5000, 64 << 10}[rng.IntN(4)]
		r := syncPair(t, a, b, maxFrame)
		if t.Failed() {
			t.Fatalf("case %d (universe %d, size %d, maxFrame %d) failed", i, universe, size, maxFrame)
		}
		checkStats(t, r)
	}
}
