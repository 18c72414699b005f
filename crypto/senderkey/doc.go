// Package senderkey gives team messages forward secrecy inside a key epoch
// with per-sender hash chains, in the manner of Signal's "Sender Keys" and of
// the per-sender hash ratchets of the MLS secret tree (RFC 9420), with one
// deliberate difference: a sender's chain does not start from a random key
// the sender distributes, but from the team's epoch key and the sender's
// device id, so every member derives every sender's chain with no extra
// messages, offline.
//
// Derivation (all HMAC and HKDF with SHA-256):
//
//	chain_0    = HKDF(secret = epoch key, salt = "fieldmesh/v1/senderkey/chain", info = sender device id)
//	message_i  = HMAC(chain_i, 0x01)   the ChaCha20-Poly1305 key of message i
//	chain_i+1  = HMAC(chain_i, 0x02)
//
// as in Signal's sender-key chain (the same two constants). Each message key
// seals one message, with ChaCha20-Poly1305 (RFC 8439) under a nonce the
// caller derives from the message itself (fieldmesh: the first 12 bytes of
// the op id, a SHA-256 of the op): an honest sender never uses a key twice,
// and a sender that does (its state rolled back, or on purpose) uses it
// with two nonces for two messages, so no (key, nonce) pair ever meets two
// plaintexts. The message index travels next to the ciphertext; the
// ciphertext is the plaintext plus 16 bytes.
//
// Main types:
//   - [SenderState]: this device's chain in one epoch. [SenderState.Seal]
//     uses the next message key and overwrites the chain key it came from.
//   - [ReceiverState]: one sender's chain as seen by this device: the next
//     chain key, and up to [MaxSkipped] keys of messages that have not
//     arrived while later ones have. [ReceiverState.Peek] opens a message
//     without changing anything (so a message can be judged before its key
//     is spent); [ReceiverState.Consume] then deletes its key.
//     [ReceiverState.Open] and [ReceiverState.OpenChecked] do both. They
//     refuse an index already consumed ([ErrReplay]) and a jump that would
//     store more than MaxSkipped keys ([ErrTooFarAhead]: keep the message
//     and retry when earlier ones have arrived; nothing is lost). On any
//     error the state is unchanged.
//   - [SenderState.Wipe] and [ReceiverState.Wipe] overwrite a state's keys
//     when its epoch is destroyed.
//   - Both are secrets (printed as "[redacted]", compared with Equal in
//     constant time) with a versioned binary encoding (MarshalBinary,
//     [UnmarshalSender], [UnmarshalReceiver]) for the encrypted store.
//
// Properties achieved (E is an epoch, S a sender, D a device, i an index):
//   - Forward secrecy against a later capture of D, for message (S, i) of
//     E, holds only when D no longer has any of: the epoch key of E; the
//     hand-over box of E together with D's static X25519 private key (that
//     is, the op carrying the box, since D keeps its static key while
//     enrolled: see package epochkey); a chain key of S at an index ≤ i; the
//     skipped key of i; a copy of the plaintext; an older copy of any of
//     these in its store (see below). Every member can re-derive every
//     chain from the epoch key, so as long as D keeps the epoch key (until
//     the retention window ends, in the design) the chains add nothing
//     against the capture of D. To gain forward secrecy inside an epoch,
//     D derives the receiver states of the members it knows as soon as it
//     learns the epoch key and then destroys the key and the box; a sender
//     added later in that epoch then needs the key again.
//   - What forward secrecy protects is recorded ciphertext (what relays,
//     eavesdroppers and other devices hold), not what D keeps itself: a
//     device that stores the plaintext it opened reveals it when captured
//     unlocked, whatever happened to the keys.
//   - Replay: each index opens at most once per receiver state.
//   - Reordering and loss: a message may arrive up to MaxSkipped indices
//     ahead of the missing ones; the skipped keys are kept until used.
//
// Properties not achieved:
//   - No post-compromise security. Whoever obtains a chain key of S at
//     index i derives every later message key of S in that epoch; whoever
//     obtains the epoch key derives every key of every sender in that epoch.
//     The chains never heal. Only a new epoch heals, and only against an
//     attacker who does not hold a device static key that receives the new
//     epoch's key: a compromised device must be removed, not just rekeyed.
//     (Signal's pairwise Double Ratchet and MLS's Commits and Updates give
//     post-compromise security; sender keys alone give none, here or in
//     Signal.)
//   - No authentication among members: every member can derive every
//     chain, so any member can produce a ciphertext that opens under
//     another sender's chain. Authorship rests on the author's Ed25519
//     signature inside the plaintext. Use OpenChecked with a check that
//     verifies it, over a signed message that includes the epoch and the
//     index; otherwise a member can burn a genuine message's index by
//     sending a forged one (or a genuine one re-encrypted) at that index
//     first.
//   - The sender and the index must be readable before opening: put them
//     under the epoch-key layer of the envelope, not in its clear header, or
//     relays learn who wrote what.
//
// Concurrency: a SenderState or ReceiverState is not safe for concurrent
// use; the caller owns it (one per (epoch, sender) on each device) and
// serialises access. The functions are otherwise pure.
//
// Caveats:
//   - Never seal twice from one chain position: persist the advanced state
//     before the ciphertext leaves the device, never restore it from a
//     backup or copy a data directory to a second machine, and never call
//     NewSender again for an (epoch, device) that has sent. A state that is
//     rolled back seals a second message at an index its peers may have
//     consumed: they cannot open it (ErrReplay), and the two messages are
//     evidence that the sender equivocated. The nonce, derived from the
//     message, keeps this from also being a nonce reuse (MLS guards against
//     the same failure with a 4-byte random reuse_guard; ours costs no byte).
//   - "Deleted" means overwritten in memory as far as Go allows (Go does
//     not promise that no copy survives) and replaced in the store; an
//     older version of a state can survive in the store's files until they
//     are compacted, protected only by the at-rest encryption.
//   - The epoch key is also the key of the envelope layer (crypto/seal);
//     the chains use it only as HKDF input, with their own salt, so the two
//     uses do not meet.
package senderkey
