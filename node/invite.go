package node

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Invite codes.
//
// A code is what an admin reads out, pastes or shows as a QR code to a new member. It carries what the
// joiner needs to reach the inviter and prove it holds the code, and nothing about the team: the team id,
// name and keys travel only inside the Noise channel the code's secret opens, so a code that leaks after
// it was used or expired reveals nothing.
//
//	"fm1" | base32(version 1 | invite id 16 | secret 32 | expiry unix seconds u64 BE |
//	                uvarint len | inviter peer id | uvarint n | n × (uvarint len | multiaddr bytes))
const (
	invitePrefix     = "fm1"
	inviteVersion    = 1
	maxInviteCodeLen = 2048 // characters; refused before decoding
	maxInviteAddrs   = 16
	maxInviteAddrLen = 256
	// DefaultInviteTTL is how long an invite code works when no TTL is given.
	DefaultInviteTTL = 24 * time.Hour
	// MaxInviteTTL bounds the TTL an admin may ask for.
	MaxInviteTTL = 30 * 24 * time.Hour
)

var inviteEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Invite is a decoded invite code.
type Invite struct {
	ID      [16]byte
	Secret  [32]byte // the pre-shared key of the join handshake
	Expires time.Time
	Inviter peer.AddrInfo
}

// String prints the invite without its secret.
func (inv Invite) String() string {
	return fmt.Sprintf("invite %x from %s, expires %s", inv.ID[:4], inv.Inviter.ID.ShortString(), inv.Expires.UTC().Format(time.RFC3339))
}

// Errors returned for invite codes.
var (
	ErrInviteMalformed = errors.New("node: invite code is malformed")
	ErrInviteExpired   = errors.New("node: invite code has expired")
	ErrInviteUnknown   = errors.New("node: invite code is unknown, already used or expired")
)

// Code encodes the invite as a printable code.
func (inv Invite) Code() string {
	b := make([]byte, 0, 128)
	b = append(b, inviteVersion)
	b = append(b, inv.ID[:]...)
	b = append(b, inv.Secret[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(inv.Expires.Unix()))
	pid := []byte(inv.Inviter.ID)
	b = binary.AppendUvarint(b, uint64(len(pid)))
	b = append(b, pid...)
	addrs := inv.Inviter.Addrs
	if len(addrs) > maxInviteAddrs {
		addrs = addrs[:maxInviteAddrs]
	}
	b = binary.AppendUvarint(b, uint64(len(addrs)))
	for _, a := range addrs {
		ab := a.Bytes()
		b = binary.AppendUvarint(b, uint64(len(ab)))
		b = append(b, ab...)
	}
	return invitePrefix + strings.ToLower(inviteEncoding.EncodeToString(b))
}

// ParseInvite decodes an invite code. It checks the form only; expiry is checked by the caller
// (the inviter's clock is the one that counts).
func ParseInvite(code string) (Invite, error) {
	var inv Invite
	code = strings.TrimSpace(code)
	if len(code) > maxInviteCodeLen {
		return inv, fmt.Errorf("%w: longer than %d characters", ErrInviteMalformed, maxInviteCodeLen)
	}
	if !strings.HasPrefix(strings.ToLower(code), invitePrefix) {
		return inv, fmt.Errorf("%w: does not start with %q", ErrInviteMalformed, invitePrefix)
	}
	b, err := inviteEncoding.DecodeString(strings.ToUpper(code[len(invitePrefix):]))
	if err != nil {
		return inv, fmt.Errorf("%w: %v", ErrInviteMalformed, err)
	}
	r := reader{b: b}
	if v := r.byte(); v != inviteVersion {
		return inv, fmt.Errorf("%w: unknown version %d", ErrInviteMalformed, v)
	}
	copy(inv.ID[:], r.bytes(16))
	copy(inv.Secret[:], r.bytes(32))
	exp := r.uint64()
	pid := r.lenBytes(128)
	n := r.uvarint()
	if r.err == nil && n > maxInviteAddrs {
		return inv, fmt.Errorf("%w: %d addresses", ErrInviteMalformed, n)
	}
	var addrs []ma.Multiaddr
	for i := uint64(0); i < n && r.err == nil; i++ {
		ab := r.lenBytes(maxInviteAddrLen)
		if r.err != nil {
			break
		}
		a, err := ma.NewMultiaddrBytes(ab)
		if err != nil {
			return inv, fmt.Errorf("%w: address %d: %v", ErrInviteMalformed, i, err)
		}
		addrs = append(addrs, a)
	}
	if r.err != nil {
		return inv, fmt.Errorf("%w: %v", ErrInviteMalformed, r.err)
	}
	if len(r.b) != 0 {
		return inv, fmt.Errorf("%w: %d trailing bytes", ErrInviteMalformed, len(r.b))
	}
	id, err := peer.IDFromBytes(pid)
	if err != nil {
		return inv, fmt.Errorf("%w: inviter: %v", ErrInviteMalformed, err)
	}
	if exp > 1<<40 {
		return inv, fmt.Errorf("%w: expiry out of range", ErrInviteMalformed)
	}
	inv.Expires = time.Unix(int64(exp), 0)
	inv.Inviter = peer.AddrInfo{ID: id, Addrs: addrs}
	return inv, nil
}

// inviteRecord is what the inviter stores (in the encrypted store) for each open invite. A link invite
// (Link set) adds a device to the person Person instead of adding a new person.
//
//	version 1 | team 32 | secret 32 | expires u64 BE                            (a member invite)
//	version 2 | team 32 | secret 32 | expires u64 BE | link byte | person 32    (either)
type inviteRecord struct {
	Team    crdt.TeamID
	Secret  [32]byte
	Expires time.Time
	Link    bool
	Person  identity.DeviceID
}

func (r inviteRecord) marshal() []byte {
	b := make([]byte, 0, 1+32+32+8+1+32)
	b = append(b, 2)
	b = append(b, r.Team[:]...)
	b = append(b, r.Secret[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Expires.Unix()))
	b = append(b, 0)
	if r.Link {
		b[len(b)-1] = 1
	}
	return append(b, r.Person[:]...)
}

func unmarshalInviteRecord(b []byte) (inviteRecord, error) {
	var r inviteRecord
	switch {
	case len(b) == 1+32+32+8 && b[0] == 1:
	case len(b) == 1+32+32+8+1+32 && b[0] == 2 && b[73] <= 1:
		r.Link = b[73] == 1
		copy(r.Person[:], b[74:])
	default:
		return r, errors.New("node: invite record is malformed")
	}
	copy(r.Team[:], b[1:33])
	copy(r.Secret[:], b[33:65])
	exp := binary.BigEndian.Uint64(b[65:73])
	if exp > 1<<40 {
		return r, errors.New("node: invite record: expiry out of range")
	}
	r.Expires = time.Unix(int64(exp), 0)
	return r, nil
}

func newInvite(now time.Time, ttl time.Duration, inviter peer.AddrInfo) (Invite, error) {
	if ttl <= 0 {
		ttl = DefaultInviteTTL
	}
	if ttl > MaxInviteTTL {
		return Invite{}, fmt.Errorf("node: invite lifetime %s is longer than the maximum %s", ttl, MaxInviteTTL)
	}
	inv := Invite{Expires: now.Add(ttl).Truncate(time.Second), Inviter: inviter}
	if _, err := rand.Read(inv.ID[:]); err != nil {
		return inv, err
	}
	if _, err := rand.Read(inv.Secret[:]); err != nil {
		return inv, err
	}
	return inv, nil
}

// reader is a bounds-checked cursor over bytes; the first error sticks and later reads return zeros.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = errors.New(msg)
	}
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("unexpected end of input")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.fail("unexpected end of input")
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) uint64() uint64 {
	return binary.BigEndian.Uint64(r.bytes(8))
}

func (r *reader) uint32() uint32 {
	return binary.BigEndian.Uint32(r.bytes(4))
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) lenBytes(max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail("field too long")
		return nil
	}
	return r.bytes(int(n))
}
