package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/duty"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// The node runs each team's device core (sync/device) and does its I/O: every rule a device follows
// (what it accepts, keeps, seals, commits, re-keys, forgets, acknowledges) is the core's; the node
// feeds it what arrives (gossip, sync sessions, the clock) and carries out the Effects it returns, in
// the order the core asks: the Write made durable first (in one store transaction), then gossip,
// syncs and bans.

// after is what is left of a call's effects once the Write is durable: the I/O done outside the
// team's lock.
type after struct {
	stored  int // envelopes newly stored (team.stored counts them too)
	publish [][]byte
	sync    []device.Peer
	ban     []device.Peer
	alerts  []duty.Alert
}

// do runs f on t's core under t.mu and carries out the effects it returns. f's error means it had no
// effects. An error storing the Write discards the core's memory (it is ahead of the disk) by
// restoring it from the store, and is returned: nothing was acknowledged.
func (n *Node) do(t *team, f func(c *device.Team, now time.Time) (device.Effects, error)) error {
	_, err := n.doStored(t, f)
	return err
}

// doStored is do, and says how many envelopes the call stored.
func (n *Node) doStored(t *team, f func(c *device.Team, now time.Time) (device.Effects, error)) (int, error) {
	t.mu.Lock()
	eff, err := f(t.core, n.now())
	if err != nil {
		t.mu.Unlock()
		return 0, err
	}
	out, err := n.applyLocked(t, eff)
	t.mu.Unlock()
	n.act(t, out)
	return out.stored, err
}

// applyLocked makes the effects' Write durable, gives the core the envelopes it asked to reopen (and
// stores what that decides, in turn), then refreshes the state readers see. The caller holds t.mu.
func (n *Node) applyLocked(t *team, eff device.Effects) (after, error) {
	var out after
	changed := false
	for round := 0; ; round++ {
		if !eff.Write.Empty() {
			if err := n.commitWrite(t, eff.Write); err != nil {
				n.restoreLocked(t)
				return out, fmt.Errorf("node: store team %s: %w", t.id.Short(), err)
			}
			if round == 0 {
				// Later rounds reopen envelopes stored before: only the first stores new ones.
				out.stored = len(eff.Write.Envelopes)
				t.stored.Add(uint64(out.stored))
			}
		}
		out.publish = append(out.publish, eff.Publish...)
		out.sync = append(out.sync, eff.Sync...)
		out.ban = append(out.ban, eff.Ban...)
		out.alerts = append(out.alerts, eff.Alerts...)
		changed = changed || eff.Changed
		if len(eff.Reopen) == 0 || round > 64 {
			break
		}
		arrivals := make([]device.Arrival, 0, len(eff.Reopen))
		for _, id := range eff.Reopen {
			r, err := n.st.Envelope(id)
			if err != nil || r.Key.Topic != t.topic {
				continue
			}
			arrivals = append(arrivals, device.Arrival{Raw: r.Data, Reopen: true})
		}
		_, eff = t.core.Receive(n.now(), arrivals)
	}
	// The core's state is cached until its log changes: a new state is what readers must see.
	if changed || t.core.State() != t.state.Load() {
		t.publishState()
		t.wake()
		alerts, w := t.core.Alerts(n.now())
		if !w.Empty() {
			if err := n.commitWrite(t, w); err != nil {
				// What was alerted is not stored: alert all the same (a restart may alert it again).
				n.log.Warn("storing the alert state failed", "team", t.id.Short(), "err", err)
			}
		}
		out.alerts = append(out.alerts, alerts...)
	}
	return out, nil
}

// commitWrite stores a core's Write in one transaction. A Write too big for one (a long history
// reopened at once) is stored envelope by envelope with its op, and the key state last: a crash in
// between leaves the key state behind, so those envelopes open again after the restart. A Write that
// seals this device's own op always fits one transaction (one op), so a chain position is never
// stored ahead of its key state.
func (n *Node) commitWrite(t *team, w device.Write) (err error) {
	b := batchOf(t, w)
	_, err = n.st.Commit(b)
	if err == nil {
		n.auditWrite(t, w)
		return n.dropChunks(w.DropChunks)
	}
	if !errors.Is(err, storage.ErrBatchTooBig) {
		return err
	}
	defer func() {
		if err == nil {
			n.auditWrite(t, w)
		}
	}()
	ops := make(map[[storage.IDSize]byte]storage.OpRecord, len(b.Ops))
	for _, o := range b.Ops {
		ops[o.ID] = o
	}
	for _, e := range b.Envelopes {
		one := storage.Batch{Envelopes: []storage.EnvelopeRecord{e}}
		if o, ok := ops[e.Key.ID]; ok {
			one.Ops = []storage.OpRecord{o}
			delete(ops, e.Key.ID)
		}
		if _, err := n.st.Commit(one); err != nil {
			return err
		}
	}
	for _, o := range ops {
		if _, err := n.st.Commit(storage.Batch{Ops: []storage.OpRecord{o}}); err != nil {
			return err
		}
	}
	if b.Secrets != nil {
		_, err = n.st.Commit(storage.Batch{Secrets: b.Secrets})
	}
	if err == nil {
		err = n.dropChunks(w.DropChunks)
	}
	return err
}

// restoreLocked replaces t's core with one restored from the store, after a failed write (the caller
// holds t.mu).
func (n *Node) restoreLocked(t *team) {
	core, err := n.restoreCore(t.rec)
	if err != nil {
		// Keep the core that is ahead of the disk rather than none; the next write stores its state.
		n.log.Error("cannot restore a team from the store after a failed write", "team", t.id, "err", err)
		return
	}
	t.core = core
	t.publishState()
}

// act carries out the effects that follow a durable write: gossip, syncs, bans.
func (n *Node) act(t *team, out after) {
	for _, raw := range out.publish {
		n.gossip(t, raw)
	}
	for _, p := range out.sync {
		if pid := peer.ID(p.ID); pid != "" && pid != n.host.ID() {
			n.goRun(func() { n.syncTeam(pid, t) })
		}
	}
	for _, p := range out.ban {
		n.ban(peer.ID(p.ID), "it sent invalid envelopes")
	}
	n.notify(t, out.alerts)
	if t.rosterMoved.Swap(false) {
		n.relaysChanged()
	}
	n.learnRelays(t)
}

// corePeer is p as t's core sees it.
func (n *Node) corePeer(p peer.ID, t *team) device.Peer {
	cp := device.Peer{ID: string(p), Relay: n.isRelayFor(p, t.topic)}
	if d, err := deviceOf(p); err == nil {
		cp.Device = d
	}
	return cp
}

// receive gives envelopes that p sent to t's core and carries out the effects. A commit-form
// envelope's box is trial-opened here, outside t.mu, when the core wants it (device.BoxWanted): the
// X25519 work of a large commit does not hold up the team.
func (n *Node) receive(t *team, p peer.ID, raws [][]byte) ([]device.Verdict, error) {
	vs, _, err := n.receiveStored(t, p, raws)
	return vs, err
}

// receiveStored is receive, and says how many of the envelopes were newly stored.
func (n *Node) receiveStored(t *team, p peer.ID, raws [][]byte) ([]device.Verdict, int, error) {
	from := n.corePeer(p, t)
	arrivals := make([]device.Arrival, len(raws))
	for i, raw := range raws {
		arrivals[i] = device.Arrival{Raw: raw, From: from}
		e, err := envelope.Unmarshal(t.topic, raw)
		if err != nil || e.Form() != envelope.FormCommit {
			continue
		}
		t.mu.Lock()
		want := t.core.BoxWanted(n.now(), e, from)
		var bk teamkeys.BoxKeys
		if want {
			bk = t.core.BoxKeys()
		}
		t.mu.Unlock()
		if want {
			box, err := teamkeys.OpenBox(bk, t.id, e)
			bk.Wipe()
			arrivals[i].Box, arrivals[i].Tried = box, err != nil
		}
	}
	var verdicts []device.Verdict
	stored, err := n.doStored(t, func(c *device.Team, now time.Time) (device.Effects, error) {
		v, eff := c.Receive(now, arrivals)
		verdicts = v
		return eff, nil
	})
	return verdicts, stored, err
}

// validator judges a gossiped envelope before pubsub delivers or forwards it: the core decides, and
// only what it accepted (stored, opened or carried) is passed on. What it holds for later, refuses or
// already has is ignored; what no honest peer sends is rejected (pubsub scores the sender down), and
// the core's budget bans a peer that keeps sending it. The envelope is stored before the validator
// returns: gossip passes on only what this device keeps.
func (n *Node) validator(t *team) pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if from == n.host.ID() {
			return pubsub.ValidationAccept // this device's own, stored before it was published
		}
		if len(m.Data) > envelope.MaxSize {
			return pubsub.ValidationReject
		}
		vs, err := n.receive(t, from, [][]byte{m.Data})
		if err != nil {
			n.log.Error("storing a gossiped envelope failed", "team", t.id, "err", err)
			return pubsub.ValidationIgnore
		}
		switch vs[0] {
		case device.Accepted:
			n.fetchSoon(from, t) // the message may have attachments: the peer that sent it may hold them
			return pubsub.ValidationAccept
		case device.Rejected:
			return pubsub.ValidationReject
		case device.Held:
			// Gossip reorders: its parents or its epoch's commit are most likely a few
			// milliseconds behind. Wait for them, so that it is passed on once kept.
			select {
			case t.awaitSem <- struct{}{}:
				kept := false
				if e, err := envelope.Unmarshal(t.topic, m.Data); err == nil {
					kept = n.awaitKept(ctx, t, e.ID)
				}
				<-t.awaitSem
				if kept {
					return pubsub.ValidationAccept
				}
			default:
				// Enough envelopes wait already (a peer may be sending what will never be kept): this
				// one is ignored, and the sync the core asked for brings it if it counts.
			}
		}
		return pubsub.ValidationIgnore
	}
}

// heldWait bounds how long the gossip validator waits for a held envelope to be kept, and
// maxAwaiting how many envelopes of a team wait at once.
const (
	heldWait    = 3 * time.Second
	maxAwaiting = 32
)

// awaitKept waits until t's core keeps envelope id (true) or no longer holds it, heldWait passed or
// ctx ended (false).
func (n *Node) awaitKept(ctx context.Context, t *team, id crdt.OpID) bool {
	ch, cancel := t.watch()
	defer cancel()
	timer := time.NewTimer(heldWait)
	defer timer.Stop()
	for {
		t.mu.Lock()
		kept, held := t.core.Has(id), t.core.Holding(id)
		t.mu.Unlock()
		if kept || !held {
			return kept
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		case <-n.ctx.Done():
			return false
		}
	}
}

// peerFilter keeps gossip of a team's topic between the team's member devices and the relays
// enrolled for it: pubsub grafts no one else into the topic's mesh and exchanges no message ids with
// them. It runs in pubsub's event loop, so it reads the membership published by the core without
// waiting for a team's lock.
func (n *Node) peerFilter(p peer.ID, topic string) bool {
	v, ok := n.topicNames.Load(topic)
	if !ok {
		return false
	}
	t := v.(*team)
	if d, err := deviceOf(p); err == nil && t.isMember(d) {
		return true
	}
	return n.isRelayFor(p, t.topic)
}

// gossip publishes a stored envelope; failure is only logged, since reconciliation delivers it
// anyway. When gossip cannot have carried it to a peer that should have it at once, it reconciles
// with that peer instead of waiting for the next periodic session: with a connected relay that
// carries the team but is not in the topic yet as this node's gossip sees it, and, when this node's
// mesh of the topic is empty (just reconnected, or its only mesh peer just left: flood publishing is
// off, so the envelope went to nobody), with the connected relays and members.
func (n *Node) gossip(t *team, raw []byte) {
	name := t.ptop.String()
	inTopic := t.ptop.ListPeers()
	noGossip := n.mesh.empty(name)
	if err := t.ptop.Publish(n.ctx, raw); err != nil {
		n.log.Warn("gossip publish failed", "team", t.id, "err", err)
	}
	// Members of the topic outside the mesh get it first-hand too (mesh.go).
	for _, p := range inTopic {
		if d, err := deviceOf(p); err == nil && t.isMember(d) && !n.mesh.in(name, p) && !n.isRelayFor(p, t.topic) {
			n.goRun(func() { n.give(p, t, raw) })
		}
	}
	for _, p := range n.host.Network().Peers() {
		if n.isRelayFor(p, t.topic) {
			if noGossip || !slices.Contains(inTopic, p) {
				n.goRun(func() { n.syncTeam(p, t) })
			}
			continue
		}
		if d, err := deviceOf(p); noGossip && err == nil && t.isMember(d) && !slices.Contains(inTopic, p) { // the others got it above
			n.goRun(func() { n.syncTeam(p, t) })
		}
	}
}

// banTime is how long a misbehaving peer is disconnected and refused.
const banTime = 10 * time.Minute

// ban disconnects p and refuses it for banTime.
func (n *Node) ban(p peer.ID, why string) {
	if p == "" || p == n.host.ID() {
		return
	}
	n.mu.Lock()
	n.banned[p] = n.now().Add(banTime)
	n.mu.Unlock()
	n.log.Warn("dropping peer: "+why, "peer", p.ShortString())
	_ = n.host.Network().ClosePeer(p)
}

func (n *Node) isBanned(p peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	until, ok := n.banned[p]
	if ok && !n.now().Before(until) {
		delete(n.banned, p)
		return false
	}
	return ok
}

// every runs f each d until the node closes.
func (n *Node) every(d time.Duration, f func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		f()
	}
}

// collect makes the store's deletions final, when there were any (run each CollectEvery).
func (n *Node) collect() {
	if n.st.Pending() == 0 {
		return
	}
	c, err := n.st.Collect()
	if err != nil {
		if n.ctx.Err() == nil {
			n.log.Warn("making deletions final failed; retrying later", "err", err)
		}
		return
	}
	n.log.Info("deletions made final", "deleted", c.Deleted, "tables_before", c.LSMBefore, "tables_after", c.LSMAfter, "took", c.Took.Round(time.Millisecond))
}

// tickEvery is how often tickAll runs: every EpochCheck, or AckInterval if shorter.
func (n *Node) tickEvery() time.Duration {
	if n.cfg.AckInterval > 0 {
		return min(n.cfg.EpochCheck, n.cfg.AckInterval)
	}
	return n.cfg.EpochCheck
}

// tickAll gives every team's core the time (device.Team.Tick): held envelopes expire, keys of old
// epochs are destroyed, admins re-key, acknowledgements are batched. Low-data mode defers the
// acknowledgements.
func (n *Node) tickAll() {
	opt := device.TickOptions{NoAcks: n.low.On() || n.cfg.AckInterval < 0}
	for _, t := range n.teamList() {
		if err := n.do(t, func(c *device.Team, now time.Time) (device.Effects, error) {
			return c.Tick(now, opt), nil
		}); err != nil {
			n.log.Warn("team upkeep failed", "team", t.id, "err", err)
		}
		n.dropRemoved(t)
	}
}

// dropRemoved closes the connections of the peers that t no longer lists as members and that share
// no other team with this device (nor carry one as its relay): a removed member gets nothing more
// from this device, not even gossip of other topics' ids.
func (n *Node) dropRemoved(t *team) {
	s := t.snapshot()
	if len(s.Removed) == 0 {
		return
	}
	teams := n.teamList()
	for _, p := range n.host.Network().Peers() {
		d, err := deviceOf(p)
		if err != nil || !slices.Contains(s.Removed, d) || t.isMember(d) {
			continue
		}
		shared := false
		for _, o := range teams {
			if o.isMember(d) || n.isRelayFor(p, o.topic) {
				shared = true
				break
			}
		}
		if !shared {
			n.log.Info("closing the connection of a removed device", "peer", p.ShortString())
			_ = n.host.Network().ClosePeer(p)
		}
	}
}

// Send posts a message to a team. It returns once the message is durably stored on this device (or,
// in low-data mode, durably queued in the outbox). A reply must name a message of the team
// (Messages, queued ones included): another is refused with ErrUnknownMessage.
func (n *Node) Send(teamRef string, m crdt.Message) (crdt.OpID, crdt.HLC, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return crdt.OpID{}, 0, err
	}
	op, err := n.send(t, m, nil)
	if err != nil {
		return crdt.OpID{}, 0, err
	}
	return op.ID(), op.Time, nil
}

// send is Send to t; before, if not nil, runs once the op is made and before it is stored.
func (n *Node) send(t *team, m crdt.Message, before func(*crdt.Op) error) (*crdt.Op, error) {
	if err := device.CheckMessage(m); err != nil {
		return nil, err
	}
	if m.ReplyTo != nil {
		ok, err := n.hasMessage(t, *m.ReplyTo)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrUnknownMessage, m.ReplyTo.Short())
		}
	}
	return n.publishWith(t, crdt.KindMessage, m.Marshal(), before)
}

// publish makes a new op of this device (not a commit) and publishes it, unless low-data mode defers
// it: then it is queued durably and published later. Either way it returns once the op is on disk:
// that is the acknowledgement.
func (n *Node) publish(t *team, kind crdt.Kind, body []byte) (*crdt.Op, error) {
	return n.publishWith(t, kind, body, nil)
}

// publishWith is publish; before, if not nil, runs once the op is made and before it is stored or
// queued (an error from it stops the publication).
func (n *Node) publishWith(t *team, kind crdt.Kind, body []byte, before func(*crdt.Op) error) (*crdt.Op, error) {
	t.mu.Lock()
	op, err := t.core.Make(n.now(), kind, body)
	t.mu.Unlock()
	if err != nil {
		return nil, coreErr(err)
	}
	if before != nil {
		if err := before(op); err != nil {
			return nil, err
		}
	}
	if queued, err := n.low.Defer(t.topic, op); err != nil {
		return nil, err
	} else if queued {
		if kind == crdt.KindMessage {
			// Not in the log, but in Messages (Queued): watchers look again.
			t.mu.Lock()
			t.wake()
			t.mu.Unlock()
		}
		return op, nil
	}
	return n.publishOp(t, op)
}

// publishOp seals an op made by the core (now or before, if it waited in the outbox), stores it and
// gossips it.
func (n *Node) publishOp(t *team, op *crdt.Op) (*crdt.Op, error) {
	var sealed *crdt.Op
	err := n.do(t, func(c *device.Team, now time.Time) (device.Effects, error) {
		s, eff, err := c.Publish(now, op)
		sealed = s
		return eff, err
	})
	if err != nil {
		return nil, coreErr(err)
	}
	return sealed, nil
}

// change commits membership changes (none: a re-key) made by this device.
func (n *Node) change(t *team, changes ...crdt.Change) (*crdt.Op, error) {
	return n.changeFor(t, nil, changes...)
}

// changeFor is change, with the boxes of the devices in prekeys sealed to the keys given there (a
// joiner's join-request prekey: device.Team.ChangeFor).
func (n *Node) changeFor(t *team, prekeys map[identity.DeviceID]identity.NoisePublic, changes ...crdt.Change) (*crdt.Op, error) {
	var op *crdt.Op
	err := n.do(t, func(c *device.Team, now time.Time) (device.Effects, error) {
		o, eff, err := c.ChangeFor(now, prekeys, changes...)
		op = o
		return eff, err
	})
	if err != nil {
		return nil, coreErr(err)
	}
	return op, nil
}

// coreErr is the node's error for an error of a team's core.
func coreErr(err error) error {
	if errors.Is(err, device.ErrRemoved) {
		return ErrRemoved
	}
	return fmt.Errorf("node: %w", err)
}

// MarkRead records that the user was shown these messages; they are acknowledged as read in the next
// batch.
func (n *Node) MarkRead(teamRef string, ids []crdt.OpID) error {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.core.MarkRead(ids)
	t.mu.Unlock()
	return nil
}

// FlushAcks publishes the pending acknowledgements of every team now, and returns how many ack ops it
// published. The node's Tick does it every AckInterval (not in low-data mode).
func (n *Node) FlushAcks() (int, error) {
	var (
		count int
		errs  []error
	)
	for _, t := range n.teamList() {
		var c int
		err := n.do(t, func(core *device.Team, now time.Time) (device.Effects, error) {
			if !core.Member(n.id.Device.ID()) {
				return device.Effects{}, nil
			}
			k, eff, err := core.Acks(now)
			c = k
			return eff, err
		})
		count += c
		if err != nil {
			errs = append(errs, fmt.Errorf("team %s: %w", t.id.Short(), err))
		}
	}
	return count, errors.Join(errs...)
}

func compareIDs(a, b identity.DeviceID) int { return slices.Compare(a[:], b[:]) }
