// Package epochkey delivers team epoch keys to member devices as one-way
// Noise messages, so a key reaches a device that is offline now: the message
// travels inside an op and is opened whenever the device receives it.
//
// It implements the one-way handshake pattern X of the Noise Protocol
// Framework (revision 34, section 7.4, "One-way handshake patterns"), with
// the protocol name Noise_X_25519_ChaChaPoly_SHA256, through
// github.com/flynn/noise and X25519 from crypto/ecdh ([identity.DH25519]):
//
//	X:
//	  <- s
//	  ...
//	  -> e, es, s, ss
//
// Main types and functions:
//   - [SealTo] and [OpenFrom]: one Noise X message from a sender device's
//     static key to a recipient device's static key, under a caller-chosen
//     prologue. [Overhead] is 96 bytes.
//   - [Handover]: one epoch key sealed to each of up to [MaxRecipients]
//     devices, with a canonical, versioned binary encoding
//     ([Handover.MarshalBinary], [UnmarshalHandover]). [NewHandover] builds
//     one; [Handover.Open] gives a device its key after checking who sealed
//     it. The boxes' prologue ([Prologue]) binds the team id and the epoch
//     number, so a box moved into another team's or another epoch's
//     hand-over does not open.
//   - [SealToEach] and [OpenAny]: the same Noise X messages without the
//     recipient keys in the clear (sync/envelope's commit form): one
//     message per recipient in the caller's order, and trial opening by
//     the recipient.
//
// Speed: X25519 comes from crypto/ecdh, but not through identity.DH25519's
// DH, which builds an ecdh.PrivateKey from bytes at every call, and
// NewPrivateKey derives the public key: a second full scalar multiplication
// (noise.DH25519 does the same through golang.org/x/crypto/curve25519). A
// message or hand-over uses its own keyedDH, which keeps the
// *ecdh.PrivateKey of the device's static key and of the ephemeral key it
// has just generated, so every DH is one multiplication: a box costs three
// (key generation, es, ss) instead of five to seal, and opening costs three
// instead of four. The bytes are the same (TestDHInterop). BenchmarkHandover
// and BenchmarkDH compare the three variants.
//
// Choice of hash: SHA-256 rather than BLAKE2s. Both are allowed by the Noise
// specification; SHA-256 runs on the SHA extensions of x86 and of ARMv8
// phones (crypto/sha256 uses them), is the hash of libp2p's own Noise
// handshake, so the binary carries one hash fewer, and
// BenchmarkHandoverHash measures the hand-over with each: on the dev box
// (x86 with SHA-NI) the two are within noise of each other (a few per
// cent either way between runs), because the scalar multiplications
// dominate; the choice is not about speed.
//
// Properties, as the Noise specification grades one-way X payloads (section
// 7.7): sender authentication 1, confidentiality 2. That is:
//   - a box can be opened only with its recipient's static private key, and
//     it authenticates the sender's static key; but that authentication is
//     vulnerable to key-compromise impersonation: whoever holds the
//     recipient's private key can forge a box "from" any sender to that
//     recipient. fieldmesh carries the hand-over inside an op signed with
//     the admin's Ed25519 key, and that signature is what proves who started
//     the epoch;
//   - there is no forward secrecy against the recipient: a box can be
//     opened by anyone who ever obtains the recipient's static private key,
//     today or in the future. Destroying a box (the op that carries it)
//     together with the epoch key is what ends a device's ability to
//     recover that epoch's key. There is forward secrecy against the sender:
//     the sender's static key alone does not open a box after the sender has
//     forgotten the ephemeral key, which SealTo never keeps;
//   - no replay protection: the same box opens to the same key every time it
//     is presented. That is harmless only because the consumer is
//     idempotent: installing the key of (team, epoch) a second time must be
//     a no-op (ops are content-addressed and applied once). Two different
//     hand-overs for the same (team, epoch), for example from two admins on
//     both sides of a partition, are both authentic and carry different keys:
//     choosing one is the team log's job, not this package's;
//   - the recipient list is in the clear in the encoding (a device finds
//     its box without trial decryption). The hand-over travels inside an
//     envelope sealed with a team key, so relays do not see it, but every
//     device that can open that envelope learns which devices received the
//     new key, that is the membership, which it knows anyway.
//
// Concurrency: all functions are safe for concurrent use; a *Handover is a
// plain value that nothing here mutates after returning it.
//
// Caveats: Go cannot guarantee that secrets are wiped from memory; SealTo
// and Open clear the copies of private keys and key bytes they make, as a
// best effort.
package epochkey
