package device

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// Arrival is one envelope received from a peer.
type Arrival struct {
	Raw  []byte
	From Peer
	// Box is this device's box of a commit-form envelope, opened by the
	// caller with teamkeys.OpenBox outside the lock that guards the Team,
	// after BoxWanted allowed (and charged) it. Nil: the core opens the
	// boxes itself if the sender's budget allows.
	Box *teamkeys.Box
	// Tried marks a commit-form envelope whose boxes the caller tried
	// (BoxWanted allowed it) without finding this device's: the core does
	// not try them again.
	Tried bool
	// Reopen marks an envelope this device stores carried, given again
	// because Effects.Reopen asked for it: it is read as if it had just
	// arrived, and stays stored (Has) whatever becomes of it.
	Reopen bool
}

// BoxWanted reports whether the core would trial-open the boxes of this
// envelope from p: it is a commit-form envelope of this team that is not
// stored, held or forgotten, whose epoch this device holds no key of, from
// a member's device or an enrolled relay whose budget allows as many trials
// as it has boxes. If so it charges the budget. The caller then runs
// teamkeys.OpenBox (about one X25519 multiplication a box) outside its lock
// and passes the box in the Arrival. An envelope from anyone else costs no
// trial at all.
func (t *Team) BoxWanted(now time.Time, e *envelope.Envelope, p Peer) bool {
	t.now = now
	if !t.wantsBox(e, p) {
		return false
	}
	return t.chargeBoxes(p, t.boxTrials(e))
}

func (t *Team) wantsBox(e *envelope.Envelope, p Peer) bool {
	switch {
	case e.Form() != envelope.FormCommit || e.Topic != t.topic:
		return false
	case t.Has(e.ID) || t.keys.Forgotten(e.Epoch):
		return false
	case !p.Relay && !t.Member(p.Device):
		return false
	}
	if h := t.pending.get(e.ID); h != nil && h.commit != nil && (h.commit.Box != nil || !t.recipient(h.commit.Op)) {
		return false
	}
	if ep, ok := t.keys.Epoch(e.ID); ok && ep.Chains() {
		return false
	}
	return true
}

// outcome is what the first look at an arrival gave.
type outcome uint8

const (
	oHeld outcome = iota
	oAccepted
	oDuplicate
	oRefused
	oRejected
)

// Receive judges envelopes that peers sent, keeps what counts, and returns
// a verdict for each and the effects. An envelope is kept (Accepted) only
// once its author is judged to be allowed to write it by the membership
// rules of the ops this device holds (docs/membership.md): commits are
// learned (their epoch keys, and the prior keys of epochs valid commits
// name) only once they are valid or other kept ops build on them; messages
// and acks only once they count; envelopes this device cannot read are
// carried only if their sender is a current member and a recipient of
// their epoch. What cannot be judged yet (missing parents, an epoch not yet
// learned, a removed member's message that may yet be witnessed) is Held,
// within bounds; what its author had no right to write is Refused; what no
// honest peer passes on is Rejected and counts against the peer.
func (t *Team) Receive(now time.Time, arrivals []Arrival) ([]Verdict, Effects) {
	t.now = now
	var eff Effects
	first := make([]outcome, len(arrivals))
	ids := make([]crdt.OpID, len(arrivals))
	for i, a := range arrivals {
		first[i], ids[i] = t.look(a, &eff)
	}
	t.settle(&eff)
	verdicts := make([]Verdict, len(arrivals))
	for i := range arrivals {
		switch first[i] {
		case oAccepted:
			verdicts[i] = Accepted
		case oDuplicate:
			verdicts[i] = Duplicate
		case oRefused:
			verdicts[i] = Refused
		case oRejected:
			verdicts[i] = Rejected
		default:
			switch {
			case t.Has(ids[i]):
				verdicts[i] = Accepted
			case t.pending.get(ids[i]) != nil:
				verdicts[i] = Held
			default:
				verdicts[i] = Refused
			}
		}
	}
	return verdicts, eff
}

// reject records a peer fault.
func (t *Team) reject(p Peer, why string, eff *Effects) outcome {
	t.log.Debug("envelope rejected", "peer", p, "why", why)
	if t.fault(p) {
		t.log.Warn("peer banned: it keeps sending invalid envelopes", "peer", p)
		eff.addBan(p)
	}
	return oRejected
}

// refuse records an envelope that is not the peer's fault and will not be
// kept: its id is remembered as seen, so that ops naming it can be judged.
func (t *Team) refuse(id crdt.OpID, why string, p Peer) outcome {
	t.log.Debug("envelope refused", "peer", p, "why", why)
	t.opaque.add(id)
	return oRefused
}

// look decodes an arrival, classifies what is wrong with it, and holds the
// rest, opened as far as this device can without spending a key.
func (t *Team) look(a Arrival, eff *Effects) (outcome, crdt.OpID) {
	e, err := envelope.Unmarshal(t.topic, a.Raw)
	if err != nil {
		return t.reject(a.From, "malformed", eff), crdt.OpID{}
	}
	if a.From.ID != "" && !a.From.Relay && !t.Member(a.From.Device) {
		// Only members and enrolled relays are peers of a team: what anyone
		// else sends costs nothing but this check, and teaches nothing.
		t.log.Debug("envelope refused", "peer", a.From, "why", "from a peer that is not a member")
		return oRefused, e.ID
	}
	_, carried := t.carried[e.ID]
	reopen := carried && a.Reopen
	if t.Has(e.ID) && !reopen {
		return oDuplicate, e.ID
	}
	// A stored envelope this device carried sealed and is given again to be
	// read stays stored and carried until its op is kept (keep): the store
	// holds it, so no peer sends it again, and if it is held until it
	// expires, or the device restarts meanwhile, reread asks for it again.
	o, id := t.lookStored(e, a, eff)
	if reopen && (o == oRefused || o == oRejected) {
		t.giveUp(id) // it opens to something this device does not keep
	}
	return o, id
}

// lookStored looks at an arrival that is not stored, or a stored one given
// again to be read (Arrival.Reopen): another copy of an envelope held
// unopened, a held one, or a new one.
func (t *Team) lookStored(e *envelope.Envelope, a Arrival, eff *Effects) (outcome, crdt.OpID) {
	if h := t.pending.get(e.ID); h != nil && h.op() == nil && !bytes.Equal(h.raw, a.Raw) {
		// The held copy has not opened, so nothing vouches that it is this
		// id's envelope: a peer can send a tampered copy ahead of the
		// genuine one. This copy is looked at on its own, and replaces the
		// held one if it opens.
		h2 := &held{env: e, raw: a.Raw, from: a.From, at: t.now, tried: a.Tried}
		o := t.lookFresh(h2, a.Box, eff)
		if h2.op() != nil || o == oAccepted {
			t.pending.remove(e.ID)
			if o == oHeld {
				t.hold(h2)
			}
		}
		return o, e.ID
	}
	if h := t.pending.get(e.ID); h != nil {
		if e.Form() == envelope.FormCommit && (h.commit == nil || h.commit.Box == nil && t.recipient(h.commit.Op)) {
			// A commit held unopened, or opened without its chains: the box,
			// given or tried within this peer's budget.
			box := a.Box
			if box == nil && !h.tried && !a.Tried && t.wantsBox(e, a.From) && t.chargeBoxes(a.From, t.boxTrials(e)) {
				h.tried = true
				box, _ = t.openBox(e)
			}
			if box != nil {
				t.openCommit(h, box, eff)
			}
		}
		return oHeld, e.ID
	}
	h := &held{env: e, raw: a.Raw, from: a.From, at: t.now, tried: a.Tried}
	o := t.lookFresh(h, a.Box, eff)
	if o == oHeld {
		t.hold(h)
	}
	return o, e.ID
}

// lookFresh opens a newly arrived envelope as far as it can, by its form.
func (t *Team) lookFresh(h *held, box *teamkeys.Box, eff *Effects) outcome {
	if h.env.Form() == envelope.FormChain {
		return t.lookChain(h, eff)
	}
	return t.lookCommit(h, box, eff)
}

// hold adds h to the held envelopes.
func (t *Team) hold(h *held) {
	if dropped, ok := t.pending.add(h); ok {
		t.opaque.add(dropped)
	}
}

// lookChain opens a chain-form envelope as far as it can.
func (t *Team) lookChain(h *held, eff *Effects) outcome {
	o, err := t.keys.OpenChain(h.env)
	switch {
	case err == nil:
		h.chain = o
		return oHeld
	case errors.Is(err, teamkeys.ErrNoChain):
		// The outer key is held (a prior key, say) without the chains: the
		// epoch's commit may be held or kept unlearned, with a box for this
		// device that opens it.
		if t.tryCandidates(h) {
			return oHeld
		}
		return t.carry(h, o, eff)
	case errors.Is(err, teamkeys.ErrUnknownEpoch):
		// Never one of an epoch held with its chains: teamkeys says
		// ErrBadSeal for those (below).
		if t.tryCandidates(h) {
			return oHeld
		}
		t.askSync(h.from, eff)
		return oHeld
	case errors.Is(err, envelope.ErrBadSeal):
		return t.reject(h.from, "bad signature", eff)
	case errors.Is(err, teamkeys.ErrReplay):
		t.checkEquivocation(h.env.ID, o)
		return t.refuse(h.env.ID, "replay", h.from)
	case errors.Is(err, teamkeys.ErrTooFarAhead):
		return oHeld // opened once earlier messages of its sender arrive
	}
	// The signature verified but the inner layer or the op is broken: its
	// sender wrote it so.
	return t.refuse(h.env.ID, "does not open: "+err.Error(), h.from)
}

// tryCandidates opens a held chain-form envelope with the epochs of held
// commits (opened through this device's box, not yet judged) and of kept
// commits whose epochs are not learned.
func (t *Team) tryCandidates(h *held) bool {
	try := func(c *held) bool {
		if c.env.Epoch != h.env.Epoch {
			return false
		}
		if c.epoch == nil && (c.commit == nil || c.commit.Box == nil) && !c.tried {
			// A kept commit restored from the store, or opened without its
			// box: open its box once.
			c.tried = true
			if box, err := t.openBox(c.env); err == nil {
				t.openCommit(c, box, nil)
			}
		}
		if c.epoch == nil {
			return false
		}
		o, err := c.epoch.OpenChain(h.env, t.id)
		if err == nil {
			h.chain = o
			return true
		}
		return false
	}
	for _, c := range t.pending.sorted() {
		if try(c) {
			return true
		}
	}
	for _, c := range t.unlearned {
		if try(c) {
			return true
		}
	}
	return false
}

// carry decides about a chain-form envelope this device cannot read: it
// keeps it sealed, for others, if its sender (whose signature verified) is
// a current member and a recipient of the epoch as far as this device
// knows it.
func (t *Team) carry(h *held, o *teamkeys.Opened, eff *Effects) outcome {
	s := t.snapshot()
	for _, ep := range s.Epoch(o.Tag) {
		if slices.ContainsFunc(ep.Recipients, func(r crdt.Recipient) bool { return r.Device == t.self.ID() }) {
			if held, ok := t.keys.Epoch(ep.ID); ok && held.Chains() {
				// This device reads the epoch, and the sender is none of its
				// recipients.
				return t.refuse(h.env.ID, "sealed by a device the epoch does not list", h.from)
			}
			// This device is a recipient: its chains come with the epoch's
			// commit. Held, to be read then.
			return oHeld
		}
	}
	if _, ok := s.Member(o.Sender); !ok {
		return t.refuse(h.env.ID, "sealed by a device that is not a member", h.from)
	}
	if o.Epoch != (crdt.OpID{}) {
		listed := false
		for _, ep := range s.Epoch(o.Tag) {
			if ep.ID == o.Epoch {
				listed = slices.ContainsFunc(ep.Recipients, func(r crdt.Recipient) bool { return r.Device == o.Sender })
			}
		}
		if !listed && t.lg.Has(o.Epoch) {
			return t.refuse(h.env.ID, "sealed by a device the epoch does not list", h.from)
		}
	}
	t.stored[h.env.ID] = struct{}{}
	if !t.lg.Has(h.env.ID) { // its op may be in the log already: history handed over (AcceptHistory)
		t.carried[h.env.ID] = o.Tag
	}
	eff.Write.Envelopes = append(eff.Write.Envelopes, Record{Time: uint64(h.env.Time), ID: h.env.ID, Data: h.raw})
	return oAccepted
}

// lookCommit opens a commit-form envelope as far as it can: with an outer
// key held for its tag, or through this device's box (given, or tried here
// within the sender's budget). A commit that lists this device as a
// recipient is opened through its box even when its outer key is held
// (from prior keys): only the box gives the epoch's chains.
func (t *Team) lookCommit(h *held, box *teamkeys.Box, eff *Effects) outcome {
	if t.keys.Forgotten(h.env.Epoch) {
		return t.refuse(h.env.ID, "an epoch this device forgot", h.from)
	}
	var c *teamkeys.CommitOpened
	if box == nil {
		var err error
		c, err = t.keys.OpenCommit(h.env, nil)
		switch {
		case err == nil:
			if !t.recipient(c.Op) {
				h.commit = c
				return oHeld
			}
		case errors.Is(err, envelope.ErrBadOp):
			// Opened with the epoch's outer key, which the peer holds too if
			// it kept the envelope: the author's signature does not verify.
			return t.reject(h.from, "bad commit signature", eff)
		case !errors.Is(err, teamkeys.ErrUnknownEpoch):
			return t.refuse(h.env.ID, "commit does not open: "+err.Error(), h.from)
		}
		if !h.tried && t.wantsBox(h.env, h.from) && t.chargeBoxes(h.from, t.boxTrials(h.env)) {
			h.tried = true
			box, _ = t.openBox(h.env)
		}
	}
	if box == nil {
		if c != nil {
			h.commit = c // its chains wait for a box: on a later arrival, within budget
			return oHeld
		}
		t.askSync(h.from, eff)
		return oHeld // no key yet: a prior key or a box may come
	}
	return t.openCommit(h, box, eff)
}

// recipient reports whether a create or commit op lists this device, with
// its Noise key, as a recipient of an epoch whose chains it does not hold.
func (t *Team) recipient(op *crdt.Op) bool {
	if ep, ok := t.keys.Epoch(op.ID()); ok && ep.Chains() {
		return false
	}
	recips, err := teamkeys.Recipients(op)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(recips, func(r crdt.Recipient) bool {
		return r.Device == t.self.ID() && r.Noise == t.self.NoisePublic()
	})
}

// openCommit opens a held commit-form envelope through this device's box.
// eff may be nil.
func (t *Team) openCommit(h *held, box *teamkeys.Box, eff *Effects) outcome {
	c, err := t.keys.OpenCommit(h.env, box)
	if err != nil {
		// The box opened for this device: its author made it so.
		return t.refuse(h.env.ID, "commit does not open: "+err.Error(), h.from)
	}
	h.commit = c
	if recips, err := teamkeys.Recipients(c.Op); err == nil {
		h.epoch = teamkeys.NewEpoch(t.self, box.Key, c.Op.ID(), recips)
	}
	return oHeld
}

// askSync asks for a reconciliation with p, a member or relay, because it
// sent something this device cannot place yet.
func (t *Team) askSync(p Peer, eff *Effects) {
	if (p.Relay || t.Member(p.Device)) && t.missed(p) {
		eff.addSync(p)
	}
}

// checkEquivocation turns a second op at a chain position this device has
// opened into evidence.
func (t *Team) checkEquivocation(id crdt.OpID, o *teamkeys.Opened) {
	if o == nil {
		return
	}
	pos := position{o.Tag, o.Sender, o.Index}
	other, ok := t.sealAt(pos)
	if !ok || other == id {
		return
	}
	prev, ok := t.lg.Op(other)
	if !ok {
		return
	}
	t.equivocated(pos, crdt.SealedOf(other, prev.Seal), o.Sealed(id))
}

// equivocated queues evidence that a device signed two ops for one
// position, once per position.
func (t *Team) equivocated(pos position, a, b crdt.SealedID) {
	if t.reported[pos] {
		return
	}
	ev := crdt.NewEvidence(pos.sender, pos.tag, pos.index, a, b)
	if !ev.Verify(t.id) {
		return
	}
	t.reported[pos] = true
	t.evidence = append(t.evidence, ev)
	t.log.Warn("a device signed two messages for one position of its chain", "device", pos.sender)
}
