// Package crdt implements the fieldmesh team log: a state-based CRDT whose
// replicas hold a grow-only set of immutable, signed, content-addressed ops
// (a causal DAG through each op's parents, as in Merkle-DAG CRDTs), and
// whose visible team state is a pure function of that set. Timestamps are
// hybrid logical clocks (Kulkarni et al., "Logical Physical Clocks", 2014),
// hardened for devices whose clocks are a day wrong or reset to 1970.
//
// Main types:
//   - [Op]: {team, author device, HLC time, parents, kind, body, signature}
//     with a canonical binary encoding ([Op.Marshal], [UnmarshalOp]); its
//     [OpID] is the SHA-256 of that encoding. The author signs, with Ed25519,
//     "fieldmesh/op/v1" followed by the encoding without the signature.
//   - Bodies: [Create] (genesis), [Commit] (membership changes and a new key
//     epoch), [Message], [Ack] (received or read, many messages per op),
//     [Filed] (messages a record gateway filed to the health record, with
//     the record's references; State.Filed says which count: an admin's),
//     [Duty] (a person's duty hours), [Rota] (the on-call rota, admins),
//     [Review] (a membership review, admins), [Policy] (the team's lock
//     policy, admins); each versioned, size-limited,
//     with Marshal, Validate and UnmarshalXxx. Names that may mislead
//     (sync/safetext) do not decode; a message with a patient reference
//     counts for nothing in a social team.
//   - [Log]: the set of a team's ops. [Log.Add] refuses ops that are badly
//     signed, of another team, oversize, or of a known kind with a body that
//     does not decode ([Log.Check] says so without adding); these checks
//     look at the op alone, so every replica refuses the same ops. [Log.State]
//     computes the [State]: name, kind, creator, persons and their devices
//     (membership with removal, resolved the same way on every replica),
//     key epochs and the current one, messages in display order, and who
//     received and read each. [State.NextCommit] makes the next commit.
//   - [Clock]: issues HLC timestamps; its doc states the rules for skewed
//     clocks. [Log.HeadsBefore] gives the parents a new op may name.
//
// Time rules, in one place (details on Clock, Log.HeadsBefore, Log.State):
//   - A clock never goes back and never stops: the counter carries into the
//     millisecond, and nothing from a peer can take it past the year 2200.
//   - One peer moves a clock at most MaxDrift (1 h) past the clock's
//     reference (the latest of its wall clock, its own last timestamp and
//     its last quorum jump); further only when ClockQuorum (2) members agree
//     within MaxDrift. A device with no plausible time at all (1970, no
//     history) follows the first member it hears from.
//   - An op whose Time is not after the Time of a parent in the log (or that
//     names itself) has an impossible parent: it is kept, reconciled and
//     relayed like any op (refusing it would make the set depend on arrival
//     order) but counts for nothing in State. Nodes avoid making such ops by
//     naming Log.HeadsBefore(t) as the parents of an op at time t, so an op
//     from a clock far ahead is shown but not built on until clocks reach it.
//   - Messages are listed by (Time, ID), except that nothing comes before
//     what it replies to or builds on.
//
// Acks without storms: one Ack op acknowledges up to MaxAckIDs (512)
// messages. A device acks once per batch window what [State.Unacked] lists,
// split by [SplitAcks]; acks are never acked. State derives ReceivedBy and
// ReadBy per message from the acks of members, order-independently.
//
// Encodings: a version byte first, fixed-size fields, then uvarint-prefixed
// lists and byte strings. Decoders refuse oversized input before allocating,
// non-minimal varints, unknown versions and trailing bytes, never panic, and
// accept exactly the bytes Marshal produces (so decode-then-encode is the
// identity; fuzz targets check it). Golden vectors are in testdata/.
//
// Concurrency: none of the types is safe for concurrent mutation; Log and
// Clock need a lock if shared. Values returned by Log (State, ops) are
// copies the caller owns. The package does no I/O and starts no goroutines.
// Its one piece of shared state is a bounded, locked memo of the ids of ops
// whose signature verified (Op.Verify; NewOp adds the ops it signs): an id
// hashes the whole op, signature included, so the memo only saves repeated
// Ed25519 checks (envelope.Open then Log.Add, gossip then reconciliation,
// many replicas in one simulation) and never accepts a bad signature.
//
// Caveats:
//   - Ordering is only as good as the clocks: a device whose clock runs far
//     ahead has its messages listed late until the others' clocks reach
//     them, and two members whose clocks agree on a wrong future time pull
//     everyone's clocks there (ordering still holds; displayed times do not).
//   - Nothing in the log binds a team id to its genesis op (see Log.State);
//     the node pins it.
//   - Ops are never removed: a message's body is deleted in place
//     (Log.Redact) by retention and after filing (sync/device); retraction
//     comes with a later issue. Removing a member (#3) stops its later ops from
//     counting; it does not delete what it wrote.
package crdt
