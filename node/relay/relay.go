package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// Protocol ids the relay speaks.
const (
	// SyncProtocol is the node's sync stream (recon.Protocol): a hello, then range-based
	// reconciliation. A relay only reconciles; it answers a membership exchange by resetting the stream.
	SyncProtocol = recon.Protocol
)

// Defaults.
const (
	DefaultRetention    = 30 * 24 * time.Hour
	DefaultQuota        = 1 << 30
	DefaultSyncInterval = 2 * time.Minute
	// DefaultMaxAhead is how far ahead of the relay's clock an envelope's time may be. It is
	// crdt.MaxDrift: one peer moves a device's clock at most that far past the device's own reference,
	// so envelopes of devices that follow the team's clock are never further ahead than that plus the
	// relay's own error. An envelope from a phone whose clock is further ahead is refused until the
	// relay's clock reaches it, and taken then by the next reconciliation: delayed, not lost.
	DefaultMaxAhead = crdt.MaxDrift
	// DefaultPeerRate and DefaultPeerBurst bound how many envelopes one peer may have the relay store
	// (gossip and reconciliation together): a burst that covers a device's week offline in a busy team,
	// then a steady rate far above what people type.
	DefaultPeerRate  = 20
	DefaultPeerBurst = 5000
	// KeyFileName is the key file in the data directory: the database's encryption key, 64 hex characters.
	KeyFileName = "relay.key"
)

// DefaultListenAddrs are where a relay listens unless told otherwise: a fixed port, so devices can be
// configured with a stable address.
var DefaultListenAddrs = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}

// Config configures a Relay. Only Dir is required.
type Config struct {
	// Dir is the relay's data directory: the key file relay.key and the database relay-db/. Created
	// (mode 0700) if missing.
	Dir string
	// ListenAddrs are multiaddrs to listen on. Default DefaultListenAddrs.
	ListenAddrs []string
	// Retention is how long envelopes are kept, counted from their timestamp. Default 30 days.
	Retention time.Duration
	// Quota is the most bytes of envelopes kept, each counted with EntryOverhead; the oldest go first
	// when it is reached. Default 1 GiB. The database's files are larger (compaction lags behind).
	Quota int64
	// TopicQuota is each topic's share of Quota: when a topic holds more, its own oldest envelopes go,
	// so no team, and no device, can evict another team's envelopes. Default: Quota divided by the
	// number of topics carried.
	TopicQuota int64
	// MaxAhead refuses envelopes stamped further ahead of the relay's clock. Default DefaultMaxAhead.
	MaxAhead time.Duration
	// PeerRate (envelopes per second) and PeerBurst bound what one peer may have the relay store.
	// Envelopes over the rate are refused (the device offers them again at its next reconciliation).
	// Defaults DefaultPeerRate and DefaultPeerBurst.
	PeerRate  float64
	PeerBurst int
	// SyncInterval is how often the relay reconciles every topic with each enrolled device. Default 2 minutes.
	SyncInterval time.Duration
	// PeerRelays are other clinics' relays to link with (link.go): each must list this one too. Their
	// addresses must include the peer id.
	PeerRelays []peer.AddrInfo
	// Logger receives the relay's logs (short peer ids and short topics only). Nil discards them.
	Logger *slog.Logger
	// Now is the wall clock. Nil is time.Now.
	Now func() time.Time
}

// Relay is a running clinic relay: a libp2p host that stores and forwards the sealed envelopes of the
// topics it carries (reconciliation and gossip), offers circuit relay v2 reservations, and keeps a
// directory of device addresses, all for enrolled devices only. It never holds a team key.
//
// All methods are safe for concurrent use. Close stops it.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	st      *store
	audit   *audit.Log // DIR/audit.log (audit.go)
	host    host.Host
	ps      *pubsub.PubSub
	circuit *circuit.Relay
	reg     *prometheus.Registry
	m       *metrics
	ingest  chan ingestItem

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the fields below; never held while calling into pubsub or the network
	closed   bool
	carried  map[envelope.Topic]*carriedTopic
	byName   map[string]envelope.Topic
	enrolled map[peer.ID]map[envelope.Topic]time.Time // on current connections: when
	dir      map[envelope.Topic]map[peer.ID][]ma.Multiaddr
	slots    map[string]*sync.Mutex              // one session per peer and topic
	lastSync map[string]time.Time                // by peer and topic: when a session last completed
	seen     map[peer.ID]bool                    // devices ever enrolled (from the store, then as they come)
	writers  map[peer.ID]*writer                 // per-peer write budgets
	linked   map[peer.ID]map[envelope.Topic]bool // by linked relay: the topics enrolled there
	linkKick []chan struct{}
	changed  chan struct{} // closed and replaced whenever envelopes are stored

	wipes *wipeproto.Set // remote wipe orders carried (wipe.go)
}

type carriedTopic struct {
	topicEntry
	ptop *pubsub.Topic
	sub  *pubsub.Subscription
}

type ingestItem struct {
	rec record
}

// New opens (or creates) the relay's store in cfg.Dir and starts the relay.
func New(cfg Config) (*Relay, error) {
	if cfg.Dir == "" {
		return nil, errors.New("relay: Config.Dir is required")
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Quota == 0 {
		cfg.Quota = DefaultQuota
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.MaxAhead == 0 {
		cfg.MaxAhead = DefaultMaxAhead
	}
	if cfg.PeerRate == 0 {
		cfg.PeerRate = DefaultPeerRate
	}
	if cfg.PeerBurst == 0 {
		cfg.PeerBurst = DefaultPeerBurst
	}
	switch {
	case cfg.TopicQuota < 0 || cfg.MaxAhead < 0 || cfg.PeerRate < 0 || cfg.PeerBurst < 0:
		return nil, errors.New("relay: negative topic quota, clock bound or peer rate")
	case cfg.Retention < 0:
		return nil, errors.New("relay: negative retention")
	case cfg.Quota < 0:
		return nil, errors.New("relay: negative quota")
	case cfg.SyncInterval < 0:
		return nil, errors.New("relay: negative sync interval")
	}
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = DefaultListenAddrs
	}
	for _, s := range cfg.ListenAddrs {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return nil, fmt.Errorf("relay: listen address %q: %w", s, err)
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
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: data directory: %w", err)
	}
	key, err := loadKey(cfg.Dir)
	if err != nil {
		return nil, err
	}
	st, err := openStore(cfg.Dir, key, logger)
	clear(key)
	if err != nil {
		return nil, err
	}
	trail, err := audit.Open(filepath.Join(cfg.Dir, audit.FileName), auditStore{st}, audit.Config{Now: now})
	if err != nil {
		st.close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	if _, verr := trail.Verify(); verr != nil {
		logger.Error("the audit trail fails verification; no events are recorded until it is looked into (fieldmesh audit verify)", "err", verr)
	}
	r := &Relay{
		cfg: cfg, log: logger, now: now, st: st, audit: trail,
		reg:      prometheus.NewRegistry(),
		ingest:   make(chan ingestItem, 256),
		carried:  make(map[envelope.Topic]*carriedTopic),
		byName:   make(map[string]envelope.Topic),
		enrolled: make(map[peer.ID]map[envelope.Topic]time.Time),
		dir:      make(map[envelope.Topic]map[peer.ID][]ma.Multiaddr),
		slots:    make(map[string]*sync.Mutex),
		lastSync: make(map[string]time.Time),
		seen:     make(map[peer.ID]bool),
		writers:  make(map[peer.ID]*writer),
		linked:   make(map[peer.ID]map[envelope.Topic]bool),
		changed:  make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if err := r.start(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// loadKey reads DIR/relay.key, or creates it (32 random bytes, hex, mode 0600) for a new relay.
func loadKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, KeyFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(dir, dbDirName)); serr == nil {
			return nil, fmt.Errorf("relay: %s is missing but %s exists: the database cannot be opened without its key", path, filepath.Join(dir, dbDirName))
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := writeKeyFile(path, key); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: read key file: %w", err)
	}
	if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("relay: %s is readable by other users (mode %v): chmod 600 it", path, info.Mode().Perm())
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	clear(b)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("relay: %s is not a relay key (64 hex characters)", path)
	}
	return key, nil
}

func writeKeyFile(path string, key []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("relay: create key file: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("relay: write key file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// identity loads the relay's libp2p key from the store, or makes one.
func (r *Relay) identity() (lcrypto.PrivKey, error) {
	b, err := r.st.meta("identity")
	if err == nil {
		k, err := lcrypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("relay: stored identity: %w", err)
		}
		return k, nil
	}
	k, _, err := lcrypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err = lcrypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := r.st.putMeta("identity", b); err != nil {
		return nil, fmt.Errorf("relay: store identity: %w", err)
	}
	return k, nil
}

// Clinic limits for relayed connections: go-libp2p's defaults (2 minutes, 128 KiB each way, 8
// reservations per IP) suit a public relay that only helps peers hole-punch. A clinic relay carries whole
// reconciliation sessions between devices that may never get a direct connection, and a clinic's
// devices often share one public address.
func clinicResources() circuit.Resources {
	res := circuit.DefaultResources()
	res.Limit = &circuit.RelayLimit{Duration: time.Hour, Data: 64 << 20}
	res.ReservationTTL = time.Hour
	res.MaxReservations = 512
	res.MaxCircuits = 32
	res.BufferSize = 16 << 10
	res.MaxReservationsPerIP = 256
	res.MaxReservationsPerASN = 512
	return res
}

func (r *Relay) start() error {
	priv, err := r.identity()
	if err != nil {
		return err
	}
	cm, err := connmgr.NewConnManager(256, 512, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return fmt.Errorf("relay: connection manager: %w", err)
	}
	if err := meshconf.CheckListenFree(meshconf.Listenable(r.cfg.ListenAddrs)); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.host, err = libp2p.New(append([]libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(meshconf.Listenable(r.cfg.ListenAddrs)...),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.DefaultResourceManager,
		libp2p.PrometheusRegisterer(r.reg),
	}, meshconf.Transports()...)...)
	if err != nil {
		return fmt.Errorf("relay: start libp2p host: %w", err)
	}
	r.m = newMetrics(r.reg, r)
	r.circuit, err = circuit.New(r.host,
		circuit.WithResources(clinicResources()),
		circuit.WithACL(acl{r}),
		circuit.WithMetricsTracer(circuit.NewMetricsTracer(circuit.WithRegisterer(r.reg))),
	)
	if err != nil {
		return fmt.Errorf("relay: start circuit relay service: %w", err)
	}
	// The devices' gossip options (meshconf, with round trips measured as devices do), plus a peer
	// filter: only enrolled devices are in a topic's mesh.
	pr, err := meshconf.StartProber(r.ctx, r.host, 0, nil)
	if err != nil {
		return fmt.Errorf("relay: start latency probes: %w", err)
	}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); pr.Wait() }()
	r.ps, err = pubsub.NewGossipSub(r.ctx, r.host,
		append(meshconf.GossipOptions(meshconf.GossipMsgID, envelope.MaxSize+4096, pr.RTT), pubsub.WithPeerFilter(r.peerFilter))...)
	if err != nil {
		return fmt.Errorf("relay: start gossipsub: %w", err)
	}
	devs, err := r.st.devices()
	if err != nil {
		return err
	}
	for _, ps := range devs {
		for _, p := range ps {
			r.seen[p] = true
		}
	}
	topics, err := r.st.carried()
	if err != nil {
		return err
	}
	for t, te := range topics {
		if err := r.carry(t, te); err != nil {
			return err
		}
	}
	r.host.SetStreamHandler(SyncProtocol, r.handleSync)
	r.host.SetStreamHandler(relayproto.EnrolProtocol, r.handleEnrol)
	r.host.SetStreamHandler(relayproto.DirectoryProtocol, r.handleDirectory)
	r.registerChunks()
	r.startWipes()
	r.host.Network().Notify(&network.NotifyBundle{
		DisconnectedF: func(_ network.Network, c network.Conn) {
			// Enrolment lasts while the device has a connection: the swarm has removed c before telling
			// us, so with none left it goes now, under the lock an enrolment on a new connection takes.
			r.forget(c.RemotePeer())
		},
	})
	r.goRun(r.ingestLoop)
	r.goRun(r.maintainLoop)
	for _, ai := range r.cfg.PeerRelays {
		kick := make(chan struct{}, 1)
		r.mu.Lock()
		r.linkKick = append(r.linkKick, kick)
		r.mu.Unlock()
		r.goRun(func() { r.linkLoop(ai, kick) })
	}
	return nil
}

// goRun runs f on a goroutine that Close waits for; after Close it does nothing.
func (r *Relay) goRun(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// Close stops the relay, waits for its goroutines and closes its store. Idempotent.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var cts []*carriedTopic
	for _, ct := range r.carried {
		cts = append(cts, ct)
	}
	r.mu.Unlock()
	r.cancel()
	for _, ct := range cts {
		ct.sub.Cancel()
		ct.ptop.Close()
	}
	var errs []error
	if r.circuit != nil {
		errs = append(errs, r.circuit.Close())
	}
	if r.host != nil {
		errs = append(errs, r.host.Close())
	}
	r.wg.Wait()
	errs = append(errs, r.audit.Close(), r.st.close())
	return errors.Join(errs...)
}

// Host returns the relay's libp2p host.
func (r *Relay) Host() host.Host { return r.host }

// Admit makes the relay carry the code's topic: it stores the topic and its relay key (durably), joins
// the topic's gossip and accepts enrolments for it. Admitting a topic again is a no-op (added false);
// admitting it with a different key replaces the key.
func (r *Relay) Admit(c relayproto.Code) (added bool, err error) {
	added, err = r.st.addTopic(c, r.now().Unix())
	if err != nil {
		return false, fmt.Errorf("relay: admit: %w", err)
	}
	r.mu.Lock()
	ct := r.carried[c.Topic]
	if ct != nil && added {
		ct.key, ct.admin, ct.roster = c.Key, c.Admin, nil
	}
	r.mu.Unlock()
	if ct == nil {
		if err := r.carry(c.Topic, topicEntry{key: c.Key, admin: c.Admin}); err != nil {
			return false, err
		}
		added = true
	}
	if added {
		r.log.Info("relay carries a new topic", "topic", c.Topic)
		r.record(audit.Event{Kind: audit.RelayAdmitted, Team: audit.Short(c.Topic[:]), Actor: audit.Short(c.Admin[:])})
		r.kickLinks()
	}
	return added, nil
}

// ErrNotCarried is returned by Revoke for a topic the relay does not carry.
var ErrNotCarried = errors.New("relay: topic not carried")

// Revoke stops carrying the topic whose short form (Topic.Short, as Status lists it) is short: it
// leaves the topic's gossip, ends its enrolments and directory, and deletes its roster and envelopes.
func (r *Relay) Revoke(short string) (envelope.Topic, error) {
	r.mu.Lock()
	var t envelope.Topic
	var ct *carriedTopic
	for tt, c := range r.carried {
		if tt.Short() == short {
			t, ct = tt, c
		}
	}
	if ct != nil {
		delete(r.carried, t)
		delete(r.byName, meshconf.TopicName(t))
		delete(r.dir, t)
		for _, ts := range r.enrolled {
			delete(ts, t)
		}
	}
	r.mu.Unlock()
	if ct == nil {
		return t, fmt.Errorf("%w: %q", ErrNotCarried, short)
	}
	r.record(audit.Event{Kind: audit.RelayRevoked, Team: audit.Short(t[:])})
	ct.sub.Cancel()
	if err := ct.ptop.Close(); err != nil {
		r.log.Debug("closing a revoked topic", "topic", t, "err", err)
	}
	if err := r.ps.UnregisterTopicValidator(meshconf.TopicName(t)); err != nil {
		r.log.Debug("unregistering a revoked topic's validator", "topic", t, "err", err)
	}
	if err := r.st.dropTopic(t); err != nil {
		return t, fmt.Errorf("relay: revoke %s: %w", short, err)
	}
	r.log.Info("relay no longer carries a topic", "topic", t)
	return t, nil
}

// carry joins a topic's gossip with a structural validator and starts storing what arrives.
func (r *Relay) carry(t envelope.Topic, te topicEntry) error {
	name := meshconf.TopicName(t)
	if err := r.ps.RegisterTopicValidator(name, r.validator(t)); err != nil {
		return fmt.Errorf("relay: topic validator: %w", err)
	}
	ptop, err := r.ps.Join(name)
	if err != nil {
		return fmt.Errorf("relay: join topic: %w", err)
	}
	sub, err := ptop.Subscribe()
	if err != nil {
		ptop.Close()
		return fmt.Errorf("relay: subscribe: %w", err)
	}
	ct := &carriedTopic{topicEntry: te, ptop: ptop, sub: sub}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		sub.Cancel()
		ptop.Close()
		return errors.New("relay: closed")
	}
	r.carried[t] = ct
	r.byName[name] = t
	r.mu.Unlock()
	r.goRun(func() { r.readLoop(ct) })
	return nil
}

// takeRoster adopts ro for its topic if the relay carries it and relayproto.Admits it, keeps it, and
// ends the enrolments and directory entries of the devices it leaves out; a device left enrolled for
// no topic is disconnected, so its node enrols again and hears why it is refused. It reports whether
// ro was taken; an error says why a roster that is not stale was refused.
func (r *Relay) takeRoster(ro *relayproto.Roster) (bool, error) {
	r.mu.Lock()
	ct := r.carried[ro.Topic]
	switch {
	case ct == nil:
		r.mu.Unlock()
		return false, nil
	case ct.roster != nil && ro.Seq <= ct.roster.Seq:
		r.mu.Unlock()
		return false, nil // stale or the same: nothing to do
	case !relayproto.Admits(ct.roster, ct.admin, ro):
		r.mu.Unlock()
		return false, fmt.Errorf("roster signed by %s, who is not an admin this relay trusts for the topic", ro.Signer.Short())
	}
	// Kept before it counts, so a restart never goes back to an older roster. (r.mu is held across one
	// small Badger write: rosters change only with membership.)
	if err := r.st.putRoster(ro); err != nil {
		r.mu.Unlock()
		return false, err
	}
	ct.roster = ro
	var ended []peer.ID
	var names []string
	for p, ts := range r.enrolled {
		if _, ok := ts[ro.Topic]; !ok {
			continue
		}
		if d, err := relayproto.DeviceOf(p); err != nil || !ro.IsMember(d) {
			delete(ts, ro.Topic)
			delete(r.dir[ro.Topic], p)
			names = append(names, p.ShortString())
			if len(ts) == 0 {
				ended = append(ended, p)
			}
		}
	}
	r.mu.Unlock()
	r.m.rosters.Inc()
	r.log.Info("topic roster updated", "topic", ro.Topic, "seq", ro.Seq, "members", len(ro.Members), "signer", ro.Signer, "enrolments_ended", names)
	for _, p := range ended {
		if err := r.host.Network().ClosePeer(p); err != nil {
			r.log.Debug("disconnecting a device no longer enrolled", "peer", p.ShortString(), "err", err)
		}
	}
	return true, nil
}

// onRoster reports whether p may enrol t by the topic's roster: yes while the relay holds none.
// Call with r.mu held.
func (ct *carriedTopic) onRoster(p peer.ID) bool {
	if ct.roster == nil {
		return true
	}
	d, err := relayproto.DeviceOf(p)
	return err == nil && ct.roster.IsMember(d)
}

// enrolledFor reports whether p proved, since it last had no connection, that it holds t's relay key.
func (r *Relay) enrolledFor(p peer.ID, t envelope.Topic) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.enrolled[p][t]
	return ok
}

// peerFilter keeps devices that are not enrolled for a topic out of its gossip mesh (no GRAFT accepted,
// no IHAVE/IWANT answered, never chosen as a mesh peer), so the relay forwards a topic to its enrolled
// devices only. It runs on pubsub's event loop: it only reads the enrolment map.
func (r *Relay) peerFilter(p peer.ID, name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.byName[name]
	if !ok {
		return false
	}
	_, ok = r.enrolled[p][t]
	return ok
}

// validator accepts what the relay can check without a key: the sender is enrolled for the topic, the
// envelope's header parses (it is taken as the gossip topic's: the wire does not name one), it is within the size limit, and it
// passes admit (not stamped too far ahead, the sender within its write rate).
func (r *Relay) validator(t envelope.Topic) pubsub.ValidatorEx {
	return func(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if !r.enrolledFor(from, t) {
			r.m.refused.WithLabelValues("not_enrolled").Inc()
			return pubsub.ValidationIgnore
		}
		e, err := envelope.Unmarshal(t, m.Data)
		if err != nil {
			r.m.refused.WithLabelValues("malformed").Inc()
			r.log.Debug("gossip: rejected malformed envelope", "peer", from.ShortString(), "err", err)
			return pubsub.ValidationReject
		}
		rec := record{Topic: t, Time: uint64(e.Time), ID: e.ID, Data: m.Data}
		if len(r.admit(from, []record{rec})) == 0 {
			return pubsub.ValidationIgnore
		}
		m.ValidatorData = rec
		return pubsub.ValidationAccept
	}
}

func (r *Relay) readLoop(ct *carriedTopic) {
	for {
		m, err := ct.sub.Next(r.ctx)
		if err != nil {
			return
		}
		rec, ok := m.ValidatorData.(record)
		if !ok {
			continue
		}
		select {
		case r.ingest <- ingestItem{rec: rec}:
		case <-r.ctx.Done():
			return
		}
	}
}

// ingestLoop stores gossip arrivals, batching whatever has queued up into one write.
func (r *Relay) ingestLoop() {
	for {
		var batch []record
		select {
		case it := <-r.ingest:
			batch = append(batch, it.rec)
		case <-r.ctx.Done():
			return
		}
	drain:
		for len(batch) < 512 {
			select {
			case it := <-r.ingest:
				batch = append(batch, it.rec)
			default:
				break drain
			}
		}
		if _, err := r.store(batch, "gossip"); err != nil && r.ctx.Err() == nil {
			r.log.Error("storing gossiped envelopes failed", "err", err)
		}
	}
}

// horizon is the earliest envelope time the relay takes for topic t: the retention period back from
// now, or, while t is at its share of the quota, its oldest stored envelope (an older one would only
// be dropped again at once). It never passes the envelopes t holds, so a topic filled with envelopes
// stamped ahead of time is emptied of them by retention and its own newer envelopes, never stuck.
func (r *Relay) horizon(t envelope.Topic) uint64 {
	ms := r.now().Add(-r.cfg.Retention).UnixMilli()
	h := uint64(max(ms, 0)) << 16
	if r.st.topicBytes(t) >= r.topicShare()*15/16 {
		if o, ok := r.st.oldest(t); ok {
			h = max(h, o)
		}
	}
	return h
}

// topicShare is each topic's share of the quota (Config.TopicQuota).
func (r *Relay) topicShare() int64 {
	if r.cfg.TopicQuota > 0 {
		return r.cfg.TopicQuota
	}
	r.mu.Lock()
	n := int64(max(len(r.carried), 1))
	r.mu.Unlock()
	return r.cfg.Quota / n
}

// admit filters envelopes a peer sent before they are stored: envelopes stamped more than MaxAhead
// ahead of the relay's clock are refused, and so is what is over the peer's write rate (logged at most
// once a minute a peer). via names the path for the metrics.
func (r *Relay) admit(p peer.ID, recs []record) []record {
	limit := uint64(r.now().Add(r.cfg.MaxAhead).UnixMilli()) << 16
	w := r.writer(p)
	peerRelay := r.isPeerRelay(p) // a linked clinic's backlog is not a flood
	out := recs[:0:0]
	future, over := 0, 0
	for _, rec := range recs {
		switch {
		case rec.Time > limit:
			future++
		case !peerRelay && !w.AllowN(r.now(), 1):
			over++
		default:
			out = append(out, rec)
		}
	}
	if future > 0 {
		r.m.refused.WithLabelValues("future").Add(float64(future))
		r.log.Debug("refused envelopes stamped ahead of the relay's clock", "peer", p.ShortString(), "n", future, "max_ahead", r.cfg.MaxAhead.String())
	}
	if over > 0 {
		r.m.refused.WithLabelValues("rate").Add(float64(over))
		if w.warn(r.now()) {
			r.log.Warn("peer is over its write rate: refusing its envelopes", "peer", p.ShortString(), "refused", over, "rate_per_s", r.cfg.PeerRate, "burst", r.cfg.PeerBurst)
		}
	}
	return out
}

// writer is one peer's write budget.
type writer struct {
	*rate.Limiter
	warned, used time.Time
}

// warn reports whether the over-rate line may be logged again (once a minute).
func (w *writer) warn(now time.Time) bool {
	if now.Sub(w.warned) < time.Minute {
		return false
	}
	w.warned = now
	return true
}

func (r *Relay) writer(p peer.ID) *writer {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writers[p]
	if w == nil {
		w = &writer{Limiter: rate.NewLimiter(rate.Limit(r.cfg.PeerRate), r.cfg.PeerBurst)}
		r.writers[p] = w
	}
	w.used = r.now()
	return w
}

// pruneWriters forgets the budgets of peers idle long enough to have refilled them.
func (r *Relay) pruneWriters() {
	idle := time.Duration(float64(r.cfg.PeerBurst)/r.cfg.PeerRate*float64(time.Second)) + time.Minute
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, w := range r.writers {
		if r.now().Sub(w.used) > idle {
			delete(r.writers, p)
		}
	}
}

// store stores checked envelopes durably and enforces the quotas.
func (r *Relay) store(recs []record, via string) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	added, err := r.st.put(recs, r.horizon)
	r.m.stored.WithLabelValues(via).Add(float64(len(added)))
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		for _, rec := range added {
			r.log.Debug("relay stored envelope", "topic", rec.Topic, "id", hex.EncodeToString(rec.ID[:4]), "via", via)
		}
	}
	if err == nil {
		err = r.enforceQuota(added)
	}
	if len(added) > 0 {
		r.mu.Lock()
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		// What a device left here goes on to the linked clinics now (kicks coalesce: one round
		// runs at a time per link).
		r.kickLinks()
	}
	return len(added), err
}

// storedSignal returns a channel that is closed the next time envelopes are stored.
func (r *Relay) storedSignal() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// enforceQuota drops, for each topic that just stored envelopes and holds more than its share, that
// topic's oldest envelopes; then, if the relay as a whole is over its quota (shares set larger than
// Quota divided by the topics), the oldest of all.
func (r *Relay) enforceQuota(added []record) error {
	share := r.topicShare()
	topics := make(map[envelope.Topic]bool)
	for _, rec := range added {
		topics[rec.Topic] = true
	}
	for t := range topics {
		if r.st.topicBytes(t) <= share {
			continue
		}
		d, err := r.st.evictTopic(t, func(_ uint64, bytes int64) bool { return bytes <= share })
		if d.n > 0 {
			r.m.dropped.WithLabelValues("topic_quota").Add(float64(d.n))
			r.log.Warn("topic quota reached: dropped the topic's oldest envelopes",
				"topic", t, "dropped", d.n, "dropped_bytes", d.bytes, "topic_quota", share)
		}
		if err != nil {
			return err
		}
	}
	if _, bytes, _ := r.st.totals(); bytes <= r.cfg.Quota {
		return nil
	}
	d, err := r.st.evict(func(_ uint64, bytes int64) bool { return bytes <= r.cfg.Quota })
	if d.n > 0 {
		r.m.dropped.WithLabelValues("quota").Add(float64(d.n))
		r.log.Warn("relay disk quota reached: dropped the oldest envelopes",
			"dropped", d.n, "dropped_bytes", d.bytes, "quota", r.cfg.Quota)
	}
	return err
}

// expire drops envelopes older than the retention period.
func (r *Relay) expire() error {
	ms := r.now().Add(-r.cfg.Retention).UnixMilli()
	cut := uint64(max(ms, 0)) << 16
	d, err := r.st.evict(func(t uint64, _ int64) bool { return t >= cut })
	if d.n > 0 {
		r.m.dropped.WithLabelValues("retention").Add(float64(d.n))
		r.log.Info("retention: dropped envelopes older than the retention period",
			"dropped", d.n, "dropped_bytes", d.bytes, "retention", r.cfg.Retention.String())
	}
	return err
}

// maintainLoop expires old envelopes, makes the store's deletions final (collect), and reconciles
// periodically with every enrolled device.
func (r *Relay) maintainLoop() {
	sweepEvery := min(max(r.cfg.Retention/24, time.Minute), time.Hour)
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	resync := time.NewTicker(r.cfg.SyncInterval)
	defer resync.Stop()
	if err := r.expire(); err != nil {
		r.log.Error("retention sweep failed", "err", err)
	}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-sweep.C:
			if err := r.expire(); err != nil && r.ctx.Err() == nil {
				r.log.Error("retention sweep failed", "err", err)
			}
			// Retention and the quota drop envelopes: make that final in the files, at most once a
			// sweep (a rewrite of the database's tables), as a device does once an hour.
			if n, err := r.st.collect(); err != nil && r.ctx.Err() == nil {
				r.log.Warn("making deletions final failed; retrying at the next sweep", "err", err)
			} else if n > 0 {
				r.log.Info("deletions made final", "dropped", n)
			}
			r.pruneWriters()
		case <-resync.C:
			// Devices reconcile with the relay on their own schedule too: skip the pairs that did recently.
			recent := time.Now().Add(-r.cfg.SyncInterval / 2)
			for p, ts := range r.enrolments() {
				for _, t := range ts {
					r.mu.Lock()
					last := r.lastSync[syncKey(p, t)]
					r.mu.Unlock()
					if last.Before(recent) {
						r.goRun(func() { r.syncWith(p, t) })
					}
				}
			}
		}
	}
}

// enrolments returns a copy of the current enrolments.
func (r *Relay) enrolments() map[peer.ID][]envelope.Topic {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[peer.ID][]envelope.Topic, len(r.enrolled))
	for p, ts := range r.enrolled {
		for t := range ts {
			out[p] = append(out[p], t)
		}
	}
	return out
}

// forget drops the enrolments and directory entries of a peer that has no connection left.
func (r *Relay) forget(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.host.Network().ConnsToPeer(p)) > 0 {
		return
	}
	delete(r.enrolled, p)
	for _, ps := range r.dir {
		delete(ps, p)
	}
	for k := range r.lastSync {
		if strings.HasPrefix(k, string(p)) {
			delete(r.lastSync, k)
			delete(r.slots, k)
		}
	}
}

// acl admits circuit relay reservations and relayed connections of enrolled devices only.
type acl struct{ r *Relay }

// AllowReserve allows a reservation by a device enrolled for at least one topic.
func (a acl) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	ok := len(a.r.enrolled[p]) > 0
	if !ok {
		a.r.log.Info("circuit reservation refused: device not enrolled", "peer", p.ShortString())
	}
	return ok
}

// AllowConnect allows a relayed connection between two devices enrolled for a common topic.
func (a acl) AllowConnect(src peer.ID, _ ma.Multiaddr, dest peer.ID) bool {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	for t := range a.r.enrolled[src] {
		if _, ok := a.r.enrolled[dest][t]; ok {
			return true
		}
	}
	a.r.log.Info("relayed connection refused: the devices share no enrolled topic", "from", src.ShortString(), "to", dest.ShortString())
	return false
}

// Status describes a running relay.
type Status struct {
	PeerID    string        `json:"peer_id"`
	Addrs     []string      `json:"addrs"`
	Topics    []TopicStatus `json:"topics"`
	Envelopes int64         `json:"envelopes"`
	// Bytes is what the quota counts: envelope bytes plus EntryOverhead each.
	Bytes     int64  `json:"bytes"`
	Quota     int64  `json:"quota"`
	Retention string `json:"retention"`
	// DiskBytes is the size of the database's files.
	DiskBytes int64 `json:"disk_bytes"`
	// PeersConnected counts connected peers, enrolled or not; Enrolled the devices enrolled on their
	// current connection; PeersSeen the devices ever enrolled.
	PeersConnected int `json:"peers_connected"`
	Enrolled       int `json:"enrolled"`
	PeersSeen      int `json:"peers_seen"`
	// RefusedEnrolments and RefusedEnvelopes count refusals since the relay started, by reason (the
	// labels of the Prometheus counters fieldmesh_relay_enrolments_total and
	// fieldmesh_relay_envelopes_refused_total).
	RefusedEnrolments map[string]int64 `json:"refused_enrolments"`
	RefusedEnvelopes  map[string]int64 `json:"refused_envelopes"`
}

// TopicStatus describes one carried topic. Topic is its short form (8 hex characters).
type TopicStatus struct {
	Topic     string `json:"topic"`
	Envelopes int64  `json:"envelopes"`
	Bytes     int64  `json:"bytes"`
	Devices   int    `json:"devices"`   // ever enrolled
	Connected int    `json:"connected"` // enrolled now
	// RosterSeq and RosterMembers describe the roster the relay holds (0 and 0: none yet).
	RosterSeq     uint64 `json:"roster_seq"`
	RosterMembers int    `json:"roster_members"`
}

// Status returns the relay's status.
func (r *Relay) Status() Status {
	count, bytes, per := r.st.totals()
	devs, err := r.st.devices()
	if err != nil {
		r.log.Warn("reading enrolled devices failed", "err", err)
	}
	s := Status{
		PeerID: r.host.ID().String(), Addrs: []string{}, Topics: []TopicStatus{},
		Envelopes: count, Bytes: bytes, Quota: r.cfg.Quota, Retention: r.cfg.Retention.String(),
		DiskBytes: r.st.diskUsage(), PeersConnected: len(r.host.Network().Peers()),
	}
	for _, a := range r.host.Addrs() {
		s.Addrs = append(s.Addrs, a.String())
	}
	r.mu.Lock()
	s.Enrolled = len(r.enrolled)
	s.PeersSeen = len(r.seen)
	for t, ct := range r.carried {
		ts := TopicStatus{Topic: t.Short(), Envelopes: per[t].n, Bytes: per[t].bytes, Devices: len(devs[t])}
		if ct.roster != nil {
			ts.RosterSeq, ts.RosterMembers = ct.roster.Seq, len(ct.roster.Members)
		}
		for _, et := range r.enrolled {
			if _, ok := et[t]; ok {
				ts.Connected++
			}
		}
		s.Topics = append(s.Topics, ts)
	}
	r.mu.Unlock()
	sort.Slice(s.Topics, func(i, j int) bool { return s.Topics[i].Topic < s.Topics[j].Topic })
	s.RefusedEnrolments = r.m.counts(r.m.enrolments, "enrolled")
	s.RefusedEnvelopes = r.m.counts(r.m.refused)
	return s
}
