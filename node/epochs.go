package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// Key epochs on a node (issue #3). Every membership change is a commit op that starts a new epoch: a
// fresh key sealed to each device the commit lists (teamkeys.SealCommit). The node
//
//   - seals its ops under the team's current epoch (crdt.State.Current), re-keying first when the team
//     has none (after a partition merge that removed someone, every earlier epoch lists a removed device);
//   - opens arriving envelopes and persists the advanced key state in the same store transaction as the
//     ops it opened, so a crash neither loses a message whose key was deleted nor reuses a sender key;
//   - re-keys on a schedule (Config.RotateEvery, admins) and when the state asks for it (admins at once,
//     others when they next send);
//   - destroys the keys of epochs that ended more than Config.RetainKeys ago.

// errNoKey is returned when the team has a current epoch but this device does not hold its key yet.
var errNoKey = errors.New("node: this device does not hold the team's current key yet (it arrives with the next sync)")

// openResult is what opening one envelope gave.
type openResult int

const (
	opened    openResult = iota // the op is new and opened
	carried                     // stored sealed: this device cannot read it (history from before it joined)
	skipped                     // not stored: unknown epoch, already opened, or too far ahead for now
	misbehave                   // the envelope is invalid: its sender is at fault
)

// ingestTeam opens a batch of one team's envelopes, then stores the envelopes, the ops they opened and
// the advanced key state in one transaction, then applies the ops. With strict (catch-up), an invalid
// envelope fails the batch with errMisbehaved and nothing of it is stored.
func (n *Node) ingestTeam(t *team, items []ingestItem, strict bool) (added []*crdt.Op, err error) {
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	var b storage.Batch
	var ops []*crdt.Op
	for _, it := range items {
		if t.has(it.env.ID) {
			b.Envelopes = append(b.Envelopes, envRecord(it.env, it.raw))
			continue
		}
		op, res := n.openOne(t, it.env)
		switch res {
		case opened:
			ops = append(ops, op)
			b.Envelopes = append(b.Envelopes, envRecord(it.env, it.raw))
			// The envelope's id is the op's (opening checked it hashes so): no second hash.
			b.Ops = append(b.Ops, storage.OpRecord{Team: t.id, Time: uint64(op.Time), ID: it.env.ID, Data: op.Marshal()})
		case carried:
			b.Envelopes = append(b.Envelopes, envRecord(it.env, it.raw))
		case misbehave:
			if strict {
				n.restoreKeys(t)
				return nil, fmt.Errorf("%w: envelope that does not open", errMisbehaved)
			}
		}
	}
	if len(b.Envelopes) == 0 {
		return nil, nil
	}
	if len(ops) > 0 {
		// Opening is what advances the key state (chains, learnt epochs); carrying changes nothing.
		b.Secrets = map[string][]byte{keysSecret(t.id): t.keys.Marshal()}
	}
	if err := n.commitBatch(b); err != nil {
		n.restoreKeys(t)
		return nil, fmt.Errorf("store envelopes: %w", err)
	}
	if len(ops) > 0 {
		n.clockMu.Lock()
		for _, op := range ops {
			n.observe(op)
		}
		n.clockMu.Unlock()
		t.addOps(ops)
	}
	return ops, nil
}

// commitBatch writes b; a batch too big for one transaction is written envelope by envelope with its
// ops, and the key state last, so a crash in between leaves the key state behind (those envelopes
// then open again), never ahead.
func (n *Node) commitBatch(b storage.Batch) error {
	_, err := n.st.Commit(b)
	if !errors.Is(err, storage.ErrBatchTooBig) {
		return err
	}
	opsByID := make(map[[32]byte]storage.OpRecord, len(b.Ops))
	for _, o := range b.Ops {
		opsByID[o.ID] = o
	}
	for _, e := range b.Envelopes {
		one := storage.Batch{Envelopes: []storage.EnvelopeRecord{e}}
		if o, ok := opsByID[e.Key.ID]; ok {
			one.Ops = []storage.OpRecord{o}
		}
		if _, err := n.st.Commit(one); err != nil {
			return err
		}
	}
	if b.Secrets != nil {
		_, err = n.st.Commit(storage.Batch{Secrets: b.Secrets})
	}
	return err
}

func envRecord(e *envelope.Envelope, raw []byte) storage.EnvelopeRecord {
	return storage.EnvelopeRecord{Key: storage.EnvelopeKey{Topic: e.Topic, Time: uint64(e.Time), ID: e.ID}, Data: raw}
}

// restoreKeys puts back the key state last stored (the caller holds keyMu). Every change of the key
// state is stored under keyMu before keyMu is released, so the stored state is the state before the
// failed operation: reading it back costs nothing on the paths that succeed.
func (n *Node) restoreKeys(t *team) {
	b, err := n.st.Secret(keysSecret(t.id))
	var k *teamkeys.Keys
	if err == nil {
		k, err = teamkeys.Unmarshal(t.id, n.id.Device, b)
	}
	if err != nil {
		// Keep the advanced state rather than none; the next successful write stores it.
		n.log.Error("cannot restore the team key state", "team", t.id, "err", err)
		return
	}
	t.keys = k
}

// openOne opens one envelope (the caller holds keyMu) and classifies the outcome.
func (n *Node) openOne(t *team, e *envelope.Envelope) (*crdt.Op, openResult) {
	if e.Topic != t.topic {
		return nil, misbehave
	}
	op, err := t.keys.Open(e)
	switch {
	case err == nil:
	case errors.Is(err, teamkeys.ErrNoChain):
		return nil, carried
	case errors.Is(err, teamkeys.ErrUnknownEpoch), errors.Is(err, teamkeys.ErrReplay), errors.Is(err, teamkeys.ErrTooFarAhead):
		return nil, skipped
	default:
		n.log.Debug("envelope does not open", "team", t.id, "err", err)
		return nil, misbehave
	}
	if op.Kind == crdt.KindCreate && op.ID() != t.rec.Genesis {
		n.log.Debug("refused a second Create op", "team", t.id)
		return nil, misbehave
	}
	if err := t.admissible(op); err != nil {
		n.log.Debug("refused an inadmissible op", "team", t.id, "err", err)
		return nil, misbehave
	}
	return op, opened
}

// check authenticates an envelope's outer layer for the gossip validator, without changing any state.
func (t *team) check(e *envelope.Envelope) error {
	if e.Topic != t.topic {
		return errors.New("node: envelope of another topic")
	}
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	return t.keys.Check(e)
}

// newCommitOp stamps a commit op of this device for t. Its parents are the log's heads and also every
// create or commit op that no other commit names as a parent (the epoch frontier): a device that joined
// later cannot read the messages between, and must still see each commit's place among the epochs.
func (n *Node) newCommitOp(t *team, body []byte) *crdt.Op {
	ts := n.stamp()
	parents := t.headsBefore(ts)
	t.mu.Lock()
	named := make(map[crdt.OpID]bool)
	var commits []*crdt.Op
	for _, op := range t.log.Ops() {
		if op.Kind == crdt.KindCreate || op.Kind == crdt.KindMember {
			commits = append(commits, op)
			for _, p := range op.Parents {
				named[p] = true
			}
		}
	}
	t.mu.Unlock()
	for _, op := range commits {
		if id := op.ID(); !named[id] && op.Time < ts && !slices.Contains(parents, id) && len(parents) < crdt.MaxParents {
			parents = append(parents, id)
		}
	}
	slices.SortFunc(parents, crdt.OpID.Compare)
	return crdt.NewOp(n.id.Device, t.id, ts, parents, crdt.KindMember, body)
}

// stamp takes the next timestamp of this device's clock.
func (n *Node) stamp() crdt.HLC {
	n.clockMu.Lock()
	defer n.clockMu.Unlock()
	return n.clock.Next()
}

// newOp stamps a new op of this device for t.
func (n *Node) newOp(t *team, kind crdt.Kind, body []byte) *crdt.Op {
	ts := n.stamp()
	return crdt.NewOp(n.id.Device, t.id, ts, t.headsBefore(ts), kind, body)
}

// publish makes a new op of this device (not a commit) and publishes it (publishOp), unless low-data
// mode defers it: then it is queued durably and published later. Either way it returns once the op is
// on disk: that is the acknowledgement.
func (n *Node) publish(t *team, kind crdt.Kind, body []byte) (*crdt.Op, error) {
	op := n.newOp(t, kind, body)
	if queued, err := n.deferPublish(t, op); err != nil {
		return nil, err
	} else if queued {
		return op, nil
	}
	return op, n.publishOp(t, op)
}

// publishOp seals an op of this device (not a commit) under the team's current epoch, stores it durably,
// applies it and gossips it. With no sound epoch (a merge removed someone every epoch lists) it
// re-keys first. A queued op keeps its time and parents and is sealed under the epoch current now.
func (n *Node) publishOp(t *team, op *crdt.Op) error {
	s := t.snapshot()
	if s.Current < 0 {
		if _, err := n.commit(t, nil, "no epoch without removed devices"); err != nil {
			return fmt.Errorf("node: re-key before sending: %w", err)
		}
		s = t.snapshot()
		if s.Current < 0 {
			return errors.New("node: the team has no usable key epoch")
		}
	}
	tag := s.Epochs[s.Current].Tag
	t.keyMu.Lock()
	if !t.keys.CanSend(tag) {
		t.keyMu.Unlock()
		return errNoKey
	}
	raw, err := n.sealOwn(t, op, func() (*envelope.Envelope, error) { return t.keys.Seal(op, tag) })
	t.keyMu.Unlock()
	if err != nil {
		return err
	}
	n.gossip(t, raw)
	return nil
}

// sealOwn seals one of this device's ops with seal (which advances the key state), stores the op, its
// envelope and the advanced key state in one transaction and applies the op; the caller holds keyMu,
// and gossips the returned envelope once it released it. On failure the key state is put back, so a
// sender chain position is reused only if its envelope never left.
func (n *Node) sealOwn(t *team, op *crdt.Op, seal func() (*envelope.Envelope, error)) ([]byte, error) {
	e, err := seal()
	if err != nil {
		return nil, fmt.Errorf("node: seal: %w", err)
	}
	raw, err := n.checkSize(e)
	if err != nil {
		n.restoreKeys(t)
		return nil, err
	}
	b := storage.Batch{
		Envelopes: []storage.EnvelopeRecord{envRecord(e, raw)},
		Ops:       []storage.OpRecord{{Team: t.id, Time: uint64(op.Time), ID: e.ID, Data: op.Marshal()}},
		Secrets:   map[string][]byte{keysSecret(t.id): t.keys.Marshal()},
	}
	if _, err := n.st.Commit(b); err != nil {
		n.restoreKeys(t)
		return nil, fmt.Errorf("node: store: %w", err)
	}
	n.clockMu.Lock()
	n.observe(op)
	n.clockMu.Unlock()
	t.addOps([]*crdt.Op{op})
	return raw, nil
}

func (n *Node) checkSize(e *envelope.Envelope) ([]byte, error) {
	raw := e.Marshal()
	if len(raw) > envelope.MaxSize {
		return nil, fmt.Errorf("node: message too large (%d bytes sealed, limit %d)", len(raw), envelope.MaxSize)
	}
	return raw, nil
}

// gossip publishes a stored envelope; failure is only logged, since catch-up delivers it anyway. When
// gossip cannot have carried it to a peer that should have it at once, it reconciles with that peer
// instead of waiting for the next periodic session: with a connected relay that carries the team but
// is not in the topic yet as this node's gossip sees it, and, when gossip has no peer in the topic at
// all (just reconnected), with the connected members.
func (n *Node) gossip(t *team, raw []byte) {
	// Flood publishing sends the envelope to every peer in the topic as gossip knows it now.
	inTopic := t.ptop.ListPeers()
	if err := t.ptop.Publish(n.ctx, raw); err != nil {
		n.log.Warn("gossip publish failed", "team", t.id, "err", err)
	}
	noGossip := len(t.ptop.ListPeers()) == 0
	for _, p := range n.host.Network().Peers() {
		if n.isRelayFor(p, t.topic) {
			// A relay in the topic got the envelope from the flood publish (if it ignored it because
			// this device's enrolment had not completed, the reconciliation that follows enrolment
			// carries it). One whose subscription has not reached this node yet (just connected) did
			// not get it, and nothing in gossip sends it later: hand it over by reconciliation.
			if !slices.Contains(inTopic, p) {
				n.goRun(func() { n.syncTeam(p, t) })
			}
			continue
		}
		if d, err := deviceOf(p); noGossip && err == nil && n.isMember(t, d) {
			n.goRun(func() { n.syncTeam(p, t) })
		}
	}
}

// commit publishes a membership commit with changes (none: a re-key), starting a new epoch whose
// recipients are the member devices after the changes. why is logged.
func (n *Node) commit(t *team, changes []crdt.Change, why string) (*crdt.Op, error) {
	t.keyMu.Lock()
	s := t.snapshot()
	body, err := s.NextCommit(n.id.Device.ID(), changes...)
	if err != nil {
		t.keyMu.Unlock()
		return nil, fmt.Errorf("node: %w", err)
	}
	recips := body.Recipients
	op := n.newCommitOp(t, body.Marshal())
	raw, err := n.sealOwn(t, op, func() (*envelope.Envelope, error) { return t.keys.SealCommit(op, rand.Reader) })
	t.keyMu.Unlock()
	if err != nil {
		return nil, err
	}
	n.gossip(t, raw)
	n.log.Info("new key epoch", "team", t.id, "epoch", body.Number, "devices", len(recips), "changes", len(changes), "why", why)
	return op, nil
}

func compareIDs(a, b identity.DeviceID) int { return slices.Compare(a[:], b[:]) }

// epochLoop keeps the team's epochs healthy: it re-keys when the state needs it or the current epoch
// is older than Config.RotateEvery (admins only; a jitter spreads concurrent admins), and destroys the
// keys of epochs that ended more than Config.RetainKeys ago.
func (n *Node) epochLoop() {
	tick := time.NewTicker(n.cfg.EpochCheck)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		for _, t := range n.teamList() {
			n.tendEpochs(t)
		}
	}
}

// tendEpochs runs one round of epochLoop's work for t.
func (n *Node) tendEpochs(t *team) {
	me := n.id.Device.ID()
	s := t.snapshot()
	p, ok := s.PersonOf(me)
	if !ok {
		return
	}
	now := n.now()
	why := ""
	switch {
	case s.NeedsRekey:
		why = "epochs after a merge list removed devices or miss members"
	case s.Current >= 0 && now.Sub(s.Epochs[s.Current].Time.Time()) > n.cfg.RotateEvery:
		why = "scheduled rotation"
	}
	if why != "" && p.Admin {
		// Wait a little so that admins who saw the same merge do not all re-key; re-check after.
		jitter := time.Duration(mrand.Int64N(int64(n.cfg.EpochCheck/4) + 1))
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(jitter):
		}
		s2 := t.snapshot()
		if s2.NeedsRekey || (s2.Current >= 0 && now.Sub(s2.Epochs[s2.Current].Time.Time()) > n.cfg.RotateEvery) {
			if _, err := n.commit(t, nil, why); err != nil {
				n.log.Warn("re-key failed", "team", t.id, "err", err)
			}
		}
	}
	n.forgetOldEpochs(t)
}

// forgetOldEpochs destroys the keys of epochs that ended (a later epoch started) more than RetainKeys
// ago. The ops they opened stay in the store; their envelopes stay sealed for relaying.
func (n *Node) forgetOldEpochs(t *team) {
	s := t.snapshot()
	if s.Current < 0 {
		return
	}
	cutoff := n.now().Add(-n.cfg.RetainKeys)
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	var gone []uint32
	for _, tag := range t.keys.Tags() {
		end, ok := epochEnd(s, tag)
		if ok && end.Before(cutoff) {
			gone = append(gone, tag)
		}
	}
	if len(gone) == 0 {
		return
	}
	for _, tag := range gone {
		t.keys.Forget(tag)
	}
	if _, err := n.st.Commit(storage.Batch{Secrets: map[string][]byte{keysSecret(t.id): t.keys.Marshal()}}); err != nil {
		n.restoreKeys(t)
		n.log.Warn("cannot store the key state after destroying old epochs", "team", t.id, "err", err)
		return
	}
	n.log.Info("destroyed old epoch keys", "team", t.id, "epochs", len(gone))
}

// epochEnd returns when the epoch with this tag ended: the time of the first epoch numbered after it.
// The current epoch and epochs the state does not know have not ended.
func epochEnd(s *crdt.State, tag uint32) (time.Time, bool) {
	var number uint32
	found := false
	for i, e := range s.Epochs {
		if e.Tag == tag {
			if i == s.Current {
				return time.Time{}, false
			}
			number, found = e.Number, true
		}
	}
	if !found {
		return time.Time{}, false
	}
	for _, e := range s.Epochs {
		if e.Number > number {
			return e.Time.Time(), true
		}
	}
	return time.Time{}, false
}

// epochMissWait is how long after a reconciliation with a peer an envelope of an unknown epoch from it
// triggers another one. A device removed from the team keeps receiving such envelopes; this bounds
// what it spends asking.
const epochMissWait = 10 * time.Second

// epochMiss starts a catch-up with the peer that gossiped an envelope of an epoch this device does not
// hold, unless one ran recently: the commit that starts the epoch comes with it.
func (n *Node) epochMiss(p peer.ID, t *team) {
	if p == "" || p == n.host.ID() {
		return
	}
	key := syncKey(p, t)
	n.mu.Lock()
	last, ok := n.lastSync[key]
	recent := ok && time.Since(last) < epochMissWait
	if !recent {
		n.lastSync[key] = time.Now() // claims the slot; syncDone refreshes it
	}
	n.mu.Unlock()
	if !recent {
		n.goRun(func() { n.syncTeam(p, t) })
	}
}
