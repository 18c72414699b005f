package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flynn/noise"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// The join protocol (/fieldmesh/join/1.0.0), run by a new member over a libp2p stream to the inviter:
//
//	-> e                           payload: invite id (16 bytes, in clear: it is a random lookup key)
//	<- e, ee, s, es
//	-> s, se, psk                  payload: join request (device id, display name)
//	<- transport messages          payload: join answer (team id, genesis, membership history whose last
//	                               commit adds the joiner and seals the new epoch key to it) or a refusal
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

// joinAnswer is the inviter's last word: a refusal, or the team id, its genesis op id and the team's
// membership history (its Create and commit ops with their envelopes), which ends with the commit that
// adds the joiner and carries the joiner's box of the new epoch key (and the outer keys of the epochs
// the inviter holds, so the joiner can read the earlier commits' envelopes too).
//
//	version 2 | status 0 | team id 32 | genesis 32 | uvarint n | n × (uvarint len, op | uvarint len, envelope)
//	version 2 | status 1 | uvarint len, refusal text
//
// It is sent as a sequence of Noise transport messages, each "more" byte | chunk (joinChunk).
type joinAnswer struct {
	Refusal string // non-empty: the join was refused, and why
	Team    crdt.TeamID
	Genesis crdt.OpID
	History []historyItem
}

type historyItem struct {
	Op  []byte // a marshalled op
	Env []byte // its marshalled envelope; empty if the inviter has none
}

const (
	joinAnswerVersion = 2
	joinChunk         = 60000    // plaintext bytes per Noise transport message (the limit is 65535)
	joinAnswerMax     = 16 << 20 // bytes of a whole answer
	maxHistory        = 100000   // items in an answer
)

func (a joinAnswer) marshal() []byte {
	if a.Refusal != "" {
		b := []byte{joinAnswerVersion, 1}
		b = binary.AppendUvarint(b, uint64(len(a.Refusal)))
		return append(b, a.Refusal...)
	}
	b := []byte{joinAnswerVersion, 0}
	b = append(b, a.Team[:]...)
	b = append(b, a.Genesis[:]...)
	b = binary.AppendUvarint(b, uint64(len(a.History)))
	for _, h := range a.History {
		b = binary.AppendUvarint(b, uint64(len(h.Op)))
		b = append(b, h.Op...)
		b = binary.AppendUvarint(b, uint64(len(h.Env)))
		b = append(b, h.Env...)
	}
	return b
}

func unmarshalJoinAnswer(b []byte) (joinAnswer, error) {
	var a joinAnswer
	rd := reader{b: b}
	if v := rd.byte(); v != joinAnswerVersion {
		return a, fmt.Errorf("node: join answer: unknown version %d (the inviter runs another fieldmesh version)", v)
	}
	switch rd.byte() {
	case 0:
		copy(a.Team[:], rd.bytes(32))
		copy(a.Genesis[:], rd.bytes(32))
		n := rd.uvarint()
		if n > maxHistory {
			return a, errors.New("node: join answer: history too long")
		}
		for i := uint64(0); i < n && rd.err == nil; i++ {
			op := rd.lenBytes(crdt.MaxOpSize)
			env := rd.lenBytes(envelope.MaxSize)
			a.History = append(a.History, historyItem{Op: op, Env: env})
		}
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
	return n.makeInvite(t, ttl, inviteRecord{})
}

// LinkDevice creates a one-time code that links a new device (a laptop, a replacement phone) to this
// device's person in a team: the new device runs join with it and appears under the same name.
func (n *Node) LinkDevice(teamRef string, ttl time.Duration) (Invite, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return Invite{}, err
	}
	p, ok := t.snapshot().PersonOf(n.id.Device.ID())
	if !ok {
		return Invite{}, errors.New("node: this device is not a member of the team")
	}
	return n.makeInvite(t, ttl, inviteRecord{Link: true, Person: p.ID})
}

func (n *Node) makeInvite(t *team, ttl time.Duration, rec inviteRecord) (Invite, error) {
	self := peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
	inv, err := newInvite(n.now(), ttl, self)
	if err != nil {
		return Invite{}, err
	}
	rec.Team, rec.Secret, rec.Expires = t.id, inv.Secret, inv.Expires
	if err := n.st.PutInvite(inv.ID, rec.marshal()); err != nil {
		return Invite{}, fmt.Errorf("node: store invite: %w", err)
	}
	n.log.Info("invite created", "team", t.id, "link", rec.Link, "expires", inv.Expires.UTC().Format(time.RFC3339))
	return inv, nil
}

// ErrJoinRefused is returned when the inviter refused the join.
var ErrJoinRefused = errors.New("node: join refused")

// Join uses an invite code: it dials the inviter, proves it holds the code, receives the team's
// membership history with its key, then catches up with the inviter before returning.
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
	rec := &teamRecord{ID: ans.Team, Genesis: ans.Genesis}
	if err := n.storeHistory(rec, ans.History); err != nil {
		return TeamInfo{}, err
	}
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

// storeHistory checks the membership history of a join answer (every op signed, of the team, of the
// kinds a history holds, matching its envelope; the genesis present) and stores it with the key state
// it opens: the joiner's box in the last commit gives the new epoch, whose prior keys open the rest.
func (n *Node) storeHistory(rec *teamRecord, hist []historyItem) error {
	log := crdt.NewLog(rec.ID)
	keys := teamkeys.New(rec.ID, n.id.Device)
	var b storage.Batch
	var envs []*envelope.Envelope
	haveGenesis := false
	for _, h := range hist {
		op, err := crdt.UnmarshalOp(h.Op)
		if err != nil {
			return fmt.Errorf("node: join answer: %w", err)
		}
		if op.Kind != crdt.KindCreate && op.Kind != crdt.KindMember {
			return errors.New("node: join answer: history holds an op that is not membership")
		}
		if op.Kind == crdt.KindCreate && op.ID() != rec.Genesis {
			return errors.New("node: join answer: a second Create op")
		}
		haveGenesis = haveGenesis || op.ID() == rec.Genesis
		if _, err := log.Add(op); err != nil {
			return fmt.Errorf("node: join answer: %w", err)
		}
		b.Ops = append(b.Ops, storage.OpRecord{Team: rec.ID, Time: uint64(op.Time), ID: op.ID(), Data: op.Marshal()})
		if len(h.Env) == 0 {
			continue
		}
		e, err := envelope.Unmarshal(h.Env)
		if err != nil {
			return fmt.Errorf("node: join answer: %w", err)
		}
		if e.ID != op.ID() || e.Time != op.Time || e.Topic != envelope.TopicOf(rec.ID) {
			return errors.New("node: join answer: an envelope does not match its op")
		}
		envs = append(envs, e)
		b.Envelopes = append(b.Envelopes, envRecord(e, h.Env))
	}
	if !haveGenesis {
		return errors.New("node: join answer: no genesis")
	}
	// Open newest first: the joiner's own commit is last; its prior keys open the older ones. An
	// envelope that does not open yet is tried again once another one opened.
	slices.Reverse(envs)
	for pending := envs; len(pending) > 0; {
		var later []*envelope.Envelope
		for _, e := range pending {
			if _, err := keys.Open(e); err != nil {
				later = append(later, e)
			}
		}
		if len(later) == len(pending) {
			break
		}
		pending = later
	}
	s := log.State()
	if s.Current < 0 || !keys.CanSend(s.Epochs[s.Current].Tag) {
		return errors.New("node: join answer: it does not hand this device the team's current key")
	}
	b.Secrets = map[string][]byte{keysSecret(rec.ID): keys.Marshal()}
	if _, err := n.st.Commit(b); err != nil {
		return fmt.Errorf("node: store team: %w", err)
	}
	return nil
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
	var pt []byte
	for {
		msg, err := framing.Read(br, joinChunk+64)
		if err != nil {
			if pt == nil {
				return ans, fmt.Errorf("%w: the invite code is wrong, already used or expired", ErrJoinRefused)
			}
			return ans, fmt.Errorf("node: join answer: %w", err)
		}
		chunk, err := recvCS.Decrypt(nil, nil, msg)
		if err != nil || len(chunk) == 0 {
			return ans, errors.New("node: join answer: bad message")
		}
		pt = append(pt, chunk[1:]...)
		if len(pt) > joinAnswerMax {
			return ans, errors.New("node: join answer: too large")
		}
		if chunk[0] == 0 {
			break
		}
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
	reqb, _, sendCS, err := hs.ReadMessage(nil, msg3)
	if err != nil {
		return fmt.Errorf("handshake failed (wrong invite secret?): %w", err)
	}
	answer := func(a joinAnswer) error {
		b := a.marshal()
		for {
			chunk := b[:min(len(b), joinChunk)]
			b = b[len(chunk):]
			more := byte(0)
			if len(b) > 0 {
				more = 1
			}
			ct, err := sendCS.Encrypt(nil, nil, append([]byte{more}, chunk...))
			if err != nil {
				return err
			}
			if err := framing.Write(s, ct); err != nil {
				return err
			}
			if more == 0 {
				return nil
			}
		}
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
	st := t.snapshot()
	if _, ok := st.Member(req.Device); ok {
		return answer(joinAnswer{Refusal: "this device is already a member"})
	}
	info := crdt.MemberInfo{Device: req.Device, Noise: noisePub, Name: req.Name}
	change := crdt.Change{Action: crdt.ActAdd, Info: info}
	what := "member joined"
	if rec.Link {
		change = crdt.Change{Action: crdt.ActLink, Info: info, Target: rec.Person}
		what = "device linked"
	} else {
		for _, m := range st.Persons {
			if m.Name == req.Name {
				return answer(joinAnswer{Refusal: fmt.Sprintf("the name %q is already used in this team", req.Name)})
			}
		}
	}
	if _, err := n.commit(t, []crdt.Change{change}, what); err != nil {
		n.log.Warn("join: commit failed", "team", t.id, "err", err)
		return answer(joinAnswer{Refusal: "the inviter could not record the membership"})
	}
	hist, err := n.history(t)
	if err != nil {
		return answer(joinAnswer{Refusal: "the inviter could not read the team's history"})
	}
	n.log.Info(what, "team", t.id, "device", req.Device)
	return answer(joinAnswer{Team: t.id, Genesis: t.rec.Genesis, History: hist})
}

// history returns the team's Create and commit ops, oldest first, with their envelopes when stored.
func (n *Node) history(t *team) ([]historyItem, error) {
	t.mu.Lock()
	ops := t.log.Ops()
	t.mu.Unlock()
	var out []historyItem
	for _, op := range ops {
		if op.Kind != crdt.KindCreate && op.Kind != crdt.KindMember {
			continue
		}
		h := historyItem{Op: op.Marshal()}
		r, err := n.st.Envelope(op.ID())
		switch {
		case err == nil:
			h.Env = r.Data
		case !errors.Is(err, storage.ErrNotFound):
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// peekInvite reads an invite without consuming it.
func (n *Node) peekInvite(id [16]byte) ([]byte, error) {
	b, err := n.st.Invite(id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrInviteUnknown
	}
	return b, err
}
