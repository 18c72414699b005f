package relayproto

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Rosters: admission that follows membership.
//
// The relay key (TeamKey) stops anyone who never knew the team id, but every member, present or past,
// knows it. So a relay also keeps, for each topic, the team's roster: the devices of the current members
// and the admin devices, signed by an admin. Once it holds one, it enrols only a device on it, and when
// a newer roster arrives it drops at once the enrolments and directory entries of the devices the
// newer one leaves out. The peer id of a libp2p connection is the device's identity key, proven by the
// connection's Noise handshake, so the relay needs no other proof that a device is the one listed.
//
// Where the trust comes from:
//   - the relay code names the admin device that made it (Code.Admin); the first roster must be signed
//     by it;
//   - every later roster must carry a higher Seq and be signed by an admin of the roster the relay
//     holds. Seq is the signer's count of membership changes (device.Team.RosterSeq), so two admins
//     that saw the same changes sign the same Seq.
//
// Admin devices put their roster in every enrolment request; the relay takes it if it is newer
// (relay.go). Nothing else reaches the relay: no names, no team id, no key that opens an envelope.
// What it learns, the member devices' ids, it also learns as they enrol.
//
//	roster  version 1 | topic 16 | seq u64 BE | uvarint a (1..MaxRosterAdmins) | a × device 32 |
//	        uvarint m (1..MaxRosterMembers) | m × device 32 | signer device 32 | signature 64
//
// The signature is Ed25519 by signer over "fieldmesh/v1/relay-roster" followed by every byte before
// the signer field. Devices are sorted and unique; every admin is also a member.
const (
	// MaxRosterMembers is the most member devices a roster lists.
	MaxRosterMembers = 2048
	// MaxRosterAdmins is the most admin devices a roster lists.
	MaxRosterAdmins = 64
	rosterDomain    = "fieldmesh/v1/relay-roster"
	// MaxRosterSize is the largest encoded roster.
	MaxRosterSize = 1 + 16 + 8 + 3 + MaxRosterAdmins*32 + 3 + MaxRosterMembers*32 + 32 + 64
)

// Roster is a signed list of a topic's member and admin devices.
type Roster struct {
	Topic   envelope.Topic
	Seq     uint64
	Admins  []identity.DeviceID // sorted, unique, each also in Members
	Members []identity.DeviceID // sorted, unique
	Signer  identity.DeviceID
	Sig     []byte
}

// NewRoster returns the unsigned roster of topic at seq: members and admins are copied, sorted and
// made unique, and admins are added to members.
func NewRoster(topic envelope.Topic, seq uint64, members, admins []identity.DeviceID) *Roster {
	cmp := func(a, b identity.DeviceID) int { return slices.Compare(a[:], b[:]) }
	ad := slices.Clone(admins)
	slices.SortFunc(ad, cmp)
	ad = slices.Compact(ad)
	ms := append(slices.Clone(members), ad...)
	slices.SortFunc(ms, cmp)
	ms = slices.Compact(ms)
	return &Roster{Topic: topic, Seq: seq, Admins: ad, Members: ms}
}

// signed returns the bytes the signature covers.
func (r *Roster) signed() []byte {
	b := make([]byte, 0, 1+16+8+3+32*(len(r.Admins)+len(r.Members))+3+len(rosterDomain))
	b = append(b, rosterDomain...)
	b = append(b, wireVersion)
	b = append(b, r.Topic[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.AppendUvarint(b, uint64(len(r.Admins)))
	for _, d := range r.Admins {
		b = append(b, d[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Members)))
	for _, d := range r.Members {
		b = append(b, d[:]...)
	}
	return b
}

// Sign signs the roster as signer, with sign (identity.Device.Sign).
func (r *Roster) Sign(signer identity.DeviceID, sign func([]byte) []byte) {
	r.Signer = signer
	r.Sig = sign(r.signed())
}

// Marshal encodes a signed roster.
func (r *Roster) Marshal() []byte {
	b := r.signed()[len(rosterDomain):]
	b = append(b, r.Signer[:]...)
	return append(b, r.Sig...)
}

// ParseRoster decodes a roster and checks its form (sorted, unique, admins among members) and its
// signature by Signer. Whether Signer may sign it is the relay's to judge (Admits).
func ParseRoster(b []byte) (*Roster, error) {
	r := newRd(b)
	r.version()
	var ro Roster
	copy(ro.Topic[:], r.Fixed(16))
	ro.Seq = r.Uint64()
	devices := func(what string, max int) []identity.DeviceID {
		n := r.Count(max, 32)
		if r.Err() == nil && n == 0 {
			r.fail("roster lists no %s", what)
		}
		out := make([]identity.DeviceID, 0, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			var d identity.DeviceID
			copy(d[:], r.Fixed(32))
			if i > 0 && slices.Compare(out[i-1][:], d[:]) >= 0 {
				r.fail("roster %s not sorted and unique", what)
			}
			out = append(out, d)
		}
		return out
	}
	ro.Admins = devices("admins", MaxRosterAdmins)
	ro.Members = devices("members", MaxRosterMembers)
	copy(ro.Signer[:], r.Fixed(32))
	ro.Sig = append([]byte(nil), r.Fixed(64)...)
	if err := r.end(); err != nil {
		return nil, err
	}
	for _, a := range ro.Admins {
		if !ro.IsMember(a) {
			return nil, malformed("roster admin %s is not a member", a.Short())
		}
	}
	if !identity.Verify(ro.Signer, ro.signed(), ro.Sig) {
		return nil, malformed("roster signature does not verify")
	}
	return &ro, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// IsMember reports whether d is on the roster.
func (r *Roster) IsMember(d identity.DeviceID) bool {
	_, ok := slices.BinarySearchFunc(r.Members, d, func(a, b identity.DeviceID) int { return slices.Compare(a[:], b[:]) })
	return ok
}

// IsAdmin reports whether d is an admin on the roster.
func (r *Roster) IsAdmin(d identity.DeviceID) bool {
	_, ok := slices.BinarySearchFunc(r.Admins, d, func(a, b identity.DeviceID) int { return slices.Compare(a[:], b[:]) })
	return ok
}

// Admits reports whether a relay holding cur for the topic (nil if none yet), admitted with a code
// naming anchor, takes next: same topic, a higher Seq, signed by an admin of cur (by anchor when cur
// is nil). next must come from ParseRoster, which checked its signature.
func Admits(cur *Roster, anchor identity.DeviceID, next *Roster) bool {
	if cur == nil {
		return next.Signer == anchor
	}
	return next.Topic == cur.Topic && next.Seq > cur.Seq && cur.IsAdmin(next.Signer)
}
