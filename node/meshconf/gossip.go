// Package meshconf holds the libp2p and GossipSub settings that every fieldmesh host shares, devices
// (package node) and clinic relays (package node/relay) alike, so the two cannot drift apart: the
// GossipSub tuning for small team meshes, the gossip message id, the topic name of a team, and the
// host's security and transports.
package meshconf

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"
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
// 256 kbit/s uplinks, IDONTWANT for every message cost 4% more bytes with 200-byte messages and saved
// 6% at 400 bytes and 13% at 1,000; with unlimited uplinks it saved nothing and cost 16% (100 bytes). A fieldmesh envelope is about 260 bytes for "ok", 330–360 for a
// 70-character note and 560–590 for 300 characters: around the break-even point. So IDONTWANT starts
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
//     nearly every link in the mesh, as floodsub does, and sent 4.9 copies per delivery; these send
//     2.8–2.9. A node grafts as soon as it is below 4 and prunes above 5, keeping its Dscore = 3
//     best-scoring mesh peers (those that bring messages first, see GossipTopicScore) and a random
//     one, so the mesh drifts towards fast links. D = 3 sent 2.0 copies (a quarter fewer bytes) but
//     the 99th-percentile latency went from 3.1× to 4.2× the shortest path; D = 5 sent 3.6 for 2.0×.
//     Dout = 1 (default 2; it must stay under D/2): one outbound mesh link still protects against a
//     peer that fills our mesh with inbound connections.
//   - Gossip to Dlazy = 1 peer outside the mesh, GossipFactor = 0, and only about the last
//     heartbeat's messages (HistoryGossip = 1; defaults 6, 0.25, 3). IHAVE gossip repairs a copy the
//     mesh lost within a heartbeat; reconciliation repairs everything anyway, later. Pubsub's default
//     amounts cost 44% more bytes in gossipbench; no gossip at all would save another 8%.
//     HistoryLength stays 5: a peer may still ask (IWANT) for a message of the last 5 heartbeats.
//   - IDONTWANT from GossipIDontWantThreshold bytes (default 1,024).
//
// The heartbeat stays at 1 s: the mesh repairs itself within a second of losing a link.
func GossipParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 4, 4, 5, 3, 1
	p.Dlazy = 1
	p.GossipFactor = 0
	p.HistoryGossip = 1
	p.IDontWantMessageThreshold = GossipIDontWantThreshold
	return p
}

// halfLife returns the per-DecayInterval (1 s) factor that halves a score counter in d.
func halfLife(d time.Duration) float64 {
	return math.Pow(0.5, float64(time.Second)/float64(d))
}

// GossipPeerScore returns the router-wide peer-score parameters and thresholds. Peer scores do two
// things here: rank mesh peers, so pruning keeps the fast ones (P2, per topic: GossipTopicScore), and
// mute peers that misbehave. Nothing in them may punish an honest peer for a quiet team, a burst or a
// shared address:
//
//   - P5 (application score) is 0 and P6 (IP colocation) is off: phones on one clinic Wi-Fi or
//     behind one carrier NAT share an address.
//   - P7 (behaviour) counts re-grafting during a prune backoff and IHAVE promises not kept, from the
//     7th such event on, and forgets with a half-life of a minute, so an occasional GRAFT and PRUNE
//     crossing on the wire cost nothing. It weighs -10 × excess²: 4 excess events (-160) stop our
//     gossip to the peer, 7 (-490) have everything it sends ignored.
//   - Thresholds: no gossip below -100, no flood publishing to it below -200, everything it sends
//     is ignored below -400. Peer exchange (PX) is never accepted: nodes dial only peers they know
//     from the team, never peers a PRUNE suggests. Opportunistic grafting is off (threshold 0, and
//     P2 scores are never negative).
//
// The topic parameters are added per topic with Topic.SetScoreParams(GossipTopicScore()) after
// joining it: PeerScoreParams.Topics is fixed when the router starts, teams come and go.
func GossipPeerScore() (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	return &pubsub.PeerScoreParams{
			Topics:                    map[string]*pubsub.TopicScoreParams{},
			AppSpecificScore:          func(peer.ID) float64 { return 0 },
			AppSpecificWeight:         0,
			IPColocationFactorWeight:  0,
			BehaviourPenaltyWeight:    -10,
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
			OpportunisticGraftThreshold: 0,
		}
}

// GossipTopicScore returns the score parameters of one team topic.
//
//   - P2, first message deliveries, weight 1, half-life 10 minutes, cap 1,000: how often a peer was
//     the first to bring us a message. Peers over fast links are first more often, and pruning keeps
//     the Dscore best: in gossipbench this took the median latency from 1.19× to 1.08× the shortest
//     path (1.39× to 1.25× without flood publishing) and the 99th percentile from 3.3× to 3.1× (5.0×
//     to 4.0×), for the same bytes.
//   - P1 (time in mesh) is off: it would keep old slow links over new fast ones. P3 and P3b (mesh
//     delivery deficit) are off: they expect a steady message rate, and a quiet team would prune
//     every honest peer.
//   - P4, invalid messages (envelopes our validator rejects: malformed, tampered, foreign), weight
//     -10 × count², half-life 10 minutes: a peer that forwards 4 stops getting our gossip, 7 is
//     ignored. Envelopes of an epoch we do not hold are ignored, not rejected, and cost nothing.
func GossipTopicScore() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               0,
		TimeInMeshQuantum:              time.Second,
		FirstMessageDeliveriesWeight:   1,
		FirstMessageDeliveriesDecay:    halfLife(10 * time.Minute),
		FirstMessageDeliveriesCap:      1000,
		InvalidMessageDeliveriesWeight: -10,
		InvalidMessageDeliveriesDecay:  halfLife(10 * time.Minute),
	}
}

// GossipOptions returns the options of a node's GossipSub router: no signatures and no author or
// sequence number in messages (StrictNoSign, WithNoAuthor: authorship is proved inside the sealed
// envelope, and gossip must not say who wrote what), msgID as the message id (GossipMsgID: content
// hashes), maxMsgSize as the largest RPC, the parameters of GossipParams, the peer scores of
// GossipPeerScore, the queue sizes above, and flood publishing.
//
// Flood publishing: a node sends its own messages to every peer in the topic, not just its mesh, so
// the first hop goes over the fastest link there is. In gossipbench it cost at most 0.1 copies per
// delivery (within run-to-run noise) and took the latency from 1.25× to 1.08× the shortest path at
// the median and from 4.0× to 3.1× at the 99th percentile. Peer exchange stays off (pubsub's
// default).
//
// After joining a topic, set its score parameters: topic.SetScoreParams(GossipTopicScore()).
func GossipOptions(msgID pubsub.MsgIdFunction, maxMsgSize int) []pubsub.Option {
	sp, st := GossipPeerScore()
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(msgID),
		pubsub.WithMaxMessageSize(maxMsgSize),
		pubsub.WithGossipSubParams(GossipParams()),
		pubsub.WithPeerScore(sp, st),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(GossipOutboundQueue),
		pubsub.WithValidateQueueSize(GossipValidateQueue),
	}
}

// TopicName is the gossip topic of a team: derived one-way from the team id (through its
// envelope.Topic), so it names nothing.
func TopicName(t envelope.Topic) string { return "/fieldmesh/t/" + hex.EncodeToString(t[:]) }

// ParseTopicName inverts TopicName.
func ParseTopicName(name string) (envelope.Topic, bool) {
	var t envelope.Topic
	h, ok := strings.CutPrefix(name, "/fieldmesh/t/")
	if !ok || len(h) != 2*len(t) {
		return t, false
	}
	if _, err := hex.Decode(t[:], []byte(h)); err != nil {
		return t, false
	}
	return t, true
}
