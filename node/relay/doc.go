// Package relay is the clinic relay server: an always-on node that stores and forwards the sealed
// envelopes of the team topics it was asked to carry, bridges devices that never meet, and cannot open
// anything it holds. It is what `fieldmesh relay` runs.
//
// Three packages make up the relay, as syncthing's lib/relay/{protocol,client} sit beside its relay
// server:
//
//   - node/relay (this package): the server — Relay, its encrypted store, the admin API and Prometheus
//     metrics. Only the relay's own command imports it.
//   - node/relay/relayproto: what both ends share — the protocol ids, the wire formats of enrolment
//     and the directory, relay keys and proofs (Key, TeamKey), relay codes (Code, CodeFor, ParseCode).
//   - node/relay/relayclient: the device side — Enrol, Directory, CircuitAddrs — which the node
//     (node/relayclient.go) uses without linking the server.
//
// What it does, for enrolled devices only:
//
//   - Store and forward. It keeps the envelopes of every carried topic in its own encrypted store
//     (store.go), takes part in reconciliation with the node's own protocol (recon.Protocol: a hello
//     names the topic, then sync/recon frames; a relay refuses membership exchanges, it holds no
//     membership), answering from its store and also
//     starting sessions (after an enrolment the device did not follow with a session, and every
//     SyncInterval), and subscribes to the carried GossipSub topics with the node's gossip options, so
//     live messages flow through it and are stored. It checks what it can without a key: the envelope
//     header parses (envelope.Unmarshal, which also enforces the size limit) and its topic is the
//     session's or the gossip topic's. Storage is bounded and fair, so that no device can brick the
//     relay for other teams:
//   - an envelope stamped more than MaxAhead (default one hour, crdt.MaxDrift) ahead of the relay's
//     clock is refused: honest devices follow the team's clock within that, and a phone whose own
//     clock runs further ahead has its envelopes taken once the relay's clock reaches them;
//   - each topic has its own share of the byte quota (TopicQuota, default the quota divided by the
//     topics carried): a topic over its share drops its own oldest envelopes, never another topic's,
//     and then the relay's total quota drops the oldest of all; each eviction logs one line;
//   - envelopes are kept for the retention period (by their timestamp). The horizon (the earliest
//     time taken, sent in enrolment answers so a device need not offer older envelopes) is the
//     retention period back from now, or, while a topic is at its share, its oldest stored envelope;
//     it follows what the topic holds and never ratchets, so it cannot get stuck in the future;
//   - each peer's writes (gossip and reconciliation) are rate-limited (PeerRate, PeerBurst); what is
//     over is refused with a log line at most once a minute a peer, and offered again at the device's
//     next reconciliation.
//   - Circuit relay v2 (go-libp2p's circuitv2 relay service) with clinic limits (an hour and 64 MiB per
//     relayed connection, 256 reservations per IP address) and an ACL: reservations for enrolled devices,
//     relayed connections between devices enrolled for a common topic. Devices enable hole punching, so
//     two devices that both reach the relay can reach each other.
//   - A directory (/fieldmesh/relay/directory/1.0.0, relayclient.Directory): a device registers its circuit addresses per topic
//     and learns the other devices of the topic connected now.
//
// Enrolment. A team admin runs `fieldmesh team relay-code TEAM`: a code (relayproto.Code) with the team's
// topic and relay key, derived one-way from the team id (relayproto.TeamKey: HKDF-SHA256, info
// "fieldmesh/v1/relay-key"), so the relay never learns the team id, and the admin's device id. The
// relay's operator runs `fieldmesh relay admit CODE` (and `relay revoke TOPIC` to stop). A device enrols
// per connection with a challenge-response (/fieldmesh/relay/enrol/2.0.0, relayclient.Enrol): the relay
// sends a fresh 32-byte nonce, the device answers, per topic, HMAC-SHA256(relay key,
// "fieldmesh/v1/relay-enrol" | relay peer id | device peer id | nonce) (relayproto.Key.Proof), and an
// admin device adds the team's signed roster (relayproto.Roster). The relay takes a roster signed by the
// code's admin first, then only newer ones signed by an admin of the one it holds (takeRoster), and
// admits the device for the topics whose proofs match and, once it holds a roster, that list the device.
// A newer roster ends the enrolments and directory entries of the devices it leaves out. Enrolment lasts
// while the device has a connection; the relay remembers (durably) that it enrolled, and answers every
// topic; a refusal carries a reason in words, which both ends log with short ids only. Reconciliation,
// gossip (a pubsub peer filter and the topic validator), the directory and circuit reservations are
// refused to a device that is not enrolled for the topic.
//
// What a relay learns: topics (one-way hashes of team ids), the relay keys (which prove enrolment and
// nothing else), the member and admin device ids of the rosters, envelope headers (topic, epoch, op id,
// time) and sizes, and which devices (peer ids) enrol for which topics and when. Until a roster arrives,
// anyone who knows the team id can derive the relay key and enrol; a relay code is a bearer secret like
// the team id itself. An enrolled device can push envelopes that parse but do not open; devices refuse
// them, the relay cannot tell. docs/security.md ("Clinic relays") has the caveats.
//
// At rest: Badger's AES-256 encryption under 32 random bytes in DIR/relay.key (hex, mode 0600, created on
// first start; a key file readable by others is refused). No passphrase: a clinic box restarts
// unattended. Whoever can read the key file can read the database — which holds sealed envelopes, the
// relay keys, the relay's libp2p identity and the enrolment records, and nothing that opens an envelope.
//
// Concurrency: a Relay's methods are safe for concurrent use; its goroutines end before Close returns.
package relay
