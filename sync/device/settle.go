package device

import (
	"cmp"
	"errors"
	"maps"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// maxRounds bounds the rounds of settle per call: each round keeps what a
// new epoch or a new parent made judgeable; history that needs more comes
// with the next call.
const maxRounds = 16

// settle judges what is held and keeps what counts, round after round
// while a round keeps something: keeping a commit can open held messages
// (its epoch), and keeping an op can make its children judgeable.
func (t *Team) settle(eff *Effects) {
	for range maxRounds {
		t.openHeld(eff)
		cands := t.candidates(eff)
		if len(cands) == 0 {
			break
		}
		keep := t.judge(cands)
		if len(keep) == 0 {
			break
		}
		t.keep(keep, eff)
	}
	t.learnLate(eff)
	t.flushEvidence(eff)
}

// learnLate learns the epochs of kept commits that have become permitted
// since they were kept (more of the membership arrived), and asks for the
// envelopes carried in them to be read again.
func (t *Team) learnLate(eff *Effects) {
	s := t.view()
	changed := false
	if len(t.priors) > 0 && t.lg.Len() != t.priorsAt {
		// The prior keys of kept commits that count, whose tags the log
		// names now (a tag is named once the log holds a commit that names
		// it, which may come after the commit that carries its key).
		t.priorsAt = t.lg.Len()
		named := t.namedTags()
		for id, prior := range t.priors {
			if !s.Counts(id) {
				continue
			}
			for _, p := range prior {
				if !named[p.Tag] || t.keys.Held(p.Tag) || t.keys.Forgotten(p.Tag) {
					continue
				}
				t.makeRoom(s)
				if ok, _ := t.keys.LearnPrior(p); ok {
					changed = true
				}
			}
		}
	}
	for id, u := range t.unlearned {
		if !s.Permitted(id) {
			continue
		}
		if (u.commit == nil || u.commit.Box == nil) && !u.tried {
			u.tried = true
			if box, err := t.openBox(u.env); err == nil {
				t.openCommit(u, box, nil)
			}
		}
		if u.commit == nil {
			delete(t.unlearned, id)
			continue
		}
		t.makeRoom(s)
		if err := t.keys.Learn(u.commit); err != nil {
			t.log.Warn("learning an epoch failed", "err", err)
		}
		delete(t.unlearned, id)
		changed = true
		if ep, ok := t.keys.Epoch(id); ok && ep.Chains() {
			t.reopenTag(crdt.TagOf(id), eff)
		}
	}
	if changed {
		eff.Write.Keys = t.keys.Marshal()
	}
}

// openHeld opens the held envelopes that the keys learned since, the
// epochs of held commits (opened through this device's box) or the prior
// keys of held commits now open, until nothing more opens. Held commits'
// keys are tried, not learned: a commit's ancestors must open before it can
// be judged, and it is judged before its keys are learned.
func (t *Team) openHeld(eff *Effects) {
	for progress := true; progress; {
		progress = false
		held := t.pending.sorted()
		inputs := make(map[uint32]tagInputs)
		for _, h := range held {
			if h.op() != nil || h.commit != nil {
				continue
			}
			switch h.env.Form() {
			case envelope.FormChain:
				progress = t.reopenChain(h, held, inputs, eff) || progress
			case envelope.FormCommit:
				progress = t.reopenCommit(h, held) || progress
			}
		}
	}
}

// tentative returns the prior keys this device may try but has not learned:
// those of held commits, and of kept commits that do not count yet.
func (t *Team) tentative(held []*held) []envelope.PriorKey {
	var out []envelope.PriorKey
	for _, c := range held {
		if c.commit != nil {
			out = append(out, c.commit.Prior...)
		}
	}
	s := t.view()
	for id, prior := range t.priors {
		if !s.Counts(id) {
			out = append(out, prior...)
		}
	}
	return out
}

// tagInputs is everything that decides whether a held chain envelope of a
// tag opens, or names its sender, in reopenChain: what the keys hold of
// the tag, the create and commit ops of the tag in the log, the commits of
// the tag held or kept unlearned and how far each opened, and the
// tentative prior keys of the tag. An envelope that none of them opened is
// not tried again until they change: otherwise every envelope forged under
// a tag held by its outer key only (any member or relay can send them;
// they are held, being indistinguishable from one of another epoch that
// shares the tag) would cost a signature check on every Receive, each
// time for every such envelope held.
type tagInputs struct {
	keys                              [3]int
	logEpochs                         int
	commits, opened, boxed, withEpoch int
	tried, priors                     int
}

// inputsOf returns the tagInputs of tag, from cache (one pass of openHeld)
// or worked out.
func (t *Team) inputsOf(tag uint32, held []*held, cache map[uint32]tagInputs) tagInputs {
	if in, ok := cache[tag]; ok {
		return in
	}
	in := tagInputs{keys: t.keys.TagState(tag), logEpochs: len(t.view().Epoch(tag))}
	for _, c := range slices.Concat(held, slices.Collect(maps.Values(t.unlearned))) {
		if c.env.Form() != envelope.FormCommit || c.env.Epoch != tag {
			continue
		}
		in.commits++
		if c.commit != nil {
			in.opened++
			if c.commit.Box != nil {
				in.boxed++
			}
		}
		if c.epoch != nil {
			in.withEpoch++
		}
		if c.tried {
			in.tried++
		}
	}
	for _, p := range t.tentative(held) {
		if p.Tag == tag {
			in.priors++
		}
	}
	cache[tag] = in
	return in
}

// reopenChain tries to open a held chain-form envelope again, unless
// nothing that could open it changed since it last did not.
func (t *Team) reopenChain(h *held, held []*held, inputs map[uint32]tagInputs, eff *Effects) bool {
	tag := h.env.Epoch
	if h.fruitless != nil && *h.fruitless == t.inputsOf(tag, held, inputs) {
		return false
	}
	h.fruitless = nil
	t.chainTries++
	o, err := t.keys.OpenChain(h.env)
	switch {
	case err == nil:
		h.chain = o
		return true
	case errors.Is(err, teamkeys.ErrUnknownEpoch):
		if t.tryCandidates(h) {
			return true
		}
		// The sender is a slot in the epoch's recipient list: an epoch
		// held by its outer key only names it with the list of a create or
		// commit op of the tag this device holds (the signature, over the
		// full device id, checks the list).
		lists := t.listsOf(h.env.Epoch, held)
		if errors.Is(err, envelope.ErrNoList) {
			for _, l := range lists {
				if o, err := t.keys.OpenChainListed(h.env, l); errors.Is(err, teamkeys.ErrNoChain) {
					return t.carryHeld(h, o, eff)
				}
			}
		}
		// A prior key not learned yet may open its outer layer: then it
		// is history this device cannot read, carried if its sender is a
		// member.
		for _, p := range t.tentative(held) {
			if p.Tag != h.env.Epoch {
				continue
			}
			for _, l := range lists {
				if ch, err := envelope.OpenChain(h.env, p.Outer, t.id, l); err == nil {
					return t.carryHeld(h, &teamkeys.Opened{Sender: ch.Sender, Index: ch.Index, Tag: h.env.Epoch, Inner: ch.Inner, Sig: ch.Sig}, eff)
				}
			}
		}
		// Nothing opened it. Trying candidates may have opened commits'
		// boxes, so what it was tried with is worked out afresh.
		delete(inputs, tag)
		in := t.inputsOf(tag, held, inputs)
		h.fruitless = &in
	case errors.Is(err, teamkeys.ErrReplay):
		t.checkEquivocation(h.env.ID, o)
		t.drop(h)
	case errors.Is(err, teamkeys.ErrTooFarAhead):
	case errors.Is(err, teamkeys.ErrNoChain):
		return t.carryHeld(h, o, eff)
	default:
		t.drop(h) // does not open after all
	}
	return false
}

// listsOf returns the recipient lists (device ids in the op's order) of
// the create and commit ops of tag this device holds: those its log keeps,
// and those of held and unlearned commits that opened. Two commits may
// share a tag, so there may be several.
func (t *Team) listsOf(tag uint32, held []*held) [][]identity.DeviceID {
	var out [][]identity.DeviceID
	add := func(rs []crdt.Recipient) {
		l := teamkeys.DeviceList(rs)
		if !slices.ContainsFunc(out, func(o []identity.DeviceID) bool { return slices.Equal(o, l) }) {
			out = append(out, l)
		}
	}
	for _, ep := range t.view().Epoch(tag) {
		add(ep.Recipients)
	}
	for _, c := range slices.Concat(held, slices.Collect(maps.Values(t.unlearned))) {
		if c.commit == nil || c.env.Epoch != tag {
			continue
		}
		if rs, err := teamkeys.Recipients(c.commit.Op); err == nil {
			add(rs)
		}
	}
	return out
}

// carryHeld decides about a held envelope this device now knows it cannot
// read (carry), and reports whether it is no longer held.
func (t *Team) carryHeld(h *held, o *teamkeys.Opened, eff *Effects) bool {
	t.pending.remove(h.env.ID)
	if t.carry(h, o, eff) == oHeld {
		t.pending.items[h.env.ID] = h
		return false
	}
	return true
}

// reopenCommit tries to open a held commit-form envelope again: with the
// keys held, or a prior key of another held commit.
func (t *Team) reopenCommit(h *held, held []*held) bool {
	if c, err := t.keys.OpenCommit(h.env, nil); err == nil {
		h.commit = c
		return true
	}
	for _, p := range t.tentative(held) {
		if p.Tag != h.env.Epoch {
			continue
		}
		if c, err := t.keys.OpenCommitWith(h.env, p.Outer); err == nil {
			h.commit = c
			h.outer = &p
			return true
		}
	}
	// Its box, once, if its sender's budget allows it now.
	if !h.tried && t.wantsBox(h.env, h.from) && t.chargeBoxes(h.from, t.boxTrials(h.env)) {
		h.tried = true
		if box, err := t.openBox(h.env); err == nil {
			t.openCommit(h, box, nil)
			return h.commit != nil
		}
	}
	return false
}

// drop forgets a held envelope and remembers its id as seen. A stored
// envelope given again to be read that opens to something this device
// does not keep is not read again (giveUp).
func (t *Team) drop(h *held) {
	t.pending.remove(h.env.ID)
	t.opaque.add(h.env.ID)
	t.giveUp(h.env.ID)
}

// known reports whether id is something this device has seen: an op in its
// log, an envelope it stores, an id it saw and did not keep, or an
// envelope it holds.
func (t *Team) known(id crdt.OpID) bool {
	return t.lg.Has(id) || t.Has(id) || t.opaque.has(id) || t.pending.get(id) != nil
}

// An op held until it expired because its parents never arrived is judged
// without them when it comes again (patience): no peer that syncs with this
// device holds them, and its children must not wait forever.

// placed reports whether an op naming id as a parent can be judged as far
// as id goes: id is in the log, stored (carried), seen and not kept, or a
// held envelope that opened (it joins the trial). A held envelope that has
// not opened may hold a removal in its past: its children wait for it.
func (t *Team) placed(id crdt.OpID) bool {
	if t.lg.Has(id) || t.Has(id) || t.opaque.has(id) {
		return true
	}
	h := t.pending.get(id)
	return h != nil && h.op() != nil
}

// candidates returns the held envelopes that opened and whose parents are
// known, and asks for a sync with the peers of those whose are not. Two
// held ops at one chain position are evidence of equivocation, and
// neither is a candidate.
func (t *Team) candidates(eff *Effects) []*held {
	var out []*held
	at := make(map[position]*held)
	for _, h := range t.pending.sorted() {
		op := h.op()
		if op == nil {
			continue
		}
		if h.chain != nil {
			pos := position{h.chain.Tag, h.chain.Sender, h.chain.Index}
			if other, ok := t.sealAt(pos); ok && other != op.ID() {
				t.checkEquivocation(op.ID(), h.chain)
				t.drop(h)
				continue
			}
			if o := at[pos]; o != nil {
				t.equivocated(pos, o.chain.Sealed(o.env.ID), h.chain.Sealed(op.ID()))
				t.drop(o)
				t.drop(h)
				delete(at, pos)
				continue
			}
			at[pos] = h
		}
		missing, unseen := false, false
		if !t.lg.Has(op.ID()) { // an op the log holds already needs no parent to keep its envelope
			for _, p := range op.Parents {
				if !t.placed(p) && !t.patience.has(op.ID()) {
					missing = true
					unseen = unseen || !t.known(p)
				}
			}
		}
		if missing {
			if unseen {
				t.askSync(h.from, eff)
			}
			continue
		}
		out = append(out, h)
	}
	// Equivocations found late drop items already listed.
	kept := out[:0]
	for _, h := range out {
		if t.pending.get(h.env.ID) != nil {
			kept = append(kept, h)
		}
	}
	return kept
}

// judge adds the candidates to the log on trial and returns those to keep:
// the ops that count (valid commits, counting messages and acks) that are
// not refused by a rule of their own (below), with every candidate they
// build on (a kept op's parents must be kept, or others could not judge
// it) and the commit of the epoch each kept message was sealed in. The rest
// is taken back out of the log and stays held until it counts or expires.
//
// Rules of their own: only the pinned genesis is a create op; a commit
// opened through this device's box must have been boxed by its author's
// member key.
func (t *Team) judge(cands []*held) []*held {
	byID := make(map[crdt.OpID]*held, len(cands))
	var added []crdt.OpID
	var known []*held // ops the log holds already, without their envelopes
	// The log takes the candidates parents first (by Time: an op's
	// possible parents are earlier), so that it can keep its State up to
	// date (crdt.Log) rather than resolve it afresh; what follows takes
	// them in their own order. Add's answers do not depend on the order.
	type addResult struct {
		ok  bool
		err error
	}
	results := make([]addResult, len(cands))
	ids := make([]crdt.OpID, len(cands))
	order := make([]int, 0, len(cands))
	for i, h := range cands {
		ids[i] = h.op().ID()
		if h.op().Kind != crdt.KindCreate || ids[i] == t.cfg.Genesis {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(cands[a].op().Time, cands[b].op().Time), ids[a].Compare(ids[b]))
	})
	for _, i := range order {
		results[i].ok, results[i].err = t.lg.Add(cands[i].op())
	}
	for i, h := range cands {
		op := h.op()
		if op.Kind == crdt.KindCreate && ids[i] != t.cfg.Genesis {
			t.drop(h)
			continue
		}
		ok, err := results[i].ok, results[i].err
		switch {
		case err != nil:
			t.log.Debug("held op refused by the log", "err", err)
			t.drop(h)
			continue
		case !ok:
			known = append(known, h)
			continue
		}
		byID[op.ID()] = h
		added = append(added, op.ID())
	}
	t.state = nil
	s := t.view() // read before the removals below, which leave it as it is
	keep := make(map[crdt.OpID]bool)
	var walk func(id crdt.OpID)
	walk = func(id crdt.OpID) {
		h := byID[id]
		if h == nil || keep[id] {
			return
		}
		keep[id] = true
		for _, p := range h.op().Parents {
			walk(p)
		}
		if h.chain != nil && byID[h.chain.Epoch] != nil {
			walk(h.chain.Epoch)
		}
	}
	for _, id := range added {
		h := byID[id]
		switch {
		case t.lg.Parented(id) && !byParentOnly(id, byID, t.lg):
			// An op the log kept names it as a parent (it was kept while
			// this one was unseen): the log needs it, counting or not.
			walk(id)
		case s.Counts(id) && t.boxMatches(h, s):
			walk(id)
		}
	}
	out := known
	removed := false
	for _, id := range added {
		if keep[id] {
			out = append(out, byID[id])
		} else {
			t.lg.Remove(id)
			removed = true
		}
	}
	if removed {
		t.state = nil
	}
	return out
}

// byParentOnly reports whether every op of the log that names id as a
// parent is itself a candidate of this trial (so not yet kept).
func byParentOnly(id crdt.OpID, byID map[crdt.OpID]*held, l *crdt.Log) bool {
	for _, child := range l.Children(id) {
		if byID[child] == nil {
			return false
		}
	}
	return true
}

// boxMatches reports whether a held commit opened through this device's
// box was boxed with its author's member key (Noise X authenticates the
// box's sender): a key that does not match its box is refused. Commits
// opened otherwise, and authors that are no longer members, pass.
func (t *Team) boxMatches(h *held, s *crdt.State) bool {
	if h.commit == nil || h.commit.Box == nil {
		return true
	}
	op := h.commit.Op
	var want identity.NoisePublic
	switch op.Kind {
	case crdt.KindCreate:
		c, err := crdt.UnmarshalCreate(op.Body)
		if err != nil {
			return false
		}
		want = c.Creator.Noise
	default:
		m, ok := s.Member(op.Author)
		if !ok {
			return true
		}
		want = m.Noise
	}
	return want == h.commit.Box.Sender
}

// keep stores what judge kept: commits first (their epochs are learned,
// and the prior keys of epochs that the log's commits name), then the
// chain-form ops (their message keys are spent).
func (t *Team) keep(hs []*held, eff *Effects) {
	s := t.view() // keep adds nothing to the log
	keysChanged := false
	var named map[uint32]bool // namedTags, on first use: keep changes no op before
	learnPrior := func(p envelope.PriorKey) {
		if named == nil {
			named = t.namedTags()
		}
		if !named[p.Tag] {
			return
		}
		t.makeRoom(s)
		if ok, err := t.keys.LearnPrior(p); ok {
			keysChanged = true
		} else if err != nil {
			t.log.Warn("learning a prior key failed", "err", err)
		}
	}
	for _, h := range hs {
		if h.commit == nil || len(h.commit.Prior) == 0 {
			continue
		}
		id := h.commit.Op.ID()
		t.priors[id] = h.commit.Prior // learned again as more tags are named, or once it counts
		if s.Counts(id) {
			for _, p := range h.commit.Prior {
				learnPrior(p)
			}
		}
	}
	// An epoch is learned when its commit is permitted (valid, or valid in
	// its author's view and cut), or when an op that counts, or that the log
	// needs (an op kept names it as a parent), was sealed in it: a member
	// used it, or built on it, as it was valid in that member's view then.
	// The other kept commits wait in unlearned.
	sealedIn := make(map[crdt.OpID]bool)
	for _, h := range hs {
		if h.chain != nil && (s.Counts(h.chain.Op.ID()) || t.lg.Parented(h.chain.Op.ID())) {
			sealedIn[h.chain.Epoch] = true
		}
	}
	learn := func(h *held) {
		op := h.commit.Op
		if h.outer != nil {
			learnPrior(*h.outer)
		}
		t.makeRoom(s)
		if err := t.keys.Learn(h.commit); err == nil {
			keysChanged = true
			if ep, ok := t.keys.Epoch(op.ID()); ok && ep.Chains() {
				t.reopenTag(crdt.TagOf(op.ID()), eff)
			}
		} else if !errors.Is(err, teamkeys.ErrForgotten) {
			t.log.Warn("learning an epoch failed", "err", err)
		}
		delete(t.unlearned, op.ID())
	}
	for _, h := range hs {
		if h.commit == nil {
			continue
		}
		id := h.commit.Op.ID()
		if h.commit.Box == nil && !h.tried && t.recipient(h.commit.Op) {
			// Kept, and this device is a recipient: its box gives the chains
			// (the commit was opened with a prior key, or came as an op).
			h.tried = true
			if box, err := t.openBox(h.env); err == nil {
				t.openCommit(h, box, eff)
			}
		}
		if s.Permitted(id) || sealedIn[id] || h.commit.Box == nil {
			// (Opened with an outer key: learning only names that key's
			// epoch with its commit.)
			learn(h)
		}
		if t.recipient(h.commit.Op) {
			// Its chains are still to come: through its box, which the
			// first message sealed in it opens (tryCandidates).
			t.unlearned[id] = h
		}
	}
	for id := range sealedIn {
		if u := t.unlearned[id]; u != nil && u.commit != nil {
			learn(u)
		}
	}
	for _, h := range hs {
		op := h.op()
		if h.chain != nil {
			if err := t.keys.Consume(h.chain); err != nil {
				// Spent meanwhile (or the epoch was forgotten): not kept.
				t.log.Debug("a held op's key cannot be spent", "err", err)
				t.lg.Remove(op.ID())
				t.state = nil
				t.drop(h)
				continue
			}
			keysChanged = true
		}
		t.stored[op.ID()] = struct{}{}
		delete(t.carried, op.ID()) // read at last, if it was carried
		delete(t.reopenAt, op.ID())
		if t.unlearned[op.ID()] == h {
			t.pending.take(op.ID())
		} else {
			t.pending.remove(op.ID())
		}
		t.indexSeal(op)
		t.observe(op, s)
		eff.Write.Envelopes = append(eff.Write.Envelopes, Record{Time: uint64(op.Time), ID: op.ID(), Data: h.raw})
		eff.Write.Ops = append(eff.Write.Ops, Record{Time: uint64(op.Time), ID: op.ID(), Data: op.Marshal()})
		eff.Changed = true
	}
	if keysChanged {
		eff.Write.Keys = t.keys.Marshal()
	}
}

// namedTags returns the tags of the ids that the log's create and commit
// ops are or name as parents: the epochs whose prior keys may be learned.
// A commit names the epochs it knew (the epoch frontier), so every real
// epoch is named; a made-up tag is not.
func (t *Team) namedTags() map[uint32]bool {
	out := make(map[uint32]bool)
	for id, parents := range t.lg.EpochOps() {
		out[crdt.TagOf(id)] = true
		for _, p := range parents {
			out[crdt.TagOf(p)] = true
		}
	}
	return out
}

// makeRoom forgets one old epoch when the key state is full: a full epoch
// table evicts old epochs instead of refusing a new one. It forgets, in
// this order, an epoch known only by its outer key whose commit the log
// does not hold, then the oldest epoch by number that is not the current
// one.
func (t *Team) makeRoom(s *crdt.State) {
	if t.keys.Len() < teamkeys.MaxEpochs {
		return
	}
	cur := crdt.OpID{}
	if s.Current >= 0 {
		cur = s.Epochs[s.Current].ID
	}
	eps := t.keys.Epochs()
	for _, e := range eps {
		if e.Commit == (crdt.OpID{}) || !t.lg.Has(e.Commit) {
			t.keys.Forget(e.Tag)
			t.log.Info("forgot an epoch to make room", "tag", e.Tag)
			return
		}
	}
	number := make(map[crdt.OpID]uint32)
	for _, e := range s.Epochs {
		number[e.ID] = e.Number
	}
	victim := -1
	for i, e := range eps {
		if e.Commit == cur {
			continue
		}
		if victim < 0 || number[e.Commit] < number[eps[victim].Commit] {
			victim = i
		}
	}
	if victim >= 0 {
		t.keys.Forget(eps[victim].Tag)
		t.log.Info("forgot an old epoch to make room", "tag", eps[victim].Tag)
	}
}
