// Package usage counts the bytes a fieldmesh device sends and receives, per calendar day, team,
// protocol and peer, keeps the counts in the store's usage keyspace and reports a month of them.
//
// Health workers pay for their own mobile data, and claim it back; the node counts what it sends and
// receives so they can. Three sources feed one set of counters, kept per calendar day (in the time
// zone of Config.Now):
//
//   - the wire, per protocol and per peer: a *Meter is a libp2p bandwidth reporter
//     (libp2p.BandwidthReporter), called by the swarm for every read and write on every stream. It
//     works with libp2p.DisableMetrics (which only turns off the Prometheus collectors). A host built
//     without the reporter reports nothing.
//   - gossip, per team: the pubsub raw tracer of Meter.Tracer attributes each published message (and
//     IHAVE gossip) of a team's topic to that team, as the protobuf bytes of the message inside the
//     RPC.
//   - catch-up, per team: the sync code reports each session's frame bytes (Meter.SyncBytes).
//
// Team counts are a subset of the wire counts (the rest is identify, ping, pubsub control, protocol
// negotiation): a Report shows both and never adds them. Counts are stream payload bytes, so they
// are a lower bound of what a carrier bills: Noise and yamux framing, QUIC, TCP/IP headers and acks,
// and mDNS come on top (a few percent for large transfers, more for small messages).
//
// Counting costs a mutex and a map update per stream read or write; the counts reach the store at most
// once a minute (Meter.Run) and at Meter.Flush, merged into the stored counters in one transaction.
// The store never holds a name: teams are keyed by topic and peers by peer id; names are looked up
// (Names) when a report is made. Keys are bounded: per day at most 32 peers (the rest are folded into
// "other peers", keeping the busiest) and 32 protocols, one row per team and source; days more than
// 400 days old are deleted.
//
// Concurrency: a Meter's methods are safe for concurrent use.
package usage
