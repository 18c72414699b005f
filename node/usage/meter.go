package usage

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	stdsync "sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

const (
	// flushEvery is how often Run writes counts to the store.
	flushEvery = time.Minute
	// keepDays is how long daily counts are kept: a little over a year of claims.
	keepDays = 400
	// maxPeers bounds the peers counted separately per day.
	maxPeers = 32
	// maxProtocols bounds the protocols counted separately per day.
	maxProtocols = 32
	// maxPending bounds the counters held in memory between flushes.
	maxPending = 4096
	// topPeers is how many peers a report lists.
	topPeers = 10
)

// Protocol labels of counters that are not libp2p protocol ids.
const (
	labelGossip      = "gossip"        // a team's gossip messages (team counters)
	labelSync        = "sync"          // a team's catch-up sessions (team counters)
	labelNegotiation = "(negotiation)" // stream bytes before a protocol was agreed
	labelOther       = "(other)"       // protocols folded together
)

// Store is the part of the store the accounting uses (*storage.Store).
type Store interface {
	// Usage calls fn for every counter of the days from through to, inclusive.
	Usage(from, to uint32, fn func(storage.UsageKey, storage.UsageCount) error) error
	// AddUsage deletes the keys in remove, then adds add to the stored counters, in one transaction.
	AddUsage(add map[storage.UsageKey]storage.UsageCount, remove []storage.UsageKey) error
	// DeleteUsageBefore deletes the counters of every day before day.
	DeleteUsageBefore(day uint32) (int, error)
}

var _ Store = (*storage.Store)(nil)

// Config configures a Meter. The zero value works.
type Config struct {
	// Now is the clock; its time zone sets the days. Default: time.Now.
	Now func() time.Time
	// Logger receives the failures of Run's flushes. Default: discard.
	Logger *slog.Logger
	// Topic returns the topic of this device's team whose gossip topic name is name
	// (meshconf.TopicName), and false for any other name: gossip of other topics is not
	// attributed. Default: none is a team's.
	Topic func(name string) (envelope.Topic, bool)
}

// Meter accumulates byte counts and flushes them to the store. It is the host's bandwidth reporter
// and, through Tracer, a pubsub raw tracer. Safe for concurrent use.
type Meter struct {
	st    Store
	now   func() time.Time
	log   *slog.Logger
	topic func(name string) (envelope.Topic, bool)

	mu      stdsync.Mutex // guards pending
	pending map[storage.UsageKey]storage.UsageCount

	flushMu  stdsync.Mutex // serialises flush and report; guards the fields below
	pruned   uint32        // the day counts were last pruned on
	flushes  int           // flush transactions written
	flushedC chan struct{} // if not nil, signalled after each flush by run (tests)
}

var (
	_ metrics.Reporter = (*Meter)(nil)
	_ pubsub.RawTracer = tracer{}
)

// New returns a Meter that keeps its counts in st.
func New(st Store, cfg Config) *Meter {
	m := &Meter{st: st, now: cfg.Now, log: cfg.Logger, topic: cfg.Topic, pending: make(map[storage.UsageKey]storage.UsageCount)}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.topic == nil {
		m.topic = func(string) (envelope.Topic, bool) { return envelope.Topic{}, false }
	}
	return m
}

// dayOf returns the calendar day of t, in t's location, as yyyymmdd.
func dayOf(t time.Time) uint32 {
	y, m, d := t.Date()
	y = min(max(y, 0), 400000)
	return uint32(y*10000 + int(m)*100 + d)
}

// add adds c to the counter k (whose Day it sets to today).
func (m *Meter) add(k storage.UsageKey, c storage.UsageCount) {
	if c == (storage.UsageCount{}) {
		return
	}
	k.Day = dayOf(m.now())
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pending[k]; !ok && len(m.pending) >= maxPending {
		k.Protocol, k.Peer = labelOther, ""
	}
	m.pending[k] = m.pending[k].Add(c)
}

// protocolLabel is the label a stream's protocol is counted under.
func protocolLabel(p protocol.ID) string {
	switch {
	case p == "":
		return labelNegotiation
	case len(p) > 64 || strings.IndexFunc(string(p), func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0:
		return labelOther
	}
	return string(p)
}

func wireKey(proto protocol.ID, p peer.ID) storage.UsageKey {
	k := storage.UsageKey{Protocol: protocolLabel(proto)}
	if len(p) <= storage.MaxUsagePeerLen {
		k.Peer = string(p)
	}
	return k
}

// LogSentMessage does nothing: the swarm also calls LogSentMessageStream, which says more.
func (m *Meter) LogSentMessage(int64) {}

// LogRecvMessage does nothing: the swarm also calls LogRecvMessageStream, which says more.
func (m *Meter) LogRecvMessage(int64) {}

// LogSentMessageStream counts size bytes written on a stream of protocol proto to peer p.
func (m *Meter) LogSentMessageStream(size int64, proto protocol.ID, p peer.ID) {
	if size > 0 {
		m.add(wireKey(proto, p), storage.UsageCount{Sent: uint64(size)})
	}
}

// LogRecvMessageStream counts size bytes read from a stream of protocol proto from peer p.
func (m *Meter) LogRecvMessageStream(size int64, proto protocol.ID, p peer.ID) {
	if size > 0 {
		m.add(wireKey(proto, p), storage.UsageCount{Received: uint64(size)})
	}
}

// The Get methods of metrics.Reporter give today's counts held in memory, which the store has not
// seen yet (rates are not tracked). Use Report for reports.

// GetBandwidthForPeer returns the unflushed counts of peer p.
func (m *Meter) GetBandwidthForPeer(p peer.ID) metrics.Stats {
	return m.stats(func(k storage.UsageKey) bool { return k.Topic == (envelope.Topic{}) && k.Peer == string(p) })
}

// GetBandwidthForProtocol returns the unflushed counts of protocol proto.
func (m *Meter) GetBandwidthForProtocol(proto protocol.ID) metrics.Stats {
	label := protocolLabel(proto)
	return m.stats(func(k storage.UsageKey) bool { return k.Topic == (envelope.Topic{}) && k.Protocol == label })
}

// GetBandwidthTotals returns the unflushed counts of the wire.
func (m *Meter) GetBandwidthTotals() metrics.Stats {
	return m.stats(func(k storage.UsageKey) bool { return k.Topic == (envelope.Topic{}) })
}

// GetBandwidthByPeer returns the unflushed counts by peer.
func (m *Meter) GetBandwidthByPeer() map[peer.ID]metrics.Stats {
	return wireStatsBy(m, func(k storage.UsageKey) (peer.ID, bool) { return peer.ID(k.Peer), k.Peer != "" })
}

// GetBandwidthByProtocol returns the unflushed counts by protocol label.
func (m *Meter) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats {
	return wireStatsBy(m, func(k storage.UsageKey) (protocol.ID, bool) { return protocol.ID(k.Protocol), true })
}

// Reset does nothing: counts are not discarded.
func (m *Meter) Reset() {}

// TrimIdle does nothing: flushing bounds the memory held.
func (m *Meter) TrimIdle(time.Time) {}

func (m *Meter) stats(match func(storage.UsageKey) bool) metrics.Stats {
	var c storage.UsageCount
	m.mu.Lock()
	for k, v := range m.pending {
		if match(k) {
			c = c.Add(v)
		}
	}
	m.mu.Unlock()
	return toStats(c)
}

// wireStatsBy sums the unflushed counts of the wire (not the team counters) by the group of their
// key; ok false leaves a counter out.
func wireStatsBy[G comparable](m *Meter, group func(storage.UsageKey) (g G, ok bool)) map[G]metrics.Stats {
	sums := make(map[G]storage.UsageCount)
	m.mu.Lock()
	for k, c := range m.pending {
		if g, ok := group(k); ok && k.Topic == (envelope.Topic{}) {
			sums[g] = sums[g].Add(c)
		}
	}
	m.mu.Unlock()
	out := make(map[G]metrics.Stats, len(sums))
	for g, c := range sums {
		out[g] = toStats(c)
	}
	return out
}

// toStats converts c to libp2p's signed counts, capped at 2^62.
func toStats(c storage.UsageCount) metrics.Stats {
	return metrics.Stats{TotalIn: int64(min(c.Received, 1<<62)), TotalOut: int64(min(c.Sent, 1<<62))}
}

// SyncBytes counts a catch-up session of the team whose topic is topic: frame bytes sent and
// received (negative counts are taken as zero).
func (m *Meter) SyncBytes(topic envelope.Topic, sent, recv int64) {
	m.add(storage.UsageKey{Topic: topic, Protocol: labelSync}, storage.UsageCount{Sent: uint64(max(sent, 0)), Received: uint64(max(recv, 0))})
}

// Tracer returns the pubsub raw tracer that attributes gossip bytes to teams (give it to
// pubsub.WithRawTracer).
func (m *Meter) Tracer() pubsub.RawTracer { return tracer{m} }

// tracer is a pubsub.RawTracer counting gossip bytes by team topic.
type tracer struct{ m *Meter }

// RecvRPC counts the team messages (and IHAVE gossip) of an incoming RPC.
func (tr tracer) RecvRPC(rpc *pubsub.RPC) {
	for topic, n := range tr.m.gossipBytes(rpc) {
		tr.m.add(storage.UsageKey{Topic: topic, Protocol: labelGossip}, storage.UsageCount{Received: n})
	}
}

// SendRPCCompleted counts the team messages (and IHAVE gossip) of an RPC written to a peer.
func (tr tracer) SendRPCCompleted(rpc *pubsub.RPC, _ peer.ID, _ time.Duration) {
	for topic, n := range tr.m.gossipBytes(rpc) {
		tr.m.add(storage.UsageKey{Topic: topic, Protocol: labelGossip}, storage.UsageCount{Sent: n})
	}
}

func (tracer) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (tracer) OnClosedOutboundStream(peer.ID)           {}
func (tracer) Join(string)                              {}
func (tracer) Leave(string)                             {}
func (tracer) Graft(peer.ID, string)                    {}
func (tracer) Prune(peer.ID, string)                    {}
func (tracer) ValidateMessage(*pubsub.Message)          {}
func (tracer) DeliverMessage(*pubsub.Message)           {}
func (tracer) RejectMessage(*pubsub.Message, string)    {}
func (tracer) DuplicateMessage(*pubsub.Message)         {}
func (tracer) ThrottlePeer(peer.ID)                     {}
func (tracer) SendRPC(*pubsub.RPC, peer.ID)             {}
func (tracer) DropRPC(*pubsub.RPC, peer.ID)             {}
func (tracer) UndeliverableMessage(*pubsub.Message)     {}

// gossipBytes returns the protobuf bytes of an RPC's messages and IHAVE entries by team topic, for
// the topics of this device's teams.
func (m *Meter) gossipBytes(rpc *pubsub.RPC) map[envelope.Topic]uint64 {
	if rpc == nil {
		return nil
	}
	var out map[envelope.Topic]uint64
	count := func(name string, n int) {
		t, ok := m.topic(name)
		if !ok {
			return
		}
		if out == nil {
			out = make(map[envelope.Topic]uint64)
		}
		out[t] += uint64(n)
	}
	for _, msg := range rpc.Publish {
		count(msg.GetTopic(), pbField(messageSize(msg)))
	}
	for _, ih := range rpc.GetControl().GetIhave() {
		n := 0
		if ih.TopicID != nil {
			n += pbField(len(*ih.TopicID))
		}
		for _, id := range ih.MessageIDs {
			n += pbField(len(id))
		}
		count(ih.GetTopicID(), pbField(n))
	}
	return out
}

// messageSize is the protobuf encoding size of a gossip message (every field number is below 16, so
// each tag is one byte).
func messageSize(msg *pb.Message) int {
	n := 0
	for _, f := range [][]byte{msg.From, msg.Data, msg.Seqno, msg.Signature, msg.Key} {
		if f != nil {
			n += pbField(len(f))
		}
	}
	if msg.Topic != nil {
		n += pbField(len(*msg.Topic))
	}
	return n
}

// pbField is the size of a length-delimited protobuf field of n bytes with a one-byte tag.
func pbField(n int) int {
	return 1 + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(n)) + n
}

// Run flushes the counts once a minute until ctx ends, logging failures (the counts stay in memory
// for the next flush). It does not flush when ctx ends: the owner calls Flush once nothing counts
// any more.
func (m *Meter) Run(ctx context.Context) { m.run(ctx, nil) }

// run flushes the counts every flushEvery (or on each tick of tick, if not nil) until ctx ends.
func (m *Meter) run(ctx context.Context, tick <-chan time.Time) {
	if tick == nil {
		t := time.NewTicker(flushEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if err := m.Flush(); err != nil {
			m.log.Warn("storing data usage failed", "err", err)
		}
		if m.flushedC != nil {
			select {
			case m.flushedC <- struct{}{}:
			default:
			}
		}
	}
}

// Flush merges the counts held in memory into the store, in one transaction, folding peers and
// protocols beyond the daily bounds into "other". On error the counts stay in memory for the next
// flush. Once a day it deletes the counts of the days more than keepDays (400) days old.
func (m *Meter) Flush() error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	pend := m.pending
	m.pending = make(map[storage.UsageKey]storage.UsageCount)
	m.mu.Unlock()

	err := m.write(pend)
	if err != nil {
		m.mu.Lock()
		for k, c := range pend {
			m.pending[k] = m.pending[k].Add(c)
		}
		m.mu.Unlock()
		return err
	}
	if today := dayOf(m.now()); today != m.pruned {
		cut := dayOf(m.now().AddDate(0, 0, -keepDays))
		if _, err := m.st.DeleteUsageBefore(cut); err != nil {
			return fmt.Errorf("prune data usage: %w", err)
		}
		m.pruned = today
	}
	return nil
}

// write stores pend (the caller holds flushMu).
func (m *Meter) write(pend map[storage.UsageKey]storage.UsageCount) error {
	if len(pend) == 0 {
		return nil
	}
	// Team counters are added as they are; wire counters are folded per day.
	add := make(map[storage.UsageKey]storage.UsageCount, len(pend))
	var remove []storage.UsageKey
	wire := make(map[uint32]map[storage.UsageKey]storage.UsageCount)
	for k, c := range pend {
		switch {
		case k.Topic != (envelope.Topic{}):
			add[k] = c
		case wire[k.Day] == nil:
			wire[k.Day] = map[storage.UsageKey]storage.UsageCount{k: c}
		default:
			wire[k.Day][k] = c
		}
	}
	for day, fresh := range wire {
		stored := make(map[storage.UsageKey]storage.UsageCount)
		err := m.st.Usage(day, day, func(k storage.UsageKey, c storage.UsageCount) error {
			if k.Topic == (envelope.Topic{}) {
				stored[k] = c
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read data usage: %w", err)
		}
		keepProto := busiest(maxProtocols, func(k storage.UsageKey) string { return k.Protocol }, labelOther, stored, fresh)
		keepPeer := busiest(maxPeers, func(k storage.UsageKey) string { return k.Peer }, "", stored, fresh)
		fold := func(k storage.UsageKey) storage.UsageKey {
			if !keepProto[k.Protocol] {
				k.Protocol = labelOther
			}
			if !keepPeer[k.Peer] {
				k.Peer = ""
			}
			return k
		}
		for k, c := range stored {
			if to := fold(k); to != k {
				remove = append(remove, k)
				add[to] = add[to].Add(c)
			}
		}
		for k, c := range fresh {
			to := fold(k)
			add[to] = add[to].Add(c)
		}
	}
	if err := m.st.AddUsage(add, remove); err != nil {
		return err
	}
	m.flushes++
	return nil
}

// busiest returns the values of field (over the rows of stored and fresh) to keep as they are: all
// of them if there are at most limit, else the limit with the most bytes. The value other (the
// folded rows) is always kept.
func busiest(limit int, field func(storage.UsageKey) string, other string, rows ...map[storage.UsageKey]storage.UsageCount) map[string]bool {
	totals := make(map[string]uint64)
	for _, m := range rows {
		for k, c := range m {
			totals[field(k)] += c.Total()
		}
	}
	delete(totals, other)
	keep := map[string]bool{other: true}
	names := make([]string, 0, len(totals))
	for v := range totals {
		names = append(names, v)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(totals[b], totals[a]), strings.Compare(a, b))
	})
	for _, v := range names[:min(limit, len(names))] {
		keep[v] = true
	}
	return keep
}
