// Package teamkeys holds one team's key epochs on one device and seals and
// opens that team's envelopes (sync/envelope, version 2) with them: the
// state the node keeps next to a team's log, persisted as one record of
// the encrypted store.
//
// An epoch is started by the team's create op (epoch 1, recipient: the
// creator's device) or by a commit op (crdt.Commit, which lists its
// recipient devices with their Noise keys). Its tag is crdt.TagOf of that
// op's id, the epoch field of every envelope sealed in it. For each epoch
// it holds, a [Keys] has:
//   - the outer key (envelope.OuterKey of the epoch key K), which opens the
//     outer layer of the epoch's envelopes: the create and commit ops, and
//     the sender and index of chain-form envelopes;
//   - if this device was one of the epoch's recipients: its own sender
//     chain and a receiver chain for every other recipient
//     (crypto/senderkey), derived as soon as K is learned; then K is
//     dropped. A device never gets the chains of an epoch it was not a
//     recipient of.
//
// How a device learns epochs. [Keys.SealCommit] makes a fresh K, boxes it
// to the recipients, and learns the epoch itself. [Keys.Open] of a commit
// envelope trial-opens the boxes; if one opens, the device learns the epoch
// (chains only if the op lists it as a recipient with its current Noise
// key). Every commit also carries the outer keys of all the epochs its
// author holds (prior keys), which the recipients learn (outer key only):
// so a device added on one side of a partition can, once someone who holds
// both sides' keys commits a re-key to it, open the create and commit ops
// of the epochs started on the other side and compute the membership, but
// not read those epochs' messages (ErrNoChain).
//
// Messages. [Keys.Seal] seals any other op in chain form under an epoch
// this device can send in (the node picks crdt.State.Current), advancing
// its sender chain. [Keys.Open] of a chain-form envelope advances the
// sender's receiver chain through senderkey's OpenChecked, whose check
// verifies, before any key is consumed, the op's signature and that its
// author is the chain's sender and its id, time and team are the
// envelope's. Messages may arrive out of order, up to senderkey.MaxSkipped
// ahead of a missing one (further is ErrTooFarAhead: keep the envelope and
// retry); an index opens once (ErrReplay).
//
// Replays are harmless: a replayed chain envelope is ErrReplay, a replayed
// commit envelope of an epoch held with its chains returns its op and
// changes nothing (the node's log applies ops once). Every method leaves
// the state unchanged when it returns an error.
//
// Removal: a device that is not a recipient of a commit gets nothing of
// its epoch (no box opens; its outer key reaches only devices that can
// open the commit), so it opens nothing sealed in that epoch or any later
// one whose commits it is not a recipient of, whatever old state it keeps.
// Nothing protects what is sealed under an older epoch by a device that
// has not yet learned of the removal (the partition window; see
// docs/security.md).
//
// Retention: [Keys.Forget] destroys an epoch and remembers its tag, so
// that neither a replay of its commit (whose box this device can still
// open) nor another device's prior keys bring it back; bringing back the
// chains would also restart this device's sender chain at index 0 and
// reuse its keys. A new joiner cannot read the commits of epochs everyone
// has forgotten: the membership history must reach it by other means.
//
// Main type: [Keys] ([New], [Unmarshal], [Keys.Marshal], [Keys.Tags],
// [Keys.CanSend], [Keys.SealCommit], [Keys.Seal], [Keys.Check],
// [Keys.Open], [Keys.Forget]). Errors are the ErrXxx values (and wrapped
// sync/envelope errors).
//
// Encoding: [Keys.Marshal] is versioned, canonical, and holds secrets
// (outer and chain keys); [Unmarshal] refuses anything else, never panics
// (fuzzed), and is bounded by [MaxStateSize].
//
// Concurrency: a Keys is not safe for concurrent use; the node serialises
// the calls for one team (and persists Marshal after each state change,
// before a sealed envelope leaves the device).
//
// Caveats:
//   - Go cannot promise erasure: K, dropped keys and wiped chains may
//     survive in memory until collected, and older records in the store's
//     files until compaction (see crypto/senderkey).
//   - What the node must do around this package (the property test in
//     this package fails without each; see TestProperty):
//     1. commit only when its view is complete: every parent named by an
//     op in its log is in the log, or is a chain-form envelope it holds
//     and cannot open (ErrNoChain: a message of an epoch it was not a
//     recipient of). Otherwise its prior keys carry the outer keys of
//     epochs whose commits it has not seen to devices those commits
//     removed;
//     2. name as parents of a commit, besides Log.HeadsBefore, every
//     create and commit op of its log that no other commit names (the
//     epoch frontier): a device added later cannot open the messages of
//     epochs it was not in, so the causal order between commits must not
//     run through messages only, or its crdt.State diverges;
//     3. re-key not only on State.NeedsRekey but also when an epoch lies
//     outside the causal past of the current one: a sound current epoch
//     started without knowledge of a concurrent one did not hand that
//     epoch's outer key on, and the devices added with it cannot read the
//     concurrent commits until someone who holds both commits again.
//   - Epoch tags are 32 bits of an op id: two commits can share one (about
//     one chance in four billion per pair). The first epoch learned keeps
//     the tag; the other is ErrEpochConflict on this device.
package teamkeys
