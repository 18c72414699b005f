// Package safety computes safety numbers: a short fingerprint of two
// devices' public keys that their owners compare, read aloud or by scanning
// a QR code, to check that each is talking to the device they think.
//
// It follows Signal's numeric fingerprint (libsignal's
// NumericFingerprintGenerator, version 0 "displayable" fingerprint): each
// device's keys are hashed on their own with [Iterations] rounds of SHA-512,
// turned into 30 decimal digits, and the two halves are sorted and joined,
// so both devices show the same 60 digits whichever is "local".
//
// For one device, with key = device id (Ed25519 public key, 32 bytes) ||
// Noise static key (X25519 public key, 32 bytes):
//
//	h = 0x00 0x00 || key || "fieldmesh/v1/safety-number"
//	repeat 5200 times: h = SHA-512(h || key)
//	digits = for each of the first six 5-byte chunks of h, as a big-endian
//	         integer mod 100000, in 5 decimal digits
//
// The number is the smaller of the two 30-digit halves (as strings)
// followed by the larger. [SafetyNumber.String] shows it as 12 groups of 5
// digits; [SafetyNumber.QR] is a text payload for a QR code that carries the
// first 32 bytes of both hashes (256 bits each, more than the about 100 bits
// a half of the digits shows) in the same order, and [SafetyNumber.MatchQR]
// checks a scanned payload.
//
// Properties: the number changes if either device's id or Noise key
// changes, and does not depend on argument order. The iterations make a
// search for a key pair whose half matches a given half about 2^12 times
// costlier; a half shows about 100 bits, so matching one is out of reach.
// What it does not do: it says nothing about a member's other devices (each
// pair of devices has its own number), and comparing it is up to people;
// recording that a pair was verified, and warning when a verified device's
// keys change, is the caller's job.
//
// Concurrency: pure functions over values; a SafetyNumber is a comparable
// value (public, not a secret).
package safety
