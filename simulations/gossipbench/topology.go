package gossipbench

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Link is an undirected link between nodes A and B with a one-way latency.
type Link struct {
	A, B    int
	Latency time.Duration
}

// Topology is a connected undirected graph of N nodes.
type Topology struct {
	N     int
	Links []Link
}

// TopologyConfig describes a random topology. Every field must be set.
type TopologyConfig struct {
	Nodes      int           // number of nodes, at least 2
	MinDegree  int           // links per node, at least (a node never gets fewer unless N-1 is smaller)
	MaxDegree  int           // links per node, at most, MinDegree <= MaxDegree
	MinLatency time.Duration // one-way latency of a link, drawn uniformly from [MinLatency, MaxLatency]
	MaxLatency time.Duration
}

// RandomTopology draws a connected random graph: every node gets a target degree drawn uniformly from
// [MinDegree, MaxDegree], stubs are paired at random (no self-links, no duplicate links), and a random
// spanning path of the nodes is laid down first so the graph is connected whatever the pairing gives.
// The same rng state gives the same graph.
func RandomTopology(rng *rand.Rand, c TopologyConfig) (Topology, error) {
	if c.Nodes < 2 || c.MinDegree < 1 || c.MaxDegree < c.MinDegree || c.MinLatency <= 0 || c.MaxLatency < c.MinLatency {
		return Topology{}, fmt.Errorf("gossipbench: bad topology config %+v", c)
	}
	n := c.Nodes
	maxDeg := min(c.MaxDegree, n-1)
	minDeg := min(c.MinDegree, maxDeg)
	target := make([]int, n)
	for i := range target {
		target[i] = minDeg + rng.IntN(maxDeg-minDeg+1)
	}
	deg := make([]int, n)
	has := make(map[[2]int]bool)
	var links []Link
	add := func(a, b int) bool {
		if a == b {
			return false
		}
		k := [2]int{min(a, b), max(a, b)}
		if has[k] {
			return false
		}
		has[k] = true
		deg[a]++
		deg[b]++
		lat := c.MinLatency + time.Duration(rng.Int64N(int64(c.MaxLatency-c.MinLatency)+1))
		// Whole milliseconds keep the table readable and the shortest paths exact.
		lat = lat.Round(time.Millisecond)
		if lat <= 0 {
			lat = time.Millisecond
		}
		links = append(links, Link{A: a, B: b, Latency: lat})
		return true
	}
	// A random Hamiltonian path: connected from the start, and it uses up two stubs of most nodes.
	perm := rng.Perm(n)
	for i := 1; i < n; i++ {
		add(perm[i-1], perm[i])
	}
	// Pair the remaining stubs at random; a few attempts per stub, then give up on it (a node can end a
	// link or two under its target, never over maxDeg).
	for attempt := 0; attempt < 20*n*maxDeg; attempt++ {
		var open []int
		for i := 0; i < n; i++ {
			if deg[i] < target[i] {
				open = append(open, i)
			}
		}
		if len(open) < 2 {
			break
		}
		a := open[rng.IntN(len(open))]
		b := open[rng.IntN(len(open))]
		add(a, b)
	}
	t := Topology{N: n, Links: links}
	if !t.connected() {
		return Topology{}, errors.New("gossipbench: topology is not connected")
	}
	return t, nil
}

// Degrees returns the number of links of each node.
func (t Topology) Degrees() []int {
	d := make([]int, t.N)
	for _, l := range t.Links {
		d[l.A]++
		d[l.B]++
	}
	return d
}

func (t Topology) adjacency() [][]Link {
	adj := make([][]Link, t.N)
	for _, l := range t.Links {
		adj[l.A] = append(adj[l.A], l)
		adj[l.B] = append(adj[l.B], Link{A: l.B, B: l.A, Latency: l.Latency})
	}
	return adj
}

func (t Topology) connected() bool {
	d := t.ShortestPaths(0)
	for _, x := range d {
		if x < 0 {
			return false
		}
	}
	return true
}

// ShortestPaths returns the latency of the shortest path from src to every node (Dijkstra over the link
// latencies); -1 for an unreachable node.
func (t Topology) ShortestPaths(src int) []time.Duration {
	adj := t.adjacency()
	dist := make([]time.Duration, t.N)
	for i := range dist {
		dist[i] = -1
	}
	dist[src] = 0
	pq := &distHeap{{node: src}}
	for pq.Len() > 0 {
		it := heap.Pop(pq).(distItem)
		if it.d > dist[it.node] {
			continue
		}
		for _, l := range adj[it.node] {
			nd := it.d + l.Latency
			if dist[l.B] < 0 || nd < dist[l.B] {
				dist[l.B] = nd
				heap.Push(pq, distItem{node: l.B, d: nd})
			}
		}
	}
	return dist
}

type distItem struct {
	node int
	d    time.Duration
}

type distHeap []distItem

func (h distHeap) Len() int           { return len(h) }
func (h distHeap) Less(i, j int) bool { return h[i].d < h[j].d }
func (h distHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *distHeap) Push(x any)        { *h = append(*h, x.(distItem)) }
func (h *distHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// WithRelay returns topo with one more node, number topo.N, linked to every node, as a clinic relay is:
// every device of the team keeps a connection to it (node/relayclient.go), and it is a peer in the
// team's topic. Each node dials it (the node is the link's first end); the latencies are drawn
// uniformly from [minLatency, maxLatency], whole milliseconds.
func WithRelay(topo Topology, rng *rand.Rand, minLatency, maxLatency time.Duration) Topology {
	out := Topology{N: topo.N + 1, Links: slices.Clone(topo.Links)}
	for i := 0; i < topo.N; i++ {
		lat := (minLatency + time.Duration(rng.Int64N(int64(maxLatency-minLatency)+1))).Round(time.Millisecond)
		out.Links = append(out.Links, Link{A: i, B: topo.N, Latency: max(lat, time.Millisecond)})
	}
	return out
}
