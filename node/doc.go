// Package node runs a fieldmesh device on the network: a go-libp2p host (TCP and QUIC, Noise, yamux,
// connection and resource managers, mDNS discovery), one GossipSub topic per team, and two stream
// protocols. It is the I/O shell around the device core (sync/device): every rule a device follows —
// what it accepts, keeps, seals, commits, re-keys, forgets and acknowledges — is the core's. The node
// feeds each team's core what arrives and the time, and carries out the Effects it returns, in order:
// the Write made durable in one store transaction, then gossip, syncs and bans (core.go).
//
//   - JoinProtocol: a new member proves it holds a one-time invite code (Noise XXpsk3 with the code's
//     secret as pre-shared key) and receives the team's membership history, whose last commit seals
//     the new epoch's key to it (join.go; the invite codes, the handshake and its wire format are
//     package node/join).
//   - SyncProtocol (sync/recon's Protocol): range-based reconciliation of a team's sealed envelopes,
//     run when two devices that may sync connect, when one joins the other's topic, every
//     SyncInterval, and when the core asks (parents or an epoch missing); or, when the two disagree
//     about whether one of them is a member, an exchange of membership ops that lets a removed device
//     learn it was removed (syncsvc.go).
//
// Gossip carries only sealed envelopes (sync/envelope), with StrictNoSign, content-hash message ids
// and no flood publishing, so it names no author; topics are one-way hashes of the team id, and only
// member devices and enrolled relays are taken as peers of a topic. The topic validator gives every
// envelope to the team's core and passes on only what the core kept.
//
// Durability: an op is acknowledged (Send returns) and a received envelope is passed on only after the
// store's fsync returned.
//
// Two concerns live in packages of their own, wired in by the node (usage.go) and reached through
// its methods (Usage; LowData, SetLowData, SyncNow):
//
//   - node/usage counts the bytes sent and received, per day, team, protocol and peer: the host's
//     bandwidth reporter, a gossip tracer, and the sync sessions' frame bytes; it keeps the counts in
//     the store and makes the monthly report.
//   - node/lowdata is low-data mode: routine messages and acknowledgements wait in the store's outbox
//     and automatic reconciliation runs only for teams with an urgent op, until the mode goes off.
//     Messages shows the device's own messages waiting there, marked Queued (messages.go).
//
// Neither imports node: they take the store through small interfaces, the clock as Config.Now, and
// (lowdata) a Publisher the node implements.
//
// The audit trail (node/audit, in Config.AuditFile) records what the store keeps after each durable
// write — teams created or joined, membership commits, re-keys, admins' relay ops, bodies deleted past
// retention — and the exports made through Export and AuditExport (auditing.go, exporting.go; the
// subject-access export is rendered by node/export).
//
// A phone's short-range radio (Bluetooth LE, Wi-Fi Direct) is one more libp2p transport, from
// node/proximity (Config.Proximity): the host listens and dials over it under the same Noise and
// yamux, and the devices the radio finds are dialled as mDNS finds them.
//
// Time: node logic reads the clock only through Config.Now; stream deadlines use the operating
// system's clock, as the network does.
//
// Concurrency: a Node's methods are safe for concurrent use. Each team's core is called under that
// team's lock; its goroutines (gossip readers, upkeep, sync sessions) all end before Close returns.
package node
