// Package node runs a fieldmesh device on the network: a go-libp2p host (TCP and QUIC, Noise, yamux,
// connection and resource managers, mDNS discovery), one GossipSub topic per team, and two stream
// protocols:
//
//   - /fieldmesh/join/1.0.0: a new member proves it holds a one-time invite code (Noise XXpsk3 with the
//     code's secret as pre-shared key, flynn/noise) and receives the team key. See join.go.
//   - /fieldmesh/sync/1.0.0: catch-up. Whenever two members connect, every SyncInterval while they stay
//     connected, and when gossip brings an op whose parents are missing, they reconcile the sealed
//     envelopes of every team they share and send each other what is missing (sync/catchup, behind the
//     Catcher interface, so range-based reconciliation can replace it).
//
// Everything a node sends is a sealed envelope (sync/envelope): gossip runs with StrictNoSign and
// content-hash message ids, so gossip carries no author; topics are one-way hashes of the team id. The
// topic validator opens every envelope before it is delivered or forwarded, so malformed, oversized,
// foreign, tampered or unsigned envelopes go no further than the first honest node.
//
// Durability: an op is acknowledged (Send returns, a received envelope counts as stored) only after the
// store's fsync returned. Gossip arrivals that queue up are written in one batch.
//
// The team logs live in memory and are rebuilt from the encrypted store at start; the store keeps only
// sealed envelopes and, per team, its id and epoch keys (teamRecord).
//
// Concurrency: a Node's methods are safe for concurrent use. Its goroutines (gossip readers, the
// ingest loop, maintenance, sync sessions) all end before Close returns.
package node
