package gossipbench

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"
)

var floodPublish = flag.Bool("gossipbench.flood", false, "run the flood-publishing comparison: the tuned router with and without flood publishing, paced, bursts and with a relay (add -gossipbench.full for 100 nodes)")

// relayConfig is the paced scenario with a clinic relay: the paced network and messages, plus one
// node (number sc.nodes) linked to every member at 10–100 ms (WithRelay), which publishes nothing.
func relayConfig(t *testing.T, sc scale) Config {
	t.Helper()
	c := pacedConfig(t, sc, 100, 0)
	c.Topology = WithRelay(c.Topology, rand.New(rand.NewPCG(*seed, 3)), 10*time.Millisecond, 100*time.Millisecond)
	return c
}

// TestFloodPublish (-gossipbench.flood) measures the tuned router with flood publishing and
// without, on the paced network, with bursts, and with a relay
// linked to every member, and prints what each tells peers about who wrote a message
// (ExposureTable).
func TestFloodPublish(t *testing.T) {
	if !*floodPublish {
		t.Skip("run with -gossipbench.flood (add -gossipbench.full for 100 nodes)")
	}
	sc := currentScale()
	bubble(t, func(t *testing.T) {
		goals := func(name string, rs []Result) {
			for _, r := range rs {
				t.Logf("%s, %s: p99 %.2f× (goal ≤ 2.0×), %.2f copies per delivery (goal ≤ 3.0), delivered %.4f",
					name, r.Router, r.StretchQuantile(.99), r.CopiesPerDelivery(), r.DeliveryRatio())
			}
		}
		c := pacedConfig(t, sc, 100, 0)
		rs := runAll(t, c, TunedFloodPublish(true), TunedFloodPublish(false))
		t.Logf("paced: %d nodes, %d links, %d messages of 100 bytes after %d warm-up, seed %d\n%s\n%s",
			sc.nodes, len(c.Topology.Links), sc.messages, sc.warmup, *seed, Table(rs), ExposureTable(rs, -1))
		goals("paced", rs)

		b := burstConfig(t, sc)
		rs = runAll(t, b, TunedFloodPublish(true), TunedFloodPublish(false))
		t.Logf("bursts: %d nodes, %d links, %d messages of 100 bytes, bursts of 60, 256 kbit/s uplinks, seed %d\n%s\n%s",
			sc.nodes, len(b.Topology.Links), len(b.Workload), *seed, Table(rs), ExposureTable(rs, -1))
		goals("bursts", rs)

		r := relayConfig(t, sc)
		rs = runAll(t, r, TunedFloodPublish(true), TunedFloodPublish(false))
		t.Logf("paced with a relay: %d members and a relay linked to each, %d links, %d messages of 100 bytes after %d warm-up, seed %d\n%s\n%s",
			sc.nodes, len(r.Topology.Links), sc.messages, sc.warmup, *seed, Table(rs), ExposureTable(rs, sc.nodes))
		goals("paced with a relay", rs)
	})
}

// TestAuthorExposure checks the authorship counters on a small network with a relay, cheaply: with
// flood publishing every topic peer of an author gets a copy from it, without it fewer do.
func TestAuthorExposure(t *testing.T) {
	bubble(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 5))
		const members = 8
		topo, err := RandomTopology(rng, TopologyConfig{Nodes: members, MinDegree: 5, MaxDegree: 7,
			MinLatency: 10 * time.Millisecond, MaxLatency: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		topo = WithRelay(topo, rng, 10*time.Millisecond, 100*time.Millisecond)
		wl, err := RandomWorkload(rng, members, WorkloadConfig{Messages: 12, MeanGap: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c := Config{Topology: topo, Workload: wl, Payload: 100, Seed: 5}
		rs := runAll(t, c, TunedFloodPublish(true), TunedFloodPublish(false))
		t.Logf("%d members and a relay, %d links, %d messages\n%s\n%s", members, len(topo.Links), len(wl), Table(rs), ExposureTable(rs, members))
		flood, mesh := rs[0], rs[1]
		for _, r := range rs {
			if r.DeliveryRatio() != 1 {
				t.Errorf("%s: delivered %.4f; want 1", r.Router, r.DeliveryRatio())
			}
			if r.FirstHand > r.Direct || r.OffMeshRight > r.OffMeshSeen || r.MeshGuess > r.Expected {
				t.Errorf("%s: counters out of order: first-hand %d > direct %d, or off-mesh right %d > seen %d, or mesh guesses %d > pairs %d",
					r.Router, r.FirstHand, r.Direct, r.OffMeshRight, r.OffMeshSeen, r.MeshGuess, r.Expected)
			}
		}
		if flood.Direct != flood.AuthorDegree {
			t.Errorf("flood publishing: %d copies from authors to distinct peers, authors have %d topic peers; want equal", flood.Direct, flood.AuthorDegree)
		}
		if flood.FirstHand == 0 || flood.OffMeshSeen == 0 {
			t.Errorf("flood publishing: %d first-hand deliveries, %d off-mesh copies; want some of each", flood.FirstHand, flood.OffMeshSeen)
		}
		if mesh.Direct >= mesh.AuthorDegree {
			t.Errorf("no flood publishing: %d copies from authors to distinct peers, authors have %d topic peers; want fewer", mesh.Direct, mesh.AuthorDegree)
		}
	})
}
