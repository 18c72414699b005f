package relay

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/node/relay/relayclient"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Relays that reach each other. A district's clinics each run a relay, and some days a backhaul joins
// them. Their operators link them: each lists the other with --peer-relay (Config.PeerRelays), by
// address and peer id. A relay then keeps a connection to each linked relay it can reach and enrols
// there as a device does, proving the relay key of each topic it carries: the other relay admits it
// for the topics both carry and no others (it cannot prove a key it does not hold), so neither learns
// what else the other carries. A linked relay is exempt from the topic's roster (it is not a member
// device) and from the per-peer write rate (a backlog between clinics is large), and nothing else. Each
// relay hands the other the roster it holds for each topic (the other takes it only by the same
// chain of admin signatures a device's roster needs), so a removal travels between clinics too.
// Then it reconciles each common topic at once and every SyncInterval, and gossip flows between them
// as between any two enrolled peers.

// linkRetry is how long a relay waits before dialling an unreachable linked relay again.
const linkRetry = 30 * time.Second

// isPeerRelay reports whether p is a relay this one is linked with.
func (r *Relay) isPeerRelay(p peer.ID) bool {
	for _, ai := range r.cfg.PeerRelays {
		if ai.ID == p {
			return true
		}
	}
	return false
}

// linkedFor reports whether this relay enrolled topic t at the linked relay p.
func (r *Relay) linkedFor(p peer.ID, t envelope.Topic) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.linked[p][t]
}

// kickLinks makes every link enrol and reconcile now (a topic was admitted).
func (r *Relay) kickLinks() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.linkKick {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

// linkLoop keeps the link with one relay until the relay closes.
func (r *Relay) linkLoop(ai peer.AddrInfo, kick chan struct{}) {
	sub, err := r.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		r.log.Error("relay link: cannot watch connections", "err", err)
		return
	}
	defer sub.Close()
	r.host.ConnManager().Protect(ai.ID, "fieldmesh-relay-link")
	tick := time.NewTicker(r.cfg.SyncInterval)
	defer tick.Stop()
	warned := false
	for {
		if r.host.Network().Connectedness(ai.ID) != network.Connected {
			ctx, cancel := context.WithTimeout(r.ctx, relayproto.StreamTimeout)
			err := r.host.Connect(ctx, ai)
			cancel()
			if err != nil {
				if r.ctx.Err() != nil {
					return
				}
				if !warned {
					r.log.Warn("linked relay does not answer; retrying", "relay", ai.ID.ShortString(), "every", linkRetry.String())
					warned = true
				}
				t := time.NewTimer(linkRetry)
				select {
				case <-r.ctx.Done():
					t.Stop()
					return
				case <-t.C:
				case <-kick:
					t.Stop()
				}
				continue
			}
			warned = false
			r.log.Info("connected to linked relay", "relay", ai.ID.ShortString())
		}
		r.link(ai.ID)
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		case <-kick:
		case e := <-sub.Out():
			if ev, ok := e.(event.EvtPeerConnectednessChanged); ok && ev.Peer == ai.ID && ev.Connectedness != network.Connected {
				r.mu.Lock()
				delete(r.linked, ai.ID)
				r.mu.Unlock()
				r.log.Info("disconnected from linked relay", "relay", ai.ID.ShortString())
			}
		}
	}
}

// link enrols every carried topic at the linked relay p (with the roster held for it) and reconciles
// the topics p admitted.
func (r *Relay) link(p peer.ID) {
	keys := make(map[envelope.Topic]relayproto.Key)
	rosters := make(map[envelope.Topic][]byte)
	r.mu.Lock()
	for t, ct := range r.carried {
		keys[t] = ct.key
		if ct.roster != nil {
			rosters[t] = ct.roster.Marshal()
		}
	}
	r.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	res, err := relayclient.Enrol(r.ctx, r.host, p, keys, rosters)
	if err != nil {
		if r.ctx.Err() == nil {
			r.log.Debug("enrolling at linked relay failed", "relay", p.ShortString(), "err", err)
		}
		return
	}
	common := make(map[envelope.Topic]bool)
	for _, re := range res {
		if re.OK() {
			common[re.Topic] = true
		}
	}
	r.mu.Lock()
	before := len(r.linked[p])
	r.linked[p] = common
	r.mu.Unlock()
	if len(common) != before {
		r.log.Info("linked relay carries topics in common", "relay", p.ShortString(), "topics", len(common))
	}
	for t := range common {
		r.syncWith(p, t)
	}
}
