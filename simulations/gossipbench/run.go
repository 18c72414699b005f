package gossipbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	stdsync "sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Router is a pubsub configuration under test.
type Router struct {
	Name string
	// Flood selects floodsub (pubsub.NewFloodSub); otherwise GossipSub (pubsub.NewGossipSub).
	Flood bool
	// Options returns the options for one node (a fresh slice per call: options may hold state).
	// rtt gives the round trip the node's meshconf.Prober measured to a peer when Probe is set, and
	// is nil otherwise.
	Options func(rtt func(peer.ID) time.Duration) []pubsub.Option
	// Joined, if set, is called with the topic each node joins (to set topic score parameters).
	Joined func(*pubsub.Topic) error
	// Probe runs a ping service and a meshconf.Prober on every node, as fieldmesh hosts do, over the
	// links' latencies. (Pings travel the link's latency one way only: the echo is written on the
	// stream the peer accepted, which the delay line does not slow. Round trips here are one-way
	// latencies, which ranks peers the same.)
	Probe bool
}

// messageFormat is what every router here shares, so the comparison is of routing alone: messages
// without signature, author or sequence number, named by content hash (as fieldmesh sends them).
func messageFormat(func(peer.ID) time.Duration) []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(meshconf.GossipMsgID),
	}
}

// Tuned is fieldmesh's GossipSub: meshconf.GossipOptions, with meshconf.GossipTopicScore on the topic.
func Tuned() Router {
	return Router{
		Name: "tuned GossipSub",
		Options: func(rtt func(peer.ID) time.Duration) []pubsub.Option {
			return meshconf.GossipOptions(meshconf.GossipMsgID, maxMsgSize, rtt)
		},
		Probe:  true,
		Joined: func(t *pubsub.Topic) error { return t.SetScoreParams(meshconf.GossipTopicScore()) },
	}
}

// TunedFloodPublish is Tuned with flood publishing set to on whatever meshconf.GossipOptions says
// (pubsub.WithFloodPublish after it: the later option wins). With it off, an author sends its own
// message only to its mesh peers, as it forwards others' messages.
func TunedFloodPublish(on bool) Router {
	r := Tuned()
	r.Name = "tuned, no flood publishing"
	if on {
		r.Name = "tuned, flood publishing"
	}
	r.Options = func(rtt func(peer.ID) time.Duration) []pubsub.Option {
		return append(meshconf.GossipOptions(meshconf.GossipMsgID, maxMsgSize, rtt), pubsub.WithFloodPublish(on))
	}
	return r
}

// DefaultGossipSub is GossipSub with pubsub.DefaultGossipSubParams and every other default (no peer
// scores, no flood publishing, queues of 32), in fieldmesh's message format.
func DefaultGossipSub() Router {
	return Router{
		Name: "default GossipSub",
		Options: func(func(peer.ID) time.Duration) []pubsub.Option {
			return append(messageFormat(nil), pubsub.WithGossipSubParams(pubsub.DefaultGossipSubParams()))
		},
	}
}

// FloodSub is floodsub (every node sends every message to every peer once), in fieldmesh's message
// format.
func FloodSub() Router {
	return Router{Name: "floodsub", Flood: true, Options: messageFormat}
}

// maxMsgSize is the largest RPC the tuned router accepts: a maximal envelope and framing, as a node
// configures it.
const maxMsgSize = envelope.MaxSize + 4096

// Config is one measurement: a topology, a workload, and the size of each message's payload.
type Config struct {
	Topology Topology
	Workload []Send
	Payload  int // bytes of data per message, at least 8
	// UplinkBitsPerSecond limits each node's upstream: what a node writes to all its peers leaves
	// one write after another at this rate, then travels its link's latency. 0 is unlimited.
	UplinkBitsPerSecond float64
	// Seed seeds the node keys and the payload bytes.
	Seed uint64
	// Settle is how long the network runs idle, after every node has seen each neighbour join the
	// topic, before the first message: the meshes form. Default 10 s (ten heartbeats).
	Settle time.Duration
	// Warmup is traffic sent after Settle and before Workload, and not measured: what the meshes
	// learn from (peer scores) before the measurement.
	Warmup []Send
	// Deadline is how long after its publication a message may take to reach every node before it
	// counts as lost. Default 30 s.
	Deadline time.Duration
	// Tail is how long the byte counters keep running after the last delivery, so the gossip that
	// advertises the last messages is counted. Default 5 s.
	Tail time.Duration
}

// Result holds the figures of one router on one Config.
type Result struct {
	Router   string
	Nodes    int
	Messages int
	// Expected and Delivered count (message, receiver) pairs; the publisher is not a receiver.
	Expected, Delivered int
	// Stretch holds, for every delivered pair, the delivery latency over the latency of the shortest
	// path from the publisher to the receiver.
	Stretch []float64
	// Copies is the number of message copies written to the wire; Dropped the number of copies
	// dropped before the wire (outbound queue full).
	Copies, Dropped int64
	// WireBytes counts every pubsub byte written during the measurement (length prefixes included);
	// ControlBytes the part that is not message copies (IHAVE, IWANT, IDONTWANT, GRAFT, PRUNE,
	// subscriptions).
	WireBytes, ControlBytes int64
	// CopyBytes and CopyRPCs describe the RPCs that carried exactly one message and nothing else:
	// CopyBytes/CopyRPCs is the wire size of one message copy on one hop.
	CopyBytes, CopyRPCs int64
	Payload             int
	// MeshLinks is the number of topology links in the mesh when the measurement started;
	// MeshStretch the sorted latencies of the shortest paths through the mesh over the shortest
	// paths; MeshUnreachable the (source, receiver) pairs the mesh did not connect. Empty for floodsub.
	MeshLinks       int
	MeshStretch     []float64
	MeshUnreachable int
	// Redialled counts links closed and dialled again before the measurement because identify had
	// not told pubsub about the peer (see Run).
	Redialled int
	// EmptyMesh counts, once a second during the measurement, the nodes whose mesh is empty: node
	// seconds spent with no mesh peer, when only gossip (IHAVE) reaches the node. 0 for floodsub.
	EmptyMesh int

	// What the routing tells peers about authorship, over the measured messages. Messages carry no
	// author, so a peer can only infer it from who sent it a copy, and when.
	//
	// AuthorDegree sums, over the messages, the topic peers of each message's author (its links).
	AuthorDegree int
	// Direct counts (message, peer) pairs where the author queued a copy of its own message for the
	// peer; DirectOffMesh those where the peer was not in the author's mesh then (flood publishing,
	// or an answer to an IWANT).
	Direct, DirectOffMesh int
	// FirstHand counts (message, receiver) pairs where the copy the receiver delivered first came
	// from the author. A receiver that names the peer it got a message from first as its author is
	// right for exactly these pairs.
	FirstHand int
	// MeshGuess counts the (message, receiver) pairs where a receiver that also knows its own mesh
	// names the author: it names the first peer outside its mesh that sent it a copy it had not asked
	// for (IWANT), if any, and otherwise the first sender. GossipSub forwards others' messages only to
	// mesh peers, so an unasked copy from outside the mesh comes from the author, unless the mesh
	// changed while the copy was under way. OffMeshSeen counts the pairs where such a copy came,
	// OffMeshRight those where its sender was the author. For floodsub (no mesh) MeshGuess is
	// FirstHand and the off-mesh counts are 0.
	MeshGuess, OffMeshSeen, OffMeshRight int
	// Observed, ObservedFirstHand and ObservedMeshGuess hold, by node, the measured messages the node
	// did not write, and those whose author it named by the first-sender and the mesh-aware rule.
	Observed, ObservedFirstHand, ObservedMeshGuess []int
}

// DeliveryRatio is Delivered/Expected.
func (r Result) DeliveryRatio() float64 { return ratio(float64(r.Delivered), float64(r.Expected)) }

// CopiesPerDelivery is the number of copies written per delivered (message, receiver) pair; 1.0 would
// be a perfect spanning tree.
func (r Result) CopiesPerDelivery() float64 { return ratio(float64(r.Copies), float64(r.Delivered)) }

// BytesPerDelivery is every wire byte (copies and control) per delivered pair, over the payload.
func (r Result) BytesPerDelivery() float64 {
	return ratio(float64(r.WireBytes), float64(r.Delivered)*float64(r.Payload))
}

// HopOverhead is the wire size of one message copy on one hop over its payload.
func (r Result) HopOverhead() float64 {
	return ratio(float64(r.CopyBytes), float64(r.CopyRPCs)*float64(r.Payload))
}

// StretchQuantile returns the q-quantile (0..1) of Stretch; 0 when nothing was delivered.
func (r Result) StretchQuantile(q float64) float64 { return quantile(r.Stretch, q) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// TopicName is the benchmark's topic: a fieldmesh team topic name (meshconf.TopicName), so the
// per-copy overhead is the real one.
func TopicName(seed uint64) string {
	var t envelope.Topic
	binary.LittleEndian.PutUint64(t[:], seed)
	binary.LittleEndian.PutUint64(t[8:], ^seed)
	return meshconf.TopicName(t)
}

// Run measures one router on one Config. It builds a fresh mocknet with one link per topology link
// (its latency added by delayHost), starts a pubsub router per node on one topic, waits until every
// node sees its neighbours in the topic and has a mesh, lets the network run for Settle, publishes
// the warm-up workload and then the measured one at their pace, and waits for each delivery up to
// its deadline. Only the measured workload is counted. Run stops everything it started before it
// returns.
//
// Run reads the clock for latencies and pacing: run it inside a testing/synctest bubble, where time is
// virtual, so the figures are the protocol's and not the machine's load. Outside a bubble it works
// in real time, slowly, and the figures include scheduling delays.
func Run(ctx context.Context, c Config, rt Router) (Result, error) {
	if c.Payload < 8 {
		return Result{}, errors.New("gossipbench: payload under 8 bytes")
	}
	if c.Settle == 0 {
		c.Settle = 10 * time.Second
	}
	if c.Deadline == 0 {
		c.Deadline = 30 * time.Second
	}
	if c.Tail == 0 {
		c.Tail = 5 * time.Second
	}
	topo := c.Topology
	n := topo.N
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	rng := rand.New(rand.NewChaCha8(seedBytes(c.Seed)))
	keyRand := rand.NewChaCha8(seedBytes(c.Seed ^ 0x6b657973))
	mn := mocknet.New()
	defer mn.Close()
	hosts := make([]host.Host, n)
	index := make(map[peer.ID]int, n)
	for i := range hosts {
		sk, _, err := lcrypto.GenerateEd25519Key(keyRand)
		if err != nil {
			return Result{}, fmt.Errorf("gossipbench: node key: %w", err)
		}
		addr := ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i>>16&255, i>>8&255, i&255))
		h, err := mn.AddPeer(sk, addr)
		if err != nil {
			return Result{}, fmt.Errorf("gossipbench: add peer: %w", err)
		}
		defer h.Close()
		hosts[i] = h
		index[h.ID()] = i
	}

	m := &meter{index: index, links: make([]map[int]bool, n), gossip: !rt.Flood}
	for i := range m.links {
		m.links[i] = make(map[int]bool)
	}
	topicName := TopicName(c.Seed)
	pss := make([]*pubsub.PubSub, n)
	topics := make([]*pubsub.Topic, n)
	subs := make([]*pubsub.Subscription, n)
	lat := make([]map[peer.ID]time.Duration, n)
	for i := range lat {
		lat[i] = make(map[peer.ID]time.Duration)
	}
	for _, l := range topo.Links {
		lat[l.A][hosts[l.B].ID()] = l.Latency
		lat[l.B][hosts[l.A].ID()] = l.Latency
	}
	for i, h := range hosts {
		dh := &delayHost{Host: h, latency: lat[i]}
		var rtt func(peer.ID) time.Duration
		if rt.Probe {
			ping.NewPingService(h)
			pr, err := meshconf.StartProber(ctx, dh, 0, nil)
			if err != nil {
				return Result{}, fmt.Errorf("gossipbench: start prober: %w", err)
			}
			defer pr.Wait() // after cancel (deferred below)
			rtt = pr.RTT
		}
		opts := append(rt.Options(rtt), pubsub.WithRawTracer(m.node(i)))
		if c.UplinkBitsPerSecond > 0 {
			dh.uplink = &uplink{bitsPerSecond: c.UplinkBitsPerSecond}
		}
		defer dh.abortAll()
		var err error
		if rt.Flood {
			pss[i], err = pubsub.NewFloodSub(ctx, dh, opts...)
		} else {
			pss[i], err = pubsub.NewGossipSub(ctx, dh, opts...)
		}
		if err != nil {
			return Result{}, fmt.Errorf("gossipbench: %s: start pubsub: %w", rt.Name, err)
		}
		if topics[i], err = pss[i].Join(topicName); err != nil {
			return Result{}, fmt.Errorf("gossipbench: join: %w", err)
		}
		if rt.Joined != nil {
			if err := rt.Joined(topics[i]); err != nil {
				return Result{}, fmt.Errorf("gossipbench: %s: topic setup: %w", rt.Name, err)
			}
		}
		if subs[i], err = topics[i].Subscribe(pubsub.WithBufferSize(1024)); err != nil {
			return Result{}, fmt.Errorf("gossipbench: subscribe: %w", err)
		}
	}
	for _, l := range topo.Links {
		// The link has no latency of its own: delayHost adds it (see there why).
		if _, err := mn.LinkPeers(hosts[l.A].ID(), hosts[l.B].ID()); err != nil {
			return Result{}, fmt.Errorf("gossipbench: link: %w", err)
		}
		if _, err := mn.ConnectPeers(hosts[l.A].ID(), hosts[l.B].ID()); err != nil {
			return Result{}, fmt.Errorf("gossipbench: connect: %w", err)
		}
	}

	defer cancel() // before the delay lines are aborted: pubsub stops writing first

	// Wait, polling with a deadline, until every node sees each neighbour in the topic and has a mesh;
	// then let the network run for Settle.
	//
	// Pubsub learns of a peer from identify. Identify can answer with a snapshot of the protocols taken
	// before pubsub registered its own, and the identify push that corrects it does not always come
	// (about one link in a few thousand here), so a link whose two ends still do not see each other
	// after relinkAfter is closed and dialled again.
	const relinkAfter = 2 * time.Second
	deg := topo.Degrees()
	lastRelink := time.Now()
	relinks := 0
	sees := func(i, j int) bool { return slices.Contains(pss[i].ListPeers(topicName), hosts[j].ID()) }
	ready := func() bool {
		ok := true
		for i, ps := range pss {
			if len(ps.ListPeers(topicName)) < deg[i] || (!rt.Flood && m.meshSize(i) == 0) {
				ok = false
			}
		}
		if ok || time.Since(lastRelink) < relinkAfter {
			return ok
		}
		lastRelink = time.Now()
		for _, l := range topo.Links {
			a, b := hosts[l.A].ID(), hosts[l.B].ID()
			if !sees(l.A, l.B) && !sees(l.B, l.A) && relinks < len(topo.Links) {
				relinks++
				_ = mn.DisconnectPeers(a, b)
				_, _ = mn.ConnectPeers(a, b)
			}
		}
		return false
	}
	if err := poll(ctx, time.Minute, 100*time.Millisecond, ready); err != nil {
		for i, ps := range pss {
			if got := len(ps.ListPeers(topicName)); got < deg[i] || (!rt.Flood && m.meshSize(i) == 0) {
				return Result{}, fmt.Errorf("gossipbench: %s: node %d sees %d of its %d neighbours in the topic, %d in its mesh (%d links redialled): %w",
					rt.Name, i, got, deg[i], m.meshSize(i), relinks, err)
			}
		}
		return Result{}, fmt.Errorf("gossipbench: %s: %w", rt.Name, err)
	}
	select {
	case <-time.After(c.Settle):
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}

	// Receivers record the first delivery of each message at each node: the warm-up messages first,
	// then the measured ones.
	all := append(slices.Clone(c.Warmup), c.Workload...)
	msgs := make([]*message, len(all))
	for i, s := range all {
		msgs[i] = &message{src: s.Source, done: make(chan struct{}), arrived: make([]time.Time, n), remaining: n - 1,
			firstFrom: filled(n, -1), offMesh: filled(n, -1), direct: make(map[int]bool), asked: make(map[[2]int]bool)}
	}
	m.msgs.Store(&msgs)
	var rwg stdsync.WaitGroup
	for i, sub := range subs {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				pm, err := sub.Next(ctx)
				if err != nil {
					return
				}
				if len(pm.Data) < 8 {
					continue
				}
				k := binary.BigEndian.Uint64(pm.Data)
				if k >= uint64(len(msgs)) {
					continue
				}
				msgs[k].arrive(i, time.Now())
			}
		}()
	}
	defer rwg.Wait()
	defer cancel()

	// publish sends msgs[first:first+len(sends)] at the pace of sends, then waits for every delivery,
	// each message up to its deadline.
	publish := func(first int, sends []Send) error {
		start := time.Now()
		for i, s := range sends {
			k := first + i
			if d := time.Until(start.Add(s.At)); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			data := make([]byte, c.Payload)
			binary.BigEndian.PutUint64(data, uint64(k))
			for j := 8; j < len(data); j++ {
				data[j] = byte(rng.Uint32())
			}
			m.ids.Store(meshconf.GossipMsgID(&pb.Message{Data: data}), k)
			msgs[k].sent = time.Now()
			if err := topics[s.Source].Publish(ctx, data); err != nil {
				return fmt.Errorf("gossipbench: publish: %w", err)
			}
		}
		for _, mg := range msgs[first : first+len(sends)] {
			t := time.NewTimer(time.Until(mg.sent.Add(c.Deadline)))
			select {
			case <-mg.done:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			t.Stop()
		}
		return nil
	}
	if err := publish(0, c.Warmup); err != nil {
		return Result{}, err
	}
	measured := msgs[len(c.Warmup):]

	paths := make([][]time.Duration, n)
	for i := range paths {
		paths[i] = topo.ShortestPaths(i)
	}
	res := Result{Router: rt.Name, Nodes: n, Messages: len(measured), Payload: c.Payload, Redialled: relinks}
	if !rt.Flood {
		mt := m.meshTopology(topo)
		res.MeshLinks = len(mt.Links)
		res.MeshStretch, res.MeshUnreachable = Stretch(topo, mt)
	}

	m.counting.Store(true)
	sampled := make(chan int, 1)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	go func() {
		empty := 0
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				for i := 0; i < n && !rt.Flood; i++ {
					if m.meshSize(i) == 0 {
						empty++
					}
				}
			case <-sampleCtx.Done():
				sampled <- empty
				return
			}
		}
	}()
	err := publish(len(c.Warmup), c.Workload)
	stopSampling()
	res.EmptyMesh = <-sampled
	if err != nil {
		return Result{}, err
	}
	// Keep counting bytes for Tail: the gossip that advertises the last messages belongs to them.
	select {
	case <-time.After(c.Tail):
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	m.counting.Store(false)

	res.Copies = m.copies.Load()
	res.Dropped = m.dropped.Load()
	res.WireBytes = m.wire.Load()
	res.ControlBytes = m.control.Load()
	res.CopyBytes = m.copyBytes.Load()
	res.CopyRPCs = m.copyRPCs.Load()
	res.Observed, res.ObservedFirstHand, res.ObservedMeshGuess = make([]int, n), make([]int, n), make([]int, n)
	for _, mg := range measured {
		mg.mu.Lock()
		res.AuthorDegree += deg[mg.src]
		res.Direct += len(mg.direct)
		for _, off := range mg.direct {
			if off {
				res.DirectOffMesh++
			}
		}
		for r, at := range mg.arrived {
			if r == mg.src {
				continue
			}
			res.Observed[r]++
			if mg.firstFrom[r] == mg.src {
				res.FirstHand++
				res.ObservedFirstHand[r]++
			}
			guess := mg.firstFrom[r]
			if mg.offMesh[r] >= 0 {
				guess = mg.offMesh[r]
				res.OffMeshSeen++
				if guess == mg.src {
					res.OffMeshRight++
				}
			}
			if guess == mg.src {
				res.MeshGuess++
				res.ObservedMeshGuess[r]++
			}
			res.Expected++
			if at.IsZero() || at.Sub(mg.sent) > c.Deadline {
				continue
			}
			res.Delivered++
			res.Stretch = append(res.Stretch, float64(at.Sub(mg.sent))/float64(paths[mg.src][r]))
		}
		mg.mu.Unlock()
	}
	slices.Sort(res.Stretch)
	return res, nil
}

// message is the delivery record of one workload message.
type message struct {
	src  int
	sent time.Time
	done chan struct{} // closed when every other node has it

	mu        stdsync.Mutex
	arrived   []time.Time // by node; zero until first delivery
	remaining int

	// Who sent copies to whom (nodeMeter records them; Result says what they are for).
	firstFrom []int           // by receiver: the node whose copy it delivered first; -1 before
	offMesh   []int           // by receiver: the first node outside its mesh that sent it a copy unasked; -1: none
	direct    map[int]bool    // peers the author queued a copy for: true if outside the author's mesh
	asked     map[[2]int]bool // (receiver, peer): the receiver sent the peer an IWANT for this message
}

func filled(n, v int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func (m *message) arrive(node int, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if node == m.src || !m.arrived[node].IsZero() {
		return
	}
	m.arrived[node] = at
	m.remaining--
	if m.remaining == 0 {
		close(m.done)
	}
}

// poll calls cond every interval until it is true, the timeout passes, or ctx ends.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return errors.New("timed out")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func seedBytes(s uint64) [32]byte {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[:], s)
	copy(b[8:], "fieldmesh gossipbench seed")
	return b
}

// quantile returns the q-quantile of sorted values (nearest rank, rounded up); 0 for none.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// meter is the RawTracer of every node of one run: it counts what is written to the wire and tracks
// the mesh sizes.
type meter struct {
	index map[peer.ID]int

	linksMu stdsync.Mutex
	links   []map[int]bool // by node: its mesh peers

	counting atomic.Bool

	copies, dropped, wire, control, copyBytes, copyRPCs atomic.Int64

	// The workload's messages (indexed by the first 8 bytes of their data), and their ids
	// (meshconf.GossipMsgID, which every router here uses) to their index, for IWANTs.
	msgs   atomic.Pointer[[]*message]
	ids    stdsync.Map // string -> int
	gossip bool        // the router keeps a mesh (GossipSub)
}

// message returns the workload message whose data is data, if it is one.
func (m *meter) message(data []byte) (*message, bool) {
	ms := m.msgs.Load()
	if ms == nil || len(data) < 8 {
		return nil, false
	}
	k := binary.BigEndian.Uint64(data)
	if k >= uint64(len(*ms)) {
		return nil, false
	}
	return (*ms)[k], true
}

// inMesh reports whether node i has node j in its mesh.
func (m *meter) inMesh(i, j int) bool {
	m.linksMu.Lock()
	defer m.linksMu.Unlock()
	return m.links[i][j]
}

// received records, at receiver i, a copy of msg from the peer that sent it: the first sender (first
// is true for the copy delivered), and the first unasked copy from outside i's mesh.
func (t *nodeMeter) received(msg *pubsub.Message, first bool) {
	mg, ok := t.m.message(msg.GetData())
	if !ok || mg.src == t.i {
		return
	}
	from, ok := t.m.index[msg.ReceivedFrom]
	if !ok {
		return
	}
	outside := t.m.gossip && !t.m.inMesh(t.i, from)
	mg.mu.Lock()
	defer mg.mu.Unlock()
	if first && mg.firstFrom[t.i] < 0 {
		mg.firstFrom[t.i] = from
	}
	if outside && mg.offMesh[t.i] < 0 && !mg.asked[[2]int{t.i, from}] {
		mg.offMesh[t.i] = from
	}
}

func (m *meter) node(i int) pubsub.RawTracer { return &nodeMeter{m: m, i: i} }

type nodeMeter struct {
	m *meter
	i int
}

var _ pubsub.RawTracer = (*nodeMeter)(nil)

func (t *nodeMeter) Graft(p peer.ID, _ string) {
	t.m.linksMu.Lock()
	t.m.links[t.i][t.m.index[p]] = true
	t.m.linksMu.Unlock()
}

func (t *nodeMeter) Prune(p peer.ID, _ string) {
	t.m.linksMu.Lock()
	delete(t.m.links[t.i], t.m.index[p])
	t.m.linksMu.Unlock()
}

// meshSize returns the number of node i's mesh peers.
func (m *meter) meshSize(i int) int {
	m.linksMu.Lock()
	defer m.linksMu.Unlock()
	return len(m.links[i])
}

// meshTopology returns the current mesh as a topology: a link where either end has the other in its
// mesh (a node forwards to its own mesh peers; a one-sided link still carries messages one way).
func (m *meter) meshTopology(full Topology) Topology {
	m.linksMu.Lock()
	defer m.linksMu.Unlock()
	mt := Topology{N: full.N}
	for _, l := range full.Links {
		if m.links[l.A][l.B] || m.links[l.B][l.A] {
			mt.Links = append(mt.Links, l)
		}
	}
	return mt
}

func (t *nodeMeter) SendRPCCompleted(rpc *pubsub.RPC, _ peer.ID, _ time.Duration) {
	if !t.m.counting.Load() {
		return
	}
	size := proto.Size(&rpc.RPC)
	sent := int64(wire.UvarintLen(uint64(size)) + size) // with the length prefix
	var pubOnly int64
	if len(rpc.Publish) > 0 {
		ps := proto.Size(&pb.RPC{Publish: rpc.Publish})
		pubOnly = int64(ps)
		if ps == size {
			pubOnly = sent // the length prefix belongs to the copies
		}
	}
	t.m.wire.Add(sent)
	t.m.control.Add(sent - pubOnly)
	t.m.copies.Add(int64(len(rpc.Publish)))
	if len(rpc.Publish) == 1 && pubOnly == sent {
		t.m.copyBytes.Add(sent)
		t.m.copyRPCs.Add(1)
	}
}

// SendRPC records, when node i queues an RPC for peer p, the copies of i's own messages (and whether
// p is outside i's mesh), and the messages i asks p for (IWANT).
func (t *nodeMeter) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	j, ok := t.m.index[p]
	if !ok {
		return
	}
	for _, pm := range rpc.Publish {
		mg, ok := t.m.message(pm.GetData())
		if !ok || mg.src != t.i {
			continue
		}
		outside := t.m.gossip && !t.m.inMesh(t.i, j)
		mg.mu.Lock()
		if _, seen := mg.direct[j]; !seen {
			mg.direct[j] = outside
		}
		mg.mu.Unlock()
	}
	for _, iw := range rpc.GetControl().GetIwant() {
		for _, id := range iw.GetMessageIDs() {
			k, ok := t.m.ids.Load(id)
			if !ok {
				continue
			}
			if ms := t.m.msgs.Load(); ms != nil {
				mg := (*ms)[k.(int)]
				mg.mu.Lock()
				mg.asked[[2]int{t.i, j}] = true
				mg.mu.Unlock()
			}
		}
	}
}

func (t *nodeMeter) DropRPC(rpc *pubsub.RPC, _ peer.ID) {
	if t.m.counting.Load() {
		t.m.dropped.Add(int64(len(rpc.Publish)))
	}
}

func (t *nodeMeter) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (t *nodeMeter) OnClosedOutboundStream(peer.ID)           {}
func (t *nodeMeter) Join(string)                              {}
func (t *nodeMeter) Leave(string)                             {}
func (t *nodeMeter) ValidateMessage(*pubsub.Message)          {}
func (t *nodeMeter) DeliverMessage(msg *pubsub.Message)       { t.received(msg, true) }
func (t *nodeMeter) DuplicateMessage(msg *pubsub.Message)     { t.received(msg, false) }
func (t *nodeMeter) RejectMessage(*pubsub.Message, string)    {}
func (t *nodeMeter) ThrottlePeer(peer.ID)                     {}
func (t *nodeMeter) RecvRPC(*pubsub.RPC)                      {}
func (t *nodeMeter) UndeliverableMessage(*pubsub.Message)     {}
