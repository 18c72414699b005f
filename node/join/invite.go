package join

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/humancode"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Invite lifetimes.
const (
	// DefaultInviteTTL is how long an invite code works when no lifetime is given.
	DefaultInviteTTL = 24 * time.Hour
	// MaxInviteTTL bounds the lifetime an admin may ask for.
	MaxInviteTTL = 30 * 24 * time.Hour
)

// Limits of an invite code's payload.
const (
	maxInviteAddrs   = 16  // addresses of the inviter; Code keeps the first that fit
	maxInviteAddrLen = 256 // bytes of one address
	maxPeerIDLen     = 128 // bytes of the inviter's peer id
	maxExpiry        = 1 << 40
)

// Errors about invite codes, wrapped with detail: test with errors.Is.
var (
	// ErrInviteMalformed: ParseInvite was given something that is not an invite code.
	ErrInviteMalformed = errors.New("join: invite code is malformed")
	// ErrInviteExpired: the invite's lifetime is over.
	ErrInviteExpired = errors.New("join: invite code has expired")
	// ErrInviteUnknown: the inviter has no open invite of that id.
	ErrInviteUnknown = errors.New("join: invite code is unknown, already used or expired")
)

// Invite is what an invite code carries: what a joiner needs to reach the inviter and prove it holds
// the code, and nothing about the team. The team's id, name and keys travel only inside the Noise
// channel the secret opens, so a code that leaks after it was used or expired reveals nothing.
//
// Its code (Code) is humancode's Invite kind, whose payload is
//
//	invite id 16 | secret 32 | expiry unix seconds u64 BE | uvarint len | inviter peer id |
//	uvarint n | n × (uvarint len | multiaddr bytes)
type Invite struct {
	ID      [16]byte
	Secret  [32]byte // the pre-shared key of the handshake
	Expires time.Time
	Inviter peer.AddrInfo
}

// NewInvite returns an invite from inviter with a random id and secret, open for ttl from now (0 means
// DefaultInviteTTL; more than MaxInviteTTL is refused). Its expiry is truncated to the second, as the
// code carries it.
func NewInvite(now time.Time, ttl time.Duration, inviter peer.AddrInfo) (Invite, error) {
	if ttl <= 0 {
		ttl = DefaultInviteTTL
	}
	if ttl > MaxInviteTTL {
		return Invite{}, fmt.Errorf("join: invite lifetime %s is longer than the maximum %s", ttl, MaxInviteTTL)
	}
	inv := Invite{Expires: now.Add(ttl).Truncate(time.Second), Inviter: inviter}
	if _, err := rand.Read(inv.ID[:]); err != nil {
		return Invite{}, err
	}
	if _, err := rand.Read(inv.Secret[:]); err != nil {
		return Invite{}, err
	}
	return inv, nil
}

// String prints the invite without its secret.
func (inv Invite) String() string {
	return fmt.Sprintf("invite %x from %s, expires %s", inv.ID[:4], inv.Inviter.ID.ShortString(), inv.Expires.UTC().Format(time.RFC3339))
}

// Code encodes the invite as a code a person can paste, type or show as a QR code. It keeps the
// inviter's first addresses that fit the code's limits (16 addresses of at most 256 bytes, and
// humancode.MaxPayload in all) and drops the rest, so ParseInvite reads every code Code makes.
func (inv Invite) Code() string {
	b := make([]byte, 0, 128)
	b = append(b, inv.ID[:]...)
	b = append(b, inv.Secret[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(inv.Expires.Unix()))
	pid := []byte(inv.Inviter.ID)
	b = binary.AppendUvarint(b, uint64(len(pid)))
	b = append(b, pid...)
	var addrs [][]byte
	room := humancode.MaxPayload - len(b) - 1 // one byte for the count, as at most 16 fit a uvarint byte
	for _, a := range inv.Inviter.Addrs {
		ab := a.Bytes()
		n := len(binary.AppendUvarint(nil, uint64(len(ab)))) + len(ab)
		if len(addrs) == maxInviteAddrs {
			break
		}
		if len(ab) > maxInviteAddrLen || n > room {
			continue
		}
		addrs = append(addrs, ab)
		room -= n
	}
	b = binary.AppendUvarint(b, uint64(len(addrs)))
	for _, ab := range addrs {
		b = binary.AppendUvarint(b, uint64(len(ab)))
		b = append(b, ab...)
	}
	return humancode.Encode(humancode.Invite, b)
}

// ParseInvite decodes an invite code (humancode.Decode: case, spaces and dashes do not matter). It
// checks the form only: expiry is the inviter's to judge, by its clock.
func ParseInvite(code string) (Invite, error) {
	var inv Invite
	b, err := humancode.Decode(humancode.Invite, code)
	if err != nil {
		return inv, fmt.Errorf("%w: %w", ErrInviteMalformed, err)
	}
	r := wire.NewReader(b)
	copy(inv.ID[:], r.Fixed(16))
	copy(inv.Secret[:], r.Fixed(32))
	exp := r.Uint64()
	pid := r.Bytes(maxPeerIDLen)
	n := r.Uvarint()
	if r.Err() == nil && n > maxInviteAddrs {
		return inv, fmt.Errorf("%w: %d addresses", ErrInviteMalformed, n)
	}
	var addrs []ma.Multiaddr
	for i := uint64(0); i < n && r.Err() == nil; i++ {
		ab := r.Bytes(maxInviteAddrLen)
		if r.Err() != nil {
			break
		}
		a, err := ma.NewMultiaddrBytes(ab)
		if err != nil {
			return inv, fmt.Errorf("%w: address %d: %v", ErrInviteMalformed, i, err)
		}
		addrs = append(addrs, a)
	}
	if err := r.Finish(); err != nil {
		return inv, fmt.Errorf("%w: %w", ErrInviteMalformed, err)
	}
	id, err := peer.IDFromBytes(pid)
	if err != nil {
		return inv, fmt.Errorf("%w: inviter: %v", ErrInviteMalformed, err)
	}
	if exp > maxExpiry {
		return inv, fmt.Errorf("%w: expiry out of range", ErrInviteMalformed)
	}
	inv.Expires = time.Unix(int64(exp), 0)
	inv.Inviter = peer.AddrInfo{ID: id, Addrs: addrs}
	return inv, nil
}

// Record is what an inviter keeps (in its encrypted store) of each open invite, under the invite's
// id. A link invite (Link set) adds a device to the person Person instead of adding a new person, under
// the name DeviceName that the person's linking device gave it (so a thief holding the code cannot
// choose how the device is shown).
//
//	version 2 | team 32 | secret 32 | expires unix seconds u64 BE | link 0 or 1 | person 32
//	version 3 | the same | device name (uvarint length, 1 to 64 bytes of UTF-8)
//
// Marshal writes version 2 when DeviceName is empty, so each record has one encoding.
type Record struct {
	Team       crdt.TeamID
	Secret     [32]byte
	Expires    time.Time
	Link       bool
	Person     identity.DeviceID // the person's first device; zero unless Link
	DeviceName string            // a linked device's name; empty for none
}

const (
	recordVersion      = 2
	recordVersionNamed = 3
	recordLen          = 1 + 32 + 32 + 8 + 1 + 32
)

// Marshal encodes the record for the inviter's store.
func (r Record) Marshal() []byte {
	b := make([]byte, 0, recordLen+1+len(r.DeviceName))
	v := byte(recordVersion)
	if r.DeviceName != "" {
		v = recordVersionNamed
	}
	b = append(b, v)
	b = append(b, r.Team[:]...)
	b = append(b, r.Secret[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Expires.Unix()))
	link := byte(0)
	if r.Link {
		link = 1
	}
	b = append(b, link)
	b = append(b, r.Person[:]...)
	if r.DeviceName != "" {
		b = wire.AppendString(b, r.DeviceName)
	}
	return b
}

func unmarshalRecord(b []byte) (Record, error) {
	var rec Record
	r := wire.NewReader(b)
	v := r.Byte()
	if r.Err() == nil && v != recordVersion && v != recordVersionNamed {
		return Record{}, fmt.Errorf("join: invite record is malformed: %w: invite record version %d", wire.ErrVersion, v)
	}
	copy(rec.Team[:], r.Fixed(32))
	copy(rec.Secret[:], r.Fixed(32))
	exp := r.Uint64()
	rec.Link = r.Bool()
	copy(rec.Person[:], r.Fixed(32))
	if v == recordVersionNamed {
		rec.DeviceName = r.String("device name", crdt.MaxNameLen)
		if r.Err() == nil && rec.DeviceName == "" {
			r.Fail(fmt.Errorf("%w: empty device name", wire.ErrMalformed))
		}
	}
	if err := r.Finish(); err != nil {
		return Record{}, fmt.Errorf("join: invite record is malformed: %w", err)
	}
	if exp > maxExpiry {
		return Record{}, errors.New("join: invite record: expiry out of range")
	}
	rec.Expires = time.Unix(int64(exp), 0)
	return rec, nil
}
