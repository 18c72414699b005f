package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/historyproto"
	"github.com/fieldmesh/fieldmesh/node/lowdata"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/node/proximity"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/node/usage"
	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
	"github.com/fieldmesh/fieldmesh/sync/safetext"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Protocol ids spoken by a node.
const (
	// SyncProtocol is the sync stream (recon.Protocol): reconciliation, or a membership exchange.
	SyncProtocol = recon.Protocol
	mdnsService  = "fieldmesh"
)

// DefaultWipeAsk is Config.WipeAsk's default.
const DefaultWipeAsk = 10 * time.Minute

// Secret names in the store's keys keyspace.
const (
	secretDevice = "device"
	secretName   = "name"
)

// Config configures a Node. The zero value of every optional field works.
type Config struct {
	// Store is the device's opened store. Required; the caller owns it and closes it after the node.
	Store *storage.Store
	// ListenAddrs are multiaddrs to listen on. Default: TCP and QUIC on every interface, random ports.
	ListenAddrs []string
	// Bootstrap are peers (multiaddrs ending in /p2p/ID) to dial at start and whenever disconnected.
	Bootstrap []string
	// NoMDNS turns local-network discovery off. Default: on.
	NoMDNS bool
	// Relays are clinic relays (multiaddrs ending in /p2p/ID) to enrol with, keep a circuit reservation
	// on and reconcile through (relayclient.go). Relays used before are remembered and used again.
	Relays []string
	// Host, if set, is used instead of building a libp2p host (tests use mocknet hosts). Its identity must
	// be the device key. The caller owns it; Close does not close it.
	Host host.Host
	// SyncInterval is how often a node reconciles with each connected member. Default 2 minutes.
	SyncInterval time.Duration
	// RedialInterval is how often known peers that are not connected are dialled. Default 30 seconds.
	RedialInterval time.Duration
	// WipeAsk is how often the node asks each connected peer for a remote wipe order naming it, beside
	// asking on every new connection (wipe.go). Default 10 minutes: one small stream a peer.
	WipeAsk time.Duration
	// AckInterval is how often the node publishes its batched received/read acknowledgements.
	// Default 30 seconds; negative turns automatic acknowledgements off (FlushAcks still works).
	AckInterval time.Duration
	// Logger receives the node's logs. Nil discards them. Logs name devices and teams by short ids only.
	Logger *slog.Logger
	// Now is the wall clock. Nil is time.Now.
	Now func() time.Time
	// RotateEvery is how old the current key epoch may get before an admin device re-keys the team.
	// Default 7 days.
	RotateEvery time.Duration
	// RetainKeys is how long the keys of an epoch are kept after the next epoch started; then they are
	// destroyed (the ops they opened stay). Default 30 days.
	RetainKeys time.Duration
	// FiledGrace is how long after a message was filed to the health record its body is deleted
	// (device.Config.FiledGrace). Default 24 h.
	FiledGrace time.Duration
	// WarnUnfiled is how old a clinical message due for filing may get before the team's admins
	// are warned (device.Config.WarnUnfiled, Node.Unfiled). Default 30 days.
	WarnUnfiled time.Duration
	// CollectEvery is how often the node makes deletions final (storage.Store.Collect: flush and
	// compact, so no old version of a deleted key stays in the files), when anything was deleted
	// since the last time (default 1 h: one rewrite of a phone-sized store an hour at most).
	CollectEvery time.Duration
	// EpochCheck is how often the node checks its teams' epochs (re-key, rotation, retention).
	// Default 1 minute.
	EpochCheck time.Duration
	// LowData turns low-data mode on at start; false keeps the mode last set (see SetLowData).
	LowData bool
	// AuditFile is the path of the device's audit trail (package audit; the daemon uses
	// DIR/audit.log), keyed and anchored in Store. Empty keeps no trail.
	AuditFile string
	// Notify receives the alerts the device cores raise (duty hours, on-call rota, escalation, review
	// reminders: package sync/duty): a Notification holds the team's kind, a priority and a reason, never
	// text, names, team names or patient references. It is called without any lock held, from the
	// node's goroutines; it must not block for long (CommandNotifier runs its command in the
	// background). Nil: no notifications.
	Notify func(Notification)
	// ReviewEvery is how old a team's last membership review may get before this device, if an admin,
	// is reminded (a Notification with reason review-due). Default 30 days; negative: never.
	ReviewEvery time.Duration
	// OnReview, if set, is called after this device recorded a membership review (Review), with the
	// team, the review op and its time: the audit trail's hook.
	OnReview func(team crdt.TeamID, op crdt.OpID, at time.Time)
	// OnWipe is called (once, on a goroutine of the node) when a peer first hands this device a
	// remote wipe order that passes wipeorder's Check: the caller wipes the store (wipe.go). Nil
	// ignores orders (they are still checked and logged).
	OnWipe func(*wipeorder.Order)
	// AttachmentBudget is how many bytes of attachment chunks this device keeps: past it, the node
	// evicts the chunks of messages filed to the record or read long ago, oldest first, never those
	// of unread messages (attach.Evictable, node/budget.go). Default attach.DefaultBudget (512 MiB);
	// negative: no budget.
	AttachmentBudget int64
	// Proximity, if set, is a short-range radio (node/proximity): the node's host listens and dials
	// over it too, dials the devices it finds, and Close stops it. Needs the node to build its host
	// (no Host). Default: none.
	Proximity *proximity.Adapter
}

// Identity is the device's identity as kept in the store.
type Identity struct {
	Device *identity.Device
	Name   string
}

// ErrNoIdentity is returned by LoadIdentity for a store that was never initialised.
var ErrNoIdentity = errors.New("node: no device identity in the store (run init)")

// Init creates the device identity in a new store: a fresh key pair and the member's display name.
func Init(st *storage.Store, name string) (*Identity, error) {
	name = strings.TrimSpace(name)
	if err := validateName(name); err != nil {
		return nil, err
	}
	if _, err := st.Secret(secretDevice); err == nil {
		return nil, errors.New("node: this store already has a device identity")
	}
	dev, err := identity.Generate(nil)
	if err != nil {
		return nil, fmt.Errorf("node: generate identity: %w", err)
	}
	b, err := dev.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if err := st.PutSecret(secretName, []byte(name)); err != nil {
		return nil, fmt.Errorf("node: store name: %w", err)
	}
	if err := st.PutSecret(secretDevice, b); err != nil {
		return nil, fmt.Errorf("node: store identity: %w", err)
	}
	return &Identity{Device: dev, Name: name}, nil
}

// LoadIdentity reads the device identity from the store.
func LoadIdentity(st *storage.Store) (*Identity, error) {
	b, err := st.Secret(secretDevice)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNoIdentity
	}
	if err != nil {
		return nil, fmt.Errorf("node: load identity: %w", err)
	}
	dev, err := identity.UnmarshalDevice(b)
	if err != nil {
		return nil, fmt.Errorf("node: load identity: %w", err)
	}
	name, err := st.Secret(secretName)
	if err != nil {
		return nil, fmt.Errorf("node: load name: %w", err)
	}
	return &Identity{Device: dev, Name: string(name)}, nil
}

// PeerID returns the libp2p peer id of a device.
func PeerID(d identity.DeviceID) (peer.ID, error) {
	pk, err := lcrypto.UnmarshalEd25519PublicKey(d[:])
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pk)
}

// deviceOf returns the device id behind a peer id (peer ids embed Ed25519 keys).
func deviceOf(p peer.ID) (identity.DeviceID, error) { return relayproto.DeviceOf(p) }

// Node is a running fieldmesh node: a libp2p host, one gossip topic per team, the sync and join
// protocols, and the team logs rebuilt from the encrypted store.
//
// All methods are safe for concurrent use. Close stops it.
type Node struct {
	cfg   Config
	id    *Identity
	st    *storage.Store
	log   *slog.Logger
	now   func() time.Time
	host  host.Host
	ownsH bool
	ps    *pubsub.PubSub
	mdns  interface{ Close() error }

	ctx    context.Context
	cancel context.CancelFunc
	wg     stdsync.WaitGroup

	// mesh follows the gossip mesh of each topic (mesh.go).
	mesh *meshTracker
	// topicNames maps gossip topic names to teams, for the gossip peer filter (which must not wait
	// for n.mu).
	topicNames stdsync.Map // string -> *team

	mu       stdsync.Mutex // guards the fields below
	closed   bool
	teams    map[crdt.TeamID]*team
	byTopic  map[envelope.Topic]*team
	slots    map[string]*syncSlot  // by peer+topic
	lastSync map[string]time.Time  // by peer+topic: when a session last completed
	banned   map[peer.ID]time.Time // misbehaving peers, until when
	// lastContact is when a reconciliation with a peer last completed (lock.go).
	lastContact time.Time

	relays atomic.Pointer[relayClient] // set once by startRelays

	stats      syncStats
	wipes      *wipeproto.Set   // remote wipe orders this node carries (wipe.go)
	wipeRounds wipeproto.Rounds // the periodic asks for orders naming this device (wipe.go)
	wipeOnce   wipeproto.Once   // OnWipe's one call, for the first order accepted
	usage      *usage.Meter     // data accounting (package usage)
	low        *lowdata.Mode    // low-data mode (package lowdata)
	audit      *audit.Log       // the audit trail (auditing.go); nil without Config.AuditFile
	att        attachments      // attachment fetches (attach.go)
	hist       historyState     // history hand-overs to this device (history.go)
}

type syncStats struct {
	sessions, bytesSent, bytesReceived, envelopesReceived, envelopesSent atomic.Int64
}

// New starts a node. It loads the identity and the teams from the store, starts the libp2p host (unless
// one is given), joins each team's gossip topic and starts discovery, sync and redial loops.
func New(cfg Config) (*Node, error) {
	if cfg.Store == nil {
		return nil, errors.New("node: Config.Store is required")
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 2 * time.Minute
	}
	if cfg.RedialInterval == 0 {
		cfg.RedialInterval = 30 * time.Second
	}
	if cfg.AckInterval == 0 {
		cfg.AckInterval = 30 * time.Second
	}
	if cfg.WipeAsk == 0 {
		cfg.WipeAsk = DefaultWipeAsk
	}
	if cfg.RotateEvery == 0 {
		cfg.RotateEvery = 7 * 24 * time.Hour
	}
	if cfg.RetainKeys == 0 {
		cfg.RetainKeys = 30 * 24 * time.Hour
	}
	if cfg.CollectEvery <= 0 {
		cfg.CollectEvery = time.Hour
	}
	if cfg.EpochCheck == 0 {
		cfg.EpochCheck = time.Minute
	}
	if cfg.SyncInterval < 0 || cfg.RedialInterval < 0 || cfg.WipeAsk < 0 || cfg.RotateEvery < 0 || cfg.RetainKeys < 0 || cfg.EpochCheck < 0 {
		return nil, errors.New("node: negative interval")
	}
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	}
	var bootstrap []peer.AddrInfo
	for _, s := range cfg.Bootstrap {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("node: bootstrap address %q: %w", s, err)
		}
		bootstrap = append(bootstrap, *ai)
	}
	for _, s := range cfg.ListenAddrs {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return nil, fmt.Errorf("node: listen address %q: %w", s, err)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	id, err := LoadIdentity(cfg.Store)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		id:       id,
		st:       cfg.Store,
		log:      logger.With("device", id.Device.ID()),
		now:      now,
		teams:    make(map[crdt.TeamID]*team),
		byTopic:  make(map[envelope.Topic]*team),
		slots:    make(map[string]*syncSlot),
		lastSync: make(map[string]time.Time),
		banned:   make(map[peer.ID]time.Time),
		mesh:     newMeshTracker(),
	}
	n.mesh.sent = n.handedByGossip
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.usage = usage.New(cfg.Store, usage.Config{Now: now, Logger: n.log, Topic: n.topicOfName})
	n.low = lowdata.New(cfg.Store, id.Device.ID(), n.log)
	if cfg.AuditFile != "" {
		if n.audit, err = audit.Open(cfg.AuditFile, cfg.Store, audit.Config{Now: now}); err != nil {
			n.cancel()
			return nil, fmt.Errorf("node: %w", err)
		}
		if _, verr := n.audit.Verify(); verr != nil {
			n.log.Error("the audit trail fails verification; no events are recorded until it is looked into (fieldmesh audit verify)", "err", verr)
		}
	}
	n.loadLastContact()
	if err := n.loadWipeOrders(); err != nil {
		n.cancel()
		return nil, err
	}

	if cfg.Host != nil && cfg.Proximity != nil {
		n.cancel()
		return nil, errors.New("node: Config.Proximity needs the node to build its host (no Config.Host)")
	}
	if cfg.Host != nil {
		n.host = cfg.Host
	} else {
		n.host, err = n.newHost()
		if err != nil {
			n.cancel()
			return nil, err
		}
		n.ownsH = true
	}
	if err := n.start(bootstrap); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) newHost() (host.Host, error) {
	priv, err := lcrypto.UnmarshalEd25519PrivateKey(n.id.Device.SigningKey())
	if err != nil {
		return nil, fmt.Errorf("node: identity key: %w", err)
	}
	cm, err := connmgr.NewConnManager(32, 64, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("node: connection manager: %w", err)
	}
	if err := meshconf.CheckListenFree(meshconf.Listenable(n.cfg.ListenAddrs)); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	listen := meshconf.Listenable(n.cfg.ListenAddrs)
	var extra []libp2p.Option
	if px := n.cfg.Proximity; px != nil {
		extra = append(extra, px.Option())
		if a := px.Multiaddr().String(); !slices.Contains(listen, a) {
			listen = append(listen, a)
		}
	}
	opts := append([]libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.DefaultResourceManager,
		libp2p.DisableMetrics(),
		libp2p.EnableHolePunching(),
		libp2p.BandwidthReporter(n.usage),
	}, meshconf.Transports()...)
	h, err := libp2p.New(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("node: start libp2p host: %w", err)
	}
	return h, nil
}

func (n *Node) start(bootstrap []peer.AddrInfo) error {
	// Round trips to peers rank them in the gossip mesh (meshconf.Prober); periodic re-probes pause
	// in low-data mode.
	pr, err := meshconf.StartProber(n.ctx, n.host, 0, n.low.On)
	if err != nil {
		return fmt.Errorf("node: start latency probes: %w", err)
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); pr.Wait() }()
	ps, err := pubsub.NewGossipSub(n.ctx, n.host,
		append(meshconf.GossipOptions(meshconf.GossipMsgID, envelope.MaxSize+4096, pr.RTT),
			pubsub.WithRawTracer(n.usage.Tracer()), pubsub.WithRawTracer(n.mesh), pubsub.WithPeerFilter(n.peerFilter))...)
	if err != nil {
		return fmt.Errorf("node: start gossipsub: %w", err)
	}
	n.ps = ps

	recs, err := n.st.Teams()
	if err != nil {
		return fmt.Errorf("node: load teams: %w", err)
	}
	for _, b := range recs {
		rec, err := unmarshalTeamRecord(b)
		if err != nil {
			return err
		}
		if err := n.addTeam(rec); err != nil {
			return err
		}
	}

	if err := n.startRelays(n.cfg.Relays); err != nil {
		return err
	}
	n.host.SetStreamHandler(SyncProtocol, n.handleSync)
	n.host.SetStreamHandler(JoinProtocol, n.handleJoin)
	n.host.SetStreamHandler(ChunkProtocol, n.handleChunks)
	n.host.SetStreamHandler(wipeproto.Protocol, n.wipeServer().Handle)
	n.host.SetStreamHandler(historyproto.Protocol, n.handleHistory)
	n.host.Network().Notify(&network.NotifyBundle{
		DisconnectedF: func(nw network.Network, c network.Conn) {
			if nw.Connectedness(c.RemotePeer()) != network.Connected {
				n.mesh.drop(c.RemotePeer())
			}
		},
		ConnectedF: func(_ network.Network, c network.Conn) {
			p := c.RemotePeer()
			n.goRun(func() {
				if n.isBanned(p) {
					_ = n.host.Network().ClosePeer(p)
					return
				}
				n.syncPeer(p)
			})
			n.goRun(func() { n.wipeContact(p) })
		},
	})

	if err := n.startLowData(); err != nil {
		return err
	}
	n.goRun(func() { n.every(n.tickEvery(), n.tickAll) })
	n.goRun(func() { n.every(n.cfg.CollectEvery, n.collect) })
	n.goRun(func() { n.every(n.cfg.WipeAsk, n.askAll) })
	n.goRun(func() { n.usage.Run(n.ctx) })
	n.goRun(func() { n.maintainLoop(bootstrap) })
	if !n.cfg.NoMDNS && n.ownsH {
		svc := mdns.NewMdnsService(n.host, mdnsService, mdnsNotifee{n})
		if err := svc.Start(); err != nil {
			n.log.Warn("mdns discovery unavailable", "err", err)
		} else {
			n.mdns = svc
		}
	}
	if px := n.cfg.Proximity; px != nil {
		n.host.Network().Notify(px.Notifiee())
		px.OnFound(mdnsNotifee{n}.HandlePeerFound)
		if err := px.Start(); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}

type mdnsNotifee struct{ n *Node }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.host.ID() {
		return
	}
	m.n.goRun(func() {
		ctx, cancel := context.WithTimeout(m.n.ctx, 10*time.Second)
		defer cancel()
		if err := m.n.host.Connect(ctx, ai); err != nil {
			m.n.log.Debug("mdns peer unreachable", "peer", ai.ID.ShortString(), "err", err)
		}
	})
}

// goRun runs f on a goroutine that Close waits for, and reports whether it started it: after Close
// it does nothing.
func (n *Node) goRun(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// Close stops the node and waits for its goroutines. It does not close the store. Idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	teams := make([]*team, 0, len(n.teams))
	for _, t := range n.teams {
		teams = append(teams, t)
	}
	n.mu.Unlock()

	n.cancel()
	if n.mdns != nil {
		n.mdns.Close()
	}
	if n.cfg.Proximity != nil {
		n.cfg.Proximity.Close()
	}
	for _, t := range teams {
		if t.sub != nil {
			t.sub.Cancel()
		}
		if t.events != nil {
			t.events.Cancel()
		}
		if t.ptop != nil {
			t.ptop.Close()
		}
	}
	var err error
	if n.ownsH {
		err = n.host.Close()
	} else {
		n.host.RemoveStreamHandler(SyncProtocol)
		n.host.RemoveStreamHandler(JoinProtocol)
		n.host.RemoveStreamHandler(ChunkProtocol)
		n.host.RemoveStreamHandler(wipeproto.Protocol)
	}
	n.wg.Wait()
	n.storeLastContact()
	if ferr := n.usage.Flush(); ferr != nil {
		n.log.Warn("storing data usage failed", "err", ferr)
	}
	if n.audit != nil {
		n.audit.Close()
	}
	return err
}

// Host returns the libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Identity returns the device identity.
func (n *Node) Identity() *Identity { return n.id }

// addTeam starts a team: restores its device core from the store and joins its gossip topic.
func (n *Node) addTeam(rec *teamRecord) error { return n.addTeamCore(rec, nil) }

// addTeamCore starts a team with core, whose state is stored (nil: restore it from the store).
func (n *Node) addTeamCore(rec *teamRecord, core *device.Team) error {
	n.mu.Lock()
	if _, ok := n.teams[rec.ID]; ok {
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()
	if core == nil {
		var err error
		if core, err = n.restoreCore(rec); err != nil {
			return err
		}
	}
	t := newTeam(rec, core)
	name := meshconf.TopicName(t.topic)
	// Before joining: the peer filter must know the topic when the first GRAFT arrives, or it refuses
	// it and the peer backs off for a minute.
	n.topicNames.Store(name, t)
	started := false
	defer func() {
		if !started {
			n.topicNames.Delete(name)
		}
	}()
	if err := n.ps.RegisterTopicValidator(name, n.validator(t)); err != nil {
		return fmt.Errorf("node: topic validator: %w", err)
	}
	ptop, err := n.ps.Join(name)
	if err != nil {
		return fmt.Errorf("node: join topic: %w", err)
	}
	if err := ptop.SetScoreParams(meshconf.GossipTopicScore()); err != nil {
		ptop.Close()
		return fmt.Errorf("node: topic scores: %w", err)
	}
	sub, err := ptop.Subscribe()
	if err != nil {
		ptop.Close()
		return fmt.Errorf("node: subscribe: %w", err)
	}
	evts, err := ptop.EventHandler()
	if err != nil {
		sub.Cancel()
		ptop.Close()
		return fmt.Errorf("node: topic events: %w", err)
	}
	t.ptop, t.sub, t.events = ptop, sub, evts
	started = true

	n.mu.Lock()
	n.teams[t.id] = t
	n.byTopic[t.topic] = t
	n.mu.Unlock()
	n.goRun(func() { n.readLoop(t) })
	n.goRun(func() { n.peerLoop(t) })
	n.relaysChanged()
	return nil
}

// peerLoop reconciles with each peer as it joins the team's gossip topic. Gossip reaches only the
// peers in the topic now; what was published between the last catch-up and this moment is repaired here.
func (n *Node) peerLoop(t *team) {
	for {
		ev, err := t.events.NextPeerEvent(n.ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin {
			p := ev.Peer
			// A relay of this node joining the topic has just been admitted for the team (it joins
			// a topic's gossip when it starts carrying it): enrol there now, not at the next retry.
			n.relayJoined(p, t)
			n.goRun(func() { n.autoSync(p, t) })
		}
	}
}

// readLoop drains the team's subscription: the validator already gave every envelope to the core.
func (n *Node) readLoop(t *team) {
	for {
		if _, err := t.sub.Next(n.ctx); err != nil {
			return
		}
	}
}

// teamByRef finds a team by id (hex, or a unique prefix of at least 8 characters) or by name.
func (n *Node) teamByRef(ref string) (*team, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, errors.New("node: no team given")
	}
	all := n.teamList()
	var found []*team
	for _, t := range all {
		if id := t.id.String(); id == strings.ToLower(ref) || (len(ref) >= 8 && strings.HasPrefix(id, strings.ToLower(ref))) {
			return t, nil
		}
	}
	for _, t := range all {
		if t.snapshot().Name == ref {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: %q", ErrUnknownTeam, ref)
	case 1:
		return found[0], nil
	default:
		return nil, fmt.Errorf("node: %d teams are called %q: use the team id", len(found), ref)
	}
}

// ErrDuplicateTeam is returned by CreateTeam for a name one of the device's teams has already, in any
// case.
var ErrDuplicateTeam = errors.New("node: this device already has a team called that")

// ErrUnknownTeam is returned when a team name or id matches no team of this device.
var ErrUnknownTeam = errors.New("node: unknown team")

// ErrRemoved is returned for what a device removed from a team can no longer do there.
var ErrRemoved = errors.New("node: this device was removed from the team")

// TeamInfo summarises a team for listings.
type TeamInfo struct {
	ID       crdt.TeamID
	Name     string
	Kind     crdt.TeamKind
	Members  int
	Messages int
	Admin    bool
	// Removed says this device was removed from the team: it shows what it held, and sends nothing.
	Removed bool
	// LookAlike says another team of this device has a name that looks like this one's
	// (safetext.LookAlike): tell them apart by id.
	LookAlike bool
}

func (n *Node) info(t *team) TeamInfo {
	s := t.snapshot()
	ti := TeamInfo{ID: t.id, Name: s.Name, Kind: s.Kind, Members: len(s.Persons), Messages: len(s.Messages)}
	if p, ok := s.PersonOf(n.id.Device.ID()); ok {
		ti.Admin = p.Admin
	}
	ti.Removed = t.removed()
	return ti
}

// Teams lists the device's teams, sorted by name.
func (n *Node) Teams() []TeamInfo {
	all := n.teamList()
	out := make([]TeamInfo, 0, len(all))
	for _, t := range all {
		out = append(out, n.info(t))
	}
	for i := range out {
		for j := range out {
			if i != j && safetext.LookAlike(out[i].Name, out[j].Name) {
				out[i].LookAlike = true
			}
		}
	}
	sortTeams(out)
	return out
}

// Team returns the summary of one team, found by name or id.
func (n *Node) Team(ref string) (TeamInfo, error) {
	t, err := n.teamByRef(ref)
	if err != nil {
		return TeamInfo{}, err
	}
	return n.info(t), nil
}

// CreateTeam creates a team with this device's member as its first admin and the team's first epoch key.
func (n *Node) CreateTeam(name string, kind crdt.TeamKind) (TeamInfo, error) {
	name = strings.TrimSpace(name)
	if err := validateName(name); err != nil {
		return TeamInfo{}, err
	}
	if kind != crdt.Clinical && kind != crdt.Social {
		return TeamInfo{}, fmt.Errorf("node: unknown team kind %d", kind)
	}
	// One device keeps its team names apart, whatever the case or script: "Ward 3", "ward 3" and
	// "Ward З" (a Cyrillic Ze) would be told apart by no one reading a list. (A team joined may look
	// like another; TeamInfo.LookAlike says so, and its id names it.)
	for _, t := range n.teamList() {
		if safetext.LookAlike(t.snapshot().Name, name) {
			return TeamInfo{}, fmt.Errorf("%w: %q (its id %s)", ErrDuplicateTeam, t.snapshot().Name, t.id.Short())
		}
	}
	rec := &teamRecord{}
	if _, err := rand.Read(rec.ID[:]); err != nil {
		return TeamInfo{}, err
	}
	core, eff, err := device.Create(n.coreConfig(rec), n.now(), name, kind, n.id.Name)
	if err != nil {
		return TeamInfo{}, fmt.Errorf("node: %w", err)
	}
	rec.Genesis = core.Genesis()
	t := &team{id: rec.ID, topic: envelope.TopicOf(rec.ID)}
	if err := n.commitWrite(t, eff.Write); err != nil {
		return TeamInfo{}, fmt.Errorf("node: store team: %w", err)
	}
	if err := n.st.PutTeam(rec.ID, rec.marshal()); err != nil {
		return TeamInfo{}, fmt.Errorf("node: store team: %w", err)
	}
	if err := n.addTeamCore(rec, core); err != nil {
		return TeamInfo{}, err
	}
	n.log.Info("team created", "team", rec.ID)
	return n.info(n.teamByID(rec.ID)), nil
}

func (n *Node) teamByID(id crdt.TeamID) *team {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.teams[id]
}

// Watch returns a channel that receives a (coalesced) signal each time the team's log grows, and a
// function that stops the watch. Callers re-read Messages on each signal.
func (n *Node) Watch(teamRef string) (<-chan struct{}, func(), error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, nil, err
	}
	ch, cancel := t.watch()
	return ch, cancel, nil
}

// Status describes the node.
type Status struct {
	Device identity.DeviceID
	Name   string
	PeerID peer.ID
	Addrs  []ma.Multiaddr
	Teams  int
	Peers  int
	Sync   SyncStats
}

// SyncStats counts catch-up traffic since the node started.
type SyncStats struct {
	Sessions          int64 `json:"sessions"`
	BytesSent         int64 `json:"bytes_sent"`
	BytesReceived     int64 `json:"bytes_received"`
	EnvelopesReceived int64 `json:"envelopes_received"`
	EnvelopesSent     int64 `json:"envelopes_sent"`
}

// Status returns the node's status.
func (n *Node) Status() Status {
	n.mu.Lock()
	nt := len(n.teams)
	n.mu.Unlock()
	return Status{
		Device: n.id.Device.ID(),
		Name:   n.id.Name,
		PeerID: n.host.ID(),
		Addrs:  n.host.Addrs(),
		Teams:  nt,
		Peers:  len(n.host.Network().Peers()),
		Sync: SyncStats{
			Sessions:          n.stats.sessions.Load(),
			BytesSent:         n.stats.bytesSent.Load(),
			BytesReceived:     n.stats.bytesReceived.Load(),
			EnvelopesReceived: n.stats.envelopesReceived.Load(),
			EnvelopesSent:     n.stats.envelopesSent.Load(),
		},
	}
}

// PeerInfo describes a connected peer.
type PeerInfo struct {
	ID     peer.ID
	Device identity.DeviceID
	Addrs  []ma.Multiaddr
	Relay  bool // one of this device's clinic relays, not a device
}

// Peers lists connected peers.
func (n *Node) Peers() []PeerInfo {
	var out []PeerInfo
	for _, p := range n.host.Network().Peers() {
		pi := PeerInfo{ID: p, Relay: n.isRelay(p)}
		pi.Device, _ = deviceOf(p)
		for _, c := range n.host.Network().ConnsToPeer(p) {
			pi.Addrs = append(pi.Addrs, c.RemoteMultiaddr())
		}
		out = append(out, pi)
	}
	sortPeers(out)
	return out
}
