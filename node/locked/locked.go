// Package locked runs a device's network presence while it is locked: the store is closed and no
// team key is in memory, so it can open, judge or show nothing. It keeps the device reachable for
// two things only:
//
//   - envelopes gossiped on its teams' topics by their members and relays are kept sealed in a spool
//     file (Spool: each record sealed again to a public key whose private half is in the locked
//     store) and given to the node at unlock, which judges them then. Nothing is passed on: a device
//     that cannot judge an envelope does not forward it.
//   - remote wipe orders (node/wipeproto): it asks every peer it connects to for orders naming it, and
//     acts on one that passes wipeorder's Check against the admins it knew when it locked
//     (Config.OnWipe); it answers other devices' fetches with the orders it carries.
//
// What it holds in memory: the device's Ed25519 key (libp2p needs it to prove the peer id), the
// spool's public key, and public facts of its teams (node.Sealed: topic names, member and admin
// device ids, peers to dial). Reconciliation does not run while locked (it needs the store): what
// gossip did not bring arrives by the reconciliation after unlock. There is no mDNS discovery while
// locked; it dials the peers it knew.
package locked

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Config configures a locked device.
type Config struct {
	// Key is the device's Ed25519 private key (the libp2p identity). Required.
	Key ed25519.PrivateKey
	// ListenAddrs are the multiaddrs to listen on (the node's, so peers find the same ports).
	ListenAddrs []string
	// State is what the device kept of its node when it locked. Required.
	State node.Sealed
	// Spool receives the envelopes. Required.
	Spool *Spool
	// OnWipe is called once, when a peer first hands over a wipe order naming this device that passes
	// Check.
	OnWipe func(*wipeorder.Order)
	// RedialInterval is how often peers not connected are dialled. Default 30 s.
	RedialInterval time.Duration
	// WipeAsk is how often each connected peer is asked for a wipe order naming this device, beside
	// asking on every new connection. Default node.DefaultWipeAsk.
	WipeAsk time.Duration
	Logger  *slog.Logger
	Now     func() time.Time
}

// Device is a running locked device. Close stops it.
type Device struct {
	cfg    Config
	log    *slog.Logger
	host   host.Host
	ps     *pubsub.PubSub
	wipes  *wipeproto.Set
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	subs   []*pubsub.Subscription
	topics []*pubsub.Topic
	wiped  wipeproto.Once
	rounds wipeproto.Rounds
}

// Start starts a locked device.
func Start(cfg Config) (*Device, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize || cfg.Spool == nil {
		return nil, errors.New("locked: Config.Key and Config.Spool are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RedialInterval <= 0 {
		cfg.RedialInterval = 30 * time.Second
	}
	if cfg.WipeAsk <= 0 {
		cfg.WipeAsk = node.DefaultWipeAsk
	}
	priv, err := lcrypto.UnmarshalEd25519PrivateKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("locked: identity key: %w", err)
	}
	opts := append([]libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(meshconf.Listenable(cfg.ListenAddrs)...),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DefaultResourceManager,
		libp2p.DisableMetrics(),
	}, meshconf.Transports()...)
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("locked: start libp2p host: %w", err)
	}
	d := &Device{cfg: cfg, log: cfg.Logger.With("device", cfg.State.Device, "locked", true), host: h,
		wipes: wipeproto.NewSet(256)}
	for _, o := range cfg.State.Orders {
		d.wipes.Add(o)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if err := d.start(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) start() error {
	ps, err := pubsub.NewGossipSub(d.ctx, d.host,
		append(meshconf.GossipOptions(meshconf.GossipMsgID, envelope.MaxSize+4096, func(peer.ID) time.Duration { return 0 }),
			pubsub.WithPeerFilter(d.peerFilter))...)
	if err != nil {
		return fmt.Errorf("locked: start gossipsub: %w", err)
	}
	d.ps = ps
	for _, name := range d.cfg.State.Topics {
		if err := ps.RegisterTopicValidator(name, d.validator(name)); err != nil {
			return fmt.Errorf("locked: topic validator: %w", err)
		}
		top, err := ps.Join(name)
		if err != nil {
			return fmt.Errorf("locked: join topic: %w", err)
		}
		d.topics = append(d.topics, top)
		sub, err := top.Subscribe()
		if err != nil {
			return fmt.Errorf("locked: subscribe: %w", err)
		}
		d.subs = append(d.subs, sub)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for {
				if _, err := sub.Next(d.ctx); err != nil {
					return
				}
			}
		}()
	}
	srv := &wipeproto.Server{Orders: d.wipes.For, Now: d.cfg.Now}
	d.host.SetStreamHandler(wipeproto.Protocol, srv.Handle)
	d.host.SetStreamHandler(recon.Protocol, d.handleGive)
	d.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			p := c.RemotePeer()
			d.wg.Add(1)
			go func() { defer d.wg.Done(); d.fetch(p) }()
		},
	})
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.redialLoop() }()
	return nil
}

// Host returns the libp2p host.
func (d *Device) Host() host.Host { return d.host }

// peerFilter takes only the teams' member devices and the device's relays as gossip peers.
func (d *Device) peerFilter(p peer.ID, _ string) bool {
	if d.cfg.State.Relays[p] {
		return true
	}
	dev, err := relayproto.DeviceOf(p)
	return err == nil && d.cfg.State.Members[dev]
}

// validator spools what a member or relay gossips and passes nothing on.
func (d *Device) validator(topic string) pubsub.ValidatorEx {
	return func(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if len(m.Data) > envelope.MaxSize || !d.peerFilter(from, topic) {
			return pubsub.ValidationIgnore
		}
		if _, err := envelope.Unmarshal(envelope.Topic{}, m.Data); err != nil { // the layout only: the topic is the spool record's
			return pubsub.ValidationReject
		}
		if err := d.cfg.Spool.Add(Record{Topic: topic, From: from, Raw: m.Data}); err != nil {
			d.log.Warn("keeping a sealed envelope failed", "err", err)
		}
		return pubsub.ValidationIgnore
	}
}

// maxGive bounds the envelopes of one give stream (the node's limit).
const maxGive = 16

// handleGive takes the envelopes a member hands over first-hand (recon.ModeGive: the node's way to
// reach members outside its gossip mesh) and spools them; reconciliation and membership exchanges are
// refused while locked.
func (d *Device) handleGive(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	p := s.Conn().RemotePeer()
	br := bufio.NewReader(s)
	hb, err := framing.Read(br, recon.HelloSize)
	if err != nil {
		s.Reset()
		return
	}
	h, err := recon.ParseHello(hb)
	name, ok := d.cfg.State.Topics[envelope.Topic(h.Topic)]
	if err != nil || !ok || h.Mode != recon.ModeGive || !d.peerFilter(p, name) {
		s.Reset()
		return
	}
	if framing.Write(s, []byte{byte(recon.AnswerTake)}) != nil {
		s.Reset()
		return
	}
	for i := 0; ; i++ {
		b, err := framing.Read(br, envelope.MaxSize)
		if err != nil || (len(b) > 0 && i == maxGive) {
			s.Reset()
			return
		}
		if len(b) == 0 {
			break
		}
		if _, err := envelope.Unmarshal(envelope.Topic(h.Topic), b); err != nil {
			s.Reset()
			return
		}
		if err := d.cfg.Spool.Add(Record{Topic: name, From: p, Raw: b}); err != nil {
			d.log.Warn("keeping a sealed envelope failed", "err", err)
		}
	}
	_ = s.CloseWrite()
}

// fetch asks p for wipe orders naming this device, and acts on the first that passes Check.
func (d *Device) fetch(p peer.ID) {
	ctx, cancel := context.WithTimeout(d.ctx, wipeproto.Timeout)
	defer cancel()
	o, err := wipeproto.Ask(ctx, d.host, p, d.cfg.State.Device, d.isAdmin, d.cfg.Now(), func(err error) {
		d.log.Warn("wipe order refused", "peer", p.ShortString(), "err", err)
	})
	if err != nil {
		d.log.Debug("asking for wipe orders failed", "peer", p.ShortString(), "err", err)
	}
	d.actOnWipe(o)
}

// askAll asks every connected peer for wipe orders naming this device (wipeproto.Rounds).
func (d *Device) askAll() {
	d.rounds.Run(d.host.Network().Peers(), func(f func()) {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); f() }()
	}, d.fetch)
}

func (d *Device) isAdmin(dev identity.DeviceID) bool { return d.cfg.State.Admins[dev] }

// actOnWipe hands an order that passed its Check to Config.OnWipe, once.
func (d *Device) actOnWipe(o *wipeorder.Order) {
	if o == nil {
		return
	}
	d.log.Warn("wipe order accepted: wiping this device", "signer", o.Signer)
	d.wiped.Act(o, d.cfg.OnWipe)
}

// redialLoop dials the peers it knew that are not connected, each RedialInterval, and asks every
// connected peer for wipe orders each WipeAsk: an order that reaches a peer after the connection began
// (a relay it stays connected to is handed one) would otherwise wait for the next connection.
func (d *Device) redialLoop() {
	redial := time.NewTicker(d.cfg.RedialInterval)
	defer redial.Stop()
	ask := time.NewTicker(d.cfg.WipeAsk)
	defer ask.Stop()
	for {
		d.redial()
		select {
		case <-d.ctx.Done():
			return
		case <-redial.C:
		case <-ask.C:
			d.askAll()
		}
	}
}

// redial dials the peers not connected, all at once, and waits for the dials. The swarm's dial
// backoff (5 s after a failed dial, growing to 5 minutes) is cleared first: RedialInterval is the pace
// of this loop, and a device that failed to reach its relay while the relay restarted should not wait
// minutes to reach it again.
func (d *Device) redial() {
	var wg sync.WaitGroup
	for _, ai := range d.cfg.State.Dial {
		if d.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		if sw, ok := d.host.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
			sw.Backoff().Clear(ai.ID)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
			defer cancel()
			if err := d.host.Connect(ctx, ai); err != nil {
				d.log.Debug("dial failed", "peer", ai.ID.ShortString(), "err", err)
			}
		}()
	}
	wg.Wait()
}

// Close stops the device and waits for its goroutines. Idempotent.
func (d *Device) Close() error {
	var err error
	d.once.Do(func() {
		d.cancel()
		for _, s := range d.subs {
			s.Cancel()
		}
		for _, t := range d.topics {
			t.Close()
		}
		err = d.host.Close()
		d.wg.Wait()
		err = errors.Join(err, d.cfg.Spool.Close())
	})
	return err
}

// InTopics reports whether p is subscribed to one of the device's team topics, as its gossip sees it.
func (d *Device) InTopics(p peer.ID) bool {
	for _, t := range d.topics {
		for _, q := range t.ListPeers() {
			if q == p {
				return true
			}
		}
	}
	return false
}
