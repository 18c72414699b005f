package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	stdsync "sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// Gossip sends a device's own envelope only to its mesh peers (flood publishing is off, so that
// peers holding no key of the epoch, relays first, cannot tell who wrote what: docs/security.md).
// A member's device connected to this one but outside its mesh — a leaf of a device connected to
// more members than its mesh holds, say a phone that knows only its inviter — would then get the
// envelope only from IHAVE gossip or the next sync. So the node hands its own envelopes straight to
// those peers over a sync stream (recon.ModeGive): they are members, who read the sender from the
// envelope's outer layer anyway. Nobody else gets a copy first-hand from the author.

// meshTracker follows the peers of each topic's mesh as this node's GossipSub router grafts and
// prunes them (a pubsub.RawTracer); disconnected peers leave it through the node's network notifee.
type meshTracker struct {
	mu   stdsync.Mutex
	mesh map[string]map[peer.ID]bool
	// sent, if set before pubsub starts, is told how many messages of a topic an RPC written to a
	// peer carried.
	sent func(p peer.ID, topic string, messages int)
}

func newMeshTracker() *meshTracker { return &meshTracker{mesh: make(map[string]map[peer.ID]bool)} }

// in reports whether p is in the mesh of topic.
func (m *meshTracker) in(topic string, p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mesh[topic][p]
}

// empty reports whether the mesh of topic has no peer.
func (m *meshTracker) empty(topic string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mesh[topic]) == 0
}

// starveEvery is how often a device whose mesh of a team's topic is empty reconciles with the
// connected peers that may sync the team. An empty mesh happens to a device connected only to
// peers whose meshes are full (a phone that knows only its inviter, who invited many): gossip
// then reaches it only through IHAVE, one peer a heartbeat. Reconciling a set that differs in
// nothing costs two frames of a few dozen bytes.
const starveEvery = 10 * time.Second

// feedStarved reconciles the teams whose mesh is empty with the connected peers that may sync them.
func (n *Node) feedStarved() {
	for _, t := range n.teamList() {
		if t.ptop == nil || !n.mesh.empty(t.ptop.String()) || !n.autoSyncAllowed(t) {
			continue
		}
		for _, p := range n.host.Network().Peers() {
			if n.maySync(t, n.corePeer(p, t)) {
				n.goRun(func() { n.syncTeam(p, t) })
			}
		}
	}
}

// drop forgets p in every topic.
func (m *meshTracker) drop(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ps := range m.mesh {
		delete(ps, p)
	}
}

func (m *meshTracker) Graft(p peer.ID, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mesh[topic] == nil {
		m.mesh[topic] = make(map[peer.ID]bool)
	}
	m.mesh[topic][p] = true
}

func (m *meshTracker) Prune(p peer.ID, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mesh[topic], p)
}

func (m *meshTracker) Leave(topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mesh, topic)
}

func (*meshTracker) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (*meshTracker) OnClosedOutboundStream(peer.ID)           {}
func (*meshTracker) Join(string)                              {}
func (*meshTracker) ValidateMessage(*pubsub.Message)          {}
func (*meshTracker) DeliverMessage(*pubsub.Message)           {}
func (*meshTracker) RejectMessage(*pubsub.Message, string)    {}
func (*meshTracker) DuplicateMessage(*pubsub.Message)         {}
func (*meshTracker) ThrottlePeer(peer.ID)                     {}
func (*meshTracker) RecvRPC(*pubsub.RPC)                      {}
func (*meshTracker) SendRPC(*pubsub.RPC, peer.ID)             {}
func (*meshTracker) DropRPC(*pubsub.RPC, peer.ID)             {}
func (*meshTracker) UndeliverableMessage(*pubsub.Message)     {}

// SendRPCCompleted tells sent the messages of each topic written to p.
func (m *meshTracker) SendRPCCompleted(rpc *pubsub.RPC, p peer.ID, _ time.Duration) {
	if m.sent == nil || len(rpc.GetPublish()) == 0 {
		return
	}
	for _, msg := range rpc.GetPublish() {
		m.sent(p, msg.GetTopic(), 1)
	}
}

// giveTimeout bounds a give stream; maxGive bounds the envelopes one carries.
const (
	giveTimeout = 30 * time.Second
	maxGive     = 16
)

// give hands raw, an envelope this device just published, to member p outside its mesh.
func (n *Node) give(p peer.ID, t *team, raw []byte) {
	if err := n.giveErr(p, t, raw); err != nil && n.ctx.Err() == nil {
		n.log.Debug("handing an envelope to a peer outside the mesh failed", "peer", p.ShortString(), "team", t.id, "err", err)
	}
}

func (n *Node) giveErr(p peer.ID, t *team, raw []byte) error {
	ctx, cancel := context.WithTimeout(n.ctx, giveTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithNoDial(ctx, "give to a connected member"), p, SyncProtocol)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(giveTimeout))
	br := bufio.NewReader(s)
	if err := framing.Write(s, recon.Hello{Topic: t.topic, Mode: recon.ModeGive}.Marshal()); err != nil {
		s.Reset()
		return err
	}
	ab, err := framing.Read(br, 1)
	if err != nil {
		s.Reset()
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	if a, err := recon.ParseAnswer(ab); err != nil || a != recon.AnswerTake {
		s.Reset()
		return errors.New("the peer does not take envelopes")
	}
	w := bufio.NewWriter(s)
	if err := framing.Write(w, raw); err != nil {
		s.Reset()
		return err
	}
	if err := framing.Write(w, nil); err != nil {
		s.Reset()
		return err
	}
	if err := w.Flush(); err != nil {
		s.Reset()
		return err
	}
	n.usage.SyncBytes(t.topic, int64(len(raw)+recon.HelloSize), 1)
	return s.CloseWrite()
}

// take receives the envelopes of a give stream from p, a peer that may sync t, and gives them to
// t's core.
func (n *Node) take(s network.Stream, r *bufio.Reader, p peer.ID, t *team) error {
	var raws [][]byte
	for {
		b, err := framing.Read(r, envelope.MaxSize)
		if err != nil {
			return fmt.Errorf("read envelope: %w", err)
		}
		if len(b) == 0 {
			break
		}
		if len(raws) == maxGive {
			n.ban(p, "it sent too many envelopes on a give stream")
			return errors.New("too many envelopes")
		}
		raws = append(raws, b)
	}
	got := 0
	for _, b := range raws {
		got += len(b)
	}
	n.usage.SyncBytes(t.topic, 1, int64(got+recon.HelloSize))
	if _, err := n.receive(t, p, raws); err != nil {
		return err
	}
	return s.CloseWrite()
}
