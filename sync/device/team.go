package device

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/duty"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// Errors. Every error of this package wraps one of these, or an error of
// sync/crdt, sync/teamkeys or sync/envelope.
var (
	// ErrConfig: a Config is incomplete or out of range.
	ErrConfig = errors.New("device: bad config")
	// ErrStored: the stored state does not restore (another team or
	// device, or records that do not decode).
	ErrStored = errors.New("device: stored state does not restore")
	// ErrNotMember: this device is not a current member of the team, so it
	// cannot make ops in it.
	ErrNotMember = errors.New("device: this device is not a member of the team")
	// ErrRemoved: this device was removed from the team.
	ErrRemoved = errors.New("device: this device was removed from the team")
	// ErrNoKey: the team has a current epoch but this device does not hold
	// its key yet (it arrives with the next sync).
	ErrNoKey = errors.New("device: this device does not hold the team's current key yet (it arrives with the next sync)")
	// ErrRefused: a change or message that the membership rules or limits
	// refuse (the wrapped error says why).
	ErrRefused = errors.New("device: refused")
	// ErrHistory: a join answer's history is not a valid team history that
	// hands this device the current key.
	ErrHistory = errors.New("device: bad team history")
	// ErrProof: a removal proof does not prove that this device was removed.
	ErrProof = errors.New("device: not a proof of removal")
)

// Defaults of Config.
const (
	DefaultRotateEvery = 7 * 24 * time.Hour
	DefaultRetainKeys  = 30 * 24 * time.Hour
	DefaultAckInterval = 30 * time.Second
	DefaultRekeyJitter = 15 * time.Second
	DefaultFiledGrace  = 24 * time.Hour
	DefaultWarnUnfiled = 30 * 24 * time.Hour
)

// Limits of what the core holds in memory for a team, and of what a peer
// may cost it. Each says why.
const (
	// maxPending bounds the envelopes held until they can be judged:
	// enough for a sync frame's worth of out-of-order history (a frame is
	// at most 64 KiB of envelopes), small enough that a peer cannot fill
	// memory. The oldest is dropped first.
	maxPending = 4096
	// pendingTTL is how long an envelope is held: time for a sync to bring
	// its parents or epoch, or for a partition's witness to arrive. After
	// it, it is dropped (it comes back with the next sync if it ever
	// counts).
	pendingTTL = 10 * time.Minute
	// maxOpaque bounds the ids remembered as "seen, not kept" (unreadable
	// or refused), which let ops naming them as parents be judged.
	maxOpaque = 1 << 16
	// boxBurst and boxRefill are a peer's budget of box trials (one X25519
	// multiplication each): a member may make us try 1,024 boxes at once
	// (four 256-device commits), and 1,024 more every 10 minutes. Honest
	// teams commit a few times a day.
	boxBurst  = 1024
	boxRefill = 10 * time.Minute
	// maxFaults within faultWindow gets a peer banned: no honest peer sends
	// even one envelope that fails the checks it makes itself, so a few are
	// tolerated only for what an honest peer cannot check (an epoch tag
	// two commits share).
	maxFaults   = 8
	faultWindow = 10 * time.Minute
	// missWait is how long after asking a peer to sync because of an
	// unknown epoch or missing parents it is asked again for the same
	// reason: a removed device receives such envelopes forever.
	missWait = 10 * time.Second
)

// Config describes a Team. Device and Team are required; the zero value of
// every other field works.
type Config struct {
	// Device is this device's identity.
	Device *identity.Device
	// Team is the team's id.
	Team crdt.TeamID
	// Genesis pins the team's create op (set by Create and Join; New needs
	// it): a member could otherwise write a rival create op.
	Genesis crdt.OpID
	// Rand supplies epoch keys, box ephemerals and re-key jitter; nil
	// means crypto/rand.
	Rand io.Reader
	// JoinPrekey is the prekey a joining device sent in its join request
	// (Join only): the commit that adds it boxes its first epoch key to it,
	// so that epoch, too, is out of reach of a capture once retained no
	// more. Nil: the box is sealed to the device's static key.
	JoinPrekey *epochkey.Prekey
	// RotateEvery is how old the current epoch may get before an admin
	// device re-keys. Default DefaultRotateEvery (7 days).
	RotateEvery time.Duration
	// RetainKeys is how long the keys of an epoch are kept after the next
	// epoch started. Default DefaultRetainKeys (30 days).
	RetainKeys time.Duration
	// HistoryBytes bounds the history HistoryFor hands over (the newest ops
	// within it). Default MaxHistoryBytes (32 MiB).
	HistoryBytes int
	// AckInterval is how often Tick publishes batched acknowledgements.
	// Default DefaultAckInterval (30 s); negative: never (Acks still works).
	AckInterval time.Duration
	// RekeyJitter bounds the random wait of an admin before a re-key the
	// state asks for, so that admins who saw the same merge do not all
	// re-key. Default DefaultRekeyJitter (15 s).
	RekeyJitter time.Duration
	// ReviewEvery is how old the team's last membership review may get
	// before an admin device is reminded (Effects.Alerts). Default
	// duty.DefaultReviewEvery (30 days); negative: never.
	ReviewEvery time.Duration
	// FiledGrace is how long after a filed op's time (crdt.State.Filed)
	// this device deletes the body of the message it names: the team sees
	// "filed to record" meanwhile. Default DefaultFiledGrace (24 h).
	FiledGrace time.Duration
	// WarnUnfiled is how old a clinical message due for filing
	// (record.Due) may get before Unfiled lists it for this device's admin.
	// Default DefaultWarnUnfiled (30 days).
	WarnUnfiled time.Duration
	// Logger receives what the core decides (short ids, never content).
	// Nil discards.
	Logger *slog.Logger
	// Ops, if set, is shared by the cores of many devices in one process
	// (the simulator's), which then hold one copy of each op they share
	// (crdt.Pool). Such a core does not wipe from memory the bodies it
	// redacts: a device's node leaves it nil.
	Ops *crdt.Pool
}

func (c *Config) fill() error {
	switch {
	case c.Device == nil:
		return fmt.Errorf("%w: no device", ErrConfig)
	case c.RotateEvery < 0 || c.RetainKeys < 0 || c.RekeyJitter < 0 || c.FiledGrace < 0 || c.WarnUnfiled < 0:
		return fmt.Errorf("%w: negative duration", ErrConfig)
	case c.HistoryBytes < 0:
		return fmt.Errorf("%w: negative history bound", ErrConfig)
	}
	if c.HistoryBytes == 0 {
		c.HistoryBytes = MaxHistoryBytes
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.RotateEvery == 0 {
		c.RotateEvery = DefaultRotateEvery
	}
	if c.RetainKeys == 0 {
		c.RetainKeys = DefaultRetainKeys
	}
	if c.AckInterval == 0 {
		c.AckInterval = DefaultAckInterval
	}
	if c.RekeyJitter == 0 {
		c.RekeyJitter = DefaultRekeyJitter
	}
	if c.FiledGrace == 0 {
		c.FiledGrace = DefaultFiledGrace
	}
	if c.WarnUnfiled == 0 {
		c.WarnUnfiled = DefaultWarnUnfiled
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Stored is what the store holds of a team, for New.
type Stored struct {
	// Keys is the key state (teamkeys.Keys.Marshal).
	Keys []byte
	// Ops are the opened ops (crdt.Op.Marshal).
	Ops [][]byte
	// Envelopes are the keys of every envelope stored for the team's topic,
	// opened or carried.
	Envelopes []Ref
	// Commits are the stored envelopes of the team's create and commit ops
	// (commit form), whole: the core reopens those whose epochs it kept
	// without learning.
	Commits [][]byte
	// Alerts is the alert state last stored (Write.Alerts); nil if none.
	Alerts []byte
}

// Ref names a stored envelope.
type Ref struct {
	Time  uint64
	ID    crdt.OpID
	Epoch uint32 // its epoch tag (the envelope header's)
}

// Team is one device's copy of one team: the sans-I/O device core. It owns
// the team's log (crdt.Log), key state (teamkeys.Keys) and clock, and the
// rules a device follows: what it accepts and keeps, when it commits,
// re-keys and forgets keys, and how it batches acknowledgements. It takes
// time and randomness as inputs and returns Effects. A Team is not safe
// for concurrent use.
type Team struct {
	// chainTries counts held chain envelopes tried again (reopenChain): the
	// work a flood of forged envelopes can make a device do.
	chainTries int

	cfg   Config
	self  *identity.Device
	id    crdt.TeamID
	topic envelope.Topic
	now   time.Time
	log   *slog.Logger

	lg    *crdt.Log
	state *crdt.State // cached; nil when the log changed
	keys  *teamkeys.Keys
	clock crdt.Clock

	// stored holds the ids of the envelopes stored (opened or carried);
	// carried those of them this device has not read (and may read once it
	// learns their epoch's chains: see reread).
	stored  map[crdt.OpID]struct{}
	carried map[crdt.OpID]uint32 // by epoch tag
	// reopenAt holds, for carried envelopes asked to be read again
	// (Effects.Reopen), when reread may ask again.
	reopenAt map[crdt.OpID]time.Time
	// seals maps the chain positions of the opened ops to their ids, to
	// find a second op at one position (equivocation), each sender by its
	// number in senders: one entry an opened op, for the team's history,
	// so a short key (see sealAt).
	seals   map[sealKey]crdt.OpID
	senders map[identity.DeviceID]uint32
	// opaque remembers ids seen and not kept (see maxOpaque); patience the
	// held ops that expired waiting for parents (see candidates).
	opaque, patience *idSet

	pending *pool
	// unlearned are the commits this device keeps whose epoch it has not
	// learned (not valid in its view, and no op that counts was sealed in
	// it yet), each with its envelope: a message sealed in one of them opens
	// with its keys, and is the reason to learn them.
	unlearned map[crdt.OpID]*held
	// priors are the prior keys of the kept commits: those whose tags the
	// log names are learned once their commit counts (learnLate), and the
	// others are tried, not learned, on held envelopes. priorsAt is the log
	// length learnLate last looked at them.
	priors   map[crdt.OpID][]envelope.PriorKey
	priorsAt int
	peers    map[string]*peerState

	reads  map[crdt.OpID]struct{} // read marks not yet acknowledged
	alerts *duty.Tracker          // what the user was alerted of (duty hours, rota, escalation)
	// alertsStored is the alert state last handed out to store (Write.Alerts).
	alertsStored []byte
	lastAck      time.Time
	rekeyAt      time.Time // when an admin re-keys what the state asks for (jitter); zero: not scheduled
	evidence     []crdt.Evidence
	reported     map[position]bool    // equivocations already turned into evidence
	retired      map[uint32]bool      // epoch tags whose history retireHistory deleted
	republished  map[evidenceKey]bool // evidence published again in an epoch
}

// position is a place in a sender chain.
type position struct {
	tag    uint32
	sender identity.DeviceID
	index  uint32
}

func newTeam(cfg Config) (*Team, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	t := &Team{
		cfg:         cfg,
		self:        cfg.Device,
		id:          cfg.Team,
		topic:       envelope.TopicOf(cfg.Team),
		log:         cfg.Logger.With("team", cfg.Team),
		lg:          crdt.NewPooledLog(cfg.Team, cfg.Ops),
		keys:        teamkeys.New(cfg.Team, cfg.Device),
		stored:      make(map[crdt.OpID]struct{}),
		carried:     make(map[crdt.OpID]uint32),
		reopenAt:    make(map[crdt.OpID]time.Time),
		seals:       make(map[sealKey]crdt.OpID),
		senders:     make(map[identity.DeviceID]uint32),
		opaque:      newIDSet(maxOpaque),
		patience:    newIDSet(maxOpaque),
		pending:     newPool(),
		unlearned:   make(map[crdt.OpID]*held),
		priors:      make(map[crdt.OpID][]envelope.PriorKey),
		peers:       make(map[string]*peerState),
		reads:       make(map[crdt.OpID]struct{}),
		alerts:      duty.NewTracker(cfg.Device.ID(), cfg.ReviewEvery),
		reported:    make(map[position]bool),
		retired:     make(map[uint32]bool),
		republished: make(map[evidenceKey]bool),
	}
	t.clock.Now = func() time.Time { return t.now }
	return t, nil
}

// New restores a Team from what the store holds. The stored ops are this
// device's own judgement and are not judged again; their signatures are
// checked (crdt.Log.Add).
func New(cfg Config, now time.Time, st Stored) (*Team, error) {
	if cfg.Genesis == (crdt.OpID{}) {
		return nil, fmt.Errorf("%w: no genesis", ErrConfig)
	}
	t, err := newTeam(cfg)
	if err != nil {
		return nil, err
	}
	t.now = now
	keys, err := teamkeys.Unmarshal(cfg.Team, cfg.Device, st.Keys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStored, err)
	}
	t.keys = keys
	var ops []*crdt.Op
	for _, b := range st.Ops {
		op, err := crdt.UnmarshalStored(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStored, err)
		}
		if _, err := t.lg.AddStored(op); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStored, err)
		}
		ops = append(ops, op)
	}
	for _, r := range st.Envelopes {
		t.stored[r.ID] = struct{}{}
		if !t.lg.Has(r.ID) {
			t.carried[r.ID] = r.Epoch
		}
	}
	s := t.snapshot()
	for _, op := range ops {
		t.indexSeal(op)
		t.observe(op, s)
	}
	for _, raw := range st.Commits {
		e, err := envelope.Unmarshal(t.topic, raw)
		if err != nil || e.Form() != envelope.FormCommit || !t.lg.Has(e.ID) {
			continue
		}
		if c, err := t.keys.OpenCommit(e, nil); err == nil && len(c.Prior) > 0 {
			t.priors[e.ID] = c.Prior
		}
		if ep, ok := t.keys.Epoch(e.ID); ok && ep.Chains() {
			continue
		}
		if op, _ := t.lg.Op(e.ID); op != nil && t.recipient(op) {
			t.unlearned[e.ID] = &held{env: e, raw: raw, at: now}
		}
	}
	if st.Alerts == nil {
		t.alerts.Prime(now, t.snapshot())
	} else if err := t.alerts.RestoreState(st.Alerts); err != nil {
		t.log.Warn("stored alert state unreadable: alerts due now are taken as raised", "err", err)
		t.alerts.Prime(now, t.snapshot())
	} else {
		t.alertsStored = st.Alerts
	}
	return t, nil
}

// Alerts returns the alerts to raise for the user at now (package
// sync/duty: duty hours, on-call rota, escalation, review reminders), each
// once, and the Write that stores what the tracker now remembers (make it
// durable first, so a restart does not raise them again). Tick returns
// them too (Effects.Alerts); call Alerts after a Receive that changed the
// state, to alert without waiting for a Tick.
func (t *Team) Alerts(now time.Time) ([]duty.Alert, Write) {
	t.now = now
	if t.canWrite() != nil {
		return nil, Write{}
	}
	var w Write
	return t.due(&w), w
}

// due returns the alerts to raise now, given what the user was shown and
// has not acknowledged yet, and sets w.Alerts if the tracker's state
// differs from the one stored.
func (t *Team) due(w *Write) []duty.Alert {
	// The log's own state, not snapshot's copy: Due keeps nothing of it,
	// and a copy kept for it would double what a core holds.
	out := t.alerts.Due(t.now, t.view(), t.lg.Version(), func(id crdt.OpID) bool {
		_, ok := t.reads[id]
		return ok
	})
	if t.alerts.Changed() {
		if st := t.alerts.MarshalState(); !bytes.Equal(st, t.alertsStored) {
			t.alertsStored, w.Alerts = st, st
		}
	}
	return out
}

// observe merges an admitted op's time into the clock: this device's own
// ops whatever the wall clock says, other devices' only if they count in s
// (so a non-member never moves it).
func (t *Team) observe(op *crdt.Op, s *crdt.State) {
	switch {
	case op.Author == t.self.ID():
		t.clock.ObserveOwn(op.Time)
	case s.Counts(op.ID()):
		t.clock.ObserveFrom(op.Author, op.Time)
	}
}

// indexSeal records the chain position of an opened chain-form op.
func (t *Team) indexSeal(op *crdt.Op) {
	if op.Kind.StartsEpoch() {
		return
	}
	n, ok := t.senders[op.Author]
	if !ok {
		n = uint32(len(t.senders))
		t.senders[op.Author] = n
	}
	t.seals[sealKey{op.Seal.Epoch, n, op.Seal.Index}] = op.ID()
}

// sealKey is a chain position in the seal index, its sender by number.
type sealKey struct{ tag, sender, index uint32 }

// sealAt returns the id of the opened op at chain position pos, if any.
func (t *Team) sealAt(pos position) (crdt.OpID, bool) {
	n, ok := t.senders[pos.sender]
	if !ok {
		return crdt.OpID{}, false
	}
	id, ok := t.seals[sealKey{pos.tag, n, pos.index}]
	return id, ok
}

// BoxKeys returns a copy of the keys a commit's boxes are tried with
// (teamkeys.OpenBox): this device's prekeys for the team, then its static
// key. A caller that opens boxes outside the Team's lock takes it under the
// lock.
func (t *Team) BoxKeys() teamkeys.BoxKeys { return t.keys.BoxKeys() }

// openBox trial-opens a commit's boxes with this device's keys.
func (t *Team) openBox(e *envelope.Envelope) (*teamkeys.Box, error) {
	bk := t.keys.BoxKeys()
	defer bk.Wipe()
	return teamkeys.OpenBox(bk, t.id, e)
}

// ID returns the team's id.
func (t *Team) ID() crdt.TeamID { return t.id }

// Topic returns the team's gossip topic.
func (t *Team) Topic() envelope.Topic { return t.topic }

// Genesis returns the id of the team's create op.
func (t *Team) Genesis() crdt.OpID { return t.cfg.Genesis }

// State returns the team's visible state. The caller must not modify it;
// it stays valid (a later change makes a new one).
func (t *Team) State() *crdt.State { return t.snapshot() }

// view returns the team's State for a read that ends before the log next
// changes: the copy snapshot keeps if there is one, else the log's own
// (crdt.Log.View), not copied. The core's own checks on every receive
// (membership, what counts) and tick (alerts, re-keys) use it, so that a
// phone does not copy the team's whole history for each batch it receives
// or keep a second copy of it between ticks; a State that is kept or handed
// out is snapshot's copy.
func (t *Team) view() *crdt.State {
	if t.state != nil || copyViews {
		return t.snapshot()
	}
	return t.lg.View()
}

// copyViews makes view return snapshot's copy: tests compare the two.
var copyViews bool

func (t *Team) snapshot() *crdt.State {
	if t.state == nil {
		s := t.lg.State()
		t.state = &s
	}
	return t.state
}

// Has reports whether the envelope with this id is stored (opened or
// carried).
func (t *Team) Has(id crdt.OpID) bool {
	_, ok := t.stored[id]
	return ok
}

// Op returns a copy of the opened op with this id.
func (t *Team) Op(id crdt.OpID) (*crdt.Op, bool) { return t.lg.Op(id) }

// Member reports whether device d is a current member of the team.
func (t *Team) Member(d identity.DeviceID) bool {
	_, ok := t.view().Member(d)
	return ok
}

// Removed reports whether this device was removed from the team: its state
// lists it among the removed devices and not among the members.
func (t *Team) Removed() bool {
	s := t.view()
	if _, ok := s.Member(t.self.ID()); ok {
		return false
	}
	for _, d := range s.Removed {
		if d == t.self.ID() {
			return true
		}
	}
	return false
}

// Roster is what an admin device tells the team's relays about membership
// (node/relay/relayproto.Roster): the current member and admin devices, and
// the number of the current epoch as its sequence, which grows with every
// commit. ok is false when this device is not an admin or no epoch is sound.
func (t *Team) Roster() (seq uint64, members, admins []identity.DeviceID, ok bool) {
	s := t.snapshot()
	if me, in := s.Member(t.self.ID()); !in || !me.Admin || s.Current < 0 {
		return 0, nil, nil, false
	}
	for _, m := range s.Members {
		members = append(members, m.Device)
		if m.Admin {
			admins = append(admins, m.Device)
		}
	}
	return uint64(s.Epochs[s.Current].Number), members, admins, true
}

// MaySync reports whether a reconciliation of this team with p may run, in
// either direction: p is a current member's device or a relay enrolled for
// the team (the caller knows which relays are enrolled). Everyone else
// learns nothing of the team's envelopes. Both ends check: a device that
// believes it was removed still syncs with a member that disagrees (its
// removal may have been undone by ops it has not seen, such as a
// concurrent removal of the remover), and a member refuses a device it
// believes removed, and the two exchange membership ops instead
// (MembershipFor, AcceptMembership).
func (t *Team) MaySync(p Peer) bool {
	return p.Relay || t.Member(p.Device)
}

// MembershipOps returns the team's create and commit ops that this device
// holds, oldest first: the history a join answer carries.
func (t *Team) MembershipOps() []*crdt.Op {
	var out []*crdt.Op
	for _, op := range t.lg.Ops() {
		if op.Kind.StartsEpoch() {
			out = append(out, op)
		}
	}
	return out
}

// HoldsKey reports whether this device holds the keys of the epoch that
// commit started (its chains: it reads the epoch's messages), as opposed to
// none, or only the outer key that lets it carry them.
func (t *Team) HoldsKey(commit crdt.OpID) bool {
	ep, ok := t.keys.Epoch(commit)
	return ok && ep.Chains()
}

// Holding reports whether the envelope with this id is held until it can
// be judged (Verdict Held).
func (t *Team) Holding(id crdt.OpID) bool { return t.pending.get(id) != nil }

// Pending returns how many envelopes are held until they can be judged.
func (t *Team) Pending() int { return t.pending.len() }

// Wipe overwrites the keys the core holds in memory (teamkeys.Keys.Wipe) and drops its log, leaving a
// core that opens, seals and shows nothing. The node calls it when the device locks, after everything
// was stored and the core is no longer used; a locked device restores a new core at unlock. Best
// effort, as every erasure in Go (sync/teamkeys).
func (t *Team) Wipe() {
	t.keys.Wipe()
	t.lg = crdt.NewPooledLog(t.id, t.cfg.Ops)
	t.state = nil
	t.pending = newPool()
	clear(t.unlearned)
}

// Keys returns the core's key state, for tests that check what Wipe overwrote.
func (t *Team) Keys() *teamkeys.Keys { return t.keys }
