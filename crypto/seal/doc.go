// Package seal implements the symmetric layer of fieldmesh content
// encryption: team epoch keys, ChaCha20-Poly1305 (RFC 8439, via
// golang.org/x/crypto/chacha20poly1305) sealing under a caller-chosen nonce
// and associated data, and the one-way derivation of a team's public topic
// from its secret id.
//
// Main types and functions:
//   - [EpochKey]: a 32-byte team epoch key. It is a secret: it prints as
//     "[redacted]", cannot be compared with == (use [EpochKey.Equal], which
//     runs in constant time), and [EpochKey.Bytes] returns a copy.
//   - [Seal] and [Open]: AEAD with a 12-byte nonce; [Overhead] is the tag size.
//   - [Topic]: SHA-256("fieldmesh/v1/topic" || teamID)[:16].
//
// Concurrency: all functions are pure and safe for concurrent use; EpochKey
// is an immutable value.
//
// Caveats: the caller owns nonce uniqueness. A nonce must never be used twice
// under one key for different (plaintext, associated data) pairs. The
// envelope layer derives the nonce from the op id, a hash of the plaintext,
// so the same op sealed twice under one key reuses the nonce with the same
// plaintext; its associated data must then be the same too (seal an op under
// one epoch number per key). [Open] reports every failure as [ErrOpen] and
// never says why, so it is no oracle.
package seal
