// Package identity implements fieldmesh device identities: an Ed25519 signing
// key (RFC 8032, via crypto/ed25519) whose public key is the device's id and
// its libp2p identity, and an X25519 key (RFC 7748, via crypto/ecdh) used as
// the device's static key in one-way Noise messages (the Noise Protocol
// Framework, rev. 34, as implemented by github.com/flynn/noise).
//
// Main types:
//   - [DeviceID]: the Ed25519 public key of a device, printed as 64 hex chars
//     and logged in its short form (8 hex chars).
//   - [NoisePublic]: the X25519 public key of a device.
//   - [Device]: the private half of both keys. It is a secret: it prints as
//     "[redacted]", cannot be compared with ==, and [Device.Equal] runs in
//     constant time. [Device.MarshalBinary] and [UnmarshalDevice] persist it
//     (the storage layer encrypts it at rest).
//   - [DH25519]: a [noise.DHFunc] for X25519 built on crypto/ecdh.
//
// Concurrency: a *Device is immutable after creation and safe for concurrent
// use; DeviceID and NoisePublic are plain values; DH25519 is stateless.
//
// Caveats:
//   - [Generate] and [DH25519]'s GenerateKeypair read their key bytes from
//     the given io.Reader themselves (io.ReadFull), so a deterministic
//     reader yields deterministic keys (since Go 1.26, ecdh.GenerateKey
//     ignores a caller-supplied reader unless GODEBUG=cryptocustomrand=1, so
//     we do not call it). Pass nil (crypto/rand) outside tests.
//   - DH25519's DH is as fast as noise.DH25519's, not faster: the
//     golang.org/x/crypto/curve25519 that noise.DH25519 uses (v0.58.0 in
//     go.mod) is itself a thin wrapper over crypto/ecdh, so both run the
//     same code (about 85 µs per DH on the dev box: crypto/ecdh derives the
//     public key in NewPrivateKey, a fixed-base multiplication wasted on DH).
//     Key generation is about 2.5x faster (one scalar multiplication
//     instead of two). See BenchmarkDH.
//   - Both DH implementations return an error for a low-order peer public
//     key (all-zero shared secret), which makes the Noise handshake fail.
package identity
