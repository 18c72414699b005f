package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/flynn/noise"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// The join protocol (/fieldmesh/join/1.0.0), run by a new member over a libp2p stream to the inviter:
//
//	-> e                           payload: invite id (16 bytes, in clear: it is a random lookup key)
//	<- e, ee, s, es
//	-> s, se, psk                  payload: join request (device id, display name)
//	<- transport message           payload: join answer (team id, epoch, epoch key) or a refusal
//
// Noise XXpsk3 (flynn/noise) with the invite's 32-byte secret as pre-shared key: only a holder of the
// code completes the handshake, and the invite is consumed only after it completed. The joiner's device
// id must be the key its libp2p connection is authenticated with; the Noise static key becomes the
// member's sealing key. Each message is a length-prefixed frame of at most joinFrameMax bytes.
const (
	joinFrameMax = 4096
	joinTimeout  = 30 * time.Second
	joinPrologue = "fieldmesh/join/1"
)

var joinSuite = noise.NewCipherSuite(identity.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)

func joinHandshake(dev *identity.Device, initiator bool, psk []byte) (*noise.HandshakeState, error) {
	cfg := noise.Config{
		CipherSuite:           joinSuite,
		Pattern:               noise.HandshakeXX,
		Initiator:             initiator,
		Prologue:              []byte(joinPrologue),
		PresharedKeyPlacement: 3,
		StaticKeypair:         dev.NoiseKey(),
	}
	if psk != nil {
		cfg.PresharedKey = psk
	} else {
		// The responder learns which invite (hence which key) from the first message.
		cfg.PresharedKey = make([]byte, 32)
	}
	return noise.NewHandshakeState(cfg)
}

type joinRequest struct {
	Device identity.DeviceID
	Name   string
}

func (r joinRequest) marshal() []byte {
	b := []byte{1}
	b = append(b, r.Device[:]...)
	b = binary.AppendUvarint(b, uint64(len(r.Name)))
	return append(b, r.Name...)
}

func unmarshalJoinRequest(b []byte) (joinRequest, error) {
	var r joinRequest
	rd := reader{b: b}
	if v := rd.byte(); v != 1 {
		return r, errors.New("node: join request: unknown version")
	}
	copy(r.Device[:], rd.bytes(32))
	r.Name = string(rd.lenBytes(crdt.MaxNameLen))
	if rd.err != nil || len(rd.b) != 0 {
		return r, errors.New("node: join request: malformed")
	}
	return r, nil
}

type joinAnswer struct {
	Refusal string // non-empty: the join was refused, and why
	Team    crdt.TeamID
	Genesis crdt.OpID
	Epoch   uint32
	Key     seal.EpochKey
}

func (a joinAnswer) marshal() []byte {
	if a.Refusal != "" {
		b := []byte{1, 1}
		b = binary.AppendUvarint(b, uint64(len(a.Refusal)))
		return append(b, a.Refusal...)
	}
	b := []byte{1, 0}
	b = append(b, a.Team[:]...)
	b = append(b, a.Genesis[:]...)
	b = binary.BigEndian.AppendUint32(b, a.Epoch)
	return append(b, a.Key.Bytes()...)
}

func unmarshalJoinAnswer(b []byte) (joinAnswer, error) {
	var a joinAnswer
	rd := reader{b: b}
	if v := rd.byte(); v != 1 {
		return a, errors.New("node: join answer: unknown version")
	}
	switch rd.byte() {
	case 0:
		copy(a.Team[:], rd.bytes(32))
		copy(a.Genesis[:], rd.bytes(32))
		a.Epoch = rd.uint32()
		k, err := seal.EpochKeyFromBytes(rd.bytes(32))
		if err != nil {
			return a, fmt.Errorf("node: join answer: %w", err)
		}
		a.Key = k
	case 1:
		a.Refusal = string(rd.lenBytes(256))
		if a.Refusal == "" {
			a.Refusal = "refused"
		}
	default:
		return a, errors.New("node: join answer: unknown status")
	}
	if rd.err != nil || len(rd.b) != 0 {
		return a, errors.New("node: join answer: malformed")
	}
	return a, nil
}

// Invite creates a one-time invite code for a team. Only admins invite.
func (n *Node) Invite(teamRef string, ttl time.Duration) (Invite, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return Invite{}, err
	}
	if !n.info(t).Admin {
		return Invite{}, errors.New("node: only a team admin can invite")
	}
	self := peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
	inv, err := newInvite(n.now(), ttl, self)
	if err != nil {
		return Invite{}, err
	}
	rec := inviteRecord{Team: t.id, Secret: inv.Secret, Expires: inv.Expires}
	if err := n.st.PutInvite(inv.ID, rec.marshal()); err != nil {
		return Invite{}, fmt.Errorf("node: store invite: %w", err)
	}
	n.log.Info("invite created", "team", t.id, "expires", inv.Expires.UTC().Format(time.RFC3339))
	return inv, nil
}

// ErrJoinRefused is returned when the inviter refused the join.
var ErrJoinRefused = errors.New("node: join refused")

// Join uses an invite code: it dials the inviter, proves it holds the code, receives the team key,
// then catches up with the inviter before returning.
func (n *Node) Join(ctx context.Context, code string) (TeamInfo, error) {
	inv, err := ParseInvite(code)
	if err != nil {
		return TeamInfo{}, err
	}
	if !n.now().Before(inv.Expires) {
		return TeamInfo{}, ErrInviteExpired
	}
	if inv.Inviter.ID == n.host.ID() {
		return TeamInfo{}, errors.New("node: this invite was made by this device")
	}
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	if err := n.host.Connect(ctx, inv.Inviter); err != nil {
		return TeamInfo{}, fmt.Errorf("node: cannot reach the inviter: %w", err)
	}
	s, err := n.host.NewStream(ctx, inv.Inviter.ID, JoinProtocol)
	if err != nil {
		return TeamInfo{}, fmt.Errorf("node: open join stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(joinTimeout))
	ans, err := n.joinExchange(s, inv)
	if err != nil {
		s.Reset()
		return TeamInfo{}, err
	}
	if ans.Refusal != "" {
		return TeamInfo{}, fmt.Errorf("%w: %s", ErrJoinRefused, ans.Refusal)
	}
	if t := n.teamByID(ans.Team); t != nil {
		return n.info(t), errors.New("node: this device is already in that team")
	}
	rec := &teamRecord{ID: ans.Team, Genesis: ans.Genesis, Epochs: []epochKey{{Epoch: ans.Epoch, Key: ans.Key}}}
	if err := n.st.PutTeam(rec.ID, rec.marshal()); err != nil {
		return TeamInfo{}, fmt.Errorf("node: store team: %w", err)
	}
	if err := n.addTeam(rec); err != nil {
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

func (n *Node) joinExchange(s network.Stream, inv Invite) (joinAnswer, error) {
	var ans joinAnswer
	br := bufio.NewReader(s)
	hs, err := joinHandshake(n.id.Device, true, inv.Secret[:])
	if err != nil {
		return ans, err
	}
	msg1, _, _, err := hs.WriteMessage(nil, inv.ID[:])
	if err != nil {
		return ans, err
	}
	if err := framing.Write(s, msg1); err != nil {
		return ans, fmt.Errorf("node: join: %w", err)
	}
	msg2, err := framing.Read(br, joinFrameMax)
	if err != nil {
		return ans, fmt.Errorf("%w: the invite code is unknown, already used or expired", ErrJoinRefused)
	}
	if _, _, _, err := hs.ReadMessage(nil, msg2); err != nil {
		return ans, fmt.Errorf("node: join handshake: %w", err)
	}
	req := joinRequest{Device: n.id.Device.ID(), Name: n.id.Name}
	msg3, _, recvCS, err := hs.WriteMessage(nil, req.marshal())
	if err != nil {
		return ans, err
	}
	if err := framing.Write(s, msg3); err != nil {
		return ans, fmt.Errorf("node: join: %w", err)
	}
	msg4, err := framing.Read(br, joinFrameMax)
	if err != nil {
		return ans, fmt.Errorf("%w: the invite code is wrong, already used or expired", ErrJoinRefused)
	}
	pt, err := recvCS.Decrypt(nil, nil, msg4)
	if err != nil {
		return ans, fmt.Errorf("node: join answer: %w", err)
	}
	return unmarshalJoinAnswer(pt)
}

// handleJoin serves the inviter's side of the join protocol.
func (n *Node) handleJoin(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(joinTimeout))
	p := s.Conn().RemotePeer()
	if err := n.serveJoin(s, p); err != nil {
		n.log.Info("join refused", "peer", p.ShortString(), "err", err)
		s.Reset()
	}
}

func (n *Node) serveJoin(s network.Stream, p peer.ID) error {
	br := bufio.NewReader(s)
	msg1, err := framing.Read(br, joinFrameMax)
	if err != nil {
		return err
	}
	hs, err := joinHandshake(n.id.Device, false, nil)
	if err != nil {
		return err
	}
	idb, _, _, err := hs.ReadMessage(nil, msg1)
	if err != nil || len(idb) != 16 {
		return errors.New("malformed first message")
	}
	var id [16]byte
	copy(id[:], idb)
	// Look the invite up without consuming it: it is consumed only once the handshake proves the code.
	recb, err := n.peekInvite(id)
	if err != nil {
		return err
	}
	rec, err := unmarshalInviteRecord(recb)
	if err != nil {
		return err
	}
	if err := hs.SetPresharedKey(rec.Secret[:]); err != nil {
		return err
	}
	msg2, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return err
	}
	if err := framing.Write(s, msg2); err != nil {
		return err
	}
	msg3, err := framing.Read(br, joinFrameMax)
	if err != nil {
		return err
	}
	reqb, recvCS, sendCS, err := hs.ReadMessage(nil, msg3)
	if err != nil {
		return fmt.Errorf("handshake failed (wrong invite secret?): %w", err)
	}
	_ = recvCS
	answer := func(a joinAnswer) error {
		ct, err := sendCS.Encrypt(nil, nil, a.marshal())
		if err != nil {
			return err
		}
		return framing.Write(s, ct)
	}
	req, err := unmarshalJoinRequest(reqb)
	if err != nil {
		return err
	}
	if d, err := deviceOf(p); err != nil || d != req.Device {
		return answer(joinAnswer{Refusal: "device id does not match the connection's key"})
	}
	if err := validateName(req.Name); err != nil {
		return answer(joinAnswer{Refusal: err.Error()})
	}
	// Consume the invite now: a second use finds nothing.
	if _, err := n.st.UseInvite(id); err != nil {
		return answer(joinAnswer{Refusal: "invite code already used"})
	}
	if !n.now().Before(rec.Expires) {
		return answer(joinAnswer{Refusal: "invite code has expired"})
	}
	t := n.teamByID(rec.Team)
	if t == nil {
		return answer(joinAnswer{Refusal: "the team no longer exists on the inviter's device"})
	}
	var noisePub identity.NoisePublic
	if len(hs.PeerStatic()) != len(noisePub) {
		return errors.New("no peer static key")
	}
	copy(noisePub[:], hs.PeerStatic())
	for _, m := range t.snapshot().Members {
		if m.Device == req.Device {
			return answer(joinAnswer{Refusal: "this device is already a member"})
		}
		if m.Name == req.Name {
			return answer(joinAnswer{Refusal: fmt.Sprintf("the name %q is already used in this team", req.Name)})
		}
	}
	body := crdt.Member{Add: crdt.MemberInfo{Device: req.Device, Noise: noisePub, Name: req.Name}}
	if err := body.Validate(); err != nil {
		return answer(joinAnswer{Refusal: err.Error()})
	}
	if _, err := n.publish(t, crdt.KindMember, body.Marshal()); err != nil {
		return answer(joinAnswer{Refusal: "the inviter could not record the membership"})
	}
	ep := t.current()
	n.log.Info("member joined", "team", t.id, "member", req.Device)
	return answer(joinAnswer{Team: t.id, Genesis: t.rec.Genesis, Epoch: ep.Epoch, Key: ep.Key})
}

// peekInvite reads an invite without consuming it.
func (n *Node) peekInvite(id [16]byte) ([]byte, error) {
	b, err := n.st.Invite(id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrInviteUnknown
	}
	return b, err
}
