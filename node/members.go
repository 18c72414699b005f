package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/safety"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Membership commands: remove a person, promote a person, remove one device, list members, and safety
// numbers with verification. The rules that decide what counts are crdt's (docs/membership.md), and what
// a device refuses to commit is its core's (device.Team.Change); this file resolves the names a user
// types and says who may act, so the user gets a clear error.

// MemberView is one person of a team as the CLI shows it.
type MemberView struct {
	ID      identity.DeviceID   `json:"id"`
	Name    string              `json:"name"`
	Admin   bool                `json:"admin"`
	Devices []DeviceView        `json:"devices"`
	Self    bool                `json:"self"`
	Status  VerificationStatus  `json:"verification"`
	Changed []identity.DeviceID `json:"changed,omitempty"` // devices whose keys differ from the verified ones, or are new since
	// Equivocated lists the person's devices shown to have signed two different messages for one
	// place in their sender chain: a device cloned or compromised. Both messages are hidden.
	Equivocated []identity.DeviceID `json:"equivocated,omitempty"`
}

// DeviceView is one device of a person.
type DeviceView struct {
	ID    identity.DeviceID    `json:"id"`
	Noise identity.NoisePublic `json:"noise"`
	Label string               `json:"label"`
}

// deviceLabel is how a device is named: the name its link gave it, else (a person's first device)
// the person's name.
func deviceLabel(m crdt.MemberInfo) string {
	if m.Label != "" {
		return m.Label
	}
	return m.Name
}

// VerificationStatus says whether the user checked a person's safety numbers.
type VerificationStatus string

// Verification statuses. KeysChanged is the warning: the person was verified, and since then a device of
// theirs changed its key or a device was added.
const (
	Unverified  VerificationStatus = "unverified"
	Verified    VerificationStatus = "verified"
	KeysChanged VerificationStatus = "keys-changed"
)

// Members lists a team's current persons with their devices and verification status.
func (n *Node) Members(teamRef string) ([]MemberView, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, err
	}
	if t.removed() {
		// Its view of the team stopped at its removal: showing it as current would mislead.
		return nil, ErrRemoved
	}
	ver, err := n.verified()
	if err != nil {
		return nil, err
	}
	return n.memberViews(t.snapshot(), ver), nil
}

func (n *Node) memberViews(s *crdt.State, ver map[identity.DeviceID]identity.NoisePublic) []MemberView {
	me := n.id.Device.ID()
	devs := make(map[identity.DeviceID]crdt.MemberInfo, len(s.Members))
	for _, m := range s.Members {
		devs[m.Device] = m
	}
	out := make([]MemberView, 0, len(s.Persons))
	for _, p := range s.Persons {
		v := MemberView{ID: p.ID, Name: p.Name, Admin: p.Admin, Status: Unverified}
		anyVerified := false
		for _, q := range s.Equivocations {
			if slices.Contains(p.Devices, q.Device) && !slices.Contains(v.Equivocated, q.Device) {
				v.Equivocated = append(v.Equivocated, q.Device)
			}
		}
		for _, d := range p.Devices {
			m := devs[d]
			v.Devices = append(v.Devices, DeviceView{ID: d, Noise: m.Noise, Label: deviceLabel(m)})
			v.Self = v.Self || d == me
			if k, ok := ver[d]; ok {
				anyVerified = true
				if k != m.Noise {
					v.Changed = append(v.Changed, d)
				}
			}
		}
		if anyVerified {
			for _, d := range p.Devices {
				if _, ok := ver[d]; !ok && d != me {
					v.Changed = append(v.Changed, d)
				}
			}
			v.Status = Verified
			if len(v.Changed) > 0 {
				v.Status = KeysChanged
			}
		}
		out = append(out, v)
	}
	return out
}

// findPerson resolves a member reference: a display name (exact, then case-insensitive) or a hex prefix
// of at least 8 characters of a person or device id.
func findPerson(s *crdt.State, ref string) (crdt.Person, error) {
	ref = strings.TrimSpace(ref)
	for _, p := range s.Persons {
		if p.Name == ref {
			return p, nil
		}
	}
	var found []crdt.Person
	for _, p := range s.Persons {
		if strings.EqualFold(p.Name, ref) || idPrefix(p.ID, ref) || slices.ContainsFunc(p.Devices, func(d identity.DeviceID) bool { return idPrefix(d, ref) }) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return crdt.Person{}, fmt.Errorf("node: no member %q in the team", ref)
	case 1:
		return found[0], nil
	}
	return crdt.Person{}, fmt.Errorf("node: %q matches %d members; use more of the id", ref, len(found))
}

func idPrefix(d identity.DeviceID, ref string) bool {
	ref = strings.ToLower(ref)
	return len(ref) >= 8 && strings.HasPrefix(hex.EncodeToString(d[:]), ref)
}

// RemoveMember removes a person and all their devices from a team, starting a new key epoch without
// them. Only admins remove others; anyone can leave (remove themself).
func (n *Node) RemoveMember(teamRef, member string) error {
	t, _, p, _, err := n.adminTarget(teamRef, member, "remove")
	if err != nil {
		return err
	}
	_, err = n.change(t, crdt.Change{Action: crdt.ActRemove, Target: p.ID})
	return err
}

// adminTarget resolves the team and the member an admin command acts on, and this device's person in
// the team, who must be an admin (else the error says that only an admin can verb a member).
func (n *Node) adminTarget(teamRef, member, verb string) (*team, *crdt.State, crdt.Person, crdt.Person, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, nil, crdt.Person{}, crdt.Person{}, err
	}
	s := t.snapshot()
	p, err := findPerson(s, member)
	if err != nil {
		return nil, nil, crdt.Person{}, crdt.Person{}, err
	}
	me, ok := s.PersonOf(n.id.Device.ID())
	if !ok || !me.Admin {
		return nil, nil, crdt.Person{}, crdt.Person{}, fmt.Errorf("node: only a team admin can %s a member", verb)
	}
	return t, s, p, me, nil
}

// Promote makes a person an admin. Only admins promote.
func (n *Node) Promote(teamRef, member string) error {
	t, _, p, _, err := n.adminTarget(teamRef, member, "promote")
	if err != nil {
		return err
	}
	if p.Admin {
		return fmt.Errorf("node: %s is already an admin", p.Name)
	}
	_, err = n.change(t, crdt.Change{Action: crdt.ActPromote, Target: p.ID})
	return err
}

// RemoveDevice removes one device (a lost phone) from a team without removing its person, starting a new
// key epoch without it. The person's own devices and admins may do it. The device is given by a hex
// prefix of its id (at least 8 characters).
func (n *Node) RemoveDevice(teamRef, device string) error {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return err
	}
	s := t.snapshot()
	dev, owner, err := findDevice(s, device)
	if err != nil {
		return err
	}
	me, ok := s.PersonOf(n.id.Device.ID())
	if !ok || !(me.Admin || me.ID == owner.ID) {
		return errors.New("node: only an admin or the device's owner can remove a device")
	}
	_, err = n.change(t, crdt.Change{Action: crdt.ActUnlink, Target: dev})
	return err
}

// findDevice resolves a device reference, a hex prefix of at least 8 characters of its id, to the
// device and its person.
func findDevice(s *crdt.State, ref string) (identity.DeviceID, crdt.Person, error) {
	var dev identity.DeviceID
	var owner crdt.Person
	found := 0
	for _, p := range s.Persons {
		for _, d := range p.Devices {
			if idPrefix(d, ref) {
				dev, owner = d, p
				found++
			}
		}
	}
	switch {
	case found == 0:
		return dev, owner, fmt.Errorf("node: no device %q in the team (give at least 8 hex characters of its id)", ref)
	case found > 1:
		return dev, owner, fmt.Errorf("node: %q matches %d devices; use more of the id", ref, found)
	}
	return dev, owner, nil
}

// Safety is the safety number between this device and one device of another member.
type Safety struct {
	Team     string               `json:"team"`
	Member   string               `json:"member"`
	Device   identity.DeviceID    `json:"device"`
	Noise    identity.NoisePublic `json:"noise"` // the device's key the number was computed from
	Label    string               `json:"label"`
	Number   string               `json:"number"` // 60 digits in 12 groups of 5
	QR       string               `json:"qr"`     // the QR payload
	Verified bool                 `json:"verified"`
	Changed  bool                 `json:"changed"` // verified before, with another key
}

// SafetyNumbers returns the safety numbers between this device and each device of the member, found in
// any team of this device (teamRef "" searches all).
func (n *Node) SafetyNumbers(teamRef, member string) ([]Safety, error) {
	ver, err := n.verified()
	if err != nil {
		return nil, err
	}
	var teams []*team
	if teamRef != "" {
		t, err := n.teamByRef(teamRef)
		if err != nil {
			return nil, err
		}
		teams = []*team{t}
	} else {
		teams = n.teamList()
	}
	me := n.id.Device
	var out []Safety
	var lastErr error
	for _, t := range teams {
		s := t.snapshot()
		p, err := findPerson(s, member)
		if err != nil {
			lastErr = err
			continue
		}
		for _, d := range p.Devices {
			if d == me.ID() {
				continue
			}
			m, _ := s.Member(d)
			num := safety.Number(me.ID(), d, me.NoisePublic(), m.Noise)
			k, ok := ver[d]
			out = append(out, Safety{
				Team: s.Name, Member: p.Name, Device: d, Noise: m.Noise, Label: deviceLabel(m),
				Number: num.String(), QR: num.QR(),
				Verified: ok && k == m.Noise, Changed: ok && k != m.Noise,
			})
		}
		if len(out) > 0 {
			break
		}
	}
	if len(out) == 0 {
		if lastErr != nil {
			return nil, lastErr
		}
		return nil, fmt.Errorf("node: no other device of %q found", member)
	}
	return out, nil
}

// MarkVerified records that the user compared the safety numbers of the member's devices (as
// SafetyNumbers returns them now) with the member in person. If scanned is not empty it must be the QR
// payload scanned from the member's screen, and it must match.
func (n *Node) MarkVerified(teamRef, member, scanned string) ([]Safety, error) {
	nums, err := n.SafetyNumbers(teamRef, member)
	if err != nil {
		return nil, err
	}
	if scanned != "" {
		ok := false
		for _, s := range nums {
			if s.QR == strings.TrimSpace(scanned) {
				ok = true
			}
		}
		if !ok {
			return nil, errors.New("node: the scanned code does not match: this may not be the member's device")
		}
	}
	ver, err := n.verified()
	if err != nil {
		return nil, err
	}
	for i := range nums {
		ver[nums[i].Device] = nums[i].Noise
		nums[i].Verified, nums[i].Changed = true, false
	}
	if err := n.putVerified(ver); err != nil {
		return nil, err
	}
	return nums, nil
}

const secretVerified = "verified"

// verified returns the device keys the user verified: device id -> Noise key.
func (n *Node) verified() (map[identity.DeviceID]identity.NoisePublic, error) {
	out := make(map[identity.DeviceID]identity.NoisePublic)
	b, err := n.st.Secret(secretVerified)
	if errors.Is(err, storage.ErrNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b)%64 != 0 {
		return nil, errors.New("node: verified keys record is malformed")
	}
	for ; len(b) > 0; b = b[64:] {
		var d identity.DeviceID
		var k identity.NoisePublic
		copy(d[:], b[:32])
		copy(k[:], b[32:64])
		out[d] = k
	}
	return out, nil
}

func (n *Node) putVerified(ver map[identity.DeviceID]identity.NoisePublic) error {
	ids := make([]identity.DeviceID, 0, len(ver))
	for d := range ver {
		ids = append(ids, d)
	}
	slices.SortFunc(ids, compareIDs)
	b := make([]byte, 0, 64*len(ids))
	for _, d := range ids {
		k := ver[d]
		b = append(b, d[:]...)
		b = append(b, k[:]...)
	}
	return n.st.PutSecret(secretVerified, b)
}
