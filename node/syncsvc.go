package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/catchup"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

const (
	// syncFrameMax caps every frame of the send-every-id catch-up (1.0.0) on the wire.
	syncFrameMax = 256 << 10
	// reconFrameMax caps every frame of range-based reconciliation (2.0.0). Smaller frames mean more
	// round trips; 64 KiB keeps a 40 kbit/s link busy for about 13 s per frame.
	reconFrameMax = 64 << 10
	// syncTimeout bounds one catch-up session.
	syncTimeout = 2 * time.Minute
)

// Catcher is the catch-up protocol seen by the node: a session per stream and topic, driven frame by
// frame. sync/catchup implements it; the range-based reconciliation replaces it behind this interface.
type Catcher interface {
	Start() ([]byte, error)
	Handle(frame []byte) (out [][]byte, received [][]byte, done bool, err error)
}

var (
	_ Catcher = (*catchup.Session)(nil)
	_ Catcher = (*recon.Session)(nil)
)

// newCatcher returns the session for a negotiated sync protocol: range-based reconciliation for
// /fieldmesh/sync/2.0.0, the foundation's send-every-id catch-up for /fieldmesh/sync/1.0.0 (kept so
// nodes of both versions still repair each other).
func newCatcher(proto protocol.ID, st *storage.Store, topic envelope.Topic, initiator bool) Catcher {
	src := storeSource{st, topic}
	switch {
	case proto == SyncProtocolV2 && initiator:
		return recon.NewInitiator(reconSource{src}, reconFrameMax)
	case proto == SyncProtocolV2:
		return recon.NewResponder(reconSource{src}, reconFrameMax)
	case initiator:
		return catchup.NewInitiator(src, syncFrameMax)
	default:
		return catchup.NewResponder(src, syncFrameMax)
	}
}

// reconSource adapts storeSource to recon's item type.
type reconSource struct{ storeSource }

func (s reconSource) Items() ([]recon.Item, error) {
	keys, err := s.st.EnvelopeKeys(s.topic)
	if err != nil {
		return nil, err
	}
	items := make([]recon.Item, len(keys))
	for i, k := range keys {
		items[i] = recon.Item{Time: k.Time, ID: k.ID}
	}
	return items, nil
}

// storeSource is a read-only view of one topic in the store, for the catch-up protocol.
type storeSource struct {
	st    *storage.Store
	topic envelope.Topic
}

func (s storeSource) Items() ([]catchup.Item, error) {
	keys, err := s.st.EnvelopeKeys(s.topic)
	if err != nil {
		return nil, err
	}
	items := make([]catchup.Item, len(keys))
	for i, k := range keys {
		items[i] = catchup.Item{Time: k.Time, ID: k.ID}
	}
	return items, nil
}

func (s storeSource) Envelope(id [32]byte) ([]byte, error) {
	r, err := s.st.Envelope(id)
	if err != nil {
		return nil, err
	}
	if r.Key.Topic != s.topic {
		return nil, storage.ErrNotFound
	}
	return r.Data, nil
}

// syncPeer reconciles every team the peer's device is a member of.
func (n *Node) syncPeer(p peer.ID) {
	d, err := deviceOf(p)
	if err != nil {
		return
	}
	for _, t := range n.teamList() {
		if n.isMember(t, d) {
			n.autoSync(p, t)
		}
	}
}

// followerDelay is how long the end with the higher peer id waits before starting a catch-up session
// the other end should have started.
const followerDelay = 3 * time.Second

// responderWait bounds how long a served session waits for the team's own catch-up session to finish
// before it runs alongside (waiting longer could deadlock a ring of nodes syncing with each other).
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
	since := time.Now()
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

func (n *Node) syncDone(p peer.ID, t *team) {
	n.mu.Lock()
	n.lastSync[syncKey(p, t)] = time.Now()
	n.mu.Unlock()
	n.lowDataSynced(t)
	n.rememberPeer(p)
}

// syncTeam runs one catch-up session with a peer for one team, unless one is already running.
func (n *Node) syncTeam(p peer.ID, t *team) {
	if !n.autoSyncAllowed(t) {
		return
	}
	if err := n.syncTeamErr(n.ctx, p, t, false); err != nil && n.ctx.Err() == nil {
		n.log.Debug("catch-up failed", "peer", p.ShortString(), "team", t.id, "err", err)
	}
}

// errMisbehaved marks session errors that only a broken or hostile peer causes (bad frames, envelopes
// that do not open), as opposed to I/O errors.
var errMisbehaved = errors.New("peer misbehaved")

// banTime is how long a misbehaving peer is disconnected and refused.
const banTime = 10 * time.Minute

// dropIfMisbehaved disconnects a peer whose session failed through its own fault and refuses it for
// banTime. The honest node's state is unchanged: nothing from the failed frame was stored.
func (n *Node) dropIfMisbehaved(p peer.ID, err error) {
	if !errors.Is(err, errMisbehaved) {
		return
	}
	n.mu.Lock()
	n.banned[p] = n.now().Add(banTime)
	n.mu.Unlock()
	n.log.Warn("dropping peer: it sent invalid sync data", "peer", p.ShortString())
	_ = n.host.Network().ClosePeer(p)
}

func (n *Node) isBanned(p peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	until, ok := n.banned[p]
	if ok && !n.now().Before(until) {
		delete(n.banned, p)
		return false
	}
	return ok
}

// syncSlot serialises the catch-up sessions of one peer and team and coalesces requests: a request
// that finds another one already queued behind the running session returns at once, because the queued
// session starts after it and so covers it.
type syncSlot struct {
	// run admits one session at a time: a channel rather than a mutex, so a goroutine waiting for it
	// is durably blocked (testing/synctest can advance virtual time) and gives up when ctx ends.
	run     chan struct{}
	waiting atomic.Int32
}

// syncTeamErr runs a catch-up session with p for t. With mustRun it always runs one (and waits for a
// running one first); otherwise it may be coalesced into a queued session.
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
	return n.syncOnce(ctx, p, t)
}

func (n *Node) syncOnce(ctx context.Context, p peer.ID, t *team) error {
	if n.isBanned(p) {
		return fmt.Errorf("peer %s is banned for sending invalid sync data", p.ShortString())
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
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "fieldmesh-sync"), p, n.syncProtos...)
	if err != nil {
		return fmt.Errorf("open sync stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	if err := framing.Write(s, t.topic[:]); err != nil {
		s.Reset()
		return fmt.Errorf("send topic: %w", err)
	}
	sess := n.catcherFor(p, s.Protocol(), t.topic, true)
	first, err := sess.Start()
	if err != nil {
		s.Reset()
		return err
	}
	if err := n.drive(s, p, t, sess, [][]byte{first}); err != nil {
		s.Reset()
		n.dropIfMisbehaved(p, err)
		return err
	}
	n.syncDone(p, t)
	return nil
}

// handleSync serves a catch-up session opened by a peer, for a team the peer's device is a member of.
func (n *Node) handleSync(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	p := s.Conn().RemotePeer()
	br := bufio.NewReader(s)
	tb, err := framing.Read(br, 64)
	if err != nil || len(tb) != len(envelope.Topic{}) {
		s.Reset()
		return
	}
	var topic envelope.Topic
	copy(topic[:], tb)
	n.mu.Lock()
	t := n.byTopic[topic]
	n.mu.Unlock()
	d, derr := deviceOf(p)
	if t == nil || n.isBanned(p) || !(n.isRelayFor(p, topic) || derr == nil && n.isMember(t, d)) {
		// Not a topic we carry for this device: say nothing about why.
		n.log.Debug("sync refused", "peer", p.ShortString())
		s.Reset()
		return
	}
	wait := time.NewTimer(responderWait)
	select {
	case t.syncSem <- struct{}{}:
		defer func() { <-t.syncSem }()
	case <-wait.C:
	}
	wait.Stop()
	sess := n.catcherFor(p, s.Protocol(), t.topic, false)
	if err := n.driveReader(s, br, p, t, sess, nil); err != nil {
		n.log.Debug("sync session failed", "peer", p.ShortString(), "team", t.id, "err", err)
		s.Reset()
		n.dropIfMisbehaved(p, err)
		return
	}
	n.syncDone(p, t)
}

func (n *Node) drive(s network.Stream, p peer.ID, t *team, sess Catcher, first [][]byte) error {
	return n.driveReader(s, bufio.NewReader(s), p, t, sess, first)
}

// driveReader pumps frames between the stream and the session until the session is done. Received
// envelopes are validated, stored durably in one batch per frame, then applied.
func (n *Node) driveReader(s network.Stream, r io.Reader, p peer.ID, t *team, sess Catcher, out [][]byte) error {
	n.stats.sessions.Add(1)
	var sent, recvd int64
	defer func() { n.usage.syncBytes(t.topic, sent, recvd) }()
	w := bufio.NewWriter(s)
	send := func(frames [][]byte) error {
		for _, f := range frames {
			if f == nil {
				continue
			}
			if err := framing.Write(w, f); err != nil {
				return err
			}
			n.stats.bytesSent.Add(int64(len(f)))
			sent += int64(len(f))
		}
		return w.Flush()
	}
	if err := send(out); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	for {
		frame, err := framing.Read(r, catchup.MaxFrameSize)
		if err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		n.stats.bytesReceived.Add(int64(len(frame)))
		recvd += int64(len(frame))
		out, recv, done, err := sess.Handle(frame)
		if err != nil {
			return fmt.Errorf("%w: bad frame: %w", errMisbehaved, err)
		}
		if len(recv) > 0 {
			if err := n.acceptRaw(t, p, recv); err != nil {
				return err
			}
		}
		if err := send(out); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		if done {
			return s.CloseWrite()
		}
	}
}

// acceptRaw opens envelopes received by catch-up and stores them. An envelope that is malformed, of
// another topic, or fails to authenticate under a key this device holds is refused: nothing of the
// frame is stored, and the session fails, so the peer is dropped. Envelopes of epochs this device does
// not hold are skipped (not the peer's fault); sealed history it cannot read is stored for relaying.
func (n *Node) acceptRaw(t *team, p peer.ID, raws [][]byte) error {
	items := make([]ingestItem, 0, len(raws))
	for _, raw := range raws {
		e, err := envelope.Unmarshal(raw)
		if err != nil {
			return fmt.Errorf("%w: malformed envelope: %w", errMisbehaved, err)
		}
		if e.Topic != t.topic {
			return fmt.Errorf("%w: envelope of another topic", errMisbehaved)
		}
		items = append(items, ingestItem{t: t, env: e, raw: raw, from: p})
	}
	// A relay stores what enrolled devices give it without being able to check it: skip what does not
	// open rather than drop the relay.
	if _, err := n.ingestTeam(t, items, !n.isRelayFor(p, t.topic)); err != nil {
		return err
	}
	n.stats.envelopesReceived.Add(int64(len(items)))
	return nil
}

// maintainLoop dials bootstrap and remembered peers when not connected, and periodically reconciles
// with every connected peer.
func (n *Node) maintainLoop(bootstrap []peer.AddrInfo) {
	redial := time.NewTicker(n.cfg.RedialInterval)
	defer redial.Stop()
	resync := time.NewTicker(n.cfg.SyncInterval)
	defer resync.Stop()
	var ackC <-chan time.Time
	if n.cfg.AckInterval > 0 {
		acks := time.NewTicker(n.cfg.AckInterval)
		defer acks.Stop()
		ackC = acks.C
	}
	n.dialKnown(bootstrap)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-redial.C:
			n.dialKnown(bootstrap)
		case <-ackC:
			if n.deferAcks() {
				continue
			}
			if _, err := n.FlushAcks(); err != nil {
				n.log.Warn("publishing acknowledgements failed", "err", err)
			}
		case <-resync.C:
			for _, p := range n.host.Network().Peers() {
				p := p
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
	for _, b := range known {
		var ai peer.AddrInfo
		if err := json.Unmarshal(b, &ai); err == nil && ai.ID != "" {
			targets = append(targets, ai)
		}
	}
	for _, ai := range targets {
		if ai.ID == n.host.ID() || n.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		ai := ai
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
	return nil
}

// validateMessage applies the node's own rule on top of crdt.Message.Validate (limits, UTF-8,
// priority): a message must say something.
func validateMessage(m crdt.Message) error {
	if strings.TrimSpace(m.Text) == "" {
		return errors.New("node: message is empty")
	}
	if err := m.Validate(); err != nil {
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
