// Package gossipbench measures live gossip on a simulated network: fieldmesh's tuned GossipSub
// (meshconf.GossipOptions) against default GossipSub and floodsub, on the same topology, with the same
// messages, in the same run.
//
// A Run builds a go-libp2p mocknet of N nodes linked as a Topology (RandomTopology: a connected
// random graph, 4–8 links per node, 10–100 ms per link, seeded), starts one pubsub router per node on
// one topic, waits until every node sees its neighbours, lets the meshes form, sends an unmeasured
// warm-up workload and then the measured one (RandomWorkload: random sources, Poisson pacing,
// optional bursts), and waits on each delivery with a deadline. It reports (Result, Table):
//
//   - the delivery ratio;
//   - latency as a ratio to the shortest path (Dijkstra over the link latencies) of each (source,
//     receiver) pair, at the median and the 99th percentile;
//   - message copies written to the wire per delivered message (a pubsub RawTracer counts the
//     messages of every RPC written), and all wire bytes per delivery, control traffic included
//     (IHAVE, IWANT, IDONTWANT, GRAFT, PRUNE, subscriptions), length prefixes included;
//   - the wire size of one copy of a message on one hop over its payload;
//   - for GossipSub, the mesh: its links, and its own shortest paths over the topology's;
//   - what the routing tells peers about authorship (messages carry no author): which peers got a
//     copy straight from the author, whose first copy came from it, and how often a receiver names
//     the author right by "whoever sent it to me first" or by "whoever sent it to me from outside my
//     mesh, unasked" (ExposureTable).
//
// GreedySpanner bounds what any mesh can do: the fewest links that keep every shortest path within
// a stretch; FloodPublishStretch gives the latency and copies of such a mesh when sources flood
// their own messages, as the tuned router does.
//
// Routers with Probe set run a ping service and a meshconf.Prober on every node, as fieldmesh hosts
// do, so the tuned router's latency scores come from pings over the simulated links.
//
// Time: Run reads the clock for pacing and latencies, and is meant to run inside a testing/synctest
// bubble, where time is virtual: link latencies are exact, processing takes no time, and the figures
// do not depend on the machine's load. Latency is added by a delay line on the streams pubsub opens,
// not by mocknet's own link latency, which postpones earlier writes on a stream to the arrival of
// the latest one (delay.go says more). An optional per-node uplink rate serialises what a node
// sends, and pushes back on pubsub's outbound queues as a slow socket does.
//
// The test TestGossipGoals runs a 20-node version by default and asserts the goals the tuned router
// reaches; go test -run TestGossipGoals -gossipbench.full -v runs the 100-node measurement of
// docs/gossip.md and prints its tables. go test -run 'TestFloodPublish$' -gossipbench.flood (add
// -gossipbench.full for 100 nodes) compares the tuned router with and without flood publishing,
// paced, with bursts, and with a relay linked to every member (WithRelay).
package gossipbench
