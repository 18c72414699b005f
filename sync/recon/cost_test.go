package recon

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

// costEnvelope is the envelope size of the cost goals (issue 4).
const costEnvelope = 300

var costBase = sync.OnceValue(func() []Item { return itemsOf(hlcStep, keys(0, 100_000)...) })

// costPair returns the two sides of a cost case over the first n base items: the full history,
// and the history without d items, the last d (tail) or d random ones (scattered).
func costPair(n, d int, shape string, seed uint64) (full, partial []Item) {
	base := costBase()[:n]
	full = base
	switch shape {
	case "tail":
		partial = base[:n-d]
	case "scattered":
		r := rand.New(rand.NewPCG(seed, uint64(d)))
		drop := make(map[int]bool, d)
		for len(drop) < d {
			drop[r.IntN(n)] = true
		}
		partial = make([]Item, 0, n-d)
		for i, it := range base {
			if !drop[i] {
				partial = append(partial, it)
			}
		}
	}
	return full, partial
}

// TestCostGoals holds the byte and round-trip goals of issue 4 for a history of n = 10^5
// envelopes of 300 bytes, with d = 1, 100 and 1000 missing on one side (either side), as a recent
// tail and scattered:
//
//   - tail: at most 1.1 × the missing envelopes' bytes + 40 bytes per missing item + 2 KiB, in at
//     most ⌈log16(n/32)⌉ + 2 round trips;
//   - scattered: at most 256 bytes of overhead per missing item, plus the same 2 KiB (locating a
//     single difference among n takes a few levels of fingerprints whatever d is);
//   - never more overhead than sending every id (32 bytes per item of the initiator).
//
// Counts, not timings: the exchange is deterministic, so a regression fails the same way every
// time. BenchmarkReconcile prints the same figures for n = 10^6.
func TestCostGoals(t *testing.T) {
	const n = 100_000
	maxRT := int(math.Ceil(math.Log(n/32)/math.Log(16))) + 2
	for _, shape := range []string{"tail", "scattered"} {
		for _, d := range []int{1, 100, 1000} {
			for _, lacking := range []string{"initiator", "responder"} {
				t.Run(fmt.Sprintf("%s/d=%d/lacking=%s", shape, d, lacking), func(t *testing.T) {
					full, partial := costPair(n, d, shape, 1)
					a, b := newTestSource(costEnvelope, full), newTestSource(costEnvelope, partial)
					if lacking == "initiator" {
						a, b = b, a
					}
					res := syncPair(t, a, b, 0)
					total, overhead := res.wireBytes()
					envBytes := float64(d * costEnvelope)
					t.Logf("%d bytes, %d overhead (%.1f per missing), %d round trips (%d flights)",
						total, overhead, float64(overhead)/float64(d), res.roundTrips(), res.flights)
					switch shape {
					case "tail":
						if limit := 1.1*envBytes + 40*float64(d) + 2048; float64(total) > limit {
							t.Errorf("%d bytes; goal at most %.0f", total, limit)
						}
						if res.roundTrips() > maxRT {
							t.Errorf("%d round trips; goal at most %d", res.roundTrips(), maxRT)
						}
					case "scattered":
						if limit := 256*d + 2048; overhead > uint64(limit) {
							t.Errorf("%d bytes of overhead; goal at most %d", overhead, limit)
						}
					}
					if every := uint64(32 * len(a.items)); overhead > every {
						t.Errorf("%d bytes of overhead; sending every id costs %d", overhead, every)
					}
				})
			}
		}
	}
}
