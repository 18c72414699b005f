package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	stdsync "sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node/relay/relayclient"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// The device side of clinic relays. The server is node/relay; the node imports only what devices and
// relays share (node/relay/relayproto) and the device side of the protocols (node/relay/relayclient),
// so it does not link the relay's store or metrics. For each relay — given in Config.Relays, or used
// before and remembered in the store's peers keyspace under "relay/PEERID" — the node keeps a
// connection, and on every contact (connection, a team added, the periodic timer, a refused
// enrolment's retry):
//
//  1. enrols every team's topic not yet enrolled on this connection (relayclient.Enrol: the relay key
//     comes from the team id, relayproto.TeamKey), logging refusals with the relay's reason;
//  2. keeps a circuit relay v2 reservation (renewed at three quarters of its life), so other devices can
//     reach this one through the relay;
//  3. registers its circuit addresses in the relay's directory for each enrolled topic and dials the
//     other devices listed there (over the relay if need be; hole punching upgrades the connection);
//  4. reconciles every enrolled team with the relay (the node's own sync sessions).
//
// A relay is not a member of any team, so the node's membership checks do not let it sync: handleSync
// must also accept a relay for a topic enrolled there (isRelayFor), and sync sessions with a relay should
// leave out the envelopes older than the relay's horizon (relayHorizon).

const (
	// relayRetryMin and relayRetryMax bound the delay before a refused or failed enrolment is retried
	// (doubling each time; the periodic contact also retries).
	relayRetryMin = 5 * time.Second
	relayRetryMax = 5 * time.Minute
	// relayDialTimeout bounds a dial of a relay or of a device found in its directory.
	relayDialTimeout = 30 * time.Second
	// relayPeerKeyPrefix names remembered relays in the store's peers keyspace.
	relayPeerKeyPrefix = "relay/"
	// relayForgottenPrefix marks relays forgotten with `relay forget`: a team's relay op does not bring
	// them back (a --relay flag does).
	relayForgottenPrefix = "relay-forgotten/"
	relayProtectTag      = "fieldmesh-relay"
)

// relayClient is a node's relays. It lives as long as the node (see relayClientOf).
type relayClient struct {
	n *Node

	mu     stdsync.Mutex // guards relays and each relayState's fields
	relays map[peer.ID]*relayState
}

// relayState is one relay as this device sees it.
type relayState struct {
	ai   peer.AddrInfo
	kick chan struct{} // teams changed: contact now
	// enrolled are the topics enrolled on the current connection, with the relay's horizon for each.
	enrolled map[envelope.Topic]uint64
	// refused are the topics the relay refused on the current connection, with its reason.
	refused map[envelope.Topic]string
	// rosterSent is, for the teams this device is an admin of, the roster sequence the relay took.
	rosterSent map[envelope.Topic]uint64
	// ctx ends when the relay is forgotten (or the node closes).
	ctx    context.Context
	cancel context.CancelFunc
	// from says how the node knows the relay: "config" (--relay), "team" (a team's relay op), or
	// "remembered" (used before).
	from string
	// connected, lastContact, lastSync and lastErr are for status: whether the relay is connected now,
	// when it was last connected and reconciled, and the last failure (dial, enrolment, sync).
	connected             bool
	everConnected         bool
	lastContact, lastSync time.Time
	lastErr               string
	resv                  *client.Reservation
	// held is, per topic, how many of the team's stored envelopes (team.stored) the relay is taken to
	// hold: the count when the last completed session with it started, plus what that session brought,
	// plus what gossip wrote to it since. team.stored minus held is what may still be waiting to reach
	// the relay. reconciled are the topics with a completed session since the node started.
	held       map[envelope.Topic]uint64
	reconciled map[envelope.Topic]bool
}

// relayClient is the node's relay client, nil before startRelays.
func (n *Node) relayClient() *relayClient { return n.relays.Load() }

// startRelays starts the relay client: the relays given (multiaddrs ending in /p2p/ID) and those
// remembered in the store. Call it from start, after the teams are loaded.
func (n *Node) startRelays(addrs []string) error {
	rc := &relayClient{n: n, relays: make(map[peer.ID]*relayState)}
	var given []peer.AddrInfo
	for _, s := range addrs {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return fmt.Errorf("node: relay address %q (want a multiaddr ending in /p2p/PEERID): %w", s, err)
		}
		if ai.ID == n.host.ID() {
			return fmt.Errorf("node: relay address %q is this device", s)
		}
		given = append(given, *ai)
	}
	known, err := n.st.Peers()
	if err != nil {
		return fmt.Errorf("node: read remembered relays: %w", err)
	}
	forgotten := make(map[peer.ID]bool)
	for k := range known {
		if id, err := peer.Decode(strings.TrimPrefix(k, relayForgottenPrefix)); strings.HasPrefix(k, relayForgottenPrefix) && err == nil {
			forgotten[id] = true
		}
	}
	for k, b := range known {
		if !strings.HasPrefix(k, relayPeerKeyPrefix) {
			continue
		}
		var ai peer.AddrInfo
		if err := json.Unmarshal(b, &ai); err != nil || ai.ID == "" {
			n.log.Warn("skipping unreadable remembered relay", "err", err)
			continue
		}
		if !forgotten[ai.ID] {
			rc.add(ai, "remembered")
		}
	}
	for _, ai := range given {
		rs := rc.add(ai, "config")
		rc.mu.Lock()
		rs.ai.Addrs = ai.Addrs // the configured addresses are the operator's word
		rs.from = "config"
		rc.mu.Unlock()
		rc.remember(ai)
		if forgotten[ai.ID] {
			if err := n.st.DeletePeer(relayForgottenPrefix + ai.ID.String()); err != nil {
				n.log.Warn("un-forgetting a configured relay failed", "relay", ai.ID.ShortString(), "err", err)
			}
		}
	}
	n.relays.Store(rc)
	rc.mu.Lock()
	all := make([]*relayState, 0, len(rc.relays))
	for _, rs := range rc.relays {
		all = append(all, rs)
	}
	rc.mu.Unlock()
	for _, rs := range all {
		n.goRun(func() { rc.run(rs) })
	}
	for _, t := range n.teamList() {
		n.learnRelays(t)
	}
	return nil
}

func (rc *relayClient) add(ai peer.AddrInfo, from string) *relayState {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rs := rc.relays[ai.ID]
	if rs == nil {
		ctx, cancel := context.WithCancel(rc.n.ctx)
		rs = &relayState{ai: ai, kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel, from: from}
		rc.relays[ai.ID] = rs
	}
	return rs
}

// remember stores a relay so the node uses it again after a restart.
func (rc *relayClient) remember(ai peer.AddrInfo) {
	b, err := json.Marshal(ai)
	if err != nil {
		return
	}
	if err := rc.n.st.PutPeer(relayPeerKeyPrefix+ai.ID.String(), b); err != nil {
		rc.n.log.Warn("remembering relay failed", "relay", ai.ID.ShortString(), "err", err)
	}
}

// relaysChanged tells the relay client that the node's teams changed (call it from addTeam): new topics
// are enrolled, registered and reconciled at once.
func (n *Node) relaysChanged() {
	rc := n.relayClient()
	if rc == nil {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, rs := range rc.relays {
		select {
		case rs.kick <- struct{}{}:
		default:
		}
	}
}

// isRelay reports whether p is one of this node's relays.
func (n *Node) isRelay(p peer.ID) bool {
	rc := n.relayClient()
	if rc == nil {
		return false
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.relays[p] != nil
}

// relayJoined tells the relay client that p joined t's gossip topic: if p is one of this node's relays
// and t is not enrolled there, the relay has just started carrying it, so contact it now.
func (n *Node) relayJoined(p peer.ID, t *team) {
	rc := n.relayClient()
	if rc == nil {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rs := rc.relays[p]
	if rs == nil {
		return
	}
	if _, ok := rs.enrolled[t.topic]; ok {
		return
	}
	n.log.Info("relay now carries the team: enrolling", "relay", p.ShortString(), "team", t.id)
	select {
	case rs.kick <- struct{}{}:
	default:
	}
}

// isRelayFor reports whether p is one of this node's relays and the node enrolled topic there on the
// current connection: handleSync serves such a relay as it serves a member.
func (n *Node) isRelayFor(p peer.ID, topic envelope.Topic) bool {
	rc := n.relayClient()
	if rc == nil {
		return false
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rs := rc.relays[p]
	if rs == nil {
		return false
	}
	_, ok := rs.enrolled[topic]
	return ok
}

// relayHorizon returns the relay's horizon for topic if p is one of this node's relays (its oldest
// item time it keeps), else 0.
func (n *Node) relayHorizon(p peer.ID, topic envelope.Topic) uint64 {
	rc := n.relayClient()
	if rc == nil {
		return 0
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rs := rc.relays[p]; rs != nil {
		return rs.enrolled[topic]
	}
	return 0
}

// run keeps one relay connected and in use until the node closes.
func (rc *relayClient) run(rs *relayState) {
	n := rc.n
	rc.mu.Lock()
	ai := rs.ai
	ctx := rs.ctx
	rc.mu.Unlock()
	defer n.host.ConnManager().Unprotect(ai.ID, relayProtectTag)
	// A goroutine drains the event bus at once (a slow subscriber would hold up the host's notifications)
	// and passes on, coalesced, that the relay's connectedness changed.
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		n.log.Error("relay client: cannot watch connections", "err", err)
		return
	}
	defer sub.Close()
	changed := make(chan struct{}, 1)
	n.goRun(func() {
		for e := range sub.Out() {
			if ev, ok := e.(event.EvtPeerConnectednessChanged); ok && ev.Peer == ai.ID {
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	})
	tick := time.NewTicker(n.cfg.SyncInterval)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	renew := time.NewTimer(time.Hour)
	renew.Stop()
	defer renew.Stop()
	backoff := relayRetryMin

	for {
		// Connect, or wait and try again.
		for n.host.Network().Connectedness(ai.ID) != network.Connected {
			dctx, cancel := context.WithTimeout(ctx, relayDialTimeout)
			err := n.host.Connect(dctx, ai)
			cancel()
			if err == nil {
				break
			}
			rc.mu.Lock()
			first := rs.lastErr == "" && !rs.everConnected
			rs.lastErr = "does not answer: " + err.Error()
			rc.mu.Unlock()
			if first && ctx.Err() == nil {
				// An address that never answered is worth a line the user sees: a mistyped --relay
				// or a relay that is down.
				n.log.Warn("relay does not answer; retrying", "relay", ai.ID.ShortString(), "addrs", ai.Addrs, "every", n.cfg.RedialInterval.String())
			} else {
				n.log.Debug("relay unreachable", "relay", ai.ID.ShortString(), "err", err)
			}
			t := time.NewTimer(n.cfg.RedialInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-changed:
				t.Stop()
			}
		}
		n.host.ConnManager().Protect(ai.ID, relayProtectTag)
		n.log.Info("connected to relay", "relay", ai.ID.ShortString())
		rc.mu.Lock()
		rs.connected, rs.everConnected, rs.lastContact, rs.lastErr = true, true, n.now(), ""
		rs.enrolled, rs.refused, rs.rosterSent, rs.resv = make(map[envelope.Topic]uint64), make(map[envelope.Topic]string), make(map[envelope.Topic]uint64), nil
		rc.mu.Unlock()
		backoff = relayRetryMin
		retryAfter := rc.contact(rs)
		resetTimer(retry, retryAfter, &backoff)
		rc.scheduleRenew(rs, renew)

	connected:
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				if n.host.Network().Connectedness(ai.ID) != network.Connected {
					n.log.Info("disconnected from relay", "relay", ai.ID.ShortString())
					rc.mu.Lock()
					rs.connected, rs.lastContact = false, n.now()
					rc.mu.Unlock()
					renew.Stop()
					break connected
				}
			case <-rs.kick:
				resetTimer(retry, rc.contact(rs), &backoff)
				rc.scheduleRenew(rs, renew)
			case <-tick.C:
				resetTimer(retry, rc.contact(rs), &backoff)
				rc.scheduleRenew(rs, renew)
			case <-retry.C:
				resetTimer(retry, rc.contact(rs), &backoff)
				rc.scheduleRenew(rs, renew)
			case <-renew.C:
				rc.mu.Lock()
				rs.resv = nil
				rc.mu.Unlock()
				rc.reserve(rs)
				rc.scheduleRenew(rs, renew)
			}
		}
	}
}

// resetTimer arms t for a retry when retry is set (with a doubling backoff), and stops it otherwise.
func resetTimer(t *time.Timer, retry bool, backoff *time.Duration) {
	t.Stop()
	if !retry {
		*backoff = relayRetryMin
		return
	}
	t.Reset(*backoff)
	*backoff = min(*backoff*2, relayRetryMax)
}

// scheduleRenew arms t at three quarters of the reservation's remaining life.
func (rc *relayClient) scheduleRenew(rs *relayState, t *time.Timer) {
	rc.mu.Lock()
	resv := rs.resv
	rc.mu.Unlock()
	if resv == nil {
		return
	}
	t.Stop()
	t.Reset(max(time.Until(resv.Expiration)*3/4, time.Second))
}

// contact runs one round with a connected relay: enrol, reserve, directory, sync. It reports whether
// something failed or was refused that is worth retrying soon.
func (rc *relayClient) contact(rs *relayState) (retry bool) {
	n := rc.n
	rc.mu.Lock()
	rid := rs.ai.ID
	rc.mu.Unlock()

	// 1. Enrol the topics not enrolled on this connection.
	n.mu.Lock()
	byTopic := maps.Clone(n.byTopic)
	n.mu.Unlock()
	// An admin device also enrols again a topic whose roster moved on, to hand the relay the new one.
	keys := make(map[envelope.Topic]relayproto.Key)
	rosters := make(map[envelope.Topic][]byte)
	seqs := make(map[envelope.Topic]uint64)
	for topic, t := range byTopic {
		if ro := n.roster(t); ro != nil {
			rosters[topic], seqs[topic] = ro.Marshal(), ro.Seq
		}
	}
	rc.mu.Lock()
	for topic, t := range byTopic {
		if _, ok := rs.enrolled[topic]; !ok || (rosters[topic] != nil && rs.rosterSent[topic] < seqs[topic]) {
			keys[topic] = relayproto.TeamKey(t.id)
		}
	}
	rc.mu.Unlock()
	if len(keys) > 0 {
		results, err := relayclient.Enrol(n.ctx, n.host, rid, keys, rosters)
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("enrolling at relay failed", "relay", rid.ShortString(), "err", err)
			}
			retry = true
		}
		for _, res := range results {
			rc.mu.Lock()
			before, wasRefused := rs.refused[res.Topic]
			if res.OK() {
				rs.enrolled[res.Topic] = res.Horizon
				delete(rs.refused, res.Topic)
				if seq, ok := seqs[res.Topic]; ok {
					rs.rosterSent[res.Topic] = seq
				}
			} else {
				delete(rs.enrolled, res.Topic) // the relay may have ended it (a newer roster without this device)
				rs.refused[res.Topic] = res.Message
			}
			rc.mu.Unlock()
			t := byTopic[res.Topic]
			switch {
			case res.OK():
				n.log.Info("enrolled at relay", "relay", rid.ShortString(), "team", t.id)
				if seqs[res.Topic] > 0 {
					n.goRun(func() { rc.announce(rs, t) })
				}
			case !wasRefused || before != res.Message:
				n.log.Warn("relay refused enrolment", "relay", rid.ShortString(), "team", t.id, "reason", res.Message)
				retry = true
			default:
				retry = true
			}
		}
	}
	rc.mu.Lock()
	var enrolled []*team
	for topic := range rs.enrolled {
		if t := byTopic[topic]; t != nil {
			enrolled = append(enrolled, t)
		}
	}
	rc.mu.Unlock()
	if len(enrolled) == 0 {
		return retry
	}

	// 2. A circuit reservation, so other devices reach this one through the relay.
	if !rc.reserve(rs) {
		retry = true
	}

	// 3. The directory: register, and dial the other devices of each team.
	rc.mu.Lock()
	circuits := relayclient.CircuitAddrs(rs.ai)
	rc.mu.Unlock()
	dialed := map[peer.ID]bool{}
	for _, t := range enrolled {
		peers, err := relayclient.Directory(n.ctx, n.host, rid, t.topic, circuits)
		if err != nil {
			if errors.Is(err, relayclient.ErrRefused) {
				// The relay ended the enrolment (a newer roster leaves this device out, or the topic
				// was revoked): enrol again, to hear why.
				rc.mu.Lock()
				delete(rs.enrolled, t.topic)
				rc.mu.Unlock()
			}
			if n.ctx.Err() == nil {
				n.log.Debug("relay directory failed", "relay", rid.ShortString(), "team", t.id, "err", err)
			}
			retry = true
			continue
		}
		for _, ai := range peers {
			if ai.ID == n.host.ID() || dialed[ai.ID] || n.host.Network().Connectedness(ai.ID) == network.Connected {
				continue
			}
			dialed[ai.ID] = true
			n.goRun(func() { rc.dialVia(rid, ai) })
		}
	}

	// 4. Reconcile every enrolled team with the relay.
	for _, t := range enrolled {
		err := n.syncTeamErr(n.ctx, rid, t, false)
		rc.mu.Lock()
		if err == nil {
			rs.lastSync = n.now()
		} else {
			rs.lastErr = "reconciling team " + t.id.Short() + ": " + err.Error()
		}
		rc.mu.Unlock()
		if err != nil && n.ctx.Err() == nil {
			n.log.Debug("catch-up with relay failed", "relay", rid.ShortString(), "team", t.id, "err", err)
			retry = true
		}
	}
	return retry
}

// reserve makes or keeps a circuit reservation at the relay; it reports success.
func (rc *relayClient) reserve(rs *relayState) bool {
	n := rc.n
	rc.mu.Lock()
	ai, resv := rs.ai, rs.resv
	rc.mu.Unlock()
	if resv != nil && time.Until(resv.Expiration) > time.Minute {
		return true
	}
	ctx, cancel := context.WithTimeout(n.ctx, relayDialTimeout)
	defer cancel()
	resv, err := client.Reserve(ctx, n.host, ai)
	if err != nil {
		if n.ctx.Err() == nil {
			n.log.Warn("circuit reservation at relay failed", "relay", ai.ID.ShortString(), "err", err)
		}
		return false
	}
	rc.mu.Lock()
	rs.resv = resv
	rc.mu.Unlock()
	n.log.Debug("circuit reservation at relay", "relay", ai.ID.ShortString(), "expires", resv.Expiration.UTC().Format(time.RFC3339))
	return true
}

// dialVia connects to a device found in a relay's directory, through the relay if nothing better works.
// The node's connection handler then reconciles the teams the two share.
func (rc *relayClient) dialVia(rid peer.ID, ai peer.AddrInfo) {
	n := rc.n
	ctx, cancel := context.WithTimeout(n.ctx, relayDialTimeout)
	defer cancel()
	ctx = network.WithAllowLimitedConn(ctx, "fieldmesh: reach a team member through a clinic relay")
	if err := n.host.Connect(ctx, ai); err != nil {
		n.log.Debug("device from relay directory unreachable", "relay", rid.ShortString(), "peer", ai.ID.ShortString(), "err", err)
		return
	}
	n.log.Debug("connected to a device found through relay", "relay", rid.ShortString(), "peer", ai.ID.ShortString())
}

// roster returns t's roster signed by this device, for its relays, or nil when this device is not an
// admin of t (device.Team.Roster).
func (n *Node) roster(t *team) *relayproto.Roster {
	t.mu.Lock()
	seq, members, admins, ok := t.core.Roster()
	t.mu.Unlock()
	if !ok {
		return nil
	}
	ro := relayproto.NewRoster(t.topic, seq, members, admins)
	ro.Sign(n.id.Device.ID(), n.id.Device.Sign)
	return ro
}

// Relays a team shares. An admin device enrolled at a relay for a team publishes a relay op
// (crdt.KindRelay) with the relay's peer id and the addresses it reached it at, unless the team's state
// already lists the relay there by an op of the current epoch (it enrols again, with its new roster,
// whenever the epoch changes); every member's node adds the relays its teams list (learnRelays),
// remembers them, and uses them like one given with --relay. `fieldmesh relay forget` drops one on this
// device only, and the team's op does not bring it back.

// announce publishes a relay op for rs in t (the caller checked this device is an admin of t) unless
// t's state lists rs at the addresses this device reaches it at, by an op sealed in the current epoch.
func (rc *relayClient) announce(rs *relayState, t *team) {
	n := rc.n
	rc.mu.Lock()
	ai := rs.ai
	rc.mu.Unlock()
	var addrs [][]byte
	for _, a := range ai.Addrs {
		if b := a.Bytes(); len(b) <= crdt.MaxRelayAddrLen && len(addrs) < crdt.MaxRelayAddrs {
			addrs = append(addrs, b)
		}
	}
	if len(addrs) == 0 {
		return
	}
	// Devices that joined in a later epoch cannot open an op sealed before they joined: the relay is
	// announced again in each epoch.
	st := t.snapshot()
	if st.Current < 0 {
		return
	}
	for _, v := range st.Relays {
		if peer.ID(v.Peer) != ai.ID || !slices.EqualFunc(v.Addrs, addrs, bytes.Equal) {
			continue
		}
		t.mu.Lock()
		op, ok := t.core.Op(v.ID)
		t.mu.Unlock()
		if ok && op.Seal.Epoch == st.Epochs[st.Current].Tag {
			return
		}
	}
	body := crdt.Relay{Peer: []byte(ai.ID), Addrs: addrs}
	if err := body.Validate(); err != nil {
		return
	}
	if _, err := n.publish(t, crdt.KindRelay, body.Marshal()); err != nil {
		n.log.Warn("telling the team about its relay failed", "relay", ai.ID.ShortString(), "team", t.id, "err", err)
		return
	}
	n.log.Info("told the team about its relay", "relay", ai.ID.ShortString(), "team", t.id)
}

// learnRelays starts using the relays t's state lists that this node does not know yet and did not
// forget.
func (n *Node) learnRelays(t *team) {
	rc := n.relayClient()
	if rc == nil {
		return
	}
	for _, v := range t.snapshot().Relays {
		id, err := peer.IDFromBytes(v.Peer)
		if err != nil || id == n.host.ID() {
			continue
		}
		rc.mu.Lock()
		known := rc.relays[id] != nil
		rc.mu.Unlock()
		if known || rc.forgotten(id) {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, b := range v.Addrs {
			if a, err := ma.NewMultiaddrBytes(b); err == nil {
				ai.Addrs = append(ai.Addrs, a)
			}
		}
		if len(ai.Addrs) == 0 {
			continue
		}
		rs := rc.add(ai, "team")
		rc.remember(ai)
		n.log.Info("using the team's relay", "relay", id.ShortString(), "team", t.id, "announced_by", v.By)
		n.goRun(func() { rc.run(rs) })
	}
}

// forgotten reports whether the relay was forgotten with `relay forget`.
func (rc *relayClient) forgotten(id peer.ID) bool {
	peers, err := rc.n.st.Peers()
	if err != nil {
		return true // when in doubt, do not start using a relay
	}
	_, ok := peers[relayForgottenPrefix+id.String()]
	return ok
}

// synced records that a session with p for topic completed, and that p holds held of the team's
// stored envelopes (team.stored), if p is one of this device's relays.
func (rc *relayClient) synced(p peer.ID, topic envelope.Topic, held uint64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rs := rc.relays[p]
	if rs == nil {
		return
	}
	if rs.held == nil {
		rs.held, rs.reconciled = make(map[envelope.Topic]uint64), make(map[envelope.Topic]bool)
	}
	rs.held[topic] = max(rs.held[topic], held)
	rs.reconciled[topic] = true
}

// handedByGossip counts, for relay status, the team messages gossip wrote to one of this device's
// relays (meshTracker.sent).
func (n *Node) handedByGossip(p peer.ID, topic string, messages int) {
	rc := n.relayClient()
	if rc == nil {
		return
	}
	v, ok := n.topicNames.Load(topic)
	if !ok {
		return
	}
	t := v.(*team)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rs := rc.relays[p]
	if rs == nil {
		return
	}
	if rs.held == nil {
		rs.held, rs.reconciled = make(map[envelope.Topic]uint64), make(map[envelope.Topic]bool)
	}
	rs.held[t.topic] += uint64(messages)
}

// RelayInfo describes one of this device's relays (Node.Relays).
type RelayInfo struct {
	PeerID peer.ID
	Addrs  []ma.Multiaddr
	// From says how the node knows it: "config" (--relay), "team" (a team's relay op) or "remembered".
	From      string
	Connected bool
	// Enrolled and Refused name the teams (by id) enrolled there on the current connection, and those
	// refused with the relay's reason.
	Enrolled []crdt.TeamID
	Refused  map[crdt.TeamID]string
	// LastContact is when the relay was last connected or disconnected, LastSync when a reconciliation
	// with it last completed (zero: never, since this node started); LastError the last failure.
	LastContact, LastSync time.Time
	LastError             string
	// Waiting is, for each team enrolled, refused or reconciled there, how many envelopes this device
	// stored for the team since its last completed reconciliation with the relay (since the node
	// started, if none, as Reconciled says) and did not gossip to it: what may not have reached the
	// relay yet. It is an estimate (a gossip copy is taken as received); the next reconciliation
	// settles it.
	Waiting map[crdt.TeamID]uint64
	// Reconciled names the teams reconciled with the relay since the node started.
	Reconciled []crdt.TeamID
}

// Relays returns this device's relays, sorted by peer id.
func (n *Node) Relays() []RelayInfo {
	rc := n.relayClient()
	if rc == nil {
		return nil
	}
	n.mu.Lock()
	byTopic := maps.Clone(n.byTopic)
	n.mu.Unlock()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]RelayInfo, 0, len(rc.relays))
	for id, rs := range rc.relays {
		ri := RelayInfo{PeerID: id, Addrs: slices.Clone(rs.ai.Addrs), From: rs.from, Connected: rs.connected,
			LastContact: rs.lastContact, LastSync: rs.lastSync, LastError: rs.lastErr, Refused: map[crdt.TeamID]string{},
			Waiting: map[crdt.TeamID]uint64{}}
		waiting := func(topic envelope.Topic) {
			t := byTopic[topic]
			if t == nil {
				return
			}
			if rs.reconciled[topic] && !slices.Contains(ri.Reconciled, t.id) {
				ri.Reconciled = append(ri.Reconciled, t.id)
			}
			stored := t.stored.Load()
			ri.Waiting[t.id] = stored - min(rs.held[topic], stored)
		}
		for topic := range rs.enrolled {
			waiting(topic)
		}
		for topic := range rs.refused {
			waiting(topic)
		}
		for topic := range rs.held {
			waiting(topic)
		}
		slices.SortFunc(ri.Reconciled, func(a, b crdt.TeamID) int { return bytes.Compare(a[:], b[:]) })
		for topic := range rs.enrolled {
			if t := byTopic[topic]; t != nil {
				ri.Enrolled = append(ri.Enrolled, t.id)
			}
		}
		slices.SortFunc(ri.Enrolled, func(a, b crdt.TeamID) int { return bytes.Compare(a[:], b[:]) })
		for topic, why := range rs.refused {
			if t := byTopic[topic]; t != nil {
				ri.Refused[t.id] = why
			}
		}
		out = append(out, ri)
	}
	slices.SortFunc(out, func(a, b RelayInfo) int { return strings.Compare(string(a.PeerID), string(b.PeerID)) })
	return out
}

// ErrNoRelay is returned by ForgetRelay for a relay this device does not use.
var ErrNoRelay = errors.New("node: no such relay")

// ForgetRelay stops using a relay (its peer id, or a unique prefix of at least 6 characters of it),
// deletes it from the store, and marks it forgotten so a team's relay op does not bring it back. A
// --relay flag naming it does.
func (n *Node) ForgetRelay(ref string) (peer.ID, error) {
	rc := n.relayClient()
	if rc == nil {
		return "", ErrNoRelay
	}
	ref = strings.TrimSpace(ref)
	rc.mu.Lock()
	var found []*relayState
	for id, rs := range rc.relays {
		if s := id.String(); s == ref || (len(ref) >= 6 && strings.HasPrefix(s, ref)) {
			found = append(found, rs)
		}
	}
	if len(found) != 1 {
		rc.mu.Unlock()
		if len(found) > 1 {
			return "", fmt.Errorf("%w: %q names %d relays; give more of the peer id", ErrNoRelay, ref, len(found))
		}
		return "", fmt.Errorf("%w: %q (relay list shows this device's relays)", ErrNoRelay, ref)
	}
	rs := found[0]
	id := rs.ai.ID
	delete(rc.relays, id)
	rc.mu.Unlock()
	rs.cancel()
	if err := n.st.PutPeer(relayForgottenPrefix+id.String(), []byte{1}); err != nil {
		return id, err
	}
	for _, k := range []string{relayPeerKeyPrefix + id.String(), id.String()} {
		if err := n.st.DeletePeer(k); err != nil {
			return id, err
		}
	}
	n.host.ConnManager().Unprotect(id, relayProtectTag)
	_ = n.host.Network().ClosePeer(id)
	n.log.Info("relay forgotten", "relay", id.ShortString())
	return id, nil
}
