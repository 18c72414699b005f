package gossipbench

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/node/meshconf"
)

var (
	full  = flag.Bool("gossipbench.full", false, "run the 100-node measurement of docs/gossip.md (about two minutes)")
	sweep = flag.Bool("gossipbench.sweep", false, "with -gossipbench.full or alone: also run the parameter sweeps behind the tuned choices")
	seed  = flag.Uint64("gossipbench.seed", 1, "seed of the topology, the workload and the node keys")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// scale is the size of a run: the default keeps go test fast, -gossipbench.full is the measurement.
type scale struct {
	nodes, warmup, messages int
	// copies is the bound on copies per delivery: the goal, 3.0, at 100 nodes (measured 2.77–2.89
	// over seeds 1–3); 3.5 at 20 nodes, where a mesh of degree 4 is a larger share of 5–6 links per
	// node and the mesh churns more for its size (prune backoff 10 s): runs measured 3.08–3.25 over
	// seeds 1–6 (pubsub's own choices are not seeded).
	copies float64
	// p99 is the bound on the tuned router's latency at the 99th percentile, over the shortest
	// path: a regression guard, since the goal is not reached without flood publishing
	// (docs/gossip.md). Measured without it: 2.20–2.62 at 100 nodes (seeds 1–3, 3 runs each),
	// 1.60–2.56 at 20 (seeds 1–3; 2.56 once under the race detector, since pubsub's own choices are
	// not seeded), hence 2.8 at both sizes.
	p99 float64
}

func currentScale() scale {
	if *full {
		return scale{nodes: 100, warmup: 300, messages: 300, copies: 3.0, p99: 2.8}
	}
	return scale{nodes: 20, warmup: 60, messages: 60, copies: 3.5, p99: 2.8}
}

// pacedConfig is the main scenario: random sources, one message a second on average (Poisson), no
// bursts, unlimited uplinks.
func pacedConfig(t *testing.T, sc scale, payload int, uplink float64) Config {
	t.Helper()
	rng := rand.New(rand.NewPCG(*seed, 1))
	topo, err := RandomTopology(rng, TopologyConfig{Nodes: sc.nodes, MinDegree: 4, MaxDegree: 8,
		MinLatency: 10 * time.Millisecond, MaxLatency: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	warm, err := RandomWorkload(rng, sc.nodes, WorkloadConfig{Messages: sc.warmup, MeanGap: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := RandomWorkload(rng, sc.nodes, WorkloadConfig{Messages: sc.messages, MeanGap: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return Config{Topology: topo, Warmup: warm, Workload: wl, Payload: payload, Seed: *seed, UplinkBitsPerSecond: uplink}
}

// burstConfig is the burst scenario: every tenth event on average is a node publishing 60 messages
// at once (an outbox flushed after a day out of coverage), over 256 kbit/s uplinks.
func burstConfig(t *testing.T, sc scale) Config {
	t.Helper()
	rng := rand.New(rand.NewPCG(*seed, 2))
	topo, err := RandomTopology(rng, TopologyConfig{Nodes: sc.nodes, MinDegree: 4, MaxDegree: 8,
		MinLatency: 10 * time.Millisecond, MaxLatency: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := RandomWorkload(rng, sc.nodes, WorkloadConfig{Messages: 3 * sc.messages, MeanGap: time.Second, BurstEvery: 10, BurstSize: 60})
	if err != nil {
		t.Fatal(err)
	}
	return Config{Topology: topo, Workload: wl, Payload: 100, Seed: *seed, UplinkBitsPerSecond: 256_000}
}

// bubble runs f in a synctest bubble. Under the race detector it runs on one thread, as pubsub's own
// tests do: with several, the Go 1.26 runtime can crash (SIGSEGV in timer.maybeRunChan) on the
// bubble's timers in mocknet's streams.
func bubble(t *testing.T, f func(t *testing.T)) {
	if raceEnabled {
		prev := runtime.GOMAXPROCS(1)
		t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	}
	synctest.Test(t, f)
}

func runAll(t *testing.T, c Config, rts ...Router) []Result {
	t.Helper()
	var out []Result
	for _, rt := range rts {
		r, err := Run(context.Background(), c, rt)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestGossipGoals measures the tuned router against default GossipSub and floodsub and holds the
// tuned one to the goals of issue #5 it reaches: every message delivered, at most 3 copies per
// delivery (at 100 nodes; see scale), at most 2.2 × the payload per copy on a hop, fewer bytes than
// default GossipSub, and no drops in a burst. Latency is held to a regression bound (scale.p99), not
// to the goal of 1.5 × the shortest path, which GossipSub's local mesh upkeep does not reach at 3
// copies on these networks (docs/gossip.md).
func TestGossipGoals(t *testing.T) {
	sc := currentScale()
	bubble(t, func(t *testing.T) {
		c := pacedConfig(t, sc, 100, 0)
		rs := runAll(t, c, Tuned(), DefaultGossipSub(), FloodSub())
		t.Logf("paced: %d nodes, %d links, %d messages of 100 bytes after %d warm-up, seed %d\n%s",
			sc.nodes, len(c.Topology.Links), sc.messages, sc.warmup, *seed, Table(rs))
		tuned, def, flood := rs[0], rs[1], rs[2]

		// The harness itself: floodsub tries every path at once, so it must match the shortest path.
		if flood.DeliveryRatio() != 1 || flood.StretchQuantile(1) > 1+1e-9 {
			t.Errorf("floodsub: delivery %.4f, worst latency %.3f× the shortest path; want 1 and 1 (harness broken?)",
				flood.DeliveryRatio(), flood.StretchQuantile(1))
		}
		if got := tuned.DeliveryRatio(); got != 1 {
			t.Errorf("tuned: delivered %.4f of messages; want 1", got)
		}
		if got := tuned.CopiesPerDelivery(); got > sc.copies {
			t.Errorf("tuned: %.2f copies per delivery; want at most %.1f", got, sc.copies)
		}
		if got := tuned.HopOverhead(); got > 2.2 {
			t.Errorf("tuned: one copy is %.2f× the payload on the wire; want at most 2.2", got)
		}
		if got, lim := tuned.BytesPerDelivery(), def.BytesPerDelivery(); got >= lim {
			t.Errorf("tuned: %.2f× payload in wire bytes per delivery, default GossipSub %.2f×; want fewer", got, lim)
		}
		if got := tuned.StretchQuantile(.99); got > sc.p99 {
			t.Errorf("tuned: latency p99 %.2f× the shortest path; want at most %.2f (regression bound)", got, sc.p99)
		}
		t.Logf("goal latency p99 ≤ 1.5× the shortest path: tuned %.2f×, default GossipSub %.2f×, floodsub %.2f×",
			tuned.StretchQuantile(.99), def.StretchQuantile(.99), flood.StretchQuantile(.99))

		b := burstConfig(t, sc)
		rs = runAll(t, b, Tuned(), DefaultGossipSub(), FloodSub())
		t.Logf("bursts: %d nodes, %d messages of 100 bytes, bursts of 60, 256 kbit/s uplinks, seed %d\n%s",
			sc.nodes, len(b.Workload), *seed, Table(rs))
		if got := rs[0].DeliveryRatio(); got != 1 {
			t.Errorf("tuned, bursts: delivered %.4f of messages; want 1", got)
		}
		if got := rs[0].Dropped; got != 0 {
			t.Errorf("tuned, bursts: %d copies dropped at full queues; want 0", got)
		}
	})
}

// variant is the tuned router with its GossipSub parameters edited, flood publishing on or off and
// a first-delivery score (P2, off in the tuned router) added with the given weight (0: none).
func variant(name string, edit func(*pubsub.GossipSubParams), floodPublish bool, p2 float64) Router {
	return Router{
		Name:  name,
		Probe: true,
		Options: func(rtt func(peer.ID) time.Duration) []pubsub.Option {
			p := meshconf.GossipParams()
			edit(&p)
			return append(meshconf.GossipOptions(meshconf.GossipMsgID, maxMsgSize, rtt),
				pubsub.WithGossipSubParams(p), pubsub.WithFloodPublish(floodPublish))
		},
		Joined: func(t *pubsub.Topic) error { return t.SetScoreParams(withP2(p2)) },
	}
}

// withP2 is meshconf.GossipTopicScore with first message deliveries (P2) scored at weight w (0:
// not), half-life 10 minutes, capped at 1,000.
func withP2(w float64) *pubsub.TopicScoreParams {
	ts := meshconf.GossipTopicScore()
	if w != 0 {
		ts.FirstMessageDeliveriesWeight = w
		ts.FirstMessageDeliveriesDecay = math.Pow(0.5, 1.0/600)
		ts.FirstMessageDeliveriesCap = 1000
	}
	return ts
}

// TestGossipSweep runs the sweeps behind the tuned choices (-gossipbench.sweep): the bound an
// omniscient mesh would reach, mesh degree, flood publishing, first-delivery scores, gossip amount,
// queue sizes under bursts and the IDONTWANT threshold.
func TestGossipSweep(t *testing.T) {
	if !*sweep {
		t.Skip("run with -gossipbench.sweep (add -gossipbench.full for 100 nodes)")
	}
	sc := currentScale()
	keep := func(*pubsub.GossipSubParams) {}
	bubble(t, func(t *testing.T) {
		c := pacedConfig(t, sc, 100, 0)
		var b strings.Builder
		b.WriteString("| mesh | links | copies / delivery (estimate) | mesh path p50 | mesh path p99 | with flood publishing: p50 | p99 |\n|---|---|---|---|---|---|---|\n")
		for _, st := range []float64{1, 1.5, 1.75, 2, 2.5, 3} {
			sp := GreedySpanner(c.Topology, st)
			s, _ := Stretch(c.Topology, sp)
			fs, fc := FloodPublishStretch(c.Topology, sp)
			fmt.Fprintf(&b, "| greedy %.2g-spanner | %d | %.2f | %.2f× | %.2f× | %.2f× | %.2f× |\n", st, len(sp.Links),
				fc, quantile(s, .5), quantile(s, .99), quantile(fs, .5), quantile(fs, .99))
		}
		t.Logf("omniscient meshes on the paced topology (%d links):\n%s", len(c.Topology.Links), b.String())

		// The tuning before latency scores: P2 alone ranks mesh peers (weight 1), pruning keeps the
		// best 3 and one at random, no opportunistic grafting.
		blind := Router{
			Name: "no latency scores (P2 weight 1 ranks alone, Dscore 3, no opportunistic grafting)",
			Options: func(func(peer.ID) time.Duration) []pubsub.Option {
				p := meshconf.GossipParams()
				p.Dscore, p.OpportunisticGraftTicks = 3, 60
				sp, st := meshconf.GossipPeerScore(nil)
				st.OpportunisticGraftThreshold = 0
				return append(meshconf.GossipOptions(meshconf.GossipMsgID, maxMsgSize, nil),
					pubsub.WithGossipSubParams(p), pubsub.WithPeerScore(sp, st))
			},
			Joined: func(t *pubsub.Topic) error { return t.SetScoreParams(withP2(1)) },
		}
		rs := runAll(t, c,
			Tuned(),
			blind,
			variant("D=3 (Dlo 3, Dhi 4, Dscore 3, Dout 0)", func(p *pubsub.GossipSubParams) {
				p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 3, 3, 4, 3, 0
			}, true, 0),
			variant("Dhi 6", func(p *pubsub.GossipSubParams) { p.Dhi = 6 }, true, 0),
			variant("D=5 (Dlo 4, Dhi 6, Dscore 5)", func(p *pubsub.GossipSubParams) {
				p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 5, 4, 6, 5, 1
			}, true, 0),
			variant("opportunistic grafting every 5 s", func(p *pubsub.GossipSubParams) { p.OpportunisticGraftTicks = 5 }, true, 0),
			variant("no flood publishing", keep, false, 0),
			variant("first-delivery score (P2, weight 0.1)", keep, true, 0.1),
			variant("default gossip (Dlazy 6, factor 0.25, history 3)", func(p *pubsub.GossipSubParams) {
				p.Dlazy, p.GossipFactor, p.HistoryGossip = 6, 0.25, 3
			}, true, 0),
			variant("no gossip (Dlazy 0)", func(p *pubsub.GossipSubParams) { p.Dlazy = 0 }, true, 0),
			variant("IDONTWANT for every message", func(p *pubsub.GossipSubParams) { p.IDontWantMessageThreshold = 0 }, true, 0),
		)
		t.Logf("paced, variants of the tuned router:\n%s", Table(rs))

		small := Tuned()
		small.Name = "tuned, queues of 32 (pubsub's default)"
		small.Options = func(rtt func(peer.ID) time.Duration) []pubsub.Option {
			return append(meshconf.GossipOptions(meshconf.GossipMsgID, maxMsgSize, rtt),
				pubsub.WithPeerOutboundQueueSize(32), pubsub.WithValidateQueueSize(32))
		}
		t.Logf("bursts, queue sizes:\n%s", Table(runAll(t, burstConfig(t, sc), Tuned(), small)))

		for _, payload := range []int{200, 400, 1000} {
			c := pacedConfig(t, sc, payload, 256_000)
			rs := runAll(t, c,
				variant("IDONTWANT never", func(p *pubsub.GossipSubParams) { p.IDontWantMessageThreshold = 1 << 30 }, true, 0),
				variant("IDONTWANT always", func(p *pubsub.GossipSubParams) { p.IDontWantMessageThreshold = 0 }, true, 0),
			)
			t.Logf("paced, %d-byte messages, 256 kbit/s uplinks:\n%s", payload, Table(rs))
		}
	})
}
