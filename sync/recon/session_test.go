package recon

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// scatter returns ks without d of its keys, picked with r.
func scatter(r *rand.Rand, ks []int, d int) []int {
	drop := map[int]bool{}
	for len(drop) < d {
		drop[ks[r.IntN(len(ks))]] = true
	}
	var out []int
	for _, k := range ks {
		if !drop[k] {
			out = append(out, k)
		}
	}
	return out
}

func TestSync(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	dup := func(step uint64, ks ...int) []Item { // items sharing timestamps, several per time
		items := itemsOf(step, ks...)
		for i := range items {
			items[i].Time = uint64(ks[i]/5) * step
		}
		return items
	}
	tests := []struct {
		name     string
		a, b     []Item // initiator, responder
		maxFrame int
	}{
		{"both empty", nil, nil, 0},
		{"identical small", itemsOf(1, keys(0, 5)...), itemsOf(1, keys(0, 5)...), 0},
		{"identical", itemsOf(hlcStep, keys(0, 5000)...), itemsOf(hlcStep, keys(0, 5000)...), 0},
		{"initiator empty", nil, itemsOf(hlcStep, keys(0, 3000)...), 0},
		{"responder empty", itemsOf(hlcStep, keys(0, 3000)...), nil, 0},
		{"initiator has one", itemsOf(1, 3), itemsOf(1, keys(0, 100)...), 0},
		{"disjoint", itemsOf(hlcStep, keys(0, 2000)...), itemsOf(hlcStep, keys(2000, 4500)...), 0},
		{"disjoint interleaved", itemsOf(1, every(keys(0, 4000), 0)...), itemsOf(1, every(keys(0, 4000), 1)...), 0},
		{"tail gap initiator", itemsOf(hlcStep, keys(0, 5000)...), itemsOf(hlcStep, keys(0, 5300)...), 0},
		{"tail gap responder", itemsOf(hlcStep, keys(0, 5300)...), itemsOf(hlcStep, keys(0, 5000)...), 0},
		{"head gap", itemsOf(hlcStep, keys(200, 5000)...), itemsOf(hlcStep, keys(0, 5000)...), 0},
		{"scattered gaps", itemsOf(hlcStep, scatter(r, keys(0, 8000), 150)...), itemsOf(hlcStep, scatter(r, keys(0, 8000), 150)...), 0},
		{"one missing", itemsOf(hlcStep, scatter(r, keys(0, 8000), 1)...), itemsOf(hlcStep, keys(0, 8000)...), 0},
		{"duplicate timestamps", dup(hlcStep, scatter(r, keys(0, 3000), 40)...), dup(hlcStep, scatter(r, keys(0, 3000), 40)...), 0},
		{"all one timestamp", dup(0, scatter(r, keys(0, 2000), 30)...), dup(0, scatter(r, keys(0, 2000), 30)...), 0},
		{"4 KiB frames scattered", itemsOf(hlcStep, scatter(r, keys(0, 20000), 600)...), itemsOf(hlcStep, scatter(r, keys(0, 20000), 600)...), MinFrameSize},
		{"4 KiB frames disjoint", itemsOf(hlcStep, keys(0, 3000)...), itemsOf(hlcStep, keys(3000, 6000)...), MinFrameSize},
		{"4 KiB frames tail", itemsOf(hlcStep, keys(0, 20000)...), itemsOf(hlcStep, keys(0, 21000)...), MinFrameSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newTestSource(300, tt.a), newTestSource(300, tt.b)
			res := syncPair(t, a, b, tt.maxFrame)
			total, overhead := res.wireBytes()
			t.Logf("%d and %d items, %d+%d missing: %d bytes (%d overhead), %d flights",
				len(a.items), len(b.items), missingFrom(a, b), missingFrom(b, a), total, overhead, res.flights)
		})
	}
}

// TestLargeEnvelopes checks envelopes longer than a frame travel in pieces.
func TestLargeEnvelopes(t *testing.T) {
	for _, size := range []int{MinFrameSize - 10, MinFrameSize, 3*MinFrameSize + 17, 200 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			a := newTestSource(size, itemsOf(hlcStep, keys(0, 40)...))
			b := newTestSource(size, itemsOf(hlcStep, keys(30, 45)...))
			res := syncPair(t, a, b, MinFrameSize)
			if got, want := res.responder.EnvelopeBytesReceived, uint64(30*size); got != want {
				t.Errorf("responder received %d envelope bytes; want %d", got, want)
			}
		})
	}
}

// TestFlightSize checks that envelopes beyond FlightSize wait for later flights.
func TestFlightSize(t *testing.T) {
	const size = 256 << 10
	n := 3*FlightSize/size + 2
	a := newTestSource(size, itemsOf(hlcStep, keys(0, n)...))
	b := newTestSource(size, nil)
	res := syncPair(t, a, b, 0)
	if res.flights < 6 {
		t.Errorf("%d flights for %d bytes of envelopes; want at least 6 (FlightSize %d)", res.flights, n*size, FlightSize)
	}
}

// TestUnsortedSource checks that a Source returning unsorted items with duplicates still works,
// and that the session does not modify the slice it got.
func TestUnsortedSource(t *testing.T) {
	a := newTestSource(100, itemsOf(hlcStep, keys(0, 500)...))
	b := newTestSource(100, itemsOf(hlcStep, keys(100, 700)...))
	raw := append(slicesReverse(b.items), b.items[:50]...)
	orig := append([]Item(nil), raw...)
	b.items = raw
	syncPair(t, a, b, 0)
	for i := range raw {
		if raw[i] != orig[i] {
			t.Fatalf("the session modified the Source's slice at %d", i)
		}
	}
}

// every returns the keys of ks at even (from 0) or odd (from 1) positions.
func every(ks []int, from int) []int {
	var out []int
	for i := from; i < len(ks); i += 2 {
		out = append(out, ks[i])
	}
	return out
}

func slicesReverse(in []Item) []Item {
	out := make([]Item, len(in))
	for i, it := range in {
		out[len(in)-1-i] = it
	}
	return out
}

// TestDeterministic checks that with the same salt a whole exchange is byte-for-byte the same.
func TestDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	a := newTestSource(64, itemsOf(hlcStep, scatter(r, keys(0, 3000), 50)...))
	b := newTestSource(64, itemsOf(hlcStep, scatter(r, keys(0, 3000), 50)...))
	one := run(t, NewInitiatorConfig(a, Config{Rand: newRand(5)}), NewResponder(b, 0), true)
	two := run(t, NewInitiatorConfig(a, Config{Rand: newRand(5)}), NewResponder(b, 0), true)
	if len(one.frames) != len(two.frames) {
		t.Fatalf("%d frames, then %d", len(one.frames), len(two.frames))
	}
	for i := range one.frames {
		if string(one.frames[i].b) != string(two.frames[i].b) {
			t.Fatalf("frame %d differs", i)
		}
	}
}
