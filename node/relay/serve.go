package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

const (
	// syncTimeout bounds one reconciliation session, as the node's does.
	syncTimeout = 2 * time.Minute
	// reconFrameMax is the largest frame the relay sends, as the node's.
	reconFrameMax = 64 << 10
	// followerDelay is how long the relay waits after an enrolment before it starts a session the device
	// should have started itself.
	followerDelay = 3 * time.Second
)

// handleEnrol runs the challenge-response of relayproto.EnrolProtocol: the relay sends a fresh nonce; the device
// answers with a proof per topic; the relay admits the device, for this connection, to each topic whose
// proof matches the topic's relay key, and answers every topic. A refusal is sent back with a reason and
// logged (short ids only).
func (r *Relay) handleEnrol(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(relayproto.StreamTimeout))
	p := s.Conn().RemotePeer()
	var nonce [relayproto.NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		s.Reset()
		return
	}
	if err := framing.Write(s, relayproto.MarshalChallenge(nonce)); err != nil {
		s.Reset()
		return
	}
	br := bufio.NewReader(s)
	b, err := framing.Read(br, relayproto.MaxEnrolFrame)
	if err != nil {
		s.Reset()
		return
	}
	proofs, err := relayproto.ParseEnrolRequest(b)
	if err != nil {
		r.log.Info("enrolment refused: malformed request", "peer", p.ShortString(), "err", err)
		s.Reset()
		return
	}
	me := r.host.ID()
	now := r.now()
	horizons := make([]uint64, len(proofs)) // before r.mu: horizon takes it
	rosterErr := make([]string, len(proofs))
	for i, pr := range proofs {
		horizons[i] = r.horizon(pr.Topic)
		if pr.Roster == nil {
			continue
		}
		// An admin's roster is taken before its sender is judged: the admin is on it.
		ro, err := relayproto.ParseRoster(pr.Roster)
		if err == nil && ro.Topic != pr.Topic {
			err = fmt.Errorf("roster of topic %s sent for topic %s", ro.Topic.Short(), pr.Topic.Short())
		}
		if err == nil {
			_, err = r.takeRoster(ro)
		}
		if err != nil {
			rosterErr[i] = err.Error()
		}
	}
	results := make([]relayproto.EnrolResult, len(proofs))
	var admitted []envelope.Topic
	r.mu.Lock()
	for i, pr := range proofs {
		res := relayproto.EnrolResult{Topic: pr.Topic}
		ct := r.carried[pr.Topic]
		switch {
		case ct == nil:
			res.Status = relayproto.StatusNotCarried
			res.Message = fmt.Sprintf("this relay does not carry topic %s: its operator must first run `fieldmesh relay admit CODE` with the team's relay code", pr.Topic.Short())
		case !ct.key.Verify(me, p, nonce, pr.Proof):
			res.Status = relayproto.StatusBadProof
			res.Message = fmt.Sprintf("enrolment proof for topic %s does not match: this device does not hold the team's relay key", pr.Topic.Short())
		case rosterErr[i] != "":
			res.Status = relayproto.StatusBadRoster
			res.Message = fmt.Sprintf("roster for topic %s refused: %s", pr.Topic.Short(), rosterErr[i])
		case !ct.onRoster(p) && !r.isPeerRelay(p):
			res.Status = relayproto.StatusNotMember
			res.Message = fmt.Sprintf("this device is not on topic %s's current roster at this relay: it was removed from the team, or an admin's device has not reached this relay since it joined", pr.Topic.Short())
		default:
			res.Horizon = horizons[i]
			if r.enrolled[p] == nil {
				r.enrolled[p] = make(map[envelope.Topic]time.Time)
			}
			r.enrolled[p][pr.Topic] = now
			r.seen[p] = true
			admitted = append(admitted, pr.Topic)
		}
		results[i] = res
	}
	r.mu.Unlock()
	// Remembered and logged before the device hears the answer.
	for i, res := range results {
		switch res.Status {
		case relayproto.StatusOK:
			r.m.enrolments.WithLabelValues("enrolled").Inc()
			if err := r.st.putDevice(res.Topic, p, now.Unix()); err != nil {
				r.log.Warn("remembering an enrolled device failed", "peer", p.ShortString(), "err", err)
			}
			r.log.Info("device enrolled", "peer", p.ShortString(), "topic", res.Topic)
		case relayproto.StatusNotCarried:
			r.m.enrolments.WithLabelValues("not_carried").Inc()
			r.log.Warn("enrolment refused", "peer", p.ShortString(), "topic", res.Topic, "reason", "topic not carried")
		case relayproto.StatusNotMember:
			r.m.enrolments.WithLabelValues("not_member").Inc()
			r.log.Warn("enrolment refused", "peer", p.ShortString(), "topic", res.Topic, "reason", "not on the topic's roster")
		case relayproto.StatusBadRoster:
			r.m.enrolments.WithLabelValues("bad_roster").Inc()
			r.log.Warn("enrolment refused", "peer", p.ShortString(), "topic", res.Topic, "reason", "roster refused", "err", rosterErr[i])
		default:
			r.m.enrolments.WithLabelValues("bad_proof").Inc()
			r.log.Warn("enrolment refused", "peer", p.ShortString(), "topic", res.Topic, "reason", "proof does not match")
		}
	}
	if err := framing.Write(s, relayproto.MarshalEnrolAnswer(results)); err != nil {
		return
	}
	if err := s.CloseWrite(); err != nil {
		return
	}
	// The device starts a session after enrolling; if it does not, the relay does. A linked relay that
	// enrolled a topic this one has not enrolled there (it was admitted there since) is answered by
	// this relay's link enrolling back at once (link.go).
	back := false
	for _, t := range admitted {
		if r.isPeerRelay(p) {
			back = back || !r.linkedFor(p, t)
			continue // the linked relay reconciles itself (link)
		}
		r.goRun(func() { r.followUp(p, t, now) })
	}
	if back {
		r.kickLinks()
	}
}

// followUp reconciles t with p unless a session between them completed since the enrolment at since.
func (r *Relay) followUp(p peer.ID, t envelope.Topic, since time.Time) {
	timer := time.NewTimer(followerDelay)
	defer timer.Stop()
	select {
	case <-r.ctx.Done():
		return
	case <-timer.C:
	}
	r.mu.Lock()
	last := r.lastSync[syncKey(p, t)]
	r.mu.Unlock()
	if last.After(since) {
		return
	}
	r.syncWith(p, t)
}

// handleDirectory records a device's addresses for a topic it is enrolled for and answers with the other
// devices of that topic that are connected and enrolled now.
func (r *Relay) handleDirectory(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(relayproto.StreamTimeout))
	p := s.Conn().RemotePeer()
	b, err := framing.Read(bufio.NewReader(s), relayproto.MaxFrame)
	if err != nil {
		s.Reset()
		return
	}
	topic, addrs, err := relayproto.ParseRegister(b)
	if err != nil {
		r.log.Info("directory: malformed request", "peer", p.ShortString(), "err", err)
		s.Reset()
		return
	}
	var peers []peer.AddrInfo
	r.mu.Lock()
	_, ok := r.enrolled[p][topic]
	if ok {
		if r.dir[topic] == nil {
			r.dir[topic] = make(map[peer.ID][]ma.Multiaddr)
		}
		r.dir[topic][p] = addrs
		for q, qa := range r.dir[topic] {
			if _, enrolled := r.enrolled[q][topic]; q != p && enrolled && !r.isPeerRelay(q) && len(peers) < relayproto.MaxDirectoryPeers {
				peers = append(peers, peer.AddrInfo{ID: q, Addrs: qa})
			}
		}
	}
	r.mu.Unlock()
	var answer []byte
	if ok {
		answer = relayproto.MarshalPeers(relayproto.StatusOK, "", peers)
	} else {
		msg := fmt.Sprintf("not enrolled for topic %s on this connection: enrol first", topic.Short())
		answer = relayproto.MarshalPeers(relayproto.StatusNotEnroled, msg, nil)
		r.log.Info("directory refused: device not enrolled", "peer", p.ShortString(), "topic", topic)
	}
	if err := framing.Write(s, answer); err == nil {
		_ = s.CloseWrite()
	}
}

func syncKey(p peer.ID, t envelope.Topic) string { return string(p) + string(t[:]) }

// slot returns the mutex that serialises the sessions of p and t.
func (r *Relay) slot(p peer.ID, t envelope.Topic) *sync.Mutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := syncKey(p, t)
	m := r.slots[k]
	if m == nil {
		m = &sync.Mutex{}
		r.slots[k] = m
	}
	return m
}

// syncDone records that a session between p and t started (served) or completed.
func (r *Relay) syncDone(p peer.ID, t envelope.Topic) {
	r.mu.Lock()
	r.lastSync[syncKey(p, t)] = time.Now()
	r.mu.Unlock()
}

// source is a topic of the relay's store, for reconciliation.
type source struct {
	st    *store
	topic envelope.Topic
}

func (s source) Items() ([]recon.Item, error)                   { return s.st.items(s.topic) }
func (s source) Envelope(id [recon.IDSize]byte) ([]byte, error) { return s.st.envelope(s.topic, id) }

// handleSync answers a reconciliation session opened by an enrolled device: the hello names the topic
// (recon.Hello), the relay answers recon.AnswerSync, then recon frames follow, served from the relay's
// store. A relay holds no membership, so it refuses a membership exchange.
func (r *Relay) handleSync(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	p := s.Conn().RemotePeer()
	br := bufio.NewReader(s)
	hb, err := framing.Read(br, recon.HelloSize)
	if err != nil {
		s.Reset()
		return
	}
	h, err := recon.ParseHello(hb)
	if err != nil || h.Mode != recon.ModeSync {
		s.Reset()
		return
	}
	topic := envelope.Topic(h.Topic)
	if !r.carries(topic) || !r.enrolledFor(p, topic) {
		r.m.sessions.WithLabelValues("responder", "refused").Inc()
		// Routine while a device connects: its node starts a session when the relay joins the topic's
		// gossip, before it has enrolled.
		r.log.Debug("sync refused: device not enrolled for the topic", "peer", p.ShortString(), "topic", topic)
		s.Reset()
		return
	}
	if err := framing.Write(s, []byte{byte(recon.AnswerSync)}); err != nil {
		s.Reset()
		return
	}
	// A session the device started counts from now: the relay's follow-up to its enrolment and the
	// periodic resync leave the pair alone while it runs (no second session beside it).
	r.syncDone(p, topic)
	sess := recon.NewResponder(source{r.st, topic}, reconFrameMax)
	if err := r.drive(s, br, p, topic, sess, nil); err != nil {
		r.m.sessions.WithLabelValues("responder", "error").Inc()
		r.log.Debug("sync session failed", "peer", p.ShortString(), "topic", topic, "err", err)
		s.Reset()
		return
	}
	r.m.sessions.WithLabelValues("responder", "ok").Inc()
	r.syncDone(p, topic)
}

func (r *Relay) carries(t envelope.Topic) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.carried[t] != nil
}

// syncWith runs one reconciliation session with p for t, unless one is running.
func (r *Relay) syncWith(p peer.ID, t envelope.Topic) {
	if !r.enrolledFor(p, t) && !r.linkedFor(p, t) {
		return
	}
	m := r.slot(p, t)
	if !m.TryLock() {
		return
	}
	defer m.Unlock()
	if err := r.syncOnce(r.ctx, p, t); err != nil && r.ctx.Err() == nil {
		r.m.sessions.WithLabelValues("initiator", "error").Inc()
		r.log.Debug("sync with device failed", "peer", p.ShortString(), "topic", t, "err", err)
		return
	}
	r.m.sessions.WithLabelValues("initiator", "ok").Inc()
}

func (r *Relay) syncOnce(ctx context.Context, p peer.ID, t envelope.Topic) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	s, err := r.host.NewStream(network.WithNoDial(ctx, "relay syncs connected devices only"), p, SyncProtocol)
	if err != nil {
		return fmt.Errorf("open sync stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	if err := framing.Write(s, recon.Hello{Topic: t, Mode: recon.ModeSync}.Marshal()); err != nil {
		s.Reset()
		return err
	}
	br := bufio.NewReader(s)
	ab, err := framing.Read(br, 1)
	if err != nil {
		s.Reset()
		return fmt.Errorf("device refused the session: %w", err)
	}
	if a, err := recon.ParseAnswer(ab); err != nil || a != recon.AnswerSync {
		// The device does not sync this topic with the relay (it is no longer enrolled there).
		s.Reset()
		return errors.New("device answered the session with a membership exchange")
	}
	sess := recon.NewInitiator(source{r.st, t}, reconFrameMax)
	first, err := sess.Start()
	if err != nil {
		s.Reset()
		return err
	}
	if err := r.drive(s, br, p, t, sess, [][]byte{first}); err != nil {
		s.Reset()
		return err
	}
	r.syncDone(p, t)
	return nil
}

// errInvalid marks envelopes a device should never send: they do not parse, or are of another topic.
var errInvalid = errors.New("invalid envelope")

// drive runs a session with p over the stream with the shared driver (recon.Pump): every flight of
// envelopes received is checked (parses, is of topic t), admitted (admit) and stored in one write.
func (r *Relay) drive(s network.Stream, rd io.Reader, p peer.ID, t envelope.Topic, sess *recon.Session, out [][]byte) error {
	err := recon.Pump{
		MaxFlight: maxFlightBytes,
		Sent:      func(b int) { r.m.syncBytes.WithLabelValues("sent").Add(float64(b)) },
		Received:  func(b int) { r.m.syncBytes.WithLabelValues("received").Add(float64(b)) },
		Deliver: func(flight [][]byte) error {
			recs := make([]record, 0, len(flight))
			for _, raw := range flight {
				e, err := envelope.Unmarshal(t, raw)
				if err != nil {
					r.m.refused.WithLabelValues("malformed").Inc()
					r.log.Warn("device sent a malformed envelope: session dropped", "peer", p.ShortString(), "topic", t)
					return fmt.Errorf("%w: %w", errInvalid, err)
				}
				recs = append(recs, record{Topic: t, Time: uint64(e.Time), ID: e.ID, Data: raw})
			}
			_, err := r.store(r.admit(p, recs), "sync")
			return err
		},
	}.Run(s, rd, sess, out)
	if err != nil {
		return err
	}
	return s.CloseWrite()
}

// maxFlightBytes bounds the envelope bytes of a session stored in one write (as a device's node does).
const maxFlightBytes = 1 << 20
