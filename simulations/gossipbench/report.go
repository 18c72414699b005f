package gossipbench

import (
	"container/heap"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Table formats results as a Markdown table, one row per result: delivery ratio; latency over the
// shortest path at the median and 99th percentile; message copies written per delivery; all wire
// bytes per delivery and the part of them that is control traffic, both over the payload; the wire
// size of one copy on one hop over the payload; copies dropped at full outbound queues; and, for
// GossipSub, the mesh (links in it, and its own shortest paths over the topology's at the 99th
// percentile; and node seconds with an empty mesh during the measurement).
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| router | delivered | latency p50 | latency p99 | copies / delivery | wire bytes / delivery | of which control | bytes / hop | dropped | mesh links | mesh path p99 | empty mesh (node·s) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		mesh, meshP99 := "all", "1.00×"
		if r.MeshLinks > 0 {
			mesh = fmt.Sprint(r.MeshLinks)
			meshP99 = fmt.Sprintf("%.2f×", quantile(r.MeshStretch, .99))
			if r.MeshUnreachable > 0 {
				meshP99 += fmt.Sprintf(" (%d pairs cut off)", r.MeshUnreachable)
			}
		}
		fmt.Fprintf(&b, "| %s | %.4f | %.2f× | %.2f× | %.2f | %.2f× | %.2f× | %.2f× | %d | %s | %s | %d |\n",
			r.Router, r.DeliveryRatio(), r.StretchQuantile(.5), r.StretchQuantile(.99),
			r.CopiesPerDelivery(), r.BytesPerDelivery(), ratio(float64(r.ControlBytes), float64(r.Delivered)*float64(r.Payload)),
			r.HopOverhead(), r.Dropped, mesh, meshP99, r.EmptyMesh)
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

// FloodPublishStretch is Stretch for a router that floods its own messages to every neighbour and
// forwards others' over the mesh sub (as the tuned router does): a message from s reaches r at the
// shortest, over the neighbours n of s, of latency(s, n) plus the mesh path from n to r. It also
// returns the copies per delivery such a router sends: the source's one per link, then every node's
// one per mesh link but the one the message came over, averaged over sources.
func FloodPublishStretch(topo, sub Topology) (sorted []float64, copies float64) {
	adj, madj := topo.adjacency(), sub.adjacency()
	inSub := make(map[[2]int]bool, 2*len(sub.Links))
	for _, l := range sub.Links {
		inSub[[2]int{l.A, l.B}], inSub[[2]int{l.B, l.A}] = true, true
	}
	for s := 0; s < topo.N; s++ {
		best := topo.ShortestPaths(s)
		dist := make([]time.Duration, topo.N)
		from := make([]int, topo.N)
		for i := range dist {
			dist[i], from[i] = -1, -1
		}
		dist[s] = 0
		pq := &distHeap{}
		for _, l := range adj[s] {
			dist[l.B], from[l.B] = l.Latency, s
			heap.Push(pq, distItem{node: l.B, d: l.Latency})
		}
		for pq.Len() > 0 {
			it := heap.Pop(pq).(distItem)
			if it.d > dist[it.node] {
				continue
			}
			for _, l := range madj[it.node] {
				if nd := it.d + l.Latency; l.B != s && (dist[l.B] < 0 || nd < dist[l.B]) {
					dist[l.B], from[l.B] = nd, it.node
					heap.Push(pq, distItem{node: l.B, d: nd})
				}
			}
		}
		sent := len(adj[s])
		for r := range dist {
			if r == s || dist[r] < 0 {
				continue
			}
			sorted = append(sorted, float64(dist[r])/float64(best[r]))
			sent += len(madj[r])
			if inSub[[2]int{from[r], r}] {
				sent--
			}
		}
		copies += float64(sent) / float64(topo.N-1)
	}
	slices.Sort(sorted)
	return sorted, copies / float64(topo.N)
}

// ExposureTable formats what each result's routing tells peers about authorship, one row per
// result, over the measured messages: peers that got a copy of a message straight from its author
// (and of those, peers outside the author's mesh), against the author's topic peers; peers whose
// first copy came from the author; how often a receiver names the author right, by the first-sender
// rule (the peer it got the message from first) and by the mesh-aware rule (an unasked copy from
// outside its mesh, else the first sender), over all (message, receiver) pairs and, for the first
// rule, over the author's topic peers only; how often the off-mesh rule fired and how often it was
// right; and the best single member's hit rate by either rule. With relay ≥ 0, the last column is
// that node's hit rate (a relay's view), and it is left out of "best member".
func ExposureTable(rs []Result, relay int) string {
	var b strings.Builder
	b.WriteString("| router | author's topic peers / msg | peers with a copy from the author / msg | of which outside its mesh | peers whose first copy is from the author / msg | first-sender guess right | first-sender guess right, author's topic peers only | mesh-aware guess right | off-mesh copies seen (right) | best member: first-sender / mesh-aware |")
	if relay >= 0 {
		b.WriteString(" relay: first-sender / mesh-aware |")
	}
	b.WriteString("\n|---|---|---|---|---|---|---|---|---|---|")
	if relay >= 0 {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rs {
		msgs := float64(r.Messages)
		best, bestMesh := 0.0, 0.0
		for i := range r.Observed {
			if i == relay {
				continue
			}
			best = max(best, ratio(float64(r.ObservedFirstHand[i]), float64(r.Observed[i])))
			bestMesh = max(bestMesh, ratio(float64(r.ObservedMeshGuess[i]), float64(r.Observed[i])))
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %d (%.3f) | %.3f / %.3f |",
			r.Router, float64(r.AuthorDegree)/msgs, float64(r.Direct)/msgs, float64(r.DirectOffMesh)/msgs,
			float64(r.FirstHand)/msgs, ratio(float64(r.FirstHand), float64(r.Expected)),
			ratio(float64(r.FirstHand), float64(r.AuthorDegree)), ratio(float64(r.MeshGuess), float64(r.Expected)),
			r.OffMeshSeen, ratio(float64(r.OffMeshRight), float64(r.OffMeshSeen)), best, bestMesh)
		if relay >= 0 && relay < len(r.Observed) {
			fmt.Fprintf(&b, " %.3f / %.3f |", ratio(float64(r.ObservedFirstHand[relay]), float64(r.Observed[relay])),
				ratio(float64(r.ObservedMeshGuess[relay]), float64(r.Observed[relay])))
		}
		b.WriteString("\n")
	}
	return b.String()
}
