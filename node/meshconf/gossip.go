// Package meshconf holds the libp2p and GossipSub settings that every fieldmesh host shares, devices
// (package node) and clinic relays (package node/relay) alike, so the two cannot drift apart: the
// GossipSub tuning for small team meshes, the gossip message id, the topic name of a team, and the
// host's security and transports.
package meshconf

import (
	"crypto/sha256"
	"encoding/base64"
	"math"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// GossipSub tuned for team meshes: few bytes first, then latency.
//
// Team topics are small (a handful to a hundred devices), the devices pay for their own data, and
// every message is also repaired by reconciliation (sync streams), so the live gossip layer is tuned
// to send each message over as few links as it can while still reaching everyone in one pass.
// simulations/gossipbench measures these choices against default GossipSub and floodsub on a
// 100-node mocknet; docs/gossip.md has the figures and the reasoning.

// Queue sizes of the gossip router. A queue that overflows drops RPCs (the peer then repairs them
// from gossip or reconciliation, later and at a cost in bytes), so the queues are sized for a burst:
// a phone that comes back into coverage and publishes its outbox of a day, about 60 envelopes at
// once, over a slow uplink. In gossipbench's burst scenario (bursts of 60 over 256 kbit/s uplinks)
// queues of pubsub's default size, 32, dropped hundreds of copies; queues of 128 dropped none.
// Typical RPCs are a few hundred bytes, so a full queue holds tens of KiB; the worst case (every RPC
// at the maximum message size) is 128 × maxMsgSize per peer, bounded by the connection manager's
// peer limit.
const (
	GossipOutboundQueue = 128 // RPCs queued per peer before sending (pubsub default 32)
	GossipValidateQueue = 128 // received messages queued for validation (pubsub default 32)
)

// GossipIDontWantThreshold is the smallest message, in bytes of data, for which the router tells its
// mesh peers "I already have this, don't send it" (IDONTWANT, GossipSub v1.2). Each IDONTWANT costs
// about 27 bytes per mesh peer (the 20-byte id and framing), and it only saves a copy that the peer
// would otherwise send after the IDONTWANT arrives: that happens when copies queue behind each other
// on a slow uplink, for longer the larger they are; on fast links it never happens. In gossipbench on
// 256 kbit/s uplinks, IDONTWANT for every message cost 2% more bytes with 200-byte messages and saved
// 5% at 400 bytes and 14% at 1,000; with unlimited uplinks it saved nothing and cost 15% (100
// bytes). A fieldmesh envelope (version 4) is 200–264 bytes for "ok" and 400–460 for 200
// characters (size_test.go): around the break-even point. So IDONTWANT starts
// at 512 bytes, where it saves on slow links (pubsub's default, 1,024, is above nearly every clinical
// message). 512 is also above Dhi × the 20-byte id: a small message cannot make a node send more
// IDONTWANT bytes than it received.
const GossipIDontWantThreshold = 512

// GossipMsgID names a gossip message by the first 20 bytes of the SHA-256 of its data: the id says
// nothing about who sent the message, and the same envelope has the same id whoever forwards it.
func GossipMsgID(m *pb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:20])
}

// GossipParams returns the GossipSub parameters of team topics: pubsub's defaults except for the
// following.
//
//   - Mesh degree D = 4, Dlo = 4, Dhi = 5 (defaults 6, 5, 12). Every node forwards each message to its
//     mesh peers except the one it came from, so the copies sent per delivered message are about the
//     mean mesh degree minus one. In gossipbench (100 nodes with 4–8 links each) the defaults put
//     nearly every link in the mesh, as floodsub does, and sent 4.9–5.0 copies per delivery; these
//     send 2.8–2.9. Dout = 1 (default 2; it must stay under D/2): one outbound mesh link still protects
//     against a peer that fills our mesh with inbound connections.
//   - A latency-aware mesh. Peers are scored by the round-trip time the host measured to them
//     (Prober, LatencyScore). Pruning (at Dhi) keeps the Dscore = D best-scoring peers, i.e. the
//     fastest, and opportunistic grafting runs every heartbeat (OpportunisticGraftTicks = 1; default
//     60, and only when the mesh's median score is under a threshold, which GossipPeerScore sets
//     out of reach): a node grafts up to 2 peers that score above its mesh's median. The mesh so
//     drifts from the random links it starts with to fast ones. In gossipbench this took the
//     99th-percentile latency from 2.7–3.1× to 1.75–2.0× the shortest path, with fewer copies
//     (2.95 → 2.76 per delivery in one sweep): fast links carry messages first, so fewer copies cross.
//   - Prune backoff 10 s (default 1 minute): how long a pruned pair waits before grafting each other
//     again. Every peer keeps its fastest links, so a device whose links are all slow can be pruned
//     by all its peers within a heartbeat or two; it then waited out the backoff with an empty mesh,
//     reached by IHAVE gossip alone, and in gossipbench's bursts one node so spent 63 s and missed
//     0.05% of deliveries. With 10 s no node was left without a mesh, for about 0.1 more copies per
//     delivery (the churn).
//   - Gossip to Dlazy = 1 peer outside the mesh, GossipFactor = 0, and only about the last
//     heartbeat's messages (HistoryGossip = 1; defaults 6, 0.25, 3). IHAVE gossip repairs a copy the
//     mesh lost within a heartbeat; reconciliation repairs everything anyway, later. Pubsub's default
//     amounts cost 45% more bytes in gossipbench; no gossip at all would save another 11%.
//     HistoryLength stays 5: a peer may still ask (IWANT) for a message of the last 5 heartbeats.
//   - IDONTWANT from GossipIDontWantThreshold bytes (default 1,024).
//
// The heartbeat stays at 1 s: the mesh repairs itself within a second of losing a link.
func GossipParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 4, 4, 5, 4, 1
	p.OpportunisticGraftTicks = 1
	p.PruneBackoff = 10 * time.Second
	p.Dlazy = 1
	p.GossipFactor = 0
	p.HistoryGossip = 1
	p.IDontWantMessageThreshold = GossipIDontWantThreshold
	return p
}

// LatencyScore is the application-specific peer score (P5) of a peer at round-trip time rtt, in
// steps: 5 points for every factor of 1.25 the round trip is under a second, at most 100 (from about
// 11.5 ms down, every link is as good as the next), and 0 while nothing is measured (a new peer ranks
// last until its probe answers). 20 ms scores 85, 100 ms 50, 500 ms 15, a second or more 0.
//
// The steps make round trips within about 25% of each other tie. Opportunistic grafting trades a
// mesh peer for one that scores strictly higher, so scores that differed by noise would have the
// mesh churn every heartbeat, GRAFTs and PRUNEs crossing, among peers on one clinic Wi-Fi all alike.
func LatencyScore(rtt time.Duration) float64 {
	if rtt <= 0 {
		return 0
	}
	if rtt >= time.Second {
		return 0
	}
	steps := math.Floor(math.Log(float64(time.Second)/float64(rtt)) / math.Log(1.25))
	return 5 * min(20, steps)
}

// halfLife returns the per-DecayInterval (1 s) factor that halves a score counter in d.
func halfLife(d time.Duration) float64 {
	return math.Pow(0.5, float64(time.Second)/float64(d))
}

// GossipPeerScore returns the router-wide peer-score parameters and thresholds, with rtt (if not
// nil) giving the measured round-trip time to a peer (Prober.RTT). Peer scores do two things here:
// rank mesh peers, so pruning keeps the fast ones and grafting seeks them (P5, LatencyScore), and mute
// peers that misbehave (P4, per topic: GossipTopicScore; P7). Nothing in them may punish an honest
// peer for a quiet team, a burst or a shared address:
//
//   - P5 (application score) is LatencyScore, weight 1: 0 to 100.
//   - P6 (IP colocation) is off: phones on one clinic Wi-Fi or behind one carrier NAT share an
//     address.
//   - P7 (behaviour) counts re-grafting during a prune backoff and IHAVE promises not kept, from the
//     7th such event on, and forgets with a half-life of a minute, so an occasional GRAFT and PRUNE
//     crossing on the wire cost nothing. It weighs -50 × excess², against at most 100 of positive
//     score (P5): 3 excess events (-450) stop our gossip and flood publishing to the peer, 4 (-800)
//     have everything it sends ignored, however fast its link.
//   - Thresholds: no gossip below -100, no flood publishing to it below -200, everything it sends
//     is ignored below -400. Peer exchange (PX) is never accepted: nodes dial only peers they know
//     from the team, never peers a PRUNE suggests. The opportunistic-grafting threshold is out of
//     reach (1e9), so a node always looks for a faster peer than its mesh's median (GossipParams).
//
// The topic parameters are added per topic with Topic.SetScoreParams(GossipTopicScore()) after
// joining it: PeerScoreParams.Topics is fixed when the router starts, teams come and go.
func GossipPeerScore(rtt func(peer.ID) time.Duration) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	app := func(peer.ID) float64 { return 0 }
	if rtt != nil {
		app = func(p peer.ID) float64 { return LatencyScore(rtt(p)) }
	}
	return &pubsub.PeerScoreParams{
			Topics:                    map[string]*pubsub.TopicScoreParams{},
			AppSpecificScore:          app,
			AppSpecificWeight:         1,
			IPColocationFactorWeight:  0,
			BehaviourPenaltyWeight:    -50,
			BehaviourPenaltyThreshold: 6,
			BehaviourPenaltyDecay:     halfLife(time.Minute),
			DecayInterval:             time.Second,
			DecayToZero:               0.01,
			RetainScore:               10 * time.Minute,
		}, &pubsub.PeerScoreThresholds{
			GossipThreshold:             -100,
			PublishThreshold:            -200,
			GraylistThreshold:           -400,
			AcceptPXThreshold:           1e12,
			OpportunisticGraftThreshold: 1e9,
		}
}

// GossipTopicScore returns the score parameters of one team topic.
//
//   - P2 (first message deliveries) is off. Without latency scores it was the ranking (who brings
//     messages first is on fast paths), but it changes with every message, and opportunistic grafting
//     every heartbeat would follow it: mesh churn, GRAFTs and PRUNEs crossing. With it (and
//     unstepped latency scores) node's 8-node mocknet test lost messages in 1 run of 10, without it
//     in none of 12. With latency scores it made no difference beyond noise in gossipbench
//     (docs/gossip.md).
//   - P1 (time in mesh) is off: it would keep old slow links over new fast ones. P3 and P3b (mesh
//     delivery deficit) are off: they expect a steady message rate, and a quiet team would prune
//     every honest peer.
//   - P4, invalid messages (envelopes our validator rejects: malformed, tampered, foreign), weight
//     -50 × count², half-life 10 minutes: a peer that forwards 3 stops getting our gossip, 4 are
//     ignored, whatever its latency. Envelopes of an epoch we do not hold are ignored, not
//     rejected, and cost nothing.
func GossipTopicScore() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               0,
		TimeInMeshQuantum:              time.Second,
		InvalidMessageDeliveriesWeight: -50,
		InvalidMessageDeliveriesDecay:  halfLife(10 * time.Minute),
	}
}

// GossipOptions returns the options of a node's GossipSub router: no signatures and no author or
// sequence number in messages (StrictNoSign, WithNoAuthor: authorship is proved inside the sealed
// envelope, and gossip must not say who wrote what), msgID as the message id (GossipMsgID: content
// hashes), maxMsgSize as the largest RPC, the parameters of GossipParams, the peer scores of
// GossipPeerScore with rtt as the measured round trips (Prober.RTT; nil: a latency-blind mesh), the
// queue sizes above. Flood publishing and peer exchange stay off (pubsub's defaults).
//
// Flood publishing would send a node's own messages to every peer in the topic, while GossipSub sends
// a peer outside its mesh nothing else: every relay and any connected peer without the epoch's keys
// would learn who wrote each message (in gossipbench a relay connected to every member named the
// author of 98–100% of messages with it, 3–5% without). It would take the latency at the 99th
// percentile from 2.2–2.6× to 1.75–2.0× the shortest path at 100 nodes (median unchanged, copies
// within 0.1); in bursts it is slower. docs/security.md says what gossip still reveals.
//
// After joining a topic, set its score parameters: topic.SetScoreParams(GossipTopicScore()).
func GossipOptions(msgID pubsub.MsgIdFunction, maxMsgSize int, rtt func(peer.ID) time.Duration) []pubsub.Option {
	sp, st := GossipPeerScore(rtt)
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(msgID),
		pubsub.WithMaxMessageSize(maxMsgSize),
		pubsub.WithGossipSubParams(GossipParams()),
		pubsub.WithPeerScore(sp, st),
		pubsub.WithPeerOutboundQueueSize(GossipOutboundQueue),
		pubsub.WithValidateQueueSize(GossipValidateQueue),
	}
}

// TopicNamePrefix starts every team's gossip topic name. Its number is the envelope format's version
// (sync/envelope), so devices of two formats never share a topic.
const TopicNamePrefix = "fm9/"

// TopicNameBytes is how much of a team's envelope.Topic its gossip topic name carries.
const TopicNameBytes = 9

// TopicName is the gossip topic of a team: "fm9/" and the base64url (unpadded) of the first 9 bytes of
// its envelope.Topic, which is derived one-way from the team id, so it names nothing. It is 16
// bytes; every gossip copy of a message and every IHAVE carries it, so it is short.
//
// 72 bits are enough because a name is only a rendezvous, never a check. The envelope carries no topic
// (sync/envelope): a device or relay takes an envelope's topic from the gossip topic it arrived on, that
// is from the full topic it joined under this name, and every layer of the envelope binds the team's
// topic and id, so an envelope gossiped under a colliding name opens for no member of the other team.
// A collision of two teams' names can cost bandwidth and nothing else: a device keeps a topic's gossip
// between the team's members and relays (its peer filter), so devices of two colliding teams do not
// exchange it, and a host that carries two colliding teams fails to join the second (pubsub refuses a
// topic joined twice) rather than mixing them. Accidental collisions are negligible (about 2^-33 for a
// million teams); making one on purpose means finding a team id whose topic has given 72 bits, about
// 2^72 hashes, and buys nothing that publishing junk on the name would not.
func TopicName(t envelope.Topic) string {
	return TopicNamePrefix + base64.RawURLEncoding.EncodeToString(t[:TopicNameBytes])
}
