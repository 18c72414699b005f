// Package envelope implements fieldmesh sealed envelopes (version 9: key
// epochs, sender keys, signed chain positions, a compact chain form,
// 16-byte op ids, senders named by their slot in the epoch's recipient
// list, no AEAD tag in the chain form, and the form and a variable-length
// time in the header):
// what leaves a device, is gossiped, stored by relays and reconciled by
// (time, id). Only the routing header is in the clear. The package is the
// wire layout and its cryptography; which keys a device holds, and what it
// learns from an envelope, is sync/teamkeys.
//
// Keys of one epoch. An epoch starts with a create or commit op, which
// carries a fresh random 32-byte epoch key K to each recipient device. From
// K every device derives the epoch's outer key OK = [OuterKey](K)
// (HKDF-SHA256, salt "fieldmesh/v1/outer") and every recipient's sender
// chain (crypto/senderkey: chain_0 = HKDF(K, salt
// "fieldmesh/v1/senderkey/chain", info = device id)); then it forgets K.
//
// Wire format (Marshal), integers big-endian, uvarints minimal:
//
//	header, 27 bytes, 28 to 30 when the time has a counter (no topic: see "The topic" below):
//	  first       1 byte   bits 4-7 the version, 9 (versions 1 to 8, whose first byte was the
//	                       version, are refused: ErrVersion); bit 3 0; bit 2 set when a counter
//	                       follows; bits 0-1 the form: 1 = chain, 2 = commit
//	  epoch       4 bytes  the epoch TAG: crdt.TagOf(op id of the epoch's commit)
//	  id         16 bytes  the op id (the first 16 bytes of the SHA-256 of the op's content,
//	                       crdt.Op.MarshalContent; crdt.Op.ID says why 16 are enough)
//	  millisecond 6 bytes  the op's HLC timestamp without its counter (HLC >> 16: 48 bits, the
//	                       HLC's own range)
//	  counter     uvarint  the HLC's 16-bit logical counter, 1 to 65535, if bit 2 is set; a
//	                       counter of 0 (the usual case: the clock had moved on) is not sent
//
//	form 1, chain (every op except create and commit), op sealed by its author's chain:
//	  outer      the rest  ChaCha20(OK, nonce = id[:12], from block 1; no tag),
//	                         of slot uvarint ‖ index uvarint ‖ sig 64 ‖ inner
//	  where slot is the sender's position in the epoch's recipient list (the device ids
//	  of its create or commit op, in that op's order, which is ascending), a minimal
//	  uvarint below MaxBoxes; inner = senderkey SealStream by sender's chain at index
//	  (ChaCha20 under the message key, from block 1, no tag), nonce = id[:12],
//	  of the op's compact content (crdt.Op.MarshalCompact: kind and parent count in one byte ‖
//	  parents ‖ body, without version, team, author, time or body length), and sig = the sender's Ed25519 signature
//	  of the op's seal (crdt.SignedBytes: "fieldmesh/op/v4" ‖ team ‖ epoch tag ‖ sender's
//	  full device id ‖ index ‖ op id ‖ inner hash), where the inner hash (crdt.Seal.Inner)
//	  is the first 16 bytes of SHA-256("fieldmesh/v9/envelope/inner" ‖ topic ‖ header ‖
//	  slot uvarint ‖ inner), so the form (in the header) and the slot are signed too; the index is a minimal uvarint of at most senderkey.MaxIndex
//	  (the op's compact content + 66 bytes after the header while the slot and the index
//	  are below 128; at most ChainOverhead, 71)
//
//	form 2, commit (create and commit ops; epoch = TagOf(own id): the epoch it starts):
//	  count      uvarint   1..MaxBoxes (256): the number of recipient devices
//	  boxes      count × 128 bytes: Noise_X_25519_ChaChaPoly_SHA256 messages of K
//	             (epochkey.SealToEach: e 32 ‖ encrypted s 48 ‖ encrypted K 48), in the order
//	             of the op's recipient list, with no recipient key in the clear;
//	             prologue = "fieldmesh/v7/envelope/box" ‖ team id ‖ topic ‖ header
//	  outer      the rest  ChaCha20-Poly1305(OuterKey(K), nonce = id[:12],
//	                         ad = topic ‖ header ‖ form ‖ count ‖ boxes, plaintext)
//	  plaintext: sig 64 ‖ prior count uvarint (0..MaxPriorKeys) ‖ prior count × (tag 4 ‖ outer key 32),
//	             tags strictly ascending, none the envelope's own ‖ the op with its seal (crdt.Op.Marshal)
//	  sig: Ed25519 by the op's author over "fieldmesh/v7/envelope/commit" ‖ team id ‖ ad ‖ the
//	       prior-key list (count and entries); the op's own seal signs it at its own epoch,
//	       index 0, so a joiner can check a commit op without opening its envelope
//
// No field travels twice in the chain form. The receiver rebuilds the op
// from its compact content and what it already has: the team it opens the
// envelope for (the gossip topic or sync session says which; the team id
// itself is on the wire nowhere), the sender (the device at the outer
// layer's slot in the epoch's recipient list) as the author, the header's
// time; the op id is still the (truncated) SHA-256 of the op's full
// content (crdt.Op.MarshalContent), so it binds all of them, and the receiver
// checks that the rebuilt op hashes to the header's id. The team id is
// also in the signed seal.
//
// The topic. The wire carries no topic (version 4 spent 16 bytes of every
// header on it): an envelope arrives on a gossip topic, in a sync session
// whose hello names the topic, or from a relay session of one topic, and
// Unmarshal takes that topic as an argument (Envelope.Topic). Relays keep
// their store keyed by topic, from the session or gossip topic. Every
// layer binds the topic: it starts the commit form's associated data, the
// box prologue (with the team id) and the chain form's inner hash, which
// the sender signs with the team id, so an envelope given to another topic
// or team, by a relay, a member or a mistake, does not open or verify there
// (ErrOpen, ErrNotRecipient, ErrBadSeal).
// A relay can no longer tell an envelope of another topic from one of its
// session's (it could not tell a lying header either); devices hold such an
// envelope as one of an unknown epoch, within the limits of held envelopes.
//
// The associated data of the commit form's AEAD is the topic and every
// byte of the envelope before it (the box prologue holds the topic, the
// header and the team id), and the chain form's signature covers the same
// through the inner hash (topic, header, form, slot and inner ciphertext)
// with the team, epoch, sender, index and op id, so a box, an outer or an
// inner ciphertext moved into another envelope, epoch, topic or team does
// not open or verify (tested for each). The nonces of both chain layers
// are the op id's first 12 bytes, so a message key that seals two
// different ops (a sender whose state was rolled back, or that
// equivocates on purpose) does so under two nonces, and the outer key's
// keystream repeats only for two ops whose ids agree in 12 bytes (about
// 2^-96 a pair) or for one op sealed twice (a rollback): its two outer
// plaintexts then differ in index, signature and inner ciphertext, whose
// XOR tells nothing of the op (its two inner keystreams differ). Both
// streams start at ChaCha20 block 1, as ChaCha20-Poly1305 does; the commit
// form's outer layer uses the same outer key with the nonce id[:12] of its
// own op, a commit op, which no chain envelope shares.
//
// No tag (version 8). Version 7 kept the inner layer's Poly1305 tag and
// used it as the outer nonce. The signature already covers everything the
// tag checked: the op id it signs is the hash of the op's content (the
// inner plaintext, with the team, author and time), and the inner hash it
// signs covers the inner ciphertext. So the inner layer is ChaCha20 under
// the message key, and a recipient checks what it decrypts against the
// signed op id ([Chain.Peek]: ErrOpen wrapping ErrBadOp, the key not
// spent); 16 bytes less a message.
//
// One AEAD tag (version 7; none since version 8). Until version 6 the chain form's outer layer
// was ChaCha20-Poly1305 with its own 16-byte tag, because the signature
// covered only (team, epoch, sender, index, op id): a member or a relay
// could change the inner ciphertext, and a device holding only the outer
// key would have kept and passed on the broken envelope. Now the signature
// also covers the inner hash, so the outer layer needs no tag: whoever
// holds the outer key and the epoch's list checks every byte of the
// envelope by one Ed25519 verification it did anyway. The op's seal keeps
// the inner hash (crdt.Seal.Inner, 16 bytes in the stored op, never on the
// wire: it is recomputed from the envelope), so a stored op re-verifies
// without its envelope (crdt.Op.Verify), and an equivocation evidence
// carries the inner hash of each seal (crdt.Evidence). Who refuses a
// changed byte of a chain envelope (TestTamperEveryByte): the first byte
// (version, form, counter bit), anyone (Unmarshal) unless it still reads
// as a chain envelope, then as below; every other byte, anyone
// holding the epoch's outer key and recipient list, as ErrBadSeal, before
// any chain key is used. A relay holds no key and checks nothing, as
// before. What this costs: without the list (an epoch held by its outer
// key only, its commit not yet met) nothing authenticates the outer layer,
// and a wrong outer key reads garbage instead of failing a tag; such an
// envelope is held as one of an unknown epoch (ErrNoList), never passed
// on, and checked once the list is known. A device cannot tell an envelope
// of another epoch of the same tag from a forged one: sync/teamkeys
// refuses it if it holds an epoch of the tag with its chains (an honest
// peer of that epoch checks the signature) and holds it as of an unknown
// epoch otherwise.
//
// What the layers check. [OpenChain] (outer layer of the chain form; what a
// device holding only the outer key can check) takes the epoch's
// recipient list from the caller, names the sender by the outer layer's
// slot in it, and verifies the sender's signature of (team, epoch, sender
// device id, index, op id, inner hash): a member cannot re-seal another
// sender's genuine op at another index, another slot or in another epoch,
// nor put another inner ciphertext under its signature, nor claim another
// member's slot (it has no such signature; a slot past the list is refused
// too), and two different ops signed for one position are
// proof that their sender equivocated (crdt.Evidence), as before: the
// signature and the op's seal hold the full device id, and the slot only
// through the inner hash. The slot says whose key to verify with, and is
// signed itself, so a wrong list, or one made up to give another slot to
// the same sender, can only make the signature fail. Without the list (ErrNoList, after the outer layer
// was decrypted; nothing is authenticated yet) the caller holds the envelope until it has the epoch's create or
// commit op: see "Sender slots" below. [Chain.Peek] opens the inner layer without consuming the
// message key (so the op can be judged first) and checks that the op
// decodes, hashes to the header's id, has its time and team, is not a
// create or commit op and was written by the chain's sender; [Chain.Open]
// also consumes the key. [OpenBox] trial-opens the boxes; [OpenCommit]
// opens the commit form with the new epoch's outer key and checks the op
// the same way, that it is a create or commit op sealed at its own epoch,
// and the author's signature over the envelope: a member who learns K
// cannot re-box it or change the prior keys under the author's name.
//
// Prior keys. A commit carries the outer keys of the epochs its author
// holds, so a device added concurrently elsewhere can open the create and
// commit ops (and the outer layer: sender and index) of epochs it was not a
// recipient of, and so compute the membership; it never gets their chains.
//
// Sender slots (version 6). The sender is a uvarint slot in the epoch's
// recipient list instead of its 32-byte device id: one byte for up to 128
// devices, two up to MaxBoxes. A recipient of the epoch has the list from
// the epoch's create or commit op, which it opened to learn the epoch. A
// device holding only the epoch's outer key (a prior key of a commit made
// concurrently elsewhere) has no list until it has that op; the outer key
// opens its commit envelope, whose op lists the recipients.
// sync/teamkeys keeps each epoch's list (derived with its chains, or from
// the commit opened with the outer key) and opens a chain envelope of an
// epoch held without its list as ErrUnknownEpoch wrapping ErrNoList; the
// device core holds such an envelope as one of an unknown epoch (it stores
// and passes on nothing whose sender it cannot name) and tries it again
// with the lists of the create and commit ops of that tag it holds (its
// log, and commits opened but not judged yet: two commits may share a
// tag, so it tries each list; only the right one verifies).
//
// Trial opening. The boxes name no recipient, so a device tries them in
// turn: one X25519 multiplication for each box that is not its own, so
// about n/2+3 for a recipient of an n-device commit and n+1 for a device
// that is none. For 30 devices on the dev box that is about 0.6 and 1.1 ms
// (a multiplication is about 35 µs); a recipient's whole opening of the
// commit (trial, both signatures, 30 chains) is about 1.2 ms, 20 to 30
// times a ChaCha20-Poly1305 open and Ed25519 verification of a 200-byte
// message (sync/teamkeys BenchmarkCommit). Commits are rare; what this
// buys is that relays do not learn which devices are in the team.
//
// Ids. The op id in the header, the parents in the op and every id in a
// body are crdt.OpID, 16 bytes: the first half of the SHA-256 of the op's
// content. Ids only address ops within one team (the relay store,
// reconciliation and the log are all per topic), so what they must resist
// is a collision inside one team: about 2^64 work for a member who grinds
// its own ops, and what it buys is confusion among its own team's
// replicas, which hold its signature over both ops; a second preimage
// (an op with the id of someone else's op) stays at about 2^128. See
// crdt.Op.ID.
//
// Version 9, for bytes. Three cuts in the header and four in the message:
//   - The form is in the header's first byte, beside the version: 1 byte.
//   - The time is the HLC's 48-bit millisecond in 6 bytes and its counter
//     only when it is not 0, flagged in the first byte: 2 bytes, 1 when
//     the counter is 1 to 127 (a device that just received an op stamped
//     ahead of its own clock). The time stays absolute and in the clear,
//     as relays and carriers reconcile by (time, id) and hold no key; the
//     header is variable-length, so a reader parses it (Unmarshal,
//     PeekHeader) instead of reading at fixed offsets.
//   - The compact content's kind and parent count share one byte
//     (crdt.Op.MarshalCompact): 1 byte.
//   - A message body (crdt.Message) has no version byte, one head byte for
//     its priority and flags, a patient reference only when there is one,
//     and its text last, as the rest of the body, with no length: 3 bytes
//     (4 without a patient reference).
//
// Nothing is weakened by them: every field is still there, bound by the
// same signature and hashes. What version 9 still does not shorten, and why:
//   - The epoch tag stays 4 bytes. sync/teamkeys forgets keys by tag, and
//     remembers up to MaxForgotten forgotten tags so that no forgotten
//     epoch is learned again: a new epoch whose tag collides with one of
//     them is refused. With 3-byte tags and a full list, that would be
//     about 1 epoch in 256 by chance.
//   - The op id stays in the header. The signature covers it, and a device
//     holding only the outer key verifies the signature without opening
//     the inner layer, so it must read the id in the envelope; relays,
//     carriers and reconciliation key by it. An envelope hash could key
//     reconciliation instead, but only if every path kept one envelope per
//     op: an op sealed twice (a rollback) gives two envelopes, so ids
//     would have to be recovered after opening, and outer-key holders
//     could no longer verify. Not done.
//   - The commit form keeps the op's full encoding (crdt.Op.Marshal, with
//     its 16-byte zero inner hash): commits are rare, and their boxes
//     dominate their size.
//
// Where the bytes of the size table's goal cell go (a 37-byte text with a
// patient reference and one parent, slot and index below 128, a time
// without a counter: 160 bytes, the goal): header 27 (first byte 1, epoch
// tag 4, id 16, millisecond 6), slot 1, index 1, signature 64, and the
// op's compact content 67 (kind and parent count 1, parent 16, message
// body 50: head 1, the patient reference's length 1 and its 11 bytes, the
// text 37). The overhead is 93 bytes, of which the signature is 64 and the
// two 16-byte ids (op id and parent) 32. A time with a counter adds 1 (161).
// One gossip copy adds 24 bytes (184 B a hop, goal 200): pubsub's framing
// of the publish (field tag and a 2-byte length, 3), of the data (3), and
// the topic name (field tag, length, and 16 characters, "fm9/" and 12
// base64url characters of 9 bytes of the topic: 18).
//
// Visible to relays and eavesdroppers: the topic it travels in (the gossip
// topic name, or the session's), the header (epoch tag, id, time); the form (so which envelopes are creates and commits, also
// visible as epoch == id[:4]); a commit's box count, that is the number of
// member devices of the new epoch; the total length. Sizes are not padded.
// Authors, bodies, names, patient references and prior keys are inside.
//
// Limits: Unmarshal refuses more than MaxSize (80 KiB) before reading, and
// validates the fixed parts of each form; the Seal functions check sizes
// (crdt.MaxOpSize, MaxSize, MaxBoxes, MaxPriorKeys) before any work or
// state change.
//
// Test-only build tag fieldmesh_noseal: no normal build has it (go build,
// go test and the release never set it). With it, every layer carries its
// plaintext, with the 16 bytes "fieldmesh-noseal" in place of each tag (the
// chain form's layers have none: they are plaintext as they are), so a
// chaos-control run can check that its detector finds plaintext on the
// wire; the layout and sizes do not change, and a normal build cannot open
// such an envelope (ErrBadSeal for the chain form, ErrOpen for the commit
// form; tested against testdata/noseal.golden). Boxes
// stay sealed, and sender and receiver chains advance as in a normal build. [NoSeal] says whether the build
// has the tag; a program that finds it true outside a test should refuse
// to run.
//
// Main types and functions: [Envelope], [Unmarshal], [PeekHeader], [Header], [Topic]; [SealChain],
// [OpenChain], [Chain] (Peek, Open, Seal); [SealCommit], [OpenBox], [OpenCommit], [PriorKey],
// [BoxPrologue]; [OuterKey]; [Form]; [NoSeal].
//
// Concurrency: pure functions over values; an *Envelope is not safe for
// concurrent mutation, but nothing here mutates one after creating it.
// Sender and receiver states are the caller's (see crypto/senderkey).
package envelope
