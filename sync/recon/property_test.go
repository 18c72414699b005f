package recon

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "seed for TestRandomPairs (0: from the clock)")

// randomPair draws two sets over a shared pool: sizes, overlap, timestamp shape (spread, many
// equal, all equal), envelope size and frame size all vary.
func randomPair(r *rand.Rand) (a, b []Item, size, maxFrame int) {
	pool := r.IntN(4000)
	if r.IntN(8) == 0 {
		pool = r.IntN(20)
	}
	var step uint64
	perTime := 1
	switch r.IntN(4) {
	case 0:
		step = hlcStep
	case 1:
		step = uint64(1 + r.IntN(1000))
	case 2:
		step, perTime = hlcStep, 1+r.IntN(50) // bursts of equal timestamps
	case 3:
		step = 0 // every item at time 0
	}
	base := r.Uint64N(1 << 56)
	items := make([]Item, pool)
	for k := range items {
		items[k] = keyItem(int(r.Uint64()>>1), 1)
		items[k].Time = base + uint64(k/perTime)*step
	}
	// Each item is on both sides, on one, or (rarely) on neither.
	pa, pb := r.Float64(), r.Float64()
	if r.IntN(2) == 0 {
		pa, pb = 1-r.Float64()*0.05, 1-r.Float64()*0.05 // mostly shared
	}
	for k, it := range items {
		inA, inB := r.Float64() < pa, r.Float64() < pb
		if r.IntN(3) == 0 && k > pool-pool/20 { // a tail on one side
			inA = r.IntN(2) == 0
			inB = !inA
		}
		if inA {
			a = append(a, it)
		}
		if inB {
			b = append(b, it)
		}
	}
	size = 32 + r.IntN(600)
	if r.IntN(10) == 0 {
		size = 32 + r.IntN(3*MinFrameSize)
	}
	maxFrame = []int{MinFrameSize, MinFrameSize + r.IntN(8000), 0}[r.IntN(3)]
	return a, b, size, maxFrame
}

// TestRandomPairs reconciles many random pairs of sets and checks, for each, that both sides
// end with the union, nothing arrives twice, nothing is sent that the peer had, every frame fits
// its sender's limit, and both sides finish. The seed is logged: replay a failure with
// go test -run TestRandomPairs ./sync/recon/ -seed=N.
func TestRandomPairs(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d", seed)
	n := 200
	if testing.Short() {
		n = 60
	}
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range n {
		a, b, size, maxFrame := randomPair(r)
		sa, sb := newTestSource(size, a), newTestSource(size, b)
		ok := t.Run("", func(t *testing.T) { syncPair(t, sa, sb, maxFrame) })
		if !ok {
			t.Fatalf("pair %d of seed %d: %d and %d items, %d-byte envelopes, maxFrame %d",
				i, seed, len(sa.items), len(sb.items), size, maxFrame)
		}
	}
}
