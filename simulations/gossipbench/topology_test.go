package gossipbench

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestFloodPublishStretch checks the flood-publishing bound on a triangle: 0–1 and 1–2 fast, 0–2 slow.
func TestFloodPublishStretch(t *testing.T) {
	ms := time.Millisecond
	topo := Topology{N: 3, Links: []Link{{0, 1, 10 * ms}, {1, 2, 10 * ms}, {0, 2, 50 * ms}}}
	// The mesh holds the two fast links: every pair at its shortest path. Copies from 0: 2 (flood),
	// 1 from node 1 (to 2), none from 2 (its one mesh link is the one the message came over); from
	// 1: 2, then none; from 2 as from 0. (3 + 2 + 3) / 3 sources / 2 receivers.
	st, copies := FloodPublishStretch(topo, Topology{N: 3, Links: topo.Links[:2]})
	if st[len(st)-1] != 1 || math.Abs(copies-8.0/6) > 1e-9 {
		t.Errorf("fast mesh: worst stretch %v, copies %v; want 1 and %v", st[len(st)-1], copies, 8.0/6)
	}
	// Only 0–1 in the mesh: 2 hears 0 over the slow link (50 ms against 20: 2.5×) and 1 only by
	// flooding; 0 hears 2 the same way; 1 and 2 are neighbours.
	st, _ = FloodPublishStretch(topo, Topology{N: 3, Links: topo.Links[:1]})
	if got := st[len(st)-1]; got != 2.5 {
		t.Errorf("mesh of one link: worst stretch %v; want 2.5", got)
	}
	// Against the plain mesh distance: never worse.
	rng := rand.New(rand.NewPCG(7, 7))
	big, err := RandomTopology(rng, TopologyConfig{Nodes: 30, MinDegree: 3, MaxDegree: 6, MinLatency: ms, MaxLatency: 50 * ms})
	if err != nil {
		t.Fatal(err)
	}
	sp := GreedySpanner(big, 3)
	plain, _ := Stretch(big, sp)
	flood, _ := FloodPublishStretch(big, sp)
	for _, q := range []float64{.5, .9, .99, 1} {
		if quantile(flood, q) > quantile(plain, q)+1e-9 {
			t.Errorf("q%.2f: flood publishing %.3f, mesh alone %.3f; flooding the first hop cannot be slower", q, quantile(flood, q), quantile(plain, q))
		}
	}
}
