// Package envelope implements fieldmesh sealed envelopes (version 2, issue
// #3: key epochs and sender keys): what leaves a device, is gossiped,
// stored by relays and reconciled by (time, id). Only the routing header is
// in the clear. The package is the wire layout and its cryptography; which
// keys a device holds, and what it learns from an envelope, is
// sync/teamkeys.
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
//	header, 61 bytes (the same size as version 1):
//	  version     1 byte   2 (version 1 is refused: ErrVersion)
//	  topic      16 bytes  seal.Topic(team id): one-way, hides the team id
//	  epoch       4 bytes  the epoch TAG: crdt.TagOf(op id of the epoch's commit)
//	  id         32 bytes  the op id (SHA-256 of the op's encoding)
//	  time        8 bytes  the op's HLC timestamp
//	form          1 byte   1 = chain, 2 = commit
//
//	form 1, chain (every op except create and commit), op sealed by its author's chain:
//	  mac        16 bytes  the Poly1305 tag of the inner layer
//	  outer      the rest  ChaCha20-Poly1305(OK, nonce = mac[:12], ad = header ‖ form ‖ mac,
//	                         sender 32 ‖ index 4 ‖ inner)
//	  where inner ‖ mac = senderkey Seal by sender's chain at index, ad = header ‖ form, of the op
//	  (the op's length + 69 bytes after the header)
//
//	form 2, commit (create and commit ops; epoch = TagOf(own id): the epoch it starts):
//	  count      uvarint   1..MaxBoxes (256): the number of recipient devices
//	  boxes      count × 128 bytes: Noise_X_25519_ChaChaPoly_SHA256 messages of K
//	             (epochkey.SealToEach: e 32 ‖ encrypted s 48 ‖ encrypted K 48), in the order
//	             of the op's recipient list, with no recipient key in the clear;
//	             prologue = "fieldmesh/v2/envelope/box" ‖ team id ‖ header
//	  outer      the rest  ChaCha20-Poly1305(OuterKey(K), nonce = id[:12],
//	                         ad = header ‖ form ‖ count ‖ boxes, plaintext)
//	  plaintext: sig 64 ‖ prior count uvarint (0..MaxPriorKeys) ‖ prior count × (tag 4 ‖ outer key 32),
//	             tags strictly ascending, none the envelope's own ‖ the op
//	  sig: Ed25519 by the op's author over "fieldmesh/v2/envelope/commit" ‖ team id ‖ ad ‖ the
//	       prior-key list (count and entries)
//
// The associated data of every AEAD is every byte of the envelope before
// it (and the box prologue holds the header and the team id), so a box, an
// outer or an inner ciphertext moved into another envelope, epoch, topic or
// team does not open (tested for each). The outer nonce of the chain form
// is the inner layer's tag, which is unique per message key, so sealing the
// same op twice in one epoch (at two chain indices) never reuses an outer
// nonce, and a rolled-back sender state (see crypto/senderkey) reuses it
// only for byte-identical envelopes. The commit form's outer key is fresh
// for each commit, so its nonce needs no more than the op id.
//
// What the layers check. [OpenChain] (outer layer of the chain form; what a
// gossip validator can check with only the outer key) gives the sender and
// index; [Chain.Open] opens the inner layer through senderkey's
// OpenChecked, whose check makes sure, before the message key is consumed,
// that the op decodes, hashes to the header's id, has its time and team, is
// not a create or commit op, was written by the chain's sender and is
// signed by it (so a member cannot burn another sender's index with a
// forgery). [OpenBox] trial-opens the boxes; [OpenCommit] opens the commit
// form with the new epoch's outer key and checks the op the same way, that
// it is a create or commit op, and the author's signature over the
// envelope: a member who learns K cannot re-box it or change the prior
// keys under the author's name.
//
// Prior keys. A commit carries the outer keys of the epochs its author
// holds, so a device added concurrently elsewhere can open the create and
// commit ops (and the outer layer: sender and index) of epochs it was not a
// recipient of, and so compute the membership; it never gets their chains.
//
// Trial opening. The boxes name no recipient, so a device tries them in
// turn: one X25519 multiplication for each box that is not its own, so
// about n/2+3 for a recipient of an n-device commit and n+1 for a device
// that is none. For 30 devices on the dev box that is about 0.6 and 1.1 ms
// (a multiplication is about 35 µs); a recipient's whole Keys.Open of the
// commit (trial, both signatures, 30 chains) is about 1.2 ms, 20 to 30
// times a ChaCha20-Poly1305 open and Ed25519 verification of a 200-byte
// message (sync/teamkeys BenchmarkCommit). Commits are rare; what this
// buys is that relays do not learn which devices are in the team.
//
// Visible to relays and eavesdroppers: the header (topic, epoch tag, id,
// time); the form (so which envelopes are creates and commits, also
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
// go test and the release never set it). With it, both layers carry their
// plaintext and the 16 bytes "fieldmesh-noseal" in place of each tag, so a
// chaos-control run can check that its detector finds plaintext on the
// wire; the layout and sizes do not change, and a normal build cannot open
// such an envelope (ErrOpen; tested against testdata/noseal.golden). Boxes
// stay sealed, sender chains still advance on seal, but opening consumes
// no receiver state (no replay refusal). [NoSeal] says whether the build
// has the tag; a program that finds it true outside a test should refuse
// to run.
//
// Main types and functions: [Envelope], [Unmarshal], [Topic]; [SealChain],
// [OpenChain], [Chain]; [SealCommit], [OpenBox], [OpenCommit], [PriorKey],
// [BoxPrologue]; [OuterKey]; [Form]; [NoSeal].
//
// Concurrency: pure functions over values; an *Envelope is not safe for
// concurrent mutation, but nothing here mutates one after creating it.
// Sender and receiver states are the caller's (see crypto/senderkey).
package envelope
