// Package teamkeys holds one team's key epochs on one device and seals and
// opens that team's envelopes (sync/envelope, version 8) with them: the
// state the device core (sync/device) keeps next to a team's log,
// persisted as one record of the encrypted store. It holds keys and
// applies the cryptography; which ops count, and so which epochs to learn
// and which message keys to spend, is the caller's to judge: every method
// that opens something changes nothing, and the caller changes the state
// afterwards with Learn, LearnPrior and Consume.
//
// An epoch is started by the team's create op (recipient: the creator's
// device) or by a commit op (crdt.Commit, which lists its recipient devices
// with their Noise keys; [Recipients] returns them). Its tag is crdt.TagOf
// of that op's id, the epoch field of every envelope sealed in it. For
// each epoch it holds, a [Keys] has:
//   - the outer key (envelope.OuterKey of the epoch key K), which opens the
//     outer layer of the epoch's envelopes: the create and commit ops, and
//     the sender, index and signature of chain-form envelopes;
//   - the id of the op that started it, once known (an epoch learned from a
//     prior key is known by its outer key alone until its commit opens);
//   - with that id, the epoch's recipient list (the device ids of the op's
//     recipients, in its order: [Epoch.List]), by which chain-form
//     envelopes name their sender (a slot in it). An epoch known by its
//     outer key alone has none: its chain envelopes open as
//     ErrUnknownEpoch wrapping envelope.ErrNoList (keep them: the epoch's
//     commit, opened with that outer key and learned, brings the list), or
//     with a list the caller holds ([Keys.OpenChainListed]: the lists of
//     the create and commit ops of that tag in its log or opened; the
//     sender's signature, over its full device id, checks the list);
//   - if this device was one of the epoch's recipients, listed with its
//     current Noise key: its own sender chain and a receiver chain for
//     every other recipient (crypto/senderkey), derived as soon as K is
//     learned; then K is dropped. A device never gets the chains of an
//     epoch it was not a recipient of.
//
// [Epoch] is one such epoch; [NewEpoch] derives one from K (without
// learning it), and [Epoch.OpenChain] opens that epoch's chain-form
// envelopes without changing it. [Keys.Epochs] lists what is held
// ([EpochInfo]: tag, commit id, chains) for the caller's retention and
// eviction decisions.
//
// Prekeys. A device publishes one-time X25519 keys (crdt.KindPrekey ops:
// [Keys.NewPrekey] makes one and keeps its private half in the state;
// [Keys.WantsPrekey] says when none is left unused). [Keys.SealCommit] seals
// each recipient's box to its newest prekey the caller's log shows
// (crdt.State.Prekeys), else to its static key, and this device's own box
// to a key destroyed at once. A prekey that opened an epoch is kept until
// the last epoch it opened is forgotten ([Keys.Forget]), then destroyed in
// the same state: so a captured device reopens no epoch past retention,
// while a commit made concurrently in another partition, boxed to the same
// prekey, still opens (docs/security.md).
//
// Commits. [Keys.SealCommit] seals a create or commit op of this device in
// commit form with a fresh K boxed to each recipient, hands on as prior
// keys the outer keys of the held epochs that its include function accepts
// (one per tag; nil accepts all: the caller passes on only the epochs whose
// commits its log holds and judged, so that an epoch is never handed to a
// device its commit removed), and learns the new epoch itself. A received
// commit is opened in steps, none of which changes the state:
//   - [OpenBox] (stateless, so it can run outside the lock that guards the
//     Keys, with a copy of the keys from [Keys.BoxKeys]) trial-opens the
//     boxes with this device's prekeys, newest first, then its static key:
//     about one X25519 multiplication a box and key. It gives the epoch key,
//     the Noise key of the device that sealed the box ([Box]; the caller
//     checks it is the author's) and the prekey that opened it;
//   - [Keys.OpenCommit] opens the envelope with that box, or else with the
//     outer keys held for its tag, and [Keys.OpenCommitWith] with an outer
//     key not held yet (a prior key of another commit not judged yet):
//     [CommitOpened] is the op with its seal, the prior keys it carries, and
//     the box or outer key that opened it.
//
// Once the commit is judged, [Keys.Learn] adopts its epoch: through a box,
// the chains if the op lists this device with its current Noise key (else
// the outer key), replacing an epoch of the same outer key held without
// chains; through an outer key, only the commit's id is recorded with the
// epoch known by that key (which names it; ErrUnknownEpoch if that key is
// not held: LearnPrior it first). Learning a held epoch again changes
// nothing. [Keys.LearnPrior] adds a prior key's outer key, unless
// its tag was forgotten or that outer key is held: a device added on one
// side of a partition can so open the create and commit ops of the epochs
// started on the other side and compute the membership, but not read those
// epochs' messages (ErrNoChain).
//
// Messages. [Keys.Seal] seals any other op of this device in chain form
// under the epoch started by a given commit (the caller picks
// crdt.State.Current): the op is signed at its position (epoch tag, index
// in this device's sender chain; crdt.Op.Sign), the chain advances, and the
// sealed op is returned with the envelope. Persist the state (Marshal)
// before the envelope leaves the device. [Keys.OpenChain] opens a
// chain-form envelope without changing anything: the outer layer and the
// sender's signature of its position (envelope.ErrBadSeal if it does not
// verify), then the inner layer with senderkey's Peek. [Opened] says who
// sent it where (sender, index, tag, the epoch's commit id, inner hash, signature) and,
// if the device holds the sender's chain, the op; an envelope opens again
// and again until [Keys.Consume] spends its message key, once the op is
// accepted. After that it is ErrReplay. Messages may arrive out of order,
// up to senderkey.MaxSkipped ahead of a missing one (further is
// ErrTooFarAhead: keep the envelope and retry). ErrNoChain, ErrReplay and
// ErrTooFarAhead come with the Opened (its outer layer and signature
// checked, Op nil). [Keys.CanOpen] reports whether a position's key is
// still held, [Keys.CanSend] whether this device can seal in an epoch.
//
// Tags are 32 bits of an op id, so two epochs can share one (two commits
// whose ids agree there, or a prior key of that tag under another outer
// key). Keys holds both: OpenChain takes the one whose keys open the
// envelope, OpenCommit tries each outer key held for the tag. The chain
// form has no Poly1305 tag (envelope format 7 dropped the outer one, 8 the inner: the sender's signature
// covers every byte), so a wrong outer key shows only as a signature that
// does not verify: a chain envelope that no epoch of its tag verifies is
// envelope.ErrBadSeal if one of them is held with its chains (an honest
// peer of that epoch would have checked it), and ErrUnknownEpoch wrapping
// envelope.ErrBadSeal if all are held by their outer keys only (it may
// belong to an epoch not learned yet). A commit envelope that no outer key
// opens is ErrUnknownEpoch wrapping envelope.ErrOpen.
//
// Replays are harmless: a chain envelope whose key was consumed is
// ErrReplay, and a commit learned again changes nothing. Every method
// leaves the state unchanged when it returns an error.
//
// Removal: a device that is not a recipient of a commit gets nothing of
// its epoch (no box opens; its outer key reaches only devices that can
// open the commit, as a prior key handed on by the include rule above),
// so it opens nothing sealed in that epoch or any later one whose commits
// it is not a recipient of, whatever old state it keeps. Nothing protects
// what is sealed under an older epoch by a device that has not yet learned
// of the removal (the partition window; see docs/security.md).
//
// Retention: [Keys.Forget] destroys the epochs of a tag (outer keys and
// chains, also in Epoch values handed out earlier) and remembers the tag
// (ErrForgotten, at most MaxForgotten tags, the smallest dropped first),
// so that neither a replay of its commit (whose box this device can still
// open) nor another device's prior keys bring it back; bringing back the
// chains would also restart this device's sender chain at index 0 and
// reuse its keys. A Keys holds at most MaxEpochs epochs
// (ErrTooManyEpochs: forget old ones first). A new joiner cannot read the
// commits of epochs everyone has forgotten: the membership history must
// reach it by other means.
//
// Main types: [Keys] ([New], [Unmarshal], [Keys.Marshal]; [Keys.SealCommit],
// [Keys.Seal]; [OpenBox], [Keys.OpenCommit], [Keys.OpenCommitWith],
// [Keys.Learn], [Keys.LearnPrior]; [Keys.OpenChain], [Keys.Consume],
// [Keys.CanOpen], [Keys.CanSend]; [Keys.Forget], [Keys.Epochs],
// [Keys.Epoch], [Keys.Tags]), [Epoch], [Opened], [CommitOpened], [Box],
// [EpochInfo]. Errors are the ErrXxx values (and wrapped sync/envelope and
// crypto/epochkey errors).
//
// Encoding: [Keys.Marshal] is versioned (version 5: every epoch held, with
// its commit id when known, its outer key, its chains or else, with a
// commit id, its recipient list, the forgotten tags and the prekeys), canonical, and holds secrets (outer and chain keys);
// [Unmarshal] refuses anything else, never panics (fuzzed), and is bounded
// by [MaxStateSize].
//
// Concurrency: a Keys is not safe for concurrent use; the caller
// serialises the calls for one team (and persists Marshal after each state
// change, before a sealed envelope leaves the device). OpenBox uses no
// Keys.
//
// Caveats:
//   - Go cannot promise erasure: K, dropped keys and wiped chains may
//     survive in memory until collected, and older records in the store's
//     files until compaction (see crypto/senderkey).
//   - The rules of when to learn, which prior keys to hand on, when to
//     commit and re-key, and which epochs to forget are sync/device's (its
//     property test, TestAdversarial, checks them against histories with
//     partitions and removals); this package only makes them possible.
package teamkeys
