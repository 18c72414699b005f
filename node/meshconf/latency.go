package meshconf

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// Latency probing: what makes the gossip mesh latency-aware.
//
// Every host measures the round-trip time to each peer it connects to with libp2p ping (PingsPerProbe
// pings of 32 bytes, back to back, on a fresh stream, the smallest taken), once when the connection
// comes up and again every ProbeEvery while it stays up. The GossipSub peer score ranks mesh peers by
// it (LatencyScore): pruning keeps the fastest links and opportunistic grafting trades a slow mesh
// link for a faster one, so the mesh drifts towards the links shortest paths use. docs/gossip.md has
// the measurements.
//
// A probe costs about 300 bytes on the wire (stream set-up, three pings and their echoes); at one
// probe per peer per ProbeEvery, a phone with six peers spends about 1 KiB an hour on it.
const (
	PingsPerProbe = 3
	ProbeEvery    = 30 * time.Minute
	probeTimeout  = 10 * time.Second
)

// Prober measures round-trip times to connected peers (see above). Its zero value is not usable:
// use StartProber.
type Prober struct {
	h     host.Host
	every time.Duration
	quiet func() bool

	wg   sync.WaitGroup // the loop and running probes
	mu   sync.Mutex
	rtt  map[peer.ID]time.Duration // smallest round trip of the last probe
	busy map[peer.ID]bool          // a probe is running
}

// StartProber starts probing every peer the host connects to from now on (and the ones it is
// connected to already), re-probing each every `every` (ProbeEvery if 0) while connected, until ctx
// ends. While quiet (if not nil) returns true, the periodic re-probes are skipped (a device in
// low-data mode); new connections are still probed once. The host must answer pings (libp2p.Ping,
// go-libp2p's default, or ping.NewPingService).
func StartProber(ctx context.Context, h host.Host, every time.Duration, quiet func() bool) (*Prober, error) {
	if every <= 0 {
		every = ProbeEvery
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return nil, err
	}
	p := &Prober{h: h, every: every, quiet: quiet, rtt: make(map[peer.ID]time.Duration), busy: make(map[peer.ID]bool)}
	p.wg.Add(1)
	go p.run(ctx, sub)
	for _, id := range h.Network().Peers() {
		p.probe(ctx, id)
	}
	return p, nil
}

// Wait returns when the prober has stopped, after ctx ended.
func (p *Prober) Wait() { p.wg.Wait() }

func (p *Prober) run(ctx context.Context, sub event.Subscription) {
	defer p.wg.Done()
	defer sub.Close()
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.Out():
			if !ok {
				return
			}
			e := ev.(event.EvtPeerConnectednessChanged)
			switch e.Connectedness {
			case network.Connected:
				p.probe(ctx, e.Peer)
			case network.NotConnected:
				p.mu.Lock()
				delete(p.rtt, e.Peer)
				p.mu.Unlock()
			}
		case <-tick.C:
			if p.quiet != nil && p.quiet() {
				continue
			}
			for _, id := range p.h.Network().Peers() {
				p.probe(ctx, id)
			}
		}
	}
}

// probe pings id in the background unless a probe of it is running.
func (p *Prober) probe(ctx context.Context, id peer.ID) {
	p.mu.Lock()
	if p.busy[id] {
		p.mu.Unlock()
		return
	}
	p.busy[id] = true
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		best := time.Duration(0)
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		n := 0
		for r := range ping.Ping(pctx, p.h, id) {
			if r.Error != nil {
				break
			}
			if best == 0 || r.RTT < best {
				best = r.RTT
			}
			if n++; n == PingsPerProbe {
				break
			}
		}
		cancel()
		p.mu.Lock()
		delete(p.busy, id)
		if best > 0 && p.h.Network().Connectedness(id) == network.Connected {
			p.rtt[id] = best
		}
		p.mu.Unlock()
	}()
}

// RTT returns the round-trip time measured to id, or 0 if none is known.
func (p *Prober) RTT(id peer.ID) time.Duration {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rtt[id]
}
