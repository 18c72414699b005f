package device

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// canWrite says why this device may not make ops in the team, if it may not.
func (t *Team) canWrite() error {
	if t.Removed() {
		return ErrRemoved
	}
	if !t.Member(t.self.ID()) {
		return ErrNotMember
	}
	return nil
}

// Make builds a new op of this device, of any kind but create and commit:
// the next timestamp of its clock, and as parents the heads of the log
// before it (crdt.Log.HeadsBefore). It does not seal, store or publish it:
// Publish does, now or later (an op queued in low-data mode keeps its time,
// parents and id, and is sealed under the epoch current when it goes out).
func (t *Team) Make(now time.Time, kind crdt.Kind, body []byte) (*crdt.Op, error) {
	t.now = now
	if err := t.canWrite(); err != nil {
		return nil, err
	}
	if kind.StartsEpoch() {
		return nil, fmt.Errorf("%w: a %v op is made by Change", ErrRefused, kind)
	}
	if err := crdt.CheckBody(kind, body); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if err := t.mayMake(kind, body); err != nil {
		return nil, err
	}
	ts := t.clock.Next()
	op := crdt.NewOp(t.self, t.id, ts, t.lg.HeadsBefore(ts), kind, body)
	if envelope.MaxHeaderSize+envelope.ChainOverhead+op.ContentSize() > envelope.MaxSize {
		return nil, fmt.Errorf("%w: the op is too large for an envelope", ErrRefused)
	}
	return op, nil
}

// mayMake applies the rules of the team's state to an op this device
// would make (the log would let it count for nothing otherwise): no
// patient reference in a social team; only an admin publishes the rota or
// the team policy, or records a membership review.
func (t *Team) mayMake(kind crdt.Kind, body []byte) error {
	s := t.snapshot()
	switch kind {
	case crdt.KindMessage:
		if m, err := crdt.UnmarshalMessage(body); err == nil && m.Patient != "" && s.Kind == crdt.Social {
			return fmt.Errorf("%w: patient references are not allowed in a social team; use the clinical team", ErrRefused)
		}
	case crdt.KindRota, crdt.KindReview, crdt.KindPolicy:
		if m, ok := s.Member(t.self.ID()); !ok || !m.Admin {
			return fmt.Errorf("%w: only an admin may publish the %v", ErrRefused, kind)
		}
	}
	return nil
}

// CheckMessage applies the rules a message must meet before it is made:
// the limits of crdt.Message, and some text or an attachment.
func CheckMessage(m crdt.Message) error {
	if strings.TrimSpace(m.Text) == "" && len(m.Attachments) == 0 {
		return fmt.Errorf("%w: the message is empty", ErrRefused)
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return nil
}

// Send makes a message (Make) and publishes it (Publish). The message is
// acknowledged once the caller made the Write durable.
func (t *Team) Send(now time.Time, m crdt.Message) (*crdt.Op, Effects, error) {
	if err := CheckMessage(m); err != nil {
		return nil, Effects{}, err
	}
	op, err := t.Make(now, crdt.KindMessage, m.Marshal())
	if err != nil {
		return nil, Effects{}, err
	}
	return t.Publish(now, op)
}

// Publish seals an op of this device made by Make under the team's current
// epoch, re-keying first if the team has no sound epoch (after a merge that
// removed someone every epoch lists), adds it to the log and returns it
// sealed, with the effects: store it (with the advanced key state) before
// gossiping it. An op already in the log is not published again.
func (t *Team) Publish(now time.Time, op *crdt.Op) (*crdt.Op, Effects, error) {
	t.now = now
	var eff Effects
	if op.Author != t.self.ID() || op.Team != t.id || op.Kind.StartsEpoch() {
		return nil, eff, fmt.Errorf("%w: not an op of this device for this team", ErrRefused)
	}
	if sealed, ok := t.lg.Op(op.ID()); ok {
		return sealed, eff, nil
	}
	if err := t.canWrite(); err != nil {
		return nil, eff, err
	}
	s := t.snapshot()
	if s.Current < 0 {
		_, re, err := t.commit(nil, "no epoch without removed devices")
		if err != nil {
			return nil, eff, fmt.Errorf("device: re-key before sending: %w", err)
		}
		eff.merge(re)
		s = t.snapshot()
		if s.Current < 0 {
			return nil, eff, errors.New("device: the team has no usable key epoch")
		}
	}
	cur := s.Epochs[s.Current].ID
	if !t.keys.CanSend(cur) {
		return nil, eff, ErrNoKey
	}
	e, sealed, err := t.keys.Seal(op, cur)
	if err != nil {
		return nil, eff, fmt.Errorf("device: seal: %w", err)
	}
	if _, err := t.lg.Add(sealed); err != nil {
		return nil, eff, fmt.Errorf("device: %w", err) // unreachable: Make checked the body, Seal signed it
	}
	t.ownKept(sealed, e, &eff)
	return sealed, eff, nil
}

// ownKept records an op of this device just sealed and added to the log.
func (t *Team) ownKept(op *crdt.Op, e *envelope.Envelope, eff *Effects) {
	raw := e.Marshal()
	id := op.ID()
	t.state = nil
	t.stored[id] = struct{}{}
	t.indexSeal(op)
	t.clock.ObserveOwn(op.Time)
	eff.Write.Envelopes = append(eff.Write.Envelopes, Record{Time: uint64(op.Time), ID: id, Data: raw})
	eff.Write.Ops = append(eff.Write.Ops, Record{Time: uint64(op.Time), ID: id, Data: op.Marshal()})
	eff.Write.Keys = t.keys.Marshal()
	eff.Publish = append(eff.Publish, raw)
	eff.Changed = true
}

// Change commits membership changes made by this device (none: a re-key),
// starting a new epoch whose recipients are the member devices after the
// changes, and returns the commit op and the effects. Besides what the
// membership rules refuse (crdt.State.NextCommit), it refuses what would
// leave the team without an admin or a person without a device: the last
// admin cannot remove itself, and a person's last device is removed by
// removing the person.
func (t *Team) Change(now time.Time, changes ...crdt.Change) (*crdt.Op, Effects, error) {
	return t.ChangeFor(now, nil, changes...)
}

// ChangeFor is Change, sealing the boxes of the devices in prekeys to the
// key given there rather than to their newest published prekey: a joining
// device's join-request prekey (Config.JoinPrekey on its side).
func (t *Team) ChangeFor(now time.Time, prekeys map[identity.DeviceID]identity.NoisePublic, changes ...crdt.Change) (*crdt.Op, Effects, error) {
	t.now = now
	if err := t.canWrite(); err != nil {
		return nil, Effects{}, err
	}
	s := t.snapshot()
	me, _ := s.PersonOf(t.self.ID())
	for _, ch := range changes {
		switch ch.Action {
		case crdt.ActRemove:
			if ch.Target == me.ID && me.Admin && admins(s) == 1 {
				return nil, Effects{}, fmt.Errorf("%w: the last admin cannot remove themself; promote someone first", ErrRefused)
			}
		case crdt.ActUnlink:
			for _, p := range s.Persons {
				if len(p.Devices) == 1 && p.Devices[0] == ch.Target {
					return nil, Effects{}, fmt.Errorf("%w: that is %s's only device: remove the member instead", ErrRefused, p.Name)
				}
			}
		case crdt.ActAdd, crdt.ActLink:
			if err := ch.Info.Noise.Check(); err != nil {
				return nil, Effects{}, fmt.Errorf("%w: %w", ErrRefused, err)
			}
		}
	}
	return t.commitFor(changes, "membership change", prekeys)
}

func admins(s *crdt.State) int {
	n := 0
	for _, p := range s.Persons {
		if p.Admin {
			n++
		}
	}
	return n
}

// commit makes, seals and keeps a commit op of this device. Its parents are
// the log's heads and every create or commit op no other commit names (the
// epoch frontier): a device added later cannot read the messages between,
// and must still see each commit's place among the epochs. Its prior keys
// are the outer keys of the epochs whose commits the log holds and finds
// permitted, so that an epoch this device knows only by key is never handed
// to a device its commit may have removed.
func (t *Team) commit(changes []crdt.Change, why string) (*crdt.Op, Effects, error) {
	return t.commitFor(changes, why, nil)
}

func (t *Team) commitFor(changes []crdt.Change, why string, extra map[identity.DeviceID]identity.NoisePublic) (*crdt.Op, Effects, error) {
	var eff Effects
	s := t.snapshot()
	boxTo := s.Prekeys
	if len(extra) > 0 {
		boxTo = maps.Clone(s.Prekeys)
		if boxTo == nil {
			boxTo = make(map[identity.DeviceID]identity.NoisePublic, len(extra))
		}
		for d, k := range extra {
			if k.Check() == nil {
				boxTo[d] = k
			}
		}
	}
	body, err := s.NextCommit(t.self.ID(), changes...)
	if err != nil {
		return nil, eff, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	var op *crdt.Op
	var e *envelope.Envelope
	for range 4 { // a new op at the next timestamp if the tag was forgotten (one chance in 2^32)
		op = t.commitOp(body.Marshal())
		if !t.namesEpochs(op, s) {
			// Its clock is behind the team's latest commits, which it may
			// not name as parents (crdt.Log.HeadsBefore): such a commit
			// would not descend from them, and count nowhere.
			return nil, eff, fmt.Errorf("%w: this device's clock is behind the team's latest changes; set the date and time right and try again", ErrRefused)
		}
		t.makeRoom(s)
		e, err = t.keys.SealCommit(op, t.cfg.Rand, func(ep teamkeys.EpochInfo) bool {
			return t.lg.Has(ep.Commit) && s.Permitted(ep.Commit)
		}, boxTo)
		if !errors.Is(err, teamkeys.ErrForgotten) {
			break
		}
	}
	if err != nil {
		return nil, eff, fmt.Errorf("device: seal commit: %w", err)
	}
	if _, err := t.lg.Add(op); err != nil {
		return nil, eff, fmt.Errorf("device: %w", err) // unreachable: NextCommit validated the body
	}
	t.ownKept(op, e, &eff)
	t.log.Info("new key epoch", "epoch", body.Number, "devices", len(body.Recipients), "changes", len(changes), "why", why)
	return op, eff, nil
}

// namesEpochs reports whether a commit op names, as parents or ancestors,
// every valid epoch of s: it does when its parents hold the epoch frontier,
// which they do unless this device's clock is behind them.
func (t *Team) namesEpochs(op *crdt.Op, s *crdt.State) bool {
	if len(s.Epochs) == 0 {
		return true
	}
	newest := s.Epochs[0]
	for _, e := range s.Epochs {
		if e.Time > newest.Time {
			newest = e
		}
	}
	return newest.Time < op.Time
}

// commitOp stamps a commit op (see commit for its parents).
func (t *Team) commitOp(body []byte) *crdt.Op {
	ts := t.clock.Next()
	parents := t.lg.HeadsBefore(ts)
	named := make(map[crdt.OpID]bool)
	var commits []*crdt.Op
	for _, op := range t.lg.Ops() {
		if op.Kind.StartsEpoch() {
			commits = append(commits, op)
			for _, p := range op.Parents {
				named[p] = true
			}
		}
	}
	for _, op := range commits {
		if id := op.ID(); !named[id] && op.Time < ts && !slices.Contains(parents, id) && len(parents) < crdt.MaxParents {
			parents = append(parents, id)
		}
	}
	return crdt.NewOp(t.self, t.id, ts, parents, crdt.KindMember, body)
}

// Create makes a new team with this device as its creator and first admin
// (its member info: cfg.Device's keys, with name), and its genesis op, which
// starts epoch 1. cfg.Team is the new team's id (random, from the caller);
// cfg.Genesis is set from the genesis.
func Create(cfg Config, now time.Time, name string, kind crdt.TeamKind, selfName string) (*Team, Effects, error) {
	t, err := newTeam(cfg)
	if err != nil {
		return nil, Effects{}, err
	}
	t.now = now
	body := crdt.Create{Name: name, Kind: kind, Creator: crdt.MemberInfo{Device: t.self.ID(), Noise: t.self.NoisePublic(), Name: selfName, Admin: true}}
	if err := body.Validate(); err != nil {
		return nil, Effects{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	genesis := crdt.NewOp(t.self, t.id, t.clock.Next(), nil, crdt.KindCreate, body.Marshal())
	t.cfg.Genesis = genesis.ID()
	e, err := t.keys.SealCommit(genesis, t.cfg.Rand, nil, nil)
	if err != nil {
		return nil, Effects{}, fmt.Errorf("device: seal genesis: %w", err)
	}
	if _, err := t.lg.Add(genesis); err != nil {
		return nil, Effects{}, fmt.Errorf("device: %w", err)
	}
	var eff Effects
	t.ownKept(genesis, e, &eff)
	eff.Publish = nil // nobody to tell yet
	return t, eff, nil
}

// HistoryItem is one op of a join answer's history: a create or commit op
// (crdt.Op.Marshal) and its envelope (empty if the inviter has none).
type HistoryItem struct {
	Op  []byte
	Env []byte
}

// History returns the join answer's history for a new member: the team's
// create and commit ops, with the envelopes env returns for them (the
// caller reads them from its store; nil for none).
func (t *Team) History(env func(crdt.OpID) []byte) []HistoryItem {
	var out []HistoryItem
	for _, op := range t.MembershipOps() {
		out = append(out, HistoryItem{Op: op.Marshal(), Env: env(op.ID())})
	}
	return out
}

// Join makes this device's copy of a team from the history of a join
// answer: the team's create and commit ops (each sealed by its author,
// checked here) with their envelopes. The history must pin cfg.Genesis,
// hold only membership ops of the team, show this device as a member, and
// hand it the current epoch's key: its box in a commit whose epoch is the
// current one, judged valid before its key is learned. The older commits'
// envelopes open with the prior keys that commits carry. The effects store
// the history and the key state.
func Join(cfg Config, now time.Time, hist []HistoryItem) (*Team, Effects, error) {
	if cfg.Genesis == (crdt.OpID{}) {
		return nil, Effects{}, fmt.Errorf("%w: no genesis", ErrConfig)
	}
	t, err := newTeam(cfg)
	if err != nil {
		return nil, Effects{}, err
	}
	t.now = now
	if cfg.JoinPrekey != nil {
		t.keys.HoldPrekey(*cfg.JoinPrekey)
	}
	topic := envelope.TopicOf(cfg.Team)
	envs := make(map[crdt.OpID]*envelope.Envelope)
	raws := make(map[crdt.OpID][]byte)
	var ops []*crdt.Op
	for _, h := range hist {
		op, err := crdt.UnmarshalOp(h.Op)
		if err != nil {
			return nil, Effects{}, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		if !op.Kind.StartsEpoch() {
			return nil, Effects{}, fmt.Errorf("%w: it holds a %v op", ErrHistory, op.Kind)
		}
		if op.Kind == crdt.KindCreate && op.ID() != cfg.Genesis {
			return nil, Effects{}, fmt.Errorf("%w: a second create op", ErrHistory)
		}
		if _, err := t.lg.Add(op); err != nil {
			return nil, Effects{}, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		ops = append(ops, op)
		if len(h.Env) == 0 {
			continue
		}
		e, err := envelope.Unmarshal(topic, h.Env)
		if err != nil {
			return nil, Effects{}, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		if e.ID != op.ID() || e.Time != op.Time || e.Form() != envelope.FormCommit {
			return nil, Effects{}, fmt.Errorf("%w: an envelope does not match its op", ErrHistory)
		}
		envs[e.ID], raws[e.ID] = e, h.Env
	}
	if !t.lg.Has(cfg.Genesis) {
		return nil, Effects{}, fmt.Errorf("%w: no genesis", ErrHistory)
	}
	s := t.snapshot()
	me := t.self.ID()
	if _, ok := s.Member(me); !ok || s.Current < 0 {
		return nil, Effects{}, fmt.Errorf("%w: it does not make this device a member", ErrHistory)
	}
	cur := s.Epochs[s.Current]
	if !slices.ContainsFunc(cur.Recipients, func(r crdt.Recipient) bool { return r.Device == me && r.Noise == t.self.NoisePublic() }) {
		return nil, Effects{}, fmt.Errorf("%w: the current epoch is not this device's", ErrHistory)
	}
	e := envs[cur.ID]
	if e == nil {
		return nil, Effects{}, fmt.Errorf("%w: no envelope of the current epoch's commit", ErrHistory)
	}
	box, err := t.openBox(e)
	if err != nil {
		return nil, Effects{}, fmt.Errorf("%w: the current epoch's commit has no box for this device: %w", ErrHistory, err)
	}
	c, err := t.keys.OpenCommit(e, box)
	if err != nil {
		return nil, Effects{}, fmt.Errorf("%w: %w", ErrHistory, err)
	}
	if c.Op.ID() != cur.ID || !t.boxMatches(&held{commit: c}, s) {
		return nil, Effects{}, fmt.Errorf("%w: the current epoch's box is not its author's", ErrHistory)
	}
	if err := t.keys.Learn(c); err != nil {
		return nil, Effects{}, fmt.Errorf("%w: %w", ErrHistory, err)
	}
	// The prior keys of the commits this device can open give the older
	// epochs' outer keys (of the epochs the history's commits name).
	named := t.namedTags()
	opened := map[crdt.OpID]bool{cur.ID: true}
	queue := []*teamkeys.CommitOpened{c}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if !s.Counts(c.Op.ID()) {
			continue
		}
		for _, p := range c.Prior {
			if named[p.Tag] {
				if _, err := t.keys.LearnPrior(p); err != nil {
					t.log.Warn("learning a prior key failed", "err", err)
				}
			}
		}
		for id, e := range envs {
			if opened[id] {
				continue
			}
			if oc, err := t.keys.OpenCommit(e, nil); err == nil {
				opened[id] = true
				if oc.Op.ID() == id {
					_ = t.keys.Learn(oc) // names the outer-only epoch
				}
				queue = append(queue, oc)
			}
		}
	}
	var eff Effects
	for _, op := range ops {
		id := op.ID()
		eff.Write.Ops = append(eff.Write.Ops, Record{Time: uint64(op.Time), ID: id, Data: op.Marshal()})
		if raw := raws[id]; raw != nil {
			t.stored[id] = struct{}{}
			eff.Write.Envelopes = append(eff.Write.Envelopes, Record{Time: uint64(op.Time), ID: id, Data: raw})
		}
		t.observe(op, s)
	}
	eff.Write.Keys = t.keys.Marshal()
	eff.Changed = true
	if !t.keys.CanSend(cur.ID) {
		return nil, Effects{}, fmt.Errorf("%w: it does not hand this device the team's current key", ErrHistory)
	}
	t.alerts.IgnoreBefore(now) // the team's past arrives with the first syncs: no alerts for it
	return t, eff, nil
}
