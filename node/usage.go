package node

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
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

	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Data accounting.
//
// Health workers pay for their own mobile data, and claim it back; the node counts what it sends and
// receives so they can. Three sources feed one set of counters, kept per calendar day (in the time
// zone of Config.Now) in the store's usage keyspace:
//
//   - the wire, per protocol and per peer: a *usage is the libp2p host's bandwidth reporter
//     (libp2p.BandwidthReporter), called by the swarm for every read and write on every stream. It
//     works with libp2p.DisableMetrics (which only turns off the Prometheus collectors). A host given in
//     Config.Host reports nothing unless it was built with the reporter.
//   - gossip, per team: a pubsub raw tracer attributes each published message (and IHAVE gossip) of a
//     team's topic to that team, as the protobuf bytes of the message inside the RPC.
//   - catch-up, per team: the sync code reports each session's frame bytes (syncBytes).
//
// Team counts are a subset of the wire counts (the rest is identify, ping, pubsub control, protocol
// negotiation): the report shows both and never adds them. Counts are stream payload bytes, so they
// are a lower bound of what a carrier bills: Noise and yamux framing, QUIC, TCP/IP headers and acks,
// and mDNS come on top (a few percent for large transfers, more for small messages).
//
// Counting costs a mutex and a map update per stream read or write; the counts reach the store at most
// once per usageFlushEvery (and at Close), merged into the stored counters in one transaction. The
// store never holds a name: teams are keyed by topic and peers by peer id; names are looked up when a
// report is made. Keys are bounded: per day at most usageMaxPeers peers (the rest are folded into
// "other peers", keeping the busiest) and usageMaxProtocols protocols, one row per team and source,
// and days older than usageKeepDays are deleted.

const (
	// usageFlushEvery is how often counts are written to the store.
	usageFlushEvery = time.Minute
	// usageKeepDays is how long daily counts are kept: a little over a year of claims.
	usageKeepDays = 400
	// usageMaxPeers bounds the peers counted separately per day.
	usageMaxPeers = 32
	// usageMaxProtocols bounds the protocols counted separately per day.
	usageMaxProtocols = 32
	// usageMaxPending bounds the counters held in memory between flushes.
	usageMaxPending = 4096
	// usageTopPeers is how many peers a report lists.
	usageTopPeers = 10
)

// Protocol labels of usage counters that are not libp2p protocol ids.
const (
	usageGossip      = "gossip"        // a team's gossip messages (team counters)
	usageSync        = "sync"          // a team's catch-up sessions (team counters)
	usageNegotiation = "(negotiation)" // stream bytes before a protocol was agreed
	usageOther       = "(other)"       // protocols folded together
)

// usage accumulates byte counts and flushes them to the store. It is the host's bandwidth reporter
// and, through tracer, a pubsub raw tracer. Safe for concurrent use.
type usage struct {
	st    *storage.Store
	now   func() time.Time
	log   *slog.Logger
	known func(envelope.Topic) bool // whether a topic is one of this device's teams

	mu      stdsync.Mutex // guards pending
	pending map[storage.UsageKey]storage.UsageCount

	flushMu  stdsync.Mutex // serialises flush and report; guards the fields below
	pruned   uint32        // the day counts were last pruned on
	flushes  int           // flush transactions written
	flushedC chan struct{} // if not nil, signalled after each flush by run (tests)
}

var (
	_ metrics.Reporter = (*usage)(nil)
	_ pubsub.RawTracer = usageTracer{}
)

// newUsage returns the accounting of a node. known reports whether a topic is one of the device's
// teams (gossip of other topics is not attributed); now is the clock whose time zone sets the days.
func newUsage(st *storage.Store, now func() time.Time, log *slog.Logger, known func(envelope.Topic) bool) *usage {
	return &usage{st: st, now: now, log: log, known: known, pending: make(map[storage.UsageKey]storage.UsageCount)}
}

// dayOf returns the calendar day of t, in t's location, as yyyymmdd.
func dayOf(t time.Time) uint32 {
	y, m, d := t.Date()
	y = min(max(y, 0), 400000)
	return uint32(y*10000 + int(m)*100 + d)
}

// add adds c to the counter k (whose Day it sets to today).
func (u *usage) add(k storage.UsageKey, c storage.UsageCount) {
	if c == (storage.UsageCount{}) {
		return
	}
	k.Day = dayOf(u.now())
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.pending[k]; !ok && len(u.pending) >= usageMaxPending {
		k.Protocol, k.Peer = usageOther, ""
	}
	u.pending[k] = u.pending[k].Add(c)
}

// protocolLabel is the label a stream's protocol is counted under.
func protocolLabel(p protocol.ID) string {
	switch {
	case p == "":
		return usageNegotiation
	case len(p) > 64 || strings.IndexFunc(string(p), func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0:
		return usageOther
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
func (u *usage) LogSentMessage(int64) {}

// LogRecvMessage does nothing: the swarm also calls LogRecvMessageStream, which says more.
func (u *usage) LogRecvMessage(int64) {}

// LogSentMessageStream counts size bytes written on a stream of protocol proto to peer p.
func (u *usage) LogSentMessageStream(size int64, proto protocol.ID, p peer.ID) {
	if size > 0 {
		u.add(wireKey(proto, p), storage.UsageCount{Sent: uint64(size)})
	}
}

// LogRecvMessageStream counts size bytes read from a stream of protocol proto from peer p.
func (u *usage) LogRecvMessageStream(size int64, proto protocol.ID, p peer.ID) {
	if size > 0 {
		u.add(wireKey(proto, p), storage.UsageCount{Received: uint64(size)})
	}
}

// The Get methods of metrics.Reporter give today's counts held in memory, which the store has not
// seen yet (rates are not tracked). Use Node.Usage for reports.

// GetBandwidthForPeer returns the unflushed counts of peer p.
func (u *usage) GetBandwidthForPeer(p peer.ID) metrics.Stats {
	return u.stats(func(k storage.UsageKey) bool { return k.Topic == (envelope.Topic{}) && k.Peer == string(p) })
}

// GetBandwidthForProtocol returns the unflushed counts of protocol proto.
func (u *usage) GetBandwidthForProtocol(proto protocol.ID) metrics.Stats {
	label := protocolLabel(proto)
	return u.stats(func(k storage.UsageKey) bool { return k.Topic == (envelope.Topic{}) && k.Protocol == label })
}

// GetBandwidthTotals returns the unflushed counts of the wire.
func (u *usage) GetBandwidthTotals() metrics.Stats {
	return u.stats(func(k storage.UsageKey) bool { return k.Topic == (envelope.Topic{}) })
}

// GetBandwidthByPeer returns the unflushed counts by peer.
func (u *usage) GetBandwidthByPeer() map[peer.ID]metrics.Stats {
	return wireStatsBy(u, func(k storage.UsageKey) (peer.ID, bool) { return peer.ID(k.Peer), k.Peer != "" })
}

// GetBandwidthByProtocol returns the unflushed counts by protocol label.
func (u *usage) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats {
	return wireStatsBy(u, func(k storage.UsageKey) (protocol.ID, bool) { return protocol.ID(k.Protocol), true })
}

// Reset does nothing: counts are not discarded.
func (u *usage) Reset() {}

// TrimIdle does nothing: flushing bounds the memory held.
func (u *usage) TrimIdle(time.Time) {}

func (u *usage) stats(match func(storage.UsageKey) bool) metrics.Stats {
	var c storage.UsageCount
	u.mu.Lock()
	for k, v := range u.pending {
		if match(k) {
			c = c.Add(v)
		}
	}
	u.mu.Unlock()
	return toStats(c)
}

// wireStatsBy sums the unflushed counts of the wire (not the team counters) by the group of their
// key; ok false leaves a counter out.
func wireStatsBy[G comparable](u *usage, group func(storage.UsageKey) (g G, ok bool)) map[G]metrics.Stats {
	sums := make(map[G]storage.UsageCount)
	u.mu.Lock()
	for k, c := range u.pending {
		if g, ok := group(k); ok && k.Topic == (envelope.Topic{}) {
			sums[g] = sums[g].Add(c)
		}
	}
	u.mu.Unlock()
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

// syncBytes counts a catch-up session of a team: frame bytes sent and received.
func (u *usage) syncBytes(topic envelope.Topic, sent, recv int64) {
	u.add(storage.UsageKey{Topic: topic, Protocol: usageSync}, storage.UsageCount{Sent: uint64(max(sent, 0)), Received: uint64(max(recv, 0))})
}

// tracer returns the pubsub raw tracer that attributes gossip bytes to teams.
func (u *usage) tracer() pubsub.RawTracer { return usageTracer{u} }

// usageTracer is a pubsub.RawTracer counting gossip bytes by team topic.
type usageTracer struct{ u *usage }

// RecvRPC counts the team messages (and IHAVE gossip) of an incoming RPC.
func (tr usageTracer) RecvRPC(rpc *pubsub.RPC) {
	for topic, n := range tr.u.gossipBytes(rpc) {
		tr.u.add(storage.UsageKey{Topic: topic, Protocol: usageGossip}, storage.UsageCount{Received: n})
	}
}

// SendRPCCompleted counts the team messages (and IHAVE gossip) of an RPC written to a peer.
func (tr usageTracer) SendRPCCompleted(rpc *pubsub.RPC, _ peer.ID, _ time.Duration) {
	for topic, n := range tr.u.gossipBytes(rpc) {
		tr.u.add(storage.UsageKey{Topic: topic, Protocol: usageGossip}, storage.UsageCount{Sent: n})
	}
}

func (usageTracer) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (usageTracer) OnClosedOutboundStream(peer.ID)           {}
func (usageTracer) Join(string)                              {}
func (usageTracer) Leave(string)                             {}
func (usageTracer) Graft(peer.ID, string)                    {}
func (usageTracer) Prune(peer.ID, string)                    {}
func (usageTracer) ValidateMessage(*pubsub.Message)          {}
func (usageTracer) DeliverMessage(*pubsub.Message)           {}
func (usageTracer) RejectMessage(*pubsub.Message, string)    {}
func (usageTracer) DuplicateMessage(*pubsub.Message)         {}
func (usageTracer) ThrottlePeer(peer.ID)                     {}
func (usageTracer) SendRPC(*pubsub.RPC, peer.ID)             {}
func (usageTracer) DropRPC(*pubsub.RPC, peer.ID)             {}
func (usageTracer) UndeliverableMessage(*pubsub.Message)     {}

// gossipBytes returns the protobuf bytes of an RPC's messages and IHAVE entries by team topic, for
// the topics of this device's teams.
func (u *usage) gossipBytes(rpc *pubsub.RPC) map[envelope.Topic]uint64 {
	if rpc == nil {
		return nil
	}
	var out map[envelope.Topic]uint64
	count := func(name string, n int) {
		t, ok := meshconf.ParseTopicName(name)
		if !ok || !u.known(t) {
			return
		}
		if out == nil {
			out = make(map[envelope.Topic]uint64)
		}
		out[t] += uint64(n)
	}
	for _, m := range rpc.Publish {
		count(m.GetTopic(), pbField(messageSize(m)))
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
func messageSize(m *pb.Message) int {
	n := 0
	for _, f := range [][]byte{m.From, m.Data, m.Seqno, m.Signature, m.Key} {
		if f != nil {
			n += pbField(len(f))
		}
	}
	if m.Topic != nil {
		n += pbField(len(*m.Topic))
	}
	return n
}

// pbField is the size of a length-delimited protobuf field of n bytes with a one-byte tag.
func pbField(n int) int {
	return 1 + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(n)) + n
}

// run flushes the counts every usageFlushEvery (or on each tick of tick, if not nil) until ctx ends.
// The final flush is Close's (flush after the node's goroutines ended).
func (u *usage) run(ctx context.Context, tick <-chan time.Time) {
	if tick == nil {
		t := time.NewTicker(usageFlushEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if err := u.flush(); err != nil {
			u.log.Warn("storing data usage failed", "err", err)
		}
		if u.flushedC != nil {
			select {
			case u.flushedC <- struct{}{}:
			default:
			}
		}
	}
}

// flush merges the counts held in memory into the store, in one transaction, folding peers and
// protocols beyond the daily bounds into "other". On error the counts stay in memory for the next
// flush. Once a day it deletes days older than usageKeepDays.
func (u *usage) flush() error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	u.mu.Lock()
	pend := u.pending
	u.pending = make(map[storage.UsageKey]storage.UsageCount)
	u.mu.Unlock()

	err := u.write(pend)
	if err != nil {
		u.mu.Lock()
		for k, c := range pend {
			u.pending[k] = u.pending[k].Add(c)
		}
		u.mu.Unlock()
		return err
	}
	if today := dayOf(u.now()); today != u.pruned {
		cut := dayOf(u.now().AddDate(0, 0, -usageKeepDays))
		if _, err := u.st.DeleteUsageBefore(cut); err != nil {
			return fmt.Errorf("prune data usage: %w", err)
		}
		u.pruned = today
	}
	return nil
}

// write stores pend (the caller holds flushMu).
func (u *usage) write(pend map[storage.UsageKey]storage.UsageCount) error {
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
		err := u.st.Usage(day, day, func(k storage.UsageKey, c storage.UsageCount) error {
			if k.Topic == (envelope.Topic{}) {
				stored[k] = c
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read data usage: %w", err)
		}
		keepProto := busiest(usageMaxProtocols, func(k storage.UsageKey) string { return k.Protocol }, usageOther, stored, fresh)
		keepPeer := busiest(usageMaxPeers, func(k storage.UsageKey) string { return k.Peer }, "", stored, fresh)
		fold := func(k storage.UsageKey) storage.UsageKey {
			if !keepProto[k.Protocol] {
				k.Protocol = usageOther
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
	if err := u.st.AddUsage(add, remove); err != nil {
		return err
	}
	u.flushes++
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

// UsageBytes is a pair of byte counts and their sum.
type UsageBytes struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Total    uint64 `json:"total"`
}

func usageBytes(c storage.UsageCount) UsageBytes {
	return UsageBytes{Sent: c.Sent, Received: c.Received, Total: c.Total()}
}

// UsageDay is one day of a report.
type UsageDay struct {
	Date string `json:"date"` // YYYY-MM-DD
	UsageBytes
}

// UsageTeam is the traffic of one team in a report (a subset of the total).
type UsageTeam struct {
	// ID is the team's id, or "" for a team this device no longer belongs to.
	ID string `json:"id"`
	// Topic is the short form of the team's gossip topic (what the store keeps).
	Topic string `json:"topic"`
	// Name is the team's name, resolved when the report was made; "" when ID is.
	Name   string     `json:"name"`
	Gossip UsageBytes `json:"gossip"`
	Sync   UsageBytes `json:"sync"`
	UsageBytes
}

// UsageProtocol is the traffic of one protocol in a report.
type UsageProtocol struct {
	Protocol string `json:"protocol"`
	UsageBytes
}

// UsagePeer is the traffic with one peer in a report.
type UsagePeer struct {
	// Device is the short id of the peer's device, or "other" for the peers not counted separately.
	Device string `json:"device"`
	PeerID string `json:"peer_id,omitempty"`
	UsageBytes
}

// UsageReport is what this device sent and received over fieldmesh in one calendar month: the
// totals, and the same bytes by day, by protocol and by peer (the busiest usageTopPeers, then the
// rest together), and the part of them that was a team's gossip or catch-up. Counts are stream
// payload bytes: a lower bound of the data a carrier bills (see the accounting notes in usage.go).
type UsageReport struct {
	Month string     `json:"month"` // YYYY-MM
	Total UsageBytes `json:"total"`
	// Unattributed is the part of Total that is no team's: discovery, keep-alives, protocol
	// negotiation, gossip control.
	Unattributed UsageBytes      `json:"unattributed"`
	Days         []UsageDay      `json:"days"`
	Teams        []UsageTeam     `json:"teams"`
	Protocols    []UsageProtocol `json:"protocols"`
	Peers        []UsagePeer     `json:"peers"`
}

// teamResolver resolves a topic to its team's id and name, if the device belongs to it.
type teamResolver func(envelope.Topic) (id crdt.TeamID, name string, ok bool)

// report builds the report of month ("YYYY-MM"; "" is the current month) from the store and the
// counts not flushed yet.
func (u *usage) report(month string, resolve teamResolver) (UsageReport, error) {
	var first time.Time
	if month == "" {
		now := u.now()
		first = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, now.Location())
	} else {
		t, err := time.Parse("2006-01", month)
		if err != nil {
			return UsageReport{}, fmt.Errorf("node: bad month %q (want YYYY-MM)", month)
		}
		first = t
	}
	from := dayOf(first)
	to := from + 30 // yyyymm31: later than the last day of any month, earlier than the next month
	rows := make(map[storage.UsageKey]storage.UsageCount)
	u.flushMu.Lock()
	err := u.st.Usage(from, to, func(k storage.UsageKey, c storage.UsageCount) error {
		rows[k] = rows[k].Add(c)
		return nil
	})
	u.mu.Lock()
	for k, c := range u.pending {
		if k.Day >= from && k.Day <= to {
			rows[k] = rows[k].Add(c)
		}
	}
	u.mu.Unlock()
	u.flushMu.Unlock()
	if err != nil {
		return UsageReport{}, fmt.Errorf("node: read data usage: %w", err)
	}

	var total, teamTotal storage.UsageCount
	days := make(map[uint32]storage.UsageCount)
	protos := make(map[string]storage.UsageCount)
	peers := make(map[string]storage.UsageCount)
	type teamSums struct{ gossip, sync storage.UsageCount }
	teams := make(map[envelope.Topic]*teamSums)
	for k, c := range rows {
		if k.Topic != (envelope.Topic{}) {
			ts := teams[k.Topic]
			if ts == nil {
				ts = &teamSums{}
				teams[k.Topic] = ts
			}
			if k.Protocol == usageSync {
				ts.sync = ts.sync.Add(c)
			} else {
				ts.gossip = ts.gossip.Add(c)
			}
			teamTotal = teamTotal.Add(c)
			continue
		}
		total = total.Add(c)
		days[k.Day] = days[k.Day].Add(c)
		protos[k.Protocol] = protos[k.Protocol].Add(c)
		peers[k.Peer] = peers[k.Peer].Add(c)
	}

	r := UsageReport{
		Month: first.Format("2006-01"),
		Total: usageBytes(total),
		Unattributed: usageBytes(storage.UsageCount{
			Sent:     total.Sent - min(total.Sent, teamTotal.Sent),
			Received: total.Received - min(total.Received, teamTotal.Received),
		}),
		Days:      []UsageDay{},
		Teams:     []UsageTeam{},
		Protocols: []UsageProtocol{},
		Peers:     []UsagePeer{},
	}
	for d, c := range days {
		r.Days = append(r.Days, UsageDay{Date: fmt.Sprintf("%04d-%02d-%02d", d/10000, d/100%100, d%100), UsageBytes: usageBytes(c)})
	}
	slices.SortFunc(r.Days, func(a, b UsageDay) int { return strings.Compare(a.Date, b.Date) })
	for topic, ts := range teams {
		ut := UsageTeam{Topic: topic.Short(), Gossip: usageBytes(ts.gossip), Sync: usageBytes(ts.sync), UsageBytes: usageBytes(ts.gossip.Add(ts.sync))}
		if id, name, ok := resolve(topic); ok {
			ut.ID, ut.Name = id.String(), name
		}
		r.Teams = append(r.Teams, ut)
	}
	slices.SortFunc(r.Teams, func(a, b UsageTeam) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Topic, b.Topic))
	})
	for p, c := range protos {
		r.Protocols = append(r.Protocols, UsageProtocol{Protocol: p, UsageBytes: usageBytes(c)})
	}
	slices.SortFunc(r.Protocols, func(a, b UsageProtocol) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Protocol, b.Protocol))
	})
	var others storage.UsageCount
	for p, c := range peers {
		if p == "" {
			others = others.Add(c)
			continue
		}
		up := UsagePeer{Device: "?", PeerID: peer.ID(p).String(), UsageBytes: usageBytes(c)}
		if d, err := deviceOf(peer.ID(p)); err == nil {
			up.Device = d.Short()
		}
		r.Peers = append(r.Peers, up)
	}
	slices.SortFunc(r.Peers, func(a, b UsagePeer) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.PeerID, b.PeerID))
	})
	for _, p := range r.Peers[min(usageTopPeers, len(r.Peers)):] {
		others = others.Add(storage.UsageCount{Sent: p.Sent, Received: p.Received})
	}
	r.Peers = r.Peers[:min(usageTopPeers, len(r.Peers))]
	if others != (storage.UsageCount{}) {
		r.Peers = append(r.Peers, UsagePeer{Device: "other", UsageBytes: usageBytes(others)})
	}
	return r, nil
}

// Usage returns the data usage report of a calendar month, "YYYY-MM" ("" is the current month, in
// the time zone of Config.Now). It includes the counts not yet written to the store. The report
// names teams: it is for the device's user, never for logs.
func (n *Node) Usage(month string) (UsageReport, error) {
	return n.usage.report(month, n.resolveTopic)
}

// resolveTopic returns the id and name of the team whose topic is t.
func (n *Node) resolveTopic(t envelope.Topic) (crdt.TeamID, string, bool) {
	n.mu.Lock()
	tm := n.byTopic[t]
	n.mu.Unlock()
	if tm == nil {
		return crdt.TeamID{}, "", false
	}
	return tm.id, tm.snapshot().Name, true
}

// knownTopic reports whether t is the topic of one of the device's teams.
func (n *Node) knownTopic(t envelope.Topic) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byTopic[t] != nil
}

// Low-data mode.
//
// While low-data mode is on, the device sends only what cannot wait:
//
//   - Routine messages and acknowledgements are not sealed or sent: each op is kept, as made (its
//     crdt.Op encoding, which names its team), in the store's outbox, durably, before Send returns;
//     so a queued message is acknowledged like any other and survives a crash or restart. Turning
//     the mode off seals each queued op under the team's then-current epoch and publishes it, in the
//     order they were made, each once (an op already in the team log is only dropped from the outbox).
//     The periodic acknowledgement batch is skipped (what to acknowledge is computed from the team
//     state when the mode goes off; read marks not yet published are lost on a restart and become
//     "received").
//   - Urgent and emergency messages, and every other kind of op (membership, keys, ...), are sent at
//     once, and mark their team "urgent pending".
//   - Automatic reconciliation (on connect, on a peer joining a topic, periodic, repair of missing
//     parents) runs only for teams with an urgent op pending; the mark is cleared once a session for
//     the team completes (a session repairs both ends, so the urgent op reached one more device, which
//     gossips and reconciles it onwards). The user can ask for a full reconciliation with SyncNow
//     ("fieldmesh sync"). Sessions that peers open are still answered: refusing them would only make
//     them retry.
//   - Gossip is still received and relayed: envelopes are sealed, so their priority cannot be told
//     before they are opened.
//
// A queued op keeps its timestamp and parents: it sorts where it was written, and it is not shown in
// the device's own views of the team until it is published. The mode and the urgent marks are kept in
// the store (setting "low-data"), so the mode survives restarts; Config.LowData turns it on at start.

// lowDataSetting is the name of the store setting holding the mode:
//
//	version 1 | on 1 | uvarint n | n × topic 16   (teams with an urgent op pending, strictly ascending)
const lowDataSetting = "low-data"

// maxUrgentTopics bounds the urgent marks kept (a device belongs to far fewer teams).
const maxUrgentTopics = 4096

// lowData is the low-data mode of a node.
type lowData struct {
	// mu guards the fields below and is held while an op is queued, so an op queued before the mode
	// went off is in the store before the outbox is read.
	mu     stdsync.Mutex
	on     bool
	urgent map[envelope.Topic]struct{}

	flushMu stdsync.Mutex // serialises outbox flushes
}

func newLowData() *lowData { return &lowData{urgent: make(map[envelope.Topic]struct{})} }

func marshalLowData(on bool, urgent map[envelope.Topic]struct{}) []byte {
	topics := make([]envelope.Topic, 0, len(urgent))
	for t := range urgent {
		topics = append(topics, t)
	}
	slices.SortFunc(topics, func(a, b envelope.Topic) int { return strings.Compare(string(a[:]), string(b[:])) })
	b := []byte{1, 0}
	if on {
		b[1] = 1
	}
	b = binary.AppendUvarint(b, uint64(len(topics)))
	for _, t := range topics {
		b = append(b, t[:]...)
	}
	return b
}

func unmarshalLowData(b []byte) (on bool, urgent map[envelope.Topic]struct{}, err error) {
	bad := func(what string) error { return fmt.Errorf("node: low-data setting: %s", what) }
	if len(b) < 3 || b[0] != 1 {
		return false, nil, bad("unknown version or truncated")
	}
	if b[1] > 1 {
		return false, nil, bad("bad flag")
	}
	n, m := binary.Uvarint(b[2:])
	if m <= 0 || m != len(binary.AppendUvarint(nil, n)) {
		return false, nil, bad("bad count")
	}
	rest := b[2+m:]
	if n > maxUrgentTopics || uint64(len(rest)) != n*16 {
		return false, nil, bad("bad topic list")
	}
	urgent = make(map[envelope.Topic]struct{}, n)
	for i := 0; i < int(n); i++ {
		if i > 0 && string(rest[16*(i-1):16*i]) >= string(rest[16*i:16*(i+1)]) {
			return false, nil, bad("topics not strictly ascending")
		}
		urgent[envelope.Topic(rest[16*i:16*(i+1)])] = struct{}{}
	}
	return b[1] == 1, urgent, nil
}

// save stores the mode (the caller holds l.mu).
func (l *lowData) save(st *storage.Store) error {
	if err := st.PutSetting(lowDataSetting, marshalLowData(l.on, l.urgent)); err != nil {
		return fmt.Errorf("node: store low-data mode: %w", err)
	}
	return nil
}

// startLowData loads the low-data mode from the store (Config.LowData turns it on) and, when it is
// off, publishes what a previous run left queued. The node calls it once its teams are loaded, before
// any connection or sync.
func (n *Node) startLowData() error {
	on, err := n.low.load(n.st, n.cfg.LowData)
	if err != nil {
		return err
	}
	if !on {
		if _, err := n.flushOutbox(); err != nil {
			n.log.Warn("publishing queued ops failed; they stay queued", "err", err)
		}
	}
	return nil
}

// load reads the mode from st (none stored is off), turning it on durably if force, and reports
// whether it is on.
func (l *lowData) load(st *storage.Store, force bool) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := st.Setting(lowDataSetting)
	switch {
	case err == nil:
		on, urgent, err := unmarshalLowData(b)
		if err != nil {
			return false, err
		}
		l.on, l.urgent = on, urgent
		if !on {
			clear(l.urgent)
		}
	case !errors.Is(err, storage.ErrNotFound):
		return false, fmt.Errorf("node: load low-data mode: %w", err)
	}
	if force && !l.on {
		l.on = true
		if err := l.save(st); err != nil {
			return false, err
		}
	}
	return l.on, nil
}

// deferrable reports whether an op may wait for the end of low-data mode: acknowledgements and
// routine messages.
func deferrable(op *crdt.Op) bool {
	switch op.Kind {
	case crdt.KindAck:
		return true
	case crdt.KindMessage:
		m, err := crdt.UnmarshalMessage(op.Body)
		return err == nil && m.Priority == crdt.Routine
	}
	return false
}

// deferPublish queues op, a new op of this device for t, in the outbox if low-data mode is on and op
// can wait; it reports whether it did. Once it returned true the op is durably queued (that is its
// acknowledgement) and must not be published now. If it returns false the caller publishes op; in
// low-data mode that marks t urgent pending.
func (n *Node) deferPublish(t *team, op *crdt.Op) (bool, error) {
	l := n.low
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.on {
		return false, nil
	}
	if !deferrable(op) {
		if _, ok := l.urgent[t.topic]; !ok && len(l.urgent) < maxUrgentTopics {
			l.urgent[t.topic] = struct{}{}
			if err := l.save(n.st); err != nil {
				// The op still goes out by gossip; only its reconciliation waits for the user.
				n.log.Warn("marking a team urgent failed", "team", t.id, "err", err)
			}
		}
		return false, nil
	}
	if err := n.st.PutOutbox(storage.OutboxKey{Time: uint64(op.Time), ID: op.ID()}, op.Marshal()); err != nil {
		return false, fmt.Errorf("node: queue in the outbox: %w", err)
	}
	return true, nil
}

// autoSyncAllowed reports whether automatic reconciliation of t may run: always, except in low-data
// mode, where only teams with an urgent op pending are reconciled.
func (n *Node) autoSyncAllowed(t *team) bool {
	l := n.low
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.on {
		return true
	}
	_, ok := l.urgent[t.topic]
	return ok
}

// lowDataSynced records that a reconciliation session of t completed: its urgent mark is cleared.
func (n *Node) lowDataSynced(t *team) {
	l := n.low
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.urgent[t.topic]; !ok {
		return
	}
	delete(l.urgent, t.topic)
	if err := l.save(n.st); err != nil {
		n.log.Warn("clearing a team's urgent mark failed", "team", t.id, "err", err)
	}
}

// deferAcks reports whether the periodic acknowledgement batch is to be skipped (low-data mode).
func (n *Node) deferAcks() bool { return n.lowDataOn() }

// lowDataOn reports whether low-data mode is on.
func (n *Node) lowDataOn() bool {
	l := n.low
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.on
}

// LowDataStatus describes the low-data mode.
type LowDataStatus struct {
	On bool `json:"on"`
	// Queued counts the ops waiting in the outbox.
	Queued int `json:"queued"`
	// UrgentTeams counts the teams with an urgent op not yet reconciled with anyone.
	UrgentTeams int `json:"urgent_teams"`
}

// LowData returns the low-data mode and what waits because of it.
func (n *Node) LowData() (LowDataStatus, error) {
	l := n.low
	l.mu.Lock()
	s := LowDataStatus{On: l.on, UrgentTeams: len(l.urgent)}
	l.mu.Unlock()
	q, err := n.st.OutboxLen()
	if err != nil {
		return s, fmt.Errorf("node: read the outbox: %w", err)
	}
	s.Queued = q
	return s, nil
}

// SetLowData turns low-data mode on or off, durably. Turning it off publishes the queued ops (each
// once, in the order they were made), the pending acknowledgements, and reconciles with the
// connected peers. An error publishing leaves the rest queued for the next time the mode goes off or
// the node starts.
func (n *Node) SetLowData(on bool) (LowDataStatus, error) {
	l := n.low
	l.mu.Lock()
	was, wasUrgent := l.on, l.urgent
	l.on = on
	if !on {
		// Reconciliation is no longer held back, so nothing is pending any more.
		l.urgent = make(map[envelope.Topic]struct{})
	}
	if err := l.save(n.st); err != nil {
		l.on, l.urgent = was, wasUrgent
		l.mu.Unlock()
		return LowDataStatus{}, err
	}
	l.mu.Unlock()
	if !on {
		if _, err := n.flushOutbox(); err != nil {
			return LowDataStatus{}, err
		}
		if was {
			if n.cfg.AckInterval > 0 {
				if _, err := n.FlushAcks(); err != nil {
					n.log.Warn("publishing acknowledgements failed", "err", err)
				}
			}
			for _, p := range n.host.Network().Peers() {
				n.goRun(func() { n.syncPeer(p) })
			}
		}
	}
	return n.LowData()
}

// flushOutbox publishes the queued ops in (time, id) order and removes each from the outbox once it
// is stored as published; it returns how many it published. An op already in its team's log (a
// crash came between publishing and removing it) is only removed; one whose team this device no
// longer has, or that does not decode as an op of this device, is dropped with a warning. It stops
// early if low-data mode is turned back on.
func (n *Node) flushOutbox() (int, error) {
	l := n.low
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	type queued struct {
		k storage.OutboxKey
		b []byte
	}
	var all []queued
	if err := n.st.Outbox(func(k storage.OutboxKey, b []byte) error {
		all = append(all, queued{k, b})
		return nil
	}); err != nil {
		return 0, fmt.Errorf("node: read the outbox: %w", err)
	}
	published := 0
	var errs []error
	failed := make(map[crdt.TeamID]bool)
	for _, q := range all {
		if n.lowDataOn() {
			break
		}
		// t stays nil for an op that is only dropped.
		var t *team
		op, err := crdt.UnmarshalOp(q.b)
		switch {
		case err != nil || op.ID() != q.k.ID || uint64(op.Time) != q.k.Time || op.Author != n.id.Device.ID():
			n.log.Warn("dropping an unreadable queued op")
		case failed[op.Team]:
			continue
		default:
			if t = n.teamByID(op.Team); t == nil {
				n.log.Warn("dropping a queued op of a team this device left", "team", op.Team)
			}
		}
		if t != nil && !t.has(op.ID()) {
			if err := n.publishOp(t, op); err != nil {
				// Keep this team's later ops behind it; other teams go on.
				failed[op.Team] = true
				errs = append(errs, fmt.Errorf("team %s: %w", op.Team.Short(), err))
				continue
			}
			published++
		}
		if err := n.st.DeleteOutbox(q.k); err != nil {
			return published, fmt.Errorf("node: outbox: %w", err)
		}
	}
	if len(errs) > 0 {
		return published, fmt.Errorf("node: publishing queued ops: %w", errors.Join(errs...))
	}
	return published, nil
}

// SyncNow reconciles every team with every connected peer whose device is a member of it, whatever
// the low-data mode, and returns when the sessions ended, with how many (peer, team) pairs were
// reconciled (a request coalesced into a session already queued counts as reconciled).
func (n *Node) SyncNow(ctx context.Context) (int, error) {
	teams := n.teamList()
	var (
		wg   stdsync.WaitGroup
		mu   stdsync.Mutex
		ok   int
		errs []error
	)
	for _, p := range n.host.Network().Peers() {
		d, err := deviceOf(p)
		if err != nil {
			continue
		}
		var mine []*team
		for _, t := range teams {
			if n.isMember(t, d) {
				mine = append(mine, t)
			}
		}
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, t := range mine {
				err := n.syncTeamErr(ctx, p, t, false)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("peer %s, team %s: %w", p.ShortString(), t.id.Short(), err))
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return ok, fmt.Errorf("node: sync: %w", errors.Join(errs...))
	}
	return ok, nil
}
