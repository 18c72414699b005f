// Package wipeorder is the remote wipe order: a small signed item an admin's device issues for one lost
// device of its team, carried by members and clinic relays until the lost device meets one of them,
// which then destroys its store (docs/security.md, "Lock and wipe").
//
// An order carries no team content: not the team's id, name, members or keys. It names only the
// target device, the admin device that signed it, a random nonce and a validity window:
//
//	version 1 | target 32 | signer 32 | nonce 16 | issued u64 BE | expires u64 BE | signature 64
//
// 161 bytes in all; times are Unix seconds. The signature is the signer's Ed25519 signature of
// Domain followed by the first 97 bytes. Parse refuses any other length, another version, a window
// that ends before it starts or lasts longer than MaxLifetime, and a signature that does not verify
// under the signer's key. It never panics (FuzzParse).
//
// Check is the target's rule, and the only one that makes an order act: the order names this device,
// is signed by a device this device knows as an admin of one of its teams, and has not expired.
// Because the signature covers the target, an order cannot be replayed against another device;
// because it covers the signer, it cannot be re-signed by a non-admin; the nonce makes two orders
// for the same device distinct, and the window bounds how long carriers keep it.
//
// The package is pure: no clock, no randomness source of its own beyond the one Issue is given, no
// I/O.
package wipeorder

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// Sizes and limits.
const (
	// Size is the length of an encoded order, in bytes.
	Size = 1 + 32 + 32 + 16 + 8 + 8 + 64
	// MaxLifetime is the longest validity window an order may have: long enough for a phone left in
	// a drawer, short enough that carriers forget it.
	MaxLifetime = 365 * 24 * time.Hour
	// DefaultLifetime is the window Issue gives when asked for none.
	DefaultLifetime = 90 * 24 * time.Hour
	// Domain separates the order's signature from every other signature of a device key.
	Domain     = "fieldmesh wipe order v1\x00"
	version    = 1
	signedSize = Size - 64
)

// Errors. Every error of Parse wraps ErrMalformed or ErrBadSignature; every error of Check wraps one of
// the others.
var (
	ErrMalformed    = errors.New("wipeorder: malformed order")
	ErrBadSignature = errors.New("wipeorder: signature does not verify")
	ErrNotForMe     = errors.New("wipeorder: order names another device")
	ErrNotAdmin     = errors.New("wipeorder: signer is not an admin this device knows")
	ErrExpired      = errors.New("wipeorder: order expired")
)

// Order is a decoded, signature-checked wipe order. Its zero value is not valid; make one with Issue
// or Parse.
type Order struct {
	Target  identity.DeviceID
	Signer  identity.DeviceID
	Nonce   [16]byte
	Issued  time.Time // second precision
	Expires time.Time // second precision
	raw     [Size]byte
}

// Bytes returns the order's encoding (Size bytes).
func (o *Order) Bytes() []byte { b := o.raw; return b[:] }

// Key is a stable id of the order (its nonce and target), for de-duplication by carriers.
func (o *Order) Key() string { return string(o.raw[1:81]) }

// Issue makes and signs an order for target, valid from now for lifetime (0: DefaultLifetime). rnd
// supplies the nonce (nil: crypto/rand).
func Issue(admin *identity.Device, target identity.DeviceID, now time.Time, lifetime time.Duration, rnd io.Reader) (*Order, error) {
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	if lifetime < time.Second || lifetime > MaxLifetime {
		return nil, fmt.Errorf("wipeorder: lifetime %v out of range (1s to %v)", lifetime, MaxLifetime)
	}
	if target == admin.ID() {
		return nil, errors.New("wipeorder: an order cannot name its own signer")
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	var b [Size]byte
	b[0] = version
	copy(b[1:33], target[:])
	id := admin.ID()
	copy(b[33:65], id[:])
	if _, err := io.ReadFull(rnd, b[65:81]); err != nil {
		return nil, fmt.Errorf("wipeorder: nonce: %w", err)
	}
	issued := now.Unix()
	binary.BigEndian.PutUint64(b[81:89], uint64(issued))
	binary.BigEndian.PutUint64(b[89:97], uint64(issued+int64(lifetime/time.Second)))
	copy(b[97:], admin.Sign(signedMessage(b[:signedSize])))
	return Parse(b[:])
}

func signedMessage(body []byte) []byte {
	return append([]byte(Domain), body...)
}

// Parse decodes an order and verifies its signature under the signer it names. It checks nothing about
// who the signer is: that is Check's.
func Parse(b []byte) (*Order, error) {
	if len(b) != Size {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), Size)
	}
	if b[0] != version {
		return nil, fmt.Errorf("%w: version %d", ErrMalformed, b[0])
	}
	o := &Order{}
	copy(o.raw[:], b)
	copy(o.Target[:], b[1:33])
	copy(o.Signer[:], b[33:65])
	copy(o.Nonce[:], b[65:81])
	issued, expires := binary.BigEndian.Uint64(b[81:89]), binary.BigEndian.Uint64(b[89:97])
	const maxUnix = 1 << 40 // year ~36812: far past any real clock, small enough that nothing overflows
	if issued > maxUnix || expires > maxUnix || expires <= issued || expires-issued > uint64(MaxLifetime/time.Second) {
		return nil, fmt.Errorf("%w: bad validity window", ErrMalformed)
	}
	if o.Target == o.Signer {
		return nil, fmt.Errorf("%w: signer and target are one device", ErrMalformed)
	}
	o.Issued, o.Expires = time.Unix(int64(issued), 0), time.Unix(int64(expires), 0)
	if !identity.Verify(o.Signer, signedMessage(b[:signedSize]), b[signedSize:]) {
		return nil, ErrBadSignature
	}
	return o, nil
}

// Expired reports whether the order's window ended before now. Carriers drop expired orders.
func (o *Order) Expired(now time.Time) bool { return now.After(o.Expires) }

// Check is the target device's decision: nil means self must wipe itself. isAdmin says whether a
// device is an admin of one of self's teams, in self's own view of its teams (which still holds the
// admin, since the removal that came with the order never reached it).
func (o *Order) Check(self identity.DeviceID, isAdmin func(identity.DeviceID) bool, now time.Time) error {
	switch {
	case o.Target != self:
		return fmt.Errorf("%w: %s", ErrNotForMe, o.Target.Short())
	case isAdmin == nil || !isAdmin(o.Signer):
		return fmt.Errorf("%w: %s", ErrNotAdmin, o.Signer.Short())
	case o.Expired(now):
		return fmt.Errorf("%w at %s", ErrExpired, o.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
