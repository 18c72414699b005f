package epochkey

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/flynn/noise"
)

// Sizes, in bytes.
const (
	// Overhead is what SealTo adds to a payload: the ephemeral public key
	// (32), the sender's encrypted static key (32 + 16) and the payload's
	// Poly1305 tag (16).
	Overhead = 32 + 32 + 16 + 16
	// MaxPayload is the largest payload SealTo accepts, so that the whole
	// message fits in a Noise message of at most 65535 bytes.
	MaxPayload = noise.MaxMsgLen - Overhead
)

// Errors. Every error of SealTo, OpenFrom, NewHandover, Handover.Open and
// UnmarshalHandover wraps one of these (or, for SealTo and NewHandover, an
// error of the randomness source).
var (
	// ErrOpen: the message does not authenticate for this recipient and
	// prologue (wrong recipient, wrong team or epoch, tampered, truncated).
	// It never says which.
	ErrOpen = errors.New("epochkey: cannot open (not for this device, wrong team or epoch, or tampered)")
	// ErrWrongSender: the message authenticates, but from another sender
	// than the one expected.
	ErrWrongSender = errors.New("epochkey: sealed by an unexpected sender")
	// ErrNotRecipient: the hand-over has no box for this device.
	ErrNotRecipient = errors.New("epochkey: this device is not a recipient of the hand-over")
	// ErrPayloadSize: SealTo's payload is over MaxPayload, or an opened
	// box does not hold a 32-byte key.
	ErrPayloadSize = errors.New("epochkey: payload size")
	// ErrRecipients: NewHandover got no recipients, too many, or the same
	// one twice.
	ErrRecipients = errors.New("epochkey: bad recipient list")
	// ErrSeal: the Noise handshake refused to write (a low-order recipient
	// key, for example).
	ErrSeal = errors.New("epochkey: cannot seal")
	// ErrEncoding: UnmarshalHandover (or MarshalBinary of a hand-built
	// Handover) met bytes that are not a valid version-1 hand-over.
	ErrEncoding = errors.New("epochkey: bad hand-over encoding")
)

// suiteFor returns the cipher suite for one message or one hand-over by the
// device whose static key is given, and a function that wipes what it keeps.
type suiteFor func(static noise.DHKey) (noise.CipherSuite, func(), error)

// defaultSuite is Noise_X_25519_ChaChaPoly_SHA256 with X25519 from
// crypto/ecdh through a keyedDH (one scalar multiplication a DH).
func defaultSuite(static noise.DHKey) (noise.CipherSuite, func(), error) {
	cs, dh, err := keyedSuite(static)
	if err != nil {
		return nil, nil, err
	}
	return cs, dh.wipe, nil
}

// fixedSuite always returns cs (benchmarks and interoperability tests).
func fixedSuite(cs noise.CipherSuite) suiteFor {
	return func(noise.DHKey) (noise.CipherSuite, func(), error) { return cs, func() {}, nil }
}

// SealTo seals payload to recipient's static X25519 key as one Noise message
// of the one-way pattern X (Noise_X_25519_ChaChaPoly_SHA256):
//
//	<- s
//	...
//	-> e, es, s, ss
//
// The recipient learns the sender's static key from the message and that the
// sender held its private half (see the package caveats: this
// authentication is vulnerable to key-compromise impersonation). prologue
// must be the same on both sides; put a domain-separation string and every
// piece of context the message belongs to in it. rand supplies the
// ephemeral key (nil = crypto/rand).
//
// The result is len(payload)+[Overhead] bytes. payload may be at most
// [MaxPayload] bytes.
func SealTo(sender *identity.Device, recipient identity.NoisePublic, prologue, payload []byte, rand io.Reader) ([]byte, error) {
	static := sender.NoiseKey()
	defer clear(static.Private)
	cs, done, err := defaultSuite(static)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSeal, err)
	}
	defer done()
	return sealTo(cs, static, recipient, prologue, payload, rand)
}

func sealTo(cs noise.CipherSuite, static noise.DHKey, recipient identity.NoisePublic, prologue, payload []byte, rand io.Reader) ([]byte, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrPayloadSize, len(payload), MaxPayload)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cs,
		Random:        rand,
		Pattern:       noise.HandshakeX,
		Initiator:     true,
		Prologue:      prologue,
		StaticKeypair: static,
		PeerStatic:    recipient[:],
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSeal, err)
	}
	msg, _, _, err := hs.WriteMessage(make([]byte, 0, len(payload)+Overhead), payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSeal, err)
	}
	return msg, nil
}

// OpenFrom opens a message made by [SealTo] for recipient under prologue and
// returns the sender's static key and the payload. The caller must check
// that the sender is one it expects (or use [Handover.Open], which does).
// Every failure to authenticate is [ErrOpen]; msg may be any bytes.
func OpenFrom(recipient *identity.Device, prologue, msg []byte) (sender identity.NoisePublic, payload []byte, err error) {
	static := recipient.NoiseKey()
	defer clear(static.Private)
	cs, done, err := defaultSuite(static)
	if err != nil {
		return identity.NoisePublic{}, nil, ErrOpen // unreachable: a Device's key is valid
	}
	defer done()
	return openFrom(cs, static, prologue, msg)
}

func openFrom(cs noise.CipherSuite, static noise.DHKey, prologue, msg []byte) (identity.NoisePublic, []byte, error) {
	if len(msg) < Overhead || len(msg) > noise.MaxMsgLen {
		return identity.NoisePublic{}, nil, ErrOpen
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cs,
		Pattern:       noise.HandshakeX,
		Prologue:      prologue,
		StaticKeypair: static,
	})
	if err != nil {
		return identity.NoisePublic{}, nil, ErrOpen
	}
	payload, _, _, err := hs.ReadMessage(make([]byte, 0, len(msg)-Overhead), msg)
	if err != nil {
		return identity.NoisePublic{}, nil, ErrOpen
	}
	var s identity.NoisePublic
	if copy(s[:], hs.PeerStatic()) != len(s) {
		return identity.NoisePublic{}, nil, ErrOpen // unreachable: X always carries s
	}
	return s, payload, nil
}

// equalPublic compares two public keys. They are not secret; constant time
// costs nothing here and keeps the habit.
func equalPublic(a, b identity.NoisePublic) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
