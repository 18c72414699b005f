package relayproto

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/node/humancode"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Domain strings. Each use of a team's secret id gets its own, so no derived value can stand in for another.
const (
	keyDomain   = "fieldmesh/v1/relay-key"   // HKDF info of the relay key
	proofDomain = "fieldmesh/v1/relay-enrol" // first input of an enrolment proof
)

// KeySize is the size of a relay key, in bytes.
const KeySize = 32

// Key is a team's relay key: what a device proves it holds to enrol the team's topic at a relay, and
// what the relay checks proofs against. It is derived one-way from the team id (TeamKey), so a relay
// holding it learns neither the id nor anything that opens envelopes: it can only check proofs. Anyone
// who knows the team id (every member, present or past) can derive it.
//
// Keys are not comparable with ==; Equal compares in constant time. A Key prints as [redacted].
type Key struct {
	_ [0]func()
	k [KeySize]byte
}

// TeamKey derives the relay key of a team from its id: HKDF-SHA256 with the id as input keying
// material, no salt, and info "fieldmesh/v1/relay-key", 32 bytes.
func TeamKey(team [32]byte) Key {
	b, err := hkdf.Key(sha256.New, team[:], nil, keyDomain, KeySize)
	if err != nil {
		panic("relay: hkdf: " + err.Error()) // only for lengths HKDF-SHA256 cannot produce
	}
	var k Key
	copy(k.k[:], b)
	return k
}

// KeyFromBytes returns the key whose bytes are b (as Bytes returns them), for a relay that keeps
// keys in its store.
func KeyFromBytes(b [KeySize]byte) Key { return Key{k: b} }

// Bytes returns the key's bytes, for a relay that keeps keys in its store. They are a secret.
func (k Key) Bytes() [KeySize]byte { return k.k }

// Equal reports whether two keys are the same, in constant time.
func (k Key) Equal(o Key) bool { return subtle.ConstantTimeCompare(k.k[:], o.k[:]) == 1 }

// String returns "[redacted]": keys never reach a log.
func (Key) String() string { return "[redacted]" }

// Proof returns the enrolment proof of device to relay for this key and the relay's nonce:
//
//	HMAC-SHA256(key, "fieldmesh/v1/relay-enrol" | uvarint len | relay peer id | uvarint len | device peer id | nonce 32)
//
// The peer ids are those of the Noise-authenticated connection, so a proof is good for one relay, one
// device and one challenge only: it cannot be replayed to another relay, by another device, or later.
func (k Key) Proof(relay, device peer.ID, nonce [NonceSize]byte) [32]byte {
	m := hmac.New(sha256.New, k.k[:])
	m.Write([]byte(proofDomain))
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(relay)))
	b = append(b, relay...)
	b = binary.AppendUvarint(b, uint64(len(device)))
	b = append(b, device...)
	b = append(b, nonce[:]...)
	m.Write(b)
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// Verify reports whether proof is device's proof for this key, relay and nonce, in constant time.
func (k Key) Verify(relay, device peer.ID, nonce [NonceSize]byte, proof [32]byte) bool {
	want := k.Proof(relay, device, nonce)
	return hmac.Equal(want[:], proof[:])
}

// DeviceOf returns the device id behind a peer id: libp2p peer ids of fieldmesh hosts embed the
// device's Ed25519 identity key, which the connection's Noise handshake proved.
func DeviceOf(p peer.ID) (identity.DeviceID, error) {
	var d identity.DeviceID
	pk, err := p.ExtractPublicKey()
	if err != nil {
		return d, err
	}
	raw, err := pk.Raw()
	if err != nil || pk.Type() != lcrypto.Ed25519 || len(raw) != len(d) {
		return d, errors.New("relay: peer key is not an Ed25519 device key")
	}
	copy(d[:], raw)
	return d, nil
}

// Relay codes.
//
// A team admin gives the clinic relay's operator a code (fieldmesh team relay-code); the operator gives
// it to the relay (fieldmesh relay admit). It carries the team's topic and relay key, and nothing else:
// not the team id, name or members, and nothing that opens an envelope. It is humancode's Relay kind
// ("fmr3-…"), whose checksum catches a mistyped code before the relay carries a topic nobody uses;
// its payload is
//
//	topic 16 | relay key 32 | admin device 32
//
// The admin device is the one that made the code: the relay takes the team's first roster only if that
// device signed it (roster.go).
const codeBytes = 16 + KeySize + 32

// ErrCodeMalformed is returned by ParseCode for anything that is not a relay code.
var ErrCodeMalformed = errors.New("relay: malformed relay code")

// Code is a decoded relay code: a topic for the relay to carry, the key that enrolled devices prove,
// and the admin device whose signature the relay trusts on the team's first roster.
type Code struct {
	Topic envelope.Topic
	Key   Key
	Admin identity.DeviceID
}

// CodeFor returns the relay code that admin makes for a team: its topic (seal.Topic), relay key
// (TeamKey) and admin's device.
func CodeFor(team [32]byte, admin identity.DeviceID) Code {
	return Code{Topic: envelope.Topic(seal.Topic(team)), Key: TeamKey(team), Admin: admin}
}

// Encode returns the printable code. It is a secret: whoever has it can enrol devices for the topic.
func (c Code) Encode() string {
	b := make([]byte, 0, codeBytes)
	b = append(b, c.Topic[:]...)
	b = append(b, c.Key.k[:]...)
	b = append(b, c.Admin[:]...)
	return humancode.Encode(humancode.Relay, b)
}

// String names the code's topic and hides its key.
func (c Code) String() string { return "relay code for topic " + c.Topic.Short() + " [redacted]" }

// ParseCode decodes a relay code (humancode.Decode: case, spaces and dashes do not matter).
func ParseCode(s string) (Code, error) {
	var c Code
	b, err := humancode.Decode(humancode.Relay, s)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrCodeMalformed, err)
	}
	if len(b) != codeBytes {
		return c, fmt.Errorf("%w: %d bytes, want %d", ErrCodeMalformed, len(b), codeBytes)
	}
	copy(c.Topic[:], b[:16])
	copy(c.Key.k[:], b[16:16+KeySize])
	copy(c.Admin[:], b[16+KeySize:])
	return c, nil
}
