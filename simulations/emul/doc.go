// Package emul runs a simulator scenario (package sim: its Config, built
// from the same TOML by sim.Scenario.Build, with the same contacts and
// messages) on real fieldmesh nodes, to check the simulator's fidelity:
// the same run in the fast simulator and here must agree on delivery
// ratio and median latency (TestEmulationAgreesWithSimulator).
//
// # What runs
//
// Each simulated device is a node.Node with an in-memory store
// (storage.CreateMemory) on a libp2p mocknet host keyed by its device key,
// with GossipSub, its sync and join protocols and every timer as shipped
// (sync every 2 minutes, redial every 30 seconds, acknowledgements every
// 30 seconds when the scenario has them, core ticks every minute). Teams
// are enrolled as real devices enrol: the first member creates the team
// (Node.CreateTeam) and invites each other member, who joins with the code
// (Node.Invite, Node.Join), all linked; once every member shows the whole
// team, every link is cut and the trace starts from there.
//
// A contact opening links the two hosts on mocknet and connects them:
// the nodes' own connection handling starts their reconciliation and
// gossip. A contact closing unlinks them (neither can dial the other) and
// disconnects them: mocknet resets their streams, so what was in flight
// is lost. Messages are sent with Node.Send at their times; a message
// counts as delivered to a recipient when it first shows in that node's
// Node.Messages, read on each Node.Watch event. Nothing of the nodes'
// internals is read.
//
// # Virtual time
//
// Run must be called inside a testing/synctest bubble: mocknet's links
// (latency and bandwidth are timers), GossipSub's heartbeat, the nodes'
// loops and Badger's all run on the bubble's clock, which jumps to the
// next timer whenever every goroutine is blocked. Six hours of eight
// nodes take about 25 seconds.
//
// Mocknet opens the remote end of a new stream on a goroutine of its own;
// a stream being opened while its connection closes is not reset with it
// and goes on carrying data with no connection under it (the leak
// node's catch-up test works around with pubsub blacklists; here, under
// the race detector, it delivered messages to devices out of contact).
// So each node's host is guarded (guard.go): every stream the node opens
// or accepts is refused unless the trace has the two devices in contact,
// and is reset when their contact closes; and a contact closes only once
// every goroutine of the bubble is blocked (synctest.Wait), so that no
// stream is being opened. The run counts deliveries at devices with no
// open contact in the trace (Report.OffContact): a faithful run has none.
//
// # What maps and what does not
//
//   - A contact's bandwidth and latency are mocknet's link options. Mocknet
//     limits a link's bandwidth over both directions together; the
//     simulator gives each direction its own.
//   - The simulator's Link.Step and Link.Exclusive (the ONE's radio model),
//     its tick period and its recon frame size are its own: the node has
//     its timers and frames.
//   - Only the node's own carrying is emulated: members gossip and
//     reconcile their teams' envelopes and nothing else, the simulator's
//     "members" strategy. Other strategies and clinic relays are refused
//     (ErrStrategy, ErrRelays).
//   - Hops and relayed copies are not observable through the node's API;
//     bytes are the sync sessions' (Node.Status), not gossip's.
package emul
