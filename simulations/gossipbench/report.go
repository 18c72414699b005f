package gossipbench

import (
	"fmt"
	"slices"
	"strings"
)

// Table formats results as a Markdown table, one row per result: delivery ratio; latency over the
// shortest path at the median and 99th percentile; message copies written per delivery; all wire
// bytes per delivery and the part of them that is control traffic, both over the payload; the wire
// size of one copy on one hop over the payload; copies dropped at full outbound queues; and, for
// GossipSub, the mesh (links in it, and its own shortest paths over the topology's at the 99th
// percentile).
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| router | delivered | latency p50 | latency p99 | copies / delivery | wire bytes / delivery | of which control | bytes / hop | dropped | mesh links | mesh path p99 |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		mesh, meshP99 := "all", "1.00×"
		if r.MeshLinks > 0 {
			mesh = fmt.Sprint(r.MeshLinks)
			meshP99 = fmt.Sprintf("%.2f×", quantile(r.MeshStretch, .99))
			if r.MeshUnreachable > 0 {
				meshP99 += fmt.Sprintf(" (%d pairs cut off)", r.MeshUnreachable)
			}
		}
		fmt.Fprintf(&b, "| %s | %.4f | %.2f× | %.2f× | %.2f | %.2f× | %.2f× | %.2f× | %d | %s | %s |\n",
			r.Router, r.DeliveryRatio(), r.StretchQuantile(.5), r.StretchQuantile(.99),
			r.CopiesPerDelivery(), r.BytesPerDelivery(), ratio(float64(r.ControlBytes), float64(r.Delivered)*float64(r.Payload)),
			r.HopOverhead(), r.Dropped, mesh, meshP99)
	}
	return b.String()
}

// GreedySpanner returns the sparsest mesh an omniscient router could pick for a latency bound: the
// greedy t-spanner of the topology (links taken shortest first, each kept only if the links kept so
// far offer no path within t × its latency). Every shortest path of the topology is then matched
// within t, and few graphs with that property have fewer links. A router that forwards each message
// to all its mesh links except the one it came from sends about 2 × links − (N − 1) copies of a
// message: a lower bound on what any mesh needs for a given stretch.
func GreedySpanner(topo Topology, t float64) Topology {
	ls := slices.Clone(topo.Links)
	slices.SortStableFunc(ls, func(a, b Link) int { return int(a.Latency - b.Latency) })
	sp := Topology{N: topo.N}
	for _, l := range ls {
		d := sp.ShortestPaths(l.A)[l.B]
		if d < 0 || float64(d) > t*float64(l.Latency) {
			sp.Links = append(sp.Links, l)
		}
	}
	return sp
}

// Stretch returns the sorted latencies of the shortest paths of sub over those of topo, for every
// (source, receiver) pair; pairs sub does not connect are left out and counted in cut.
func Stretch(topo, sub Topology) (sorted []float64, cut int) {
	for s := 0; s < topo.N; s++ {
		a, b := topo.ShortestPaths(s), sub.ShortestPaths(s)
		for r := range a {
			if r == s {
				continue
			}
			if b[r] < 0 {
				cut++
				continue
			}
			sorted = append(sorted, float64(b[r])/float64(a[r]))
		}
	}
	slices.Sort(sorted)
	return sorted, cut
}
