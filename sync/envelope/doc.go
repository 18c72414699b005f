// Package envelope implements fieldmesh sealed envelopes: what leaves a
// device, is gossiped, stored by relays and reconciled by (time, id). An
// envelope carries a team op encrypted under the team's epoch key with
// ChaCha20-Poly1305 (crypto/seal); only the routing header is in the clear.
//
// Wire format (Marshal), integers big-endian:
//
//	version     1 byte   (1)
//	topic      16 bytes  seal.Topic(team id): one-way, hides the team id
//	epoch       4 bytes  which epoch key sealed it
//	id         32 bytes  the op id (SHA-256 of the op's encoding)
//	time        8 bytes  the op's HLC timestamp
//	ciphertext  the rest: Seal(key, nonce = id[:12], ad = the 61 header bytes, op.Marshal())
//
// The header is the associated data, so changing any of its bytes makes
// Open fail; Open also checks that the decrypted op hashes to the id, has
// the header's time, belongs to the expected team and is signed by its
// author. Relays that hold no key can still check size and header shape
// with Unmarshal.
//
// Main types: [Envelope], [Topic]. Functions: [Seal], [Open], [Unmarshal].
//
// Concurrency: pure functions over values; an *Envelope is not safe for
// concurrent mutation, but nothing here mutates one after creating it.
//
// Caveats: the nonce is derived from the op id, so sealing the same op twice
// under one key reuses the nonce with the same plaintext; that is safe only
// with the same header, so seal an op under one epoch number per key (Seal
// derives topic, id and time from the op). The author, body and patient
// reference are inside the ciphertext; topic, epoch, id, time and the
// ciphertext length are visible to relays and eavesdroppers.
package envelope
