// Package crdt implements the fieldmesh team log: a state-based CRDT whose
// replicas hold a grow-only set of immutable, signed, content-addressed ops
// (a causal DAG through each op's parents, as in Merkle-DAG CRDTs), and
// whose visible team state is a pure function of that set. Timestamps are
// hybrid logical clocks (Kulkarni et al., "Logical Physical Clocks", 2014).
//
// Main types:
//   - [Op]: {team, author device, HLC time, parents, kind, body, signature}
//     with a canonical binary encoding ([Op.Marshal], [UnmarshalOp]); its
//     [OpID] is the SHA-256 of that encoding. The author signs, with Ed25519,
//     "fieldmesh/op/v1" followed by the encoding without the signature.
//   - Bodies: [Create] (genesis), [Member] (add a member), [Message]; each
//     versioned, size-limited, with Marshal, Validate and UnmarshalXxx.
//   - [Log]: the set of a team's ops; [Log.State] computes the [State]:
//     name, kind, creator, members (with the admin fixpoint) and messages.
//   - [Clock]: issues HLC timestamps.
//
// Encodings: a version byte first, fixed-size fields, then uvarint-prefixed
// lists and byte strings. Decoders refuse oversized input before allocating,
// non-minimal varints, unknown versions and trailing bytes, never panic, and
// accept exactly the bytes Marshal produces (so decode-then-encode is the
// identity; fuzz targets check it).
//
// Concurrency: none of the types is safe for concurrent mutation; Log and
// Clock need a lock if shared. Values returned by Log (State, ops) are
// copies the caller owns. The package does no I/O and starts no goroutines.
//
// Caveats:
//   - Ordering messages by (Time, ID) respects causality as long as authors
//     observe the timestamps of the ops they build on (Clock.Observe) and
//     clocks stay within [MaxDrift]; an op with a timestamp before one of
//     its parents is still valid and simply sorts before it.
//   - Nothing yet binds a team id to its genesis op (see Log.State); the
//     membership issue (#3) must.
//   - Ops are never removed: retraction, removal and deletion of filed bodies
//     come with later issues.
package crdt
