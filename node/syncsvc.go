package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
	"github.com/fieldmesh/fieldmesh/sync/safetext"
)

// The sync protocol (recon.Protocol, /fieldmesh/sync/9.0.0). The opener sends a hello (the topic and
// what it asks for); the responder answers one byte or resets the stream:
//
//   - sync: range-based reconciliation (sync/recon) of the topic's envelopes; what arrives goes to the
//     team's core, one Receive per flight of frames. Both ends run it only with a peer the core lets
//     sync (device.Team.MaySync: a member's device, or a relay enrolled for the team).
//   - membership: each side sends the membership ops it may show the other (device.Team.MembershipFor),
//     one per frame, then an empty frame, and gives what it received to its core
//     (device.Team.AcceptMembership). It runs when the two disagree about whether one of them is a
//     member: a removed device learns that it was removed, and a device that was wrong about a removal
//     learns that it was undone.
//
// A peer that was never a device of the team is refused without a word.

const (
	// reconFrameMax caps every frame of range-based reconciliation. Smaller frames mean more round
	// trips; 64 KiB keeps a 40 kbit/s link busy for about 13 s per frame.
	reconFrameMax = 64 << 10
	// syncTimeout bounds one session.
	syncTimeout = 2 * time.Minute
	// membershipFrameMax bounds one frame of a membership exchange: one op.
	membershipFrameMax = crdt.MaxOpSize
	// maxFlightBytes is how much of a flight of envelopes is held before it goes to the core: one
	// Receive per flight lets the core place parents that arrive in later frames of it.
	maxFlightBytes = 1 << 20
	// maxMembershipFrames bounds the ops one side of a membership exchange reads.
	maxMembershipFrames = 4096
)

// storeSource is a read-only view of one topic in the store, for reconciliation. min leaves out the
// items older than a relay's horizon: the relay does not keep them, so offering them would only send
// them again every session.
type storeSource struct {
	st    *storage.Store
	topic envelope.Topic
	min   uint64
}

func (s storeSource) Items() ([]recon.Item, error) {
	keys, err := s.st.EnvelopeKeys(s.topic)
	if err != nil {
		return nil, err
	}
	items := make([]recon.Item, 0, len(keys))
	for _, k := range keys {
		if k.Time >= s.min {
			items = append(items, recon.Item{Time: k.Time, ID: k.ID})
		}
	}
	return items, nil
}

func (s storeSource) Envelope(id [recon.IDSize]byte) ([]byte, error) {
	r, err := s.st.Envelope(id)
	if err != nil {
		return nil, err
	}
	if r.Key.Topic != s.topic {
		return nil, storage.ErrNotFound
	}
	return r.Data, nil
}

// reconSession returns a reconciliation session with p for t: with a relay, the items older than the
// relay's horizon for the topic are left out.
func (n *Node) reconSession(p peer.ID, t *team, initiator bool) *recon.Session {
	src := storeSource{st: n.st, topic: t.topic, min: n.relayHorizon(p, t.topic)}
	if initiator {
		return recon.NewInitiator(src, reconFrameMax)
	}
	return recon.NewResponder(src, reconFrameMax)
}

// syncPeer reconciles every team the peer may sync (a member's device, or a relay enrolled for the
// team), and exchanges membership ops, at most once per SyncInterval, for every team that lists the
// peer's device as removed.
func (n *Node) syncPeer(p peer.ID) {
	for _, t := range n.teamList() {
		from := n.corePeer(p, t)
		switch {
		case n.maySync(t, from):
			n.autoSync(p, t)
		case n.formerDevice(t, from):
			n.exchangeSoon(p, t)
		}
	}
}

// maySync reports whether t's core lets p sync.
func (n *Node) maySync(t *team, p device.Peer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.core.MaySync(p)
}

// formerDevice reports whether p's device was a device of t (it is listed as removed), so that a
// membership exchange may run with it.
func (n *Node) formerDevice(t *team, p device.Peer) bool {
	return p.Device != (identity.DeviceID{}) && slices.Contains(t.snapshot().Removed, p.Device)
}

// exchangeSoon runs a membership exchange with p for t unless one ran in the last SyncInterval.
func (n *Node) exchangeSoon(p peer.ID, t *team) {
	key := syncKey(p, t) + "/membership"
	n.mu.Lock()
	last, ok := n.lastSync[key]
	now := n.now()
	due := !ok || now.Sub(last) >= n.cfg.SyncInterval
	if due {
		n.lastSync[key] = now
	}
	n.mu.Unlock()
	if due {
		if err := n.openSession(n.ctx, p, t, recon.ModeMembership); err != nil && n.ctx.Err() == nil {
			n.log.Debug("membership exchange failed", "peer", p.ShortString(), "team", t.id, "err", err)
		}
	}
}

// followerDelay is how long the end with the higher peer id waits before starting a session the
// other end should have started.
const followerDelay = 3 * time.Second

// responderWait bounds how long a served session, at the end with the higher peer id, waits for the
// team's own outgoing session to finish before it runs alongside (handleSync: the lower end never
// waits, so waits cannot form a ring; the bound stays as a backstop).
const responderWait = 5 * time.Second

// autoSync answers the triggers both ends see (a new connection, a peer joining the team's topic, the
// periodic timer). The end with the lower peer id starts a session at once; the other waits
// followerDelay and starts one only if no session between the two completed meanwhile. One session
// repairs both ends, so this halves the traffic of the common case without relying on the other end.
func (n *Node) autoSync(p peer.ID, t *team) {
	if n.host.ID() < p {
		n.syncTeam(p, t)
		return
	}
	since := n.now()
	timer := time.NewTimer(followerDelay)
	defer timer.Stop()
	select {
	case <-n.ctx.Done():
		return
	case <-timer.C:
	}
	n.mu.Lock()
	last := n.lastSync[syncKey(p, t)]
	n.mu.Unlock()
	if last.After(since) {
		return
	}
	n.syncTeam(p, t)
}

func syncKey(p peer.ID, t *team) string { return string(p) + string(t.topic[:]) }

// syncDone records a completed session with p for t. held is how many of t's stored envelopes
// (team.stored) p is known to hold: the count when the session started plus what it brought.
func (n *Node) syncDone(p peer.ID, t *team, held uint64) {
	n.mu.Lock()
	n.lastSync[syncKey(p, t)] = n.now()
	n.lastContact = n.now()
	n.mu.Unlock()
	if rc := n.relayClient(); rc != nil {
		rc.synced(p, t.topic, held)
	}
	n.lowDataSynced(t)
	n.rememberPeer(p)
	n.fetchSoon(p, t)
	n.historySoon(p, t)
	if n.isRelayFor(p, t.topic) {
		n.pushSoon(p, t)
	}
}

// syncTeam runs one session with a peer for one team, unless one is already running.
func (n *Node) syncTeam(p peer.ID, t *team) {
	if !n.autoSyncAllowed(t) {
		return
	}
	if err := n.syncTeamErr(n.ctx, p, t, false); err != nil && n.ctx.Err() == nil {
		n.log.Debug("sync failed", "peer", p.ShortString(), "team", t.id, "err", err)
	}
}

// syncSlot serialises the sessions of one peer and team and coalesces requests: a request that finds
// another one already queued behind the running session returns at once, because the queued session
// starts after it and so covers it.
type syncSlot struct {
	// run admits one session at a time: a channel rather than a mutex, so a goroutine waiting for it
	// is durably blocked (testing/synctest can advance virtual time) and gives up when ctx ends.
	run     chan struct{}
	waiting atomic.Int32
}

// syncTeamErr runs a session with p for t. With mustRun it always runs one (and waits for a running
// one first); otherwise it may be coalesced into a queued session.
func (n *Node) syncTeamErr(ctx context.Context, p peer.ID, t *team, mustRun bool) error {
	key := syncKey(p, t)
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	slot := n.slots[key]
	if slot == nil {
		slot = &syncSlot{run: make(chan struct{}, 1)}
		n.slots[key] = slot
	}
	n.mu.Unlock()
	if !mustRun && slot.waiting.Load() > 0 {
		return nil
	}
	slot.waiting.Add(1)
	select {
	case slot.run <- struct{}{}:
		slot.waiting.Add(-1)
	case <-ctx.Done():
		slot.waiting.Add(-1)
		return ctx.Err()
	}
	defer func() { <-slot.run }()
	return n.openSession(ctx, p, t, recon.ModeSync)
}

// errRefused is a session the peer refused (it reset the stream after the hello).
var errRefused = errors.New("the peer refused the session")

// openSession opens a sync stream to p for t asking for mode, and runs what the peer answers.
func (n *Node) openSession(ctx context.Context, p peer.ID, t *team, mode recon.Mode) error {
	if n.isBanned(p) {
		return fmt.Errorf("peer %s is banned for sending invalid data", p.ShortString())
	}
	if mode == recon.ModeSync && !n.maySync(t, n.corePeer(p, t)) {
		return errors.New("the peer's device is not a member of the team")
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	// One outgoing session per team at a time: the next one starts from what this one fetched.
	select {
	case t.syncSem <- struct{}{}:
		defer func() { <-t.syncSem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "fieldmesh-sync"), p, recon.Protocol)
	if err != nil {
		return fmt.Errorf("open sync stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	if err := framing.Write(s, recon.Hello{Topic: t.topic, Mode: mode}.Marshal()); err != nil {
		s.Reset()
		return fmt.Errorf("send hello: %w", err)
	}
	br := bufio.NewReader(s)
	ab, err := framing.Read(br, 1)
	if err != nil {
		s.Reset()
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	ans, err := recon.ParseAnswer(ab)
	if err != nil {
		s.Reset()
		return err
	}
	if ans == recon.AnswerMembership {
		err := n.exchange(s, br, p, t)
		if err != nil {
			s.Reset()
			return err
		}
		if mode == recon.ModeSync || !n.maySync(t, n.corePeer(p, t)) {
			return nil
		}
		// The exchange settled the disagreement: reconcile now.
		n.goRun(func() { n.syncTeam(p, t) })
		return nil
	}
	start := t.stored.Load()
	sess := n.reconSession(p, t, true)
	first, err := sess.Start()
	if err != nil {
		s.Reset()
		return err
	}
	brought, err := n.drive(s, br, p, t, sess, [][]byte{first})
	if err != nil {
		s.Reset()
		return err
	}
	n.syncDone(p, t, start+uint64(brought))
	return nil
}

// handleSync serves a sync stream a peer opened.
func (n *Node) handleSync(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	p := s.Conn().RemotePeer()
	br := bufio.NewReader(s)
	hb, err := framing.Read(br, recon.HelloSize)
	if err != nil {
		s.Reset()
		return
	}
	h, err := recon.ParseHello(hb)
	if err != nil {
		s.Reset()
		return
	}
	n.mu.Lock()
	t := n.byTopic[envelope.Topic(h.Topic)]
	n.mu.Unlock()
	if t == nil || n.isBanned(p) {
		s.Reset()
		return
	}
	from := n.corePeer(p, t)
	if h.Mode == recon.ModeGive {
		if !n.maySync(t, from) || framing.Write(s, []byte{byte(recon.AnswerTake)}) != nil {
			s.Reset()
			return
		}
		if err := n.take(s, br, p, t); err != nil {
			n.log.Debug("taking given envelopes failed", "peer", p.ShortString(), "team", t.id, "err", err)
			s.Reset()
		}
		return
	}
	ans := recon.AnswerSync
	switch {
	case h.Mode == recon.ModeSync && n.maySync(t, from):
	case n.maySync(t, from) || n.formerDevice(t, from):
		// The two disagree about a membership, or the peer was removed: show each other why.
		ans = recon.AnswerMembership
	default:
		// Not a topic this device carries for the peer: say nothing about why.
		n.log.Debug("sync refused", "peer", p.ShortString())
		s.Reset()
		return
	}
	if err := framing.Write(s, []byte{byte(ans)}); err != nil {
		s.Reset()
		return
	}
	if ans == recon.AnswerMembership {
		if err := n.exchange(s, br, p, t); err != nil {
			n.log.Debug("membership exchange failed", "peer", p.ShortString(), "team", t.id, "err", err)
			s.Reset()
		}
		return
	}
	if n.host.ID() < p {
		// Two ends that start sessions towards each other at once (a new member's first catch-up and
		// the inviter's session towards it) would each wait for its own: the end with the lower peer
		// id serves at once, beside its own session if one is running. Only the higher end waits, so a
		// chain of waits climbs peer ids and cannot close into a ring.
		select {
		case t.syncSem <- struct{}{}:
			defer func() { <-t.syncSem }()
		default:
		}
	} else {
		wait := time.NewTimer(responderWait)
		select {
		case t.syncSem <- struct{}{}:
			defer func() { <-t.syncSem }()
		case <-wait.C:
		}
		wait.Stop()
	}
	start := t.stored.Load()
	sess := n.reconSession(p, t, false)
	brought, err := n.drive(s, br, p, t, sess, nil)
	if err != nil {
		n.log.Debug("sync session failed", "peer", p.ShortString(), "team", t.id, "err", err)
		s.Reset()
		return
	}
	n.syncDone(p, t, start+uint64(brought))
}

// errBanned ends a session whose peer the core banned.
var errBanned = errors.New("the peer sent invalid envelopes and was banned")

// drive runs a session over the stream with the shared driver (recon.Pump). The envelopes of each
// flight go to the team's core in one Receive, whose effects are stored before the next frame is
// answered. It returns how many envelopes the session stored.
func (n *Node) drive(s network.Stream, r io.Reader, p peer.ID, t *team, sess *recon.Session, out [][]byte) (int, error) {
	n.stats.sessions.Add(1)
	var sent, recvd int64
	defer func() { n.usage.SyncBytes(t.topic, sent, recvd) }()
	kept, stored := 0, 0
	err := recon.Pump{
		MaxFlight: maxFlightBytes,
		Sent: func(b int) {
			n.stats.bytesSent.Add(int64(b))
			sent += int64(b)
		},
		Received: func(b int) {
			n.stats.bytesReceived.Add(int64(b))
			recvd += int64(b)
		},
		BadFrame: func(error) { n.ban(p, "it sent a malformed sync frame") },
		Deliver: func(flight [][]byte) error {
			n.stats.envelopesReceived.Add(int64(len(flight)))
			vs, k, err := n.receiveStored(t, p, flight)
			stored += k
			if err != nil {
				return err
			}
			kept += countAccepted(vs)
			if n.isBanned(p) {
				return errBanned
			}
			return nil
		},
	}.Run(s, r, sess, out)
	if err != nil {
		return stored, err
	}
	if kept > 0 {
		n.ripple(t, p)
	}
	return stored, s.CloseWrite()
}

func countAccepted(vs []device.Verdict) int {
	k := 0
	for _, v := range vs {
		if v == device.Accepted {
			k++
		}
	}
	return k
}

// ripple passes on what a session brought: gossip does not carry envelopes that arrived by sync, so
// the other connected peers of the team that may lack them are reconciled with (a session with a peer
// that already has them costs a few fingerprints).
func (n *Node) ripple(t *team, from peer.ID) {
	for _, q := range n.host.Network().Peers() {
		if q != from && n.maySync(t, n.corePeer(q, t)) {
			n.goRun(func() { n.syncTeam(q, t) })
		}
	}
}

// exchange runs a membership exchange over s: this side's ops go out (on their own goroutine, so
// that two sides writing at once cannot block each other on flow control) while the peer's are read;
// then the core judges what arrived.
func (n *Node) exchange(s network.Stream, r io.Reader, p peer.ID, t *team) error {
	from := n.corePeer(p, t)
	t.mu.Lock()
	mine := t.core.MembershipFor(from.Device)
	t.mu.Unlock()
	wrote := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(s)
		for _, b := range mine {
			if err := framing.Write(w, b); err != nil {
				wrote <- err
				return
			}
		}
		if err := framing.Write(w, nil); err != nil {
			wrote <- err
			return
		}
		wrote <- w.Flush()
	}()
	var theirs [][]byte
	for {
		b, err := framing.Read(r, membershipFrameMax)
		if err != nil {
			return fmt.Errorf("read membership op: %w", err)
		}
		if len(b) == 0 {
			break
		}
		if len(theirs) == maxMembershipFrames {
			return errors.New("too many membership ops")
		}
		theirs = append(theirs, b)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("send membership ops: %w", err)
	}
	var kept int
	err := n.do(t, func(c *device.Team, now time.Time) (device.Effects, error) {
		k, eff, err := c.AcceptMembership(now, theirs)
		kept = k
		return eff, err
	})
	if err != nil {
		if errors.Is(err, device.ErrProof) {
			n.ban(p, "it sent membership ops that do not check")
		}
		return err
	}
	if kept > 0 {
		n.log.Info("learned membership changes from a peer that disagreed", "peer", p.ShortString(), "team", t.id, "ops", kept)
	}
	return s.CloseWrite()
}

// maintainLoop dials bootstrap and remembered peers when not connected, and periodically reconciles
// with every connected peer.
func (n *Node) maintainLoop(bootstrap []peer.AddrInfo) {
	redial := time.NewTicker(n.cfg.RedialInterval)
	defer redial.Stop()
	resync := time.NewTicker(n.cfg.SyncInterval)
	defer resync.Stop()
	starve := time.NewTicker(starveEvery)
	defer starve.Stop()
	n.dialKnown(bootstrap)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-starve.C:
			n.feedStarved()
		case <-redial.C:
			n.dialKnown(bootstrap)
		case <-resync.C:
			for _, p := range n.host.Network().Peers() {
				n.goRun(func() { n.syncPeer(p) })
			}
		}
	}
}

func (n *Node) dialKnown(bootstrap []peer.AddrInfo) {
	targets := append([]peer.AddrInfo(nil), bootstrap...)
	known, err := n.st.Peers()
	if err != nil {
		n.log.Warn("reading known peers failed", "err", err)
	}
	for k, b := range known {
		if strings.HasPrefix(k, relayPeerKeyPrefix) || strings.HasPrefix(k, relayForgottenPrefix) {
			continue // the relay client dials relays (relayclient.go)
		}
		var ai peer.AddrInfo
		if err := json.Unmarshal(b, &ai); err == nil && ai.ID != "" {
			targets = append(targets, ai)
		}
	}
	for _, ai := range targets {
		if ai.ID == n.host.ID() || n.host.Network().Connectedness(ai.ID) == network.Connected || n.isBanned(ai.ID) {
			continue
		}
		n.goRun(func() {
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			defer cancel()
			if err := n.host.Connect(ctx, ai); err != nil {
				n.log.Debug("peer unreachable", "peer", ai.ID.ShortString())
			}
		})
	}
}

// rememberPeer stores a peer's addresses so the node redials it after a restart.
func (n *Node) rememberPeer(p peer.ID) {
	if n.isRelay(p) {
		return // remembered as a relay (relayclient.go)
	}
	ai := n.host.Peerstore().PeerInfo(p)
	for _, c := range n.host.Network().ConnsToPeer(p) {
		ai.Addrs = append(ai.Addrs, c.RemoteMultiaddr())
	}
	if len(ai.Addrs) == 0 {
		return
	}
	b, err := json.Marshal(ai)
	if err != nil {
		return
	}
	if err := n.st.PutPeer(p.String(), b); err != nil {
		n.log.Warn("remembering peer failed", "peer", p.ShortString(), "err", err)
	}
}

func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("node: name is empty")
	case len(name) > crdt.MaxNameLen:
		return fmt.Errorf("node: name is longer than %d bytes", crdt.MaxNameLen)
	case !utf8.ValidString(name):
		return errors.New("node: name is not valid UTF-8")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errors.New("node: name contains control characters")
	}
	if err := safetext.CheckName(name); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

func sortTeams(ts []TeamInfo) {
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].Name != ts[j].Name {
			return ts[i].Name < ts[j].Name
		}
		return ts[i].ID.String() < ts[j].ID.String()
	})
}

func sortPeers(ps []PeerInfo) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
}
