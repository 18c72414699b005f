package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/flynn/noise"
)

// Errors returned by this package.
var (
	ErrBadDeviceID    = errors.New("identity: bad device id")
	ErrBadNoisePublic = errors.New("identity: bad noise public key")
	// ErrWeakNoisePublic: an X25519 public key of small order (such as all
	// zeros): every Diffie-Hellman with it gives the all-zero secret, so
	// nothing sealed to it is secret, and Noise refuses it.
	ErrWeakNoisePublic = errors.New("identity: noise public key of small order")
	ErrBadDevice       = errors.New("identity: bad device encoding")
)

// DeviceID is the Ed25519 public key of a device. It is also the public key
// of the device's libp2p identity.
type DeviceID [32]byte

// String returns the id as 64 lower-case hex characters.
func (d DeviceID) String() string { return hex.EncodeToString(d[:]) }

// Short returns the first 8 hex characters of the id, for logs and UIs.
func (d DeviceID) Short() string { return hex.EncodeToString(d[:4]) }

// LogValue logs the short form of the id.
func (d DeviceID) LogValue() slog.Value { return slog.StringValue(d.Short()) }

// PublicKey returns the id as an ed25519.PublicKey (a fresh copy).
func (d DeviceID) PublicKey() ed25519.PublicKey {
	return append(ed25519.PublicKey(nil), d[:]...)
}

// ParseDeviceID parses the 64-hex-character form returned by
// [DeviceID.String] (upper case is accepted too).
func ParseDeviceID(s string) (DeviceID, error) {
	var d DeviceID
	if err := parseHex(d[:], s); err != nil {
		return DeviceID{}, fmt.Errorf("%w: %v", ErrBadDeviceID, err)
	}
	return d, nil
}

// NoisePublic is the X25519 public key of a device, its static key in Noise
// messages.
type NoisePublic [32]byte

// String returns the key as 64 lower-case hex characters.
func (p NoisePublic) String() string { return hex.EncodeToString(p[:]) }

// Short returns the first 8 hex characters of the key.
func (p NoisePublic) Short() string { return hex.EncodeToString(p[:4]) }

// LogValue logs the short form of the key.
func (p NoisePublic) LogValue() slog.Value { return slog.StringValue(p.Short()) }

// Check returns [ErrWeakNoisePublic] for a key of small order (the
// all-zero key among them): one that no honest device has and that makes
// every key agreement with it, and so every box sealed to it, fail. It costs
// one X25519 multiplication. Keys that come from the network (a joiner's
// Noise static key, a member key in a commit) are checked before use.
func (p NoisePublic) Check() error {
	pub, err := ecdh.X25519().NewPublicKey(p[:])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadNoisePublic, err)
	}
	if _, err := checkScalar.ECDH(pub); err != nil {
		return ErrWeakNoisePublic
	}
	return nil
}

// checkScalar is a fixed, public X25519 private key: a multiplication by it
// gives the all-zero point exactly for the keys of small order, which
// crypto/ecdh then refuses.
var checkScalar = func() *ecdh.PrivateKey {
	var k [32]byte
	copy(k[:], "fieldmesh/v1/small-order-check..")
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		panic("identity: " + err.Error()) // unreachable: any 32 bytes are an X25519 key
	}
	return priv
}()

// ParseNoisePublic parses the 64-hex-character form returned by
// [NoisePublic.String].
func ParseNoisePublic(s string) (NoisePublic, error) {
	var p NoisePublic
	if err := parseHex(p[:], s); err != nil {
		return NoisePublic{}, fmt.Errorf("%w: %v", ErrBadNoisePublic, err)
	}
	return p, nil
}

func parseHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex characters, got %d", 2*len(dst), len(s))
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

// Device holds the private keys of this device: an Ed25519 signing key and
// an X25519 Noise key. It is immutable and safe for concurrent use. It is a
// secret: it prints as "[redacted]" and must be compared with [Device.Equal].
type Device struct {
	_        [0]func() // not comparable
	sign     ed25519.PrivateKey
	id       DeviceID
	dh       *ecdh.PrivateKey
	noisePub NoisePublic
}

const (
	deviceVersion = 1
	deviceSize    = 1 + ed25519.SeedSize + 32
)

// Generate creates a device with fresh keys, reading 64 bytes from rand
// (32 for the Ed25519 seed, then 32 for the X25519 private key). A nil rand
// means crypto/rand.
func Generate(rand io.Reader) (*Device, error) {
	if rand == nil {
		rand = cryptoRand
	}
	var buf [ed25519.SeedSize + 32]byte
	if _, err := io.ReadFull(rand, buf[:]); err != nil {
		return nil, fmt.Errorf("identity: generate device: %w", err)
	}
	return newDevice(buf[:ed25519.SeedSize], buf[ed25519.SeedSize:])
}

var cryptoRand = rand.Reader

func newDevice(seed, x25519Priv []byte) (*Device, error) {
	dh, err := ecdh.X25519().NewPrivateKey(x25519Priv)
	if err != nil {
		return nil, fmt.Errorf("identity: x25519 key: %w", err)
	}
	d := &Device{sign: ed25519.NewKeyFromSeed(seed), dh: dh}
	copy(d.id[:], d.sign[ed25519.SeedSize:])
	copy(d.noisePub[:], dh.PublicKey().Bytes())
	return d, nil
}

// ID returns the device's id, its Ed25519 public key.
func (d *Device) ID() DeviceID { return d.id }

// NoisePublic returns the device's X25519 public key.
func (d *Device) NoisePublic() NoisePublic { return d.noisePub }

// Sign signs msg with the device's Ed25519 key; the signature is 64 bytes.
// Callers should prefix msg with a domain-separation string of their own.
func (d *Device) Sign(msg []byte) []byte { return ed25519.Sign(d.sign, msg) }

// SigningKey returns a copy of the device's Ed25519 private key, to build the
// libp2p identity. It is a secret.
func (d *Device) SigningKey() ed25519.PrivateKey {
	return append(ed25519.PrivateKey(nil), d.sign...)
}

// NoiseKey returns a copy of the device's X25519 keypair as a flynn/noise
// static keypair. Private is a secret.
func (d *Device) NoiseKey() noise.DHKey {
	return noise.DHKey{Private: d.dh.Bytes(), Public: d.noisePub[:]}
}

// MarshalBinary encodes the device's private keys: version byte 1, the 32-byte
// Ed25519 seed, the 32-byte X25519 private key. The result is a secret.
func (d *Device) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, deviceSize)
	b = append(b, deviceVersion)
	b = append(b, d.sign.Seed()...)
	b = append(b, d.dh.Bytes()...)
	return b, nil
}

// UnmarshalDevice decodes the output of [Device.MarshalBinary] and derives
// the public keys. The input must be exactly 65 bytes with version 1.
func UnmarshalDevice(b []byte) (*Device, error) {
	if len(b) != deviceSize {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrBadDevice, deviceSize, len(b))
	}
	if b[0] != deviceVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrBadDevice, b[0])
	}
	return newDevice(b[1:1+ed25519.SeedSize], b[1+ed25519.SeedSize:])
}

// Equal reports whether d and o hold the same private keys, in constant time.
func (d *Device) Equal(o *Device) bool {
	if d == nil || o == nil {
		return d == o
	}
	a := subtle.ConstantTimeCompare(d.sign, o.sign)
	b := subtle.ConstantTimeCompare(d.dh.Bytes(), o.dh.Bytes())
	return a&b == 1
}

// String returns "[redacted]".
func (d *Device) String() string { return "[redacted]" }

// GoString returns "[redacted]", so %#v does not print the keys either.
func (d *Device) GoString() string { return "[redacted]" }

// LogValue logs "[redacted]".
func (d *Device) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Verify reports whether sig is id's valid Ed25519 signature of msg.
// It returns false for a signature of the wrong length.
func Verify(id DeviceID, msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(id[:], msg, sig)
}

var (
	_ slog.LogValuer = DeviceID{}
	_ slog.LogValuer = NoisePublic{}
	_ slog.LogValuer = (*Device)(nil)
	_ fmt.Stringer   = (*Device)(nil)
)
