package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
)

// Sizes, in bytes.
const (
	KeySize   = chacha20poly1305.KeySize   // 32
	NonceSize = chacha20poly1305.NonceSize // 12
	Overhead  = 16                         // Poly1305 tag appended by Seal
)

// Errors returned by this package.
var (
	ErrOpen       = errors.New("seal: message authentication failed")
	ErrKeySize    = errors.New("seal: epoch key must be 32 bytes")
	ErrRandomness = errors.New("seal: reading randomness")
)

// EpochKey is the symmetric key of one team epoch. The zero value is an
// all-zero key; get real ones from [NewEpochKey] or [EpochKeyFromBytes].
type EpochKey struct {
	_ [0]func() // not comparable with ==
	k [KeySize]byte
}

// NewEpochKey returns a key of 32 bytes read from rand (nil = crypto/rand).
func NewEpochKey(rand io.Reader) (EpochKey, error) {
	if rand == nil {
		rand = cryptoRand
	}
	var k EpochKey
	if _, err := io.ReadFull(rand, k.k[:]); err != nil {
		return EpochKey{}, fmt.Errorf("%w: %w", ErrRandomness, err)
	}
	return k, nil
}

var cryptoRand = rand.Reader

// EpochKeyFromBytes copies a 32-byte key; any other length is ErrKeySize.
func EpochKeyFromBytes(b []byte) (EpochKey, error) {
	var k EpochKey
	if len(b) != KeySize {
		return EpochKey{}, ErrKeySize
	}
	copy(k.k[:], b)
	return k, nil
}

// Bytes returns a copy of the key. The result is a secret.
func (k EpochKey) Bytes() []byte { return append([]byte(nil), k.k[:]...) }

// Equal reports whether k and o are the same key, in constant time.
func (k EpochKey) Equal(o EpochKey) bool { return subtle.ConstantTimeCompare(k.k[:], o.k[:]) == 1 }

// String returns "[redacted]".
func (k EpochKey) String() string { return "[redacted]" }

// GoString returns "[redacted]", so %#v does not print the key either.
func (k EpochKey) GoString() string { return "[redacted]" }

// LogValue logs "[redacted]".
func (k EpochKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Seal encrypts with ChaCha20-Poly1305 under key, nonce and associated data. The nonce must never be
// reused under one key for different plaintexts; envelopes derive it from the op id, a hash of the plaintext.
// The result is a new slice of len(plaintext)+Overhead bytes.
func Seal(key EpochKey, nonce [NonceSize]byte, ad, plaintext []byte) []byte {
	aead := newAEAD(key)
	return aead.Seal(make([]byte, 0, len(plaintext)+Overhead), nonce[:], plaintext, ad)
}

// Open authenticates and decrypts the output of [Seal]. Any failure (wrong
// key, nonce or associated data, a changed or truncated ciphertext) returns
// ErrOpen and no plaintext.
func Open(key EpochKey, nonce [NonceSize]byte, ad, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < Overhead {
		return nil, ErrOpen
	}
	aead := newAEAD(key)
	pt, err := aead.Open(make([]byte, 0, len(ciphertext)-Overhead), nonce[:], ciphertext, ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Stream XORs src with the ChaCha20 keystream of key and nonce into dst
// (which may be src; it must be at least as long), starting at block 1:
// block 0 is the one ChaCha20-Poly1305 spends on its one-time Poly1305 key,
// so this is [Seal]'s encryption without its tag. It authenticates nothing:
// use it only where something else (a signature) checks every byte, and
// never twice with one (key, nonce) for different plaintexts.
func Stream(key EpochKey, nonce [NonceSize]byte, dst, src []byte) {
	StreamKey(&key.k, nonce, dst, src)
}

// StreamKey is [Stream] under a raw 32-byte key (crypto/senderkey's message keys), with the same
// caveats.
func StreamKey(key *[KeySize]byte, nonce [NonceSize]byte, dst, src []byte) {
	c, err := chacha20.NewUnauthenticatedCipher(key[:], nonce[:])
	if err != nil {
		// Unreachable: the key and nonce have their sizes.
		panic("seal: " + err.Error())
	}
	c.SetCounter(1)
	c.XORKeyStream(dst[:len(src)], src)
}

func newAEAD(key EpochKey) cipher.AEAD {
	aead, err := chacha20poly1305.New(key.k[:])
	if err != nil {
		// Unreachable: the key is always KeySize bytes.
		panic("seal: " + err.Error())
	}
	return aead
}

const topicDomain = "fieldmesh/v1/topic"

// Topic derives a team's public topic from its secret id, one-way:
// SHA-256("fieldmesh/v1/topic" || teamID)[:16]. Relays and eavesdroppers see
// the topic, never the id.
func Topic(teamID [32]byte) [16]byte {
	h := sha256.New()
	h.Write([]byte(topicDomain))
	h.Write(teamID[:])
	var t [16]byte
	copy(t[:], h.Sum(nil))
	return t
}

var (
	_ slog.LogValuer = EpochKey{}
	_ fmt.Stringer   = EpochKey{}
)
