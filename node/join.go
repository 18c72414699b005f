package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/join"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/safetext"
)

// The join protocol and its formats are package join's; this file is the node's side of it: making
// and storing invites, dialling the inviter, serving join streams, and the membership decisions and
// writes, which go through the team's device core.

// JoinProtocol is the join stream (join.Protocol).
const JoinProtocol = join.Protocol

// Invite creates a one-time invite code for a team. Only admins invite.
func (n *Node) Invite(teamRef string, ttl time.Duration) (join.Invite, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return join.Invite{}, err
	}
	if !n.info(t).Admin {
		return join.Invite{}, errors.New("node: only a team admin can invite")
	}
	return n.makeInvite(t, ttl, join.Record{})
}

// LinkDevice creates a one-time code that links a new device (a laptop, a replacement phone) to this
// device's person in a team: the new device runs join with it and appears under the same person,
// named deviceName (empty: "device N", N one more than the person's devices), so the person's devices
// can be told apart. The name is this device's choice, not the new device's: whoever holds the code
// cannot pick it. A name another device of the person has, in any case, is refused.
func (n *Node) LinkDevice(teamRef string, ttl time.Duration, deviceName string) (join.Invite, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return join.Invite{}, err
	}
	st := t.snapshot()
	p, ok := st.PersonOf(n.id.Device.ID())
	if !ok {
		return join.Invite{}, errors.New("node: this device is not a member of the team")
	}
	deviceName = strings.TrimSpace(deviceName)
	if deviceName == "" {
		deviceName = fmt.Sprintf("device %d", len(p.Devices)+1)
	}
	if err := validateName(deviceName); err != nil {
		return join.Invite{}, fmt.Errorf("device name: %w", err)
	}
	for _, d := range p.Devices {
		if m, ok := st.Member(d); ok && strings.EqualFold(deviceLabel(m), deviceName) {
			return join.Invite{}, fmt.Errorf("node: a device of yours in this team is already called %q", deviceLabel(m))
		}
	}
	return n.makeInvite(t, ttl, join.Record{Link: true, Person: p.ID, DeviceName: deviceName})
}

func (n *Node) makeInvite(t *team, ttl time.Duration, rec join.Record) (join.Invite, error) {
	self := peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
	inv, err := join.NewInvite(n.now(), ttl, self)
	if err != nil {
		return join.Invite{}, err
	}
	rec.Team, rec.Secret, rec.Expires = t.id, inv.Secret, inv.Expires
	if err := n.st.PutInvite(inv.ID, rec.Marshal()); err != nil {
		return join.Invite{}, fmt.Errorf("node: store invite: %w", err)
	}
	n.log.Info("invite created", "team", t.id, "link", rec.Link, "expires", inv.Expires.UTC().Format(time.RFC3339))
	return inv, nil
}

// Join uses an invite code: it dials the inviter, proves it holds the code, receives the team's
// membership history with its key, then catches up with the inviter before returning. A refusal is a
// *join.RefusedError; an expired code is join.ErrInviteExpired.
func (n *Node) Join(ctx context.Context, code string) (TeamInfo, error) {
	inv, err := join.ParseInvite(code)
	if err != nil {
		return TeamInfo{}, err
	}
	if !n.now().Before(inv.Expires) {
		return TeamInfo{}, join.ErrInviteExpired
	}
	if inv.Inviter.ID == n.host.ID() {
		return TeamInfo{}, errors.New("node: this invite was made by this device")
	}
	ctx, cancel := context.WithTimeout(ctx, join.Timeout)
	defer cancel()
	if err := n.host.Connect(ctx, inv.Inviter); err != nil {
		return TeamInfo{}, fmt.Errorf("node: cannot reach the inviter: %w", err)
	}
	s, err := n.host.NewStream(ctx, inv.Inviter.ID, JoinProtocol)
	if err != nil {
		return TeamInfo{}, fmt.Errorf("node: open join stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(join.Timeout))
	prekey, err := epochkey.NewPrekey(nil)
	if err != nil {
		return TeamInfo{}, fmt.Errorf("node: %w", err)
	}
	defer prekey.Wipe()
	adm, err := join.Ask(s, n.id.Device, n.id.Name, prekey.Public, inv)
	if err != nil {
		s.Reset()
		return TeamInfo{}, err
	}
	if t := n.teamByID(adm.Team); t != nil {
		return n.info(t), errors.New("node: this device is already in that team")
	}
	rec := &teamRecord{ID: adm.Team, Genesis: adm.Genesis}
	cfg := n.coreConfig(rec)
	cfg.JoinPrekey = &prekey
	core, eff, err := device.Join(cfg, n.now(), adm.History)
	if err != nil {
		return TeamInfo{}, fmt.Errorf("node: join answer: %w", err)
	}
	if err := n.commitWrite(&team{id: rec.ID, topic: envelope.TopicOf(rec.ID)}, eff.Write); err != nil {
		return TeamInfo{}, fmt.Errorf("node: store team: %w", err)
	}
	if err := n.st.PutTeam(rec.ID, rec.marshal()); err != nil {
		return TeamInfo{}, fmt.Errorf("node: store team: %w", err)
	}
	if err := n.addTeamCore(rec, core); err != nil {
		return TeamInfo{}, err
	}
	n.rememberPeer(inv.Inviter.ID)
	t := n.teamByID(rec.ID)
	if err := n.syncTeamErr(ctx, inv.Inviter.ID, t, true); err != nil {
		n.log.Warn("first catch-up after join failed; it will be retried", "team", t.id, "err", err)
	}
	n.log.Info("joined team", "team", t.id, "inviter", inv.Inviter.ID.ShortString())
	return n.info(t), nil
}

// handleJoin serves the inviter's side of the join protocol.
func (n *Node) handleJoin(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(join.Timeout))
	p := s.Conn().RemotePeer()
	conn, _ := deviceOf(p) // the zero id, on error, matches no joiner
	srv := join.Server{Device: n.id.Device, Invites: inviter{n}, Now: n.now}
	if err := srv.Serve(s, conn); err != nil {
		n.log.Info("join refused", "peer", p.ShortString(), "err", err)
		s.Reset()
	}
}

// inviter is the node as join.Server sees it: its stored invites and its teams' membership.
type inviter struct{ n *Node }

var _ join.Inviter = inviter{}

// Invite reads an invite without consuming it.
func (iv inviter) Invite(id [16]byte) ([]byte, error) {
	b, err := iv.n.st.Invite(id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, join.ErrInviteUnknown
	}
	return b, err
}

// Vet refuses names the node refuses anywhere.
func (iv inviter) Vet(j join.Joiner) error { return validateName(j.Name) }

func (iv inviter) Use(id [16]byte) error {
	_, err := iv.n.st.UseInvite(id)
	return err
}

// Admit adds the joiner to the team (or links it to rec.Person) with a commit made by the team's
// core, and returns the team's history, which now holds that commit. It refuses a device that is or
// was a member, and a new person whose name is already used in the team.
func (iv inviter) Admit(rec join.Record, j join.Joiner) (join.Admission, error) {
	n := iv.n
	t := n.teamByID(rec.Team)
	if t == nil {
		return join.Admission{}, join.Refuse("the team no longer exists on the inviter's device")
	}
	st := t.snapshot()
	if _, ok := st.Member(j.Device); ok || slices.Contains(st.Removed, j.Device) {
		return join.Admission{}, join.Refuse("this device is already a member")
	}
	info := crdt.MemberInfo{Device: j.Device, Noise: j.Noise, Name: j.Name}
	change := crdt.Change{Action: crdt.ActAdd, Info: info}
	what := "member joined"
	if rec.Link {
		if rec.DeviceName != "" {
			info.Name = rec.DeviceName // the linking device named it; the joiner's own name is its person's
		}
		change = crdt.Change{Action: crdt.ActLink, Info: info, Target: rec.Person}
		what = "device linked"
	} else {
		for _, m := range st.Persons {
			if safetext.LookAlike(m.Name, j.Name) {
				return join.Admission{}, join.Refuse(fmt.Sprintf("the name %q is already used in this team, or looks like one that is", j.Name))
			}
		}
	}
	if _, err := n.changeFor(t, map[identity.DeviceID]identity.NoisePublic{j.Device: j.Prekey}, change); err != nil {
		n.log.Warn("join: commit failed", "team", t.id, "err", err)
		return join.Admission{}, join.Refuse("the inviter could not record the membership")
	}
	hist, err := n.history(t)
	if err != nil {
		return join.Admission{}, join.Refuse("the inviter could not read the team's history")
	}
	n.log.Info(what, "team", t.id, "device", j.Device)
	return join.Admission{Team: t.id, Genesis: t.rec.Genesis, History: hist}, nil
}

// history returns the team's membership history for a join answer (device.Team.History), with the
// envelopes this device stores.
func (n *Node) history(t *team) ([]device.HistoryItem, error) {
	var ioErr error
	env := func(id crdt.OpID) []byte {
		r, err := n.st.Envelope(id)
		if err != nil {
			if !errors.Is(err, storage.ErrNotFound) {
				ioErr = err
			}
			return nil
		}
		return r.Data
	}
	t.mu.Lock()
	hist := t.core.History(env)
	t.mu.Unlock()
	return hist, ioErr
}
