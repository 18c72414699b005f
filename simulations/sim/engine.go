package sim

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// Epoch is virtual time zero: the devices' clocks read Epoch plus the
// simulated time.
var Epoch = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// DeviceSpec is one simulated device.
type DeviceSpec struct {
	Name string
	// Relay makes it a clinic relay: it carries the envelopes of the teams
	// that enrolled it (TeamSpec.Relays) and belongs to none.
	Relay bool
}

// TeamSpec is one team: its members (device indexes; the first creates
// the team) and the relays enrolled for it.
type TeamSpec struct {
	Name    string
	Members []int
	Relays  []int
}

// MessageSpec is one message of the workload.
type MessageSpec struct {
	At   time.Duration
	Team int
	From int
	// To is the one recipient of a direct message, or -1 for a team
	// message (every other member is a recipient). fieldmesh has no
	// direct-message kind: a direct message is a team message whose
	// delivery is measured at its recipient only.
	To       int
	Size     int // text bytes
	Priority crdt.Priority
	TTL      time.Duration // 0: none
}

// ContactEvent opens or closes the contact between devices A and B.
type ContactEvent struct {
	At   time.Duration
	A, B int
	Up   bool
}

// Link is what a contact carries: Bandwidth bytes a second each way (0:
// unlimited) and a one-way Latency.
//
// Step and Exclusive model radios that move one message at a time, as the
// ONE's routers do (ActiveRouter: a host sending or receiving on any
// connection starts no other transfer, and a transfer finishes only on
// the simulator's next update, Scenario.updateInterval, so a message
// holds both hosts for at least one update whatever its size). Leave them
// zero for fieldmesh's own links.
type Link struct {
	Bandwidth float64
	Latency   time.Duration
	// Step, if positive, is the least time each workload message a frame
	// brings holds both radios (k messages: k×Step from when it went on the
	// air), on Exclusive radios; the frame itself arrives after its bytes
	// over Bandwidth. The protocol's own envelopes (team history,
	// acknowledgements) cost their bytes only: the ONE has none.
	Step time.Duration
	// Exclusive gives each device one radio: it carries one frame at a
	// time, sent or received, over all its open contacts. A contact that
	// closes frees its devices' radios (what was in flight on it is lost).
	Exclusive bool
}

// Config is one run.
type Config struct {
	Seed     uint64
	Devices  []DeviceSpec
	Teams    []TeamSpec
	Contacts []ContactEvent // sorted by At
	Messages []MessageSpec
	Strategy Strategy
	Link     Link
	Duration time.Duration
	// TickEvery is how often each device's cores are ticked (acks, held
	// envelopes, re-keying): 0 means every 10 minutes.
	TickEvery time.Duration
	// Acks turns the cores' batched acknowledgements on (the node's
	// default): they are ops, and they cost bytes.
	Acks bool
	// MaxFrame is the recon frame size (0: recon's default).
	MaxFrame int
	// Progress, if set, is called as virtual time advances.
	Progress func(now, total time.Duration)
	// StopWhenDelivered ends the run once every message is delivered to
	// every recipient (theory runs).
	StopWhenDelivered bool
}

// event kinds.
const (
	evContact = iota
	evMessage
	evTick
	evFrame
	evRadio // Link.Exclusive: a device's radio is free
)

type event struct {
	at   time.Duration
	seq  uint64
	kind uint8
	idx  int // contact event, message or device index
	// frames
	c    *contact
	gen  int
	s    *session
	to   int
	data []byte
	sent time.Duration // Link.Exclusive: when it went on the air
}

type queue []*event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil // or the array keeps the event, its session and frame, alive
	*q = old[:len(old)-1]
	return e
}

// holding is what a device knows of an envelope it holds beyond the
// envelope: how it got it and how many copies it may still hand on.
// A device holds one for every envelope it holds, so its fields are small:
// hop counts and copy limits fit in 32 bits (copies come from a scenario's
// int limits, checked by Strategy.check; hops are below the devices).
type holding struct {
	at     time.Duration
	hops   int32
	copies int32 // 0: unlimited
	// dep: it came only as the ancestor of a message handed on; under a
	// copy limit it is not handed on itself (it travels again only as an
	// ancestor).
	dep bool
}

// member is a device's copy of one team: the real device core and its store.
type member struct {
	team  *device.Team
	store *store
	cfg   device.Config
}

type node struct {
	idx     int
	spec    DeviceSpec
	id      *identity.Device
	rand    io.Reader
	teams   map[int]*member // by team index
	carried map[int]*store  // other teams' sealed envelopes, by team index
	enrol   map[int]bool    // teams a relay is enrolled for
	held    map[crdt.OpID]*holding
	open    map[int]*contact // open contacts, by the other device
	carryQ  []carriedRef     // carried envelopes in arrival order (eviction)
	radio   time.Duration    // Link.Exclusive: the radio is busy until
	onAir   *contact         // Link.Exclusive: the contact it is busy on
	version int              // store changes
	stats   DeviceStats
}

type carriedRef struct {
	team int
	id   crdt.OpID
}

// session is one recon session of one topic over a contact.
type session struct {
	c    *contact
	team int
	sess [2]*recon.Session
	view [2]*view
	role [2]role
	done [2]bool
	over bool
}

type role uint8

const (
	roleNone role = iota
	roleMember
	roleCarrier
)

type contact struct {
	a, b     int
	up       bool
	gen      int
	busy     [2]time.Duration // each direction's link is busy until
	pend     []*event         // Link.Exclusive: frames waiting for the radios
	active   int
	start    [2]int // versions when the round started
	caused   [2]int // changes the round made
	rounds   int
	openedAt time.Duration
}

// maxRounds bounds the reconciliation rounds of one contact: a round
// starts again only when a side's stores changed from elsewhere.
const maxRounds = 64

// engine is one run.
type engine struct {
	cfg      Config
	rng      *rand.Rand
	rngSrc   *rand.ChaCha8
	now      time.Duration
	seq      uint64
	q        queue
	nodes    []*node
	teams    []*teamState
	contacts map[[2]int]*contact
	msgs     []*MessageResult
	byID     map[crdt.OpID]int // workload message by op id
	pending  int               // deliveries still missing
	res      *Result
	tick     time.Duration
	in       *interner  // the envelope bytes the devices' stores share
	ops      *crdt.Pool // the decoded ops the devices' cores share
}

type teamState struct {
	spec   TeamSpec
	id     crdt.TeamID
	topic  envelope.Topic
	member map[int]bool
}

// Run simulates cfg and returns what happened. While it runs, the garbage
// collector works to a larger target than Go's default (see gcPercent).
func Run(cfg Config) (*Result, error) {
	defer tuneGC()()
	e, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.run(); err != nil {
		return nil, err
	}
	return e.finish(), nil
}

func seedBytes(seed uint64, salt uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
		s[8+i] = byte(salt >> (8 * i))
	}
	return s
}

// shareBytes makes the devices' stores share equal envelope bytes
// (interner), and their cores equal decoded ops (crdt.Pool); tests turn it
// off to compare.
var shareBytes = true

func newEngine(cfg Config) (*engine, error) {
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = 10 * time.Minute
	}
	if err := cfg.Strategy.check(); err != nil {
		return nil, err
	}
	src := rand.NewChaCha8(seedBytes(cfg.Seed, 0))
	e := &engine{cfg: cfg, rngSrc: src, rng: rand.New(src), contacts: make(map[[2]int]*contact),
		byID: make(map[crdt.OpID]int), res: &Result{Strategy: cfg.Strategy.Name, Seed: cfg.Seed, Duration: cfg.Duration}}
	if shareBytes {
		e.in, e.ops = newInterner(), crdt.NewPool()
	}
	for i, d := range cfg.Devices {
		r := rand.NewChaCha8(seedBytes(cfg.Seed, uint64(i)+1))
		id, err := identity.Generate(r)
		if err != nil {
			return nil, err
		}
		e.nodes = append(e.nodes, &node{idx: i, spec: d, id: id, rand: r, teams: make(map[int]*member),
			carried: make(map[int]*store), enrol: make(map[int]bool), held: make(map[crdt.OpID]*holding), open: make(map[int]*contact),
			stats: DeviceStats{Name: d.Name, Relay: d.Relay}})
	}
	for ti, ts := range cfg.Teams {
		if err := e.setupTeam(ti, ts); err != nil {
			return nil, fmt.Errorf("team %d: %w", ti, err)
		}
	}
	for i, c := range cfg.Contacts {
		if c.A < 0 || c.B < 0 || c.A >= len(e.nodes) || c.B >= len(e.nodes) || c.A == c.B {
			return nil, fmt.Errorf("contact %d: devices %d and %d out of range (%d devices)", i, c.A, c.B, len(e.nodes))
		}
		if c.At <= cfg.Duration {
			e.push(&event{at: c.At, kind: evContact, idx: i})
		}
	}
	for i, m := range cfg.Messages {
		if m.Team < 0 || m.Team >= len(e.teams) || !e.teams[m.Team].member[m.From] || (m.To >= 0 && !e.teams[m.Team].member[m.To]) || m.To == m.From {
			return nil, fmt.Errorf("message %d: sender or recipient is not a member of team %d", i, m.Team)
		}
		if m.At <= cfg.Duration {
			e.push(&event{at: m.At, kind: evMessage, idx: i})
		}
	}
	// Ticks, staggered over the first minute so devices do not all tick at once.
	for i := range e.nodes {
		off := time.Duration(i) * min(cfg.TickEvery, time.Minute) / time.Duration(max(1, len(e.nodes)))
		e.push(&event{at: off, kind: evTick, idx: i})
	}
	e.res.Devices = make([]DeviceStats, len(e.nodes))
	return e, nil
}

func (e *engine) push(ev *event) {
	e.seq++
	ev.seq = e.seq
	heap.Push(&e.q, ev)
}

func (e *engine) clock() time.Time { return Epoch.Add(e.now) }

// setupTeam makes the team as the join protocol would, before time zero:
// the first member creates it, adds the others in commits (each new
// device's box to its join-request prekey) and each joins from the
// history. Relays need nothing of the core: enrolment is the node's.
func (e *engine) setupTeam(ti int, ts TeamSpec) error {
	if len(ts.Members) == 0 {
		return errors.New("no members")
	}
	t := &teamState{spec: ts, member: make(map[int]bool)}
	if _, err := io.ReadFull(e.rngSrc, t.id[:]); err != nil {
		return err
	}
	t.topic = envelope.TopicOf(t.id)
	for _, m := range ts.Members {
		if m < 0 || m >= len(e.nodes) || e.nodes[m].spec.Relay {
			return fmt.Errorf("member %d is not a device", m)
		}
		if t.member[m] {
			return fmt.Errorf("member %d listed twice", m)
		}
		t.member[m] = true
	}
	for _, r := range ts.Relays {
		if r < 0 || r >= len(e.nodes) || !e.nodes[r].spec.Relay {
			return fmt.Errorf("relay %d is not a relay", r)
		}
		e.nodes[r].enrol[ti] = true
	}
	e.teams = append(e.teams, t)
	now := Epoch.Add(-time.Hour)
	creator := e.nodes[ts.Members[0]]
	cfg := e.coreConfig(creator, t)
	tm, eff, err := device.Create(cfg, now, fmt.Sprintf("team %d", ti), crdt.Clinical, "m0")
	if err != nil {
		return err
	}
	cfg.Genesis = tm.Genesis()
	cm := &member{team: tm, store: newStore(e.in), cfg: cfg}
	cm.store.write(eff.Write)
	creator.teams[ti] = cm
	rest := ts.Members[1:]
	prekeys := make(map[int]epochkey.Prekey)
	for len(rest) > 0 {
		chunk := rest[:min(len(rest), crdt.MaxChanges)]
		rest = rest[len(chunk):]
		pks := make(map[identity.DeviceID]identity.NoisePublic)
		var changes []crdt.Change
		for _, m := range chunk {
			n := e.nodes[m]
			pk, err := epochkey.NewPrekey(n.rand)
			if err != nil {
				return err
			}
			prekeys[m] = pk
			pks[n.id.ID()] = pk.Public
			changes = append(changes, crdt.Change{Action: crdt.ActAdd,
				Info: crdt.MemberInfo{Device: n.id.ID(), Noise: n.id.NoisePublic(), Name: fmt.Sprintf("m%d", m)}})
		}
		now = now.Add(time.Second)
		_, eff, err := tm.ChangeFor(now, pks, changes...)
		if err != nil {
			return fmt.Errorf("add members: %w", err)
		}
		cm.store.write(eff.Write)
	}
	hist := tm.History(func(id crdt.OpID) []byte { return cm.store.envs[id] })
	for _, m := range ts.Members[1:] {
		n := e.nodes[m]
		c := e.coreConfig(n, t)
		c.Genesis = cfg.Genesis
		pk := prekeys[m]
		c.JoinPrekey = &pk
		jt, jeff, err := device.Join(c, now.Add(time.Second), hist)
		if err != nil {
			c.JoinPrekey = nil
			if jt, jeff, err = device.Join(c, now.Add(time.Second), hist); err != nil {
				return fmt.Errorf("member %d joins: %w", m, err)
			}
		}
		c.JoinPrekey = nil
		mm := &member{team: jt, store: newStore(e.in), cfg: c}
		mm.store.write(jeff.Write)
		n.teams[ti] = mm
	}
	// Everyone starts with the whole history, as after the join meetings.
	for _, m := range ts.Members {
		n := e.nodes[m]
		for _, it := range cm.store.items {
			if _, ok := n.held[it.ID]; !ok {
				n.held[it.ID] = &holding{}
			}
		}
	}
	return nil
}

func (e *engine) coreConfig(n *node, t *teamState) device.Config {
	c := device.Config{Device: n.id, Team: t.id, Rand: n.rand, AckInterval: -1, RekeyJitter: time.Nanosecond, Ops: e.ops}
	if e.cfg.Acks {
		c.AckInterval = device.DefaultAckInterval
	}
	return c
}

func (e *engine) peerOf(n *node, carrier bool) device.Peer {
	return device.Peer{ID: n.spec.Name, Device: n.id.ID(), Relay: carrier || n.spec.Relay}
}

func (e *engine) run() error {
	total := e.cfg.Duration
	var lastProgress time.Duration
	for e.q.Len() > 0 {
		ev := heap.Pop(&e.q).(*event)
		if ev.at > total {
			break
		}
		e.now = ev.at
		e.res.Events++
		if e.cfg.Progress != nil && e.now-lastProgress >= total/200 {
			lastProgress = e.now
			e.cfg.Progress(e.now, total)
		}
		var err error
		switch ev.kind {
		case evContact:
			e.onContact(e.cfg.Contacts[ev.idx])
		case evMessage:
			err = e.onMessage(ev.idx)
		case evTick:
			err = e.onTick(ev.idx)
		case evFrame:
			err = e.onFrame(ev)
		case evRadio:
			if n := e.nodes[ev.idx]; n.radio <= e.now {
				n.onAir = nil
				e.dispatch(n)
			}
		}
		if err != nil {
			return err
		}
		if e.cfg.StopWhenDelivered && e.pending == 0 && e.allSent() {
			break
		}
	}
	if e.cfg.Progress != nil {
		e.cfg.Progress(total, total)
	}
	return nil
}

func (e *engine) allSent() bool { return len(e.msgs) == len(e.cfg.Messages) }

func pairKey(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

func (e *engine) onContact(ce ContactEvent) {
	k := pairKey(ce.A, ce.B)
	c := e.contacts[k]
	if c == nil {
		c = &contact{a: k[0], b: k[1]}
		e.contacts[k] = c
	}
	if ce.Up == c.up {
		return
	}
	c.up = ce.Up
	c.gen++
	if ce.Up {
		e.nodes[c.a].open[c.b] = c
		e.nodes[c.b].open[c.a] = c
	} else {
		delete(e.nodes[c.a].open, c.b)
		delete(e.nodes[c.b].open, c.a)
	}
	if !ce.Up {
		// Frames in flight are lost: their events see a stale gen.
		c.active = 0
		if e.cfg.Link.Exclusive {
			// Waiting frames are lost, and the radios busy on it free.
			e.res.FramesLost += len(c.pend)
			c.pend = nil
			for _, x := range [2]*node{e.nodes[c.a], e.nodes[c.b]} {
				if x.onAir == c {
					x.onAir, x.radio = nil, e.now
					e.dispatch(x)
				}
			}
		}
		return
	}
	e.res.Contacts++
	c.openedAt = e.now
	c.busy = [2]time.Duration{}
	c.rounds = 0
	e.startRound(c)
}

// role is what device n is to team ti under the strategy.
func (e *engine) role(n *node, ti int) role {
	if _, ok := n.teams[ti]; ok {
		return roleMember
	}
	switch {
	case n.spec.Relay && n.enrol[ti] && e.cfg.Strategy.Carry >= CarryRelays:
		return roleCarrier
	case e.anyoneCarries(ti):
		return roleCarrier
	}
	return roleNone
}

func (e *engine) topicsOf(n *node) []int {
	var ts []int
	for ti := range n.teams {
		ts = append(ts, ti)
	}
	for ti, s := range n.carried {
		if len(s.items) > 0 {
			ts = append(ts, ti)
		}
	}
	return ts
}

func (e *engine) startRound(c *contact) {
	a, b := e.nodes[c.a], e.nodes[c.b]
	c.rounds++
	c.start = [2]int{a.version, b.version}
	c.caused = [2]int{}
	ts := append(e.topicsOf(a), e.topicsOf(b)...)
	slices.Sort(ts)
	ts = slices.Compact(ts)
	for _, ti := range ts {
		ra, rb := e.role(a, ti), e.role(b, ti)
		if ra == roleNone || rb == roleNone {
			continue
		}
		if ra == roleCarrier && rb == roleCarrier {
			if !e.anyoneCarries(ti) && !(a.spec.Relay && b.spec.Relay) {
				continue
			}
		}
		if ra == roleMember && rb == roleMember {
			// The core's rule: devices sync only with peers they believe are members.
			if !a.teams[ti].team.MaySync(e.peerOf(b, false)) || !b.teams[ti].team.MaySync(e.peerOf(a, false)) {
				continue
			}
		}
		e.startSession(c, ti, ra, rb)
	}
}

func (e *engine) startSession(c *contact, ti int, ra, rb role) {
	a, b := e.nodes[c.a], e.nodes[c.b]
	va, vb := e.viewFor(a, b, ti, ra, rb), e.viewFor(b, a, ti, rb, ra)
	if len(va.items) == 0 && len(vb.items) == 0 {
		return
	}
	rc := recon.Config{MaxFrame: e.cfg.MaxFrame, Rand: e.rngSrc}
	s := &session{c: c, team: ti, role: [2]role{ra, rb}, view: [2]*view{va, vb}}
	s.sess[0] = recon.NewInitiatorConfig(va, rc)
	s.sess[1] = recon.NewResponderConfig(vb, rc)
	first, err := s.sess[0].Start()
	if err != nil {
		e.res.SessionsFailed++
		return
	}
	e.res.Sessions++
	c.active++
	e.send(s, 0, first)
}

// send puts a frame from side `from` of s on the contact's link.
func (e *engine) send(s *session, from int, f []byte) {
	c := s.c
	n := e.nodes[c.a]
	if from == 1 {
		n = e.nodes[c.b]
	}
	n.stats.BytesSent += int64(len(f))
	n.stats.Frames++
	e.res.Bytes += int64(len(f))
	if e.cfg.Link.Exclusive {
		e.seq++
		c.pend = append(c.pend, &event{seq: e.seq, kind: evFrame, c: c, gen: c.gen, s: s, to: 1 - from, data: f})
		e.dispatch(e.nodes[c.a])
		e.dispatch(e.nodes[c.b])
		return
	}
	start := max(e.now, c.busy[from])
	tx := e.airTime(f)
	c.busy[from] = start + tx
	e.push(&event{at: start + tx + e.cfg.Link.Latency, kind: evFrame, c: c, gen: c.gen, s: s, to: 1 - from, data: f})
}

// airTime is how long frame f takes to cross the link.
func (e *engine) airTime(f []byte) time.Duration {
	if bw := e.cfg.Link.Bandwidth; bw > 0 {
		return time.Duration(float64(len(f)) / bw * float64(time.Second))
	}
	return 0
}

// workload counts the messages of the workload among envelopes recv of
// team ti.
func (e *engine) workload(ti int, recv [][]byte) int {
	k := 0
	for _, raw := range recv {
		if env, err := envelope.Unmarshal(e.teams[ti].topic, raw); err == nil {
			if _, ok := e.byID[env.ID]; ok {
				k++
			}
		}
	}
	return k
}

// hold keeps the radios busy on c until `until` (Link.Step).
func (e *engine) hold(c *contact, until time.Duration) {
	for _, y := range [2]*node{e.nodes[c.a], e.nodes[c.b]} {
		if y.onAir == c && y.radio < until {
			y.radio = until
			e.push(&event{at: until, kind: evRadio, idx: y.idx})
		}
	}
}

// dispatch puts frames on the air while x's radio is free (Link.Exclusive):
// of the frames waiting on x's open contacts whose other device's radio
// is free too, first those to a member of the session's team (what the
// contact can deliver, as the ONE's routers offer deliverable messages
// first), then the oldest.
func (e *engine) dispatch(x *node) {
	if x.radio > e.now {
		return
	}
	open := sortedKeys(x.open)
	for x.radio <= e.now {
		var best *event
		bi := -1
		for _, o := range open {
			c := x.open[o]
			if e.nodes[o].radio > e.now {
				continue
			}
			for i, ev := range c.pend {
				if best == nil || deliverable(ev) && !deliverable(best) || deliverable(ev) == deliverable(best) && ev.seq < best.seq {
					best, bi = ev, i
				}
			}
		}
		if best == nil {
			return
		}
		c := best.c
		c.pend = slices.Delete(c.pend, bi, bi+1)
		if best.s.over {
			continue
		}
		tx := e.airTime(best.data)
		best.at, best.sent = e.now+tx+e.cfg.Link.Latency, e.now
		heap.Push(&e.q, best) // before the radios free: it may hold them longer (onFrame)
		for _, y := range [2]*node{e.nodes[c.a], e.nodes[c.b]} {
			y.radio, y.onAir = e.now+tx, c
			e.push(&event{at: e.now + tx, kind: evRadio, idx: y.idx})
		}
	}
}

// deliverable reports whether frame ev goes to a member of its session's
// team, who can open what it carries.
func deliverable(ev *event) bool {
	return ev.s.role[ev.to] == roleMember
}

func (e *engine) onFrame(ev *event) error {
	s, c := ev.s, ev.c
	if !c.up || c.gen != ev.gen || s.over {
		e.res.FramesLost++
		return nil
	}
	to := ev.to
	out, recv, done, err := s.sess[to].Handle(ev.data)
	n := e.nodes[c.a]
	peer := e.nodes[c.b]
	if to == 1 {
		n, peer = peer, n
	}
	n.stats.BytesReceived += int64(len(ev.data))
	if st := e.cfg.Link.Step; st > 0 && e.cfg.Link.Exclusive && len(recv) > 0 {
		e.hold(c, ev.sent+time.Duration(e.workload(s.team, recv))*st)
	}
	if err != nil {
		e.res.SessionsFailed++
		e.endSession(s)
		return nil
	}
	if len(recv) > 0 {
		changed, err := e.receive(n, peer, s.team, s.role[to], s.role[1-to], s.view[1-to], recv)
		if err != nil {
			return err
		}
		c.caused[to] += changed
	}
	s.done[to] = done
	for _, f := range out {
		e.send(s, to, f)
	}
	if s.done[0] && s.done[1] {
		e.endSession(s)
	}
	return nil
}

func (e *engine) endSession(s *session) {
	if s.over {
		return
	}
	s.over = true
	c := s.c
	c.active--
	if c.active > 0 || !c.up {
		return
	}
	a, b := e.nodes[c.a], e.nodes[c.b]
	if (a.version-c.start[0] > c.caused[0] || b.version-c.start[1] > c.caused[1]) && c.rounds < maxRounds {
		e.startRound(c)
	}
}

// receive gives what n's session received from peer to n: its core, or its
// carrier store. It returns the changes made to n's stores.
func (e *engine) receive(n, peer *node, ti int, mine, theirs role, sent *view, recv [][]byte) (int, error) {
	before := n.version
	for _, raw := range recv {
		env, err := envelope.Unmarshal(e.teams[ti].topic, raw)
		if err != nil {
			e.res.Refused++
			continue
		}
		if mine == roleCarrier && e.expired(env.ID) {
			continue
		}
		e.handOff(peer, n, ti, env.ID, sent.deps[env.ID])
	}
	if mine == roleMember {
		m := n.teams[ti]
		arr := make([]device.Arrival, len(recv))
		from := e.peerOf(peer, theirs != roleMember)
		for i, raw := range recv {
			arr[i] = device.Arrival{Raw: raw, From: from}
		}
		_, eff := m.team.Receive(e.clock(), arr)
		e.apply(n, ti, eff)
		return n.version - before, nil
	}
	st := n.carried[ti]
	if st == nil {
		st = newStore(e.in)
		n.carried[ti] = st
	}
	for _, raw := range recv {
		env, err := envelope.Unmarshal(e.teams[ti].topic, raw)
		if err != nil || e.expired(env.ID) {
			continue
		}
		if st.put(uint64(env.Time), env.ID, raw) {
			n.version++
			n.carryQ = append(n.carryQ, carriedRef{team: ti, id: env.ID})
		}
	}
	e.enforceBuffer(n)
	return n.version - before, nil
}

// handOff records that `to` got envelope id from `from`: its hops, and the
// copies it may hand on (binary spray: half of the giver's).
func (e *engine) handOff(from, to *node, ti int, id crdt.OpID, dep bool) {
	if h, ok := to.held[id]; ok {
		if h.dep && !dep {
			// Handed on in its own right now: it may travel on.
			h.dep = false
			if fh := from.held[id]; fh != nil && fh.copies > 1 {
				give := fh.copies / 2
				fh.copies -= give
				h.copies = give
			}
		}
		return
	}
	h := &holding{at: e.now, hops: 1, dep: dep}
	if fh := from.held[id]; fh != nil {
		h.hops = fh.hops + 1
		if dep {
			h.copies = 1
		} else if fh.copies > 1 {
			give := fh.copies / 2
			fh.copies -= give
			h.copies = give
		} else if fh.copies == 1 {
			h.copies = 1
		}
	}
	if h.copies == 0 && e.teamCopies(ti) > 0 {
		h.copies = 1
	}
	to.held[id] = h
	if _, ok := e.byID[id]; ok {
		e.res.Relayed++
		to.stats.Relayed++
	}
}

// apply makes a core's effects durable, reopens what it asks, and records
// deliveries.
func (e *engine) apply(n *node, ti int, eff device.Effects) {
	m := n.teams[ti]
	for round := 0; ; round++ {
		for _, r := range eff.Write.Envelopes {
			if m.store.put(r.Time, r.ID, r.Data) {
				n.version++
			}
			if _, ok := n.held[r.ID]; !ok {
				n.held[r.ID] = &holding{at: e.now}
			}
		}
		for _, r := range eff.Write.Ops {
			e.delivered(n, r.ID)
		}
		e.res.Bans += len(eff.Ban)
		if len(eff.Reopen) == 0 || round > 64 {
			return
		}
		arr := make([]device.Arrival, 0, len(eff.Reopen))
		for _, id := range eff.Reopen {
			if raw, ok := m.store.envs[id]; ok {
				arr = append(arr, device.Arrival{Raw: raw, Reopen: true})
			}
		}
		_, eff = m.team.Receive(e.clock(), arr)
	}
}

func (e *engine) delivered(n *node, id crdt.OpID) {
	mi, ok := e.byID[id]
	if !ok {
		return
	}
	m := e.msgs[mi]
	if !m.isRecipient(n.idx) || m.deliveredTo(n.idx) {
		return
	}
	hops := 0
	if h := n.held[id]; h != nil {
		hops = int(h.hops)
	}
	m.Deliveries = append(m.Deliveries, Delivery{Device: n.idx, At: e.now, Hops: hops})
	e.pending--
}

func (e *engine) onMessage(i int) error {
	ms := e.cfg.Messages[i]
	n := e.nodes[ms.From]
	m := n.teams[ms.Team]
	res := &MessageResult{Index: i, Team: ms.Team, From: ms.From, To: ms.To, Created: e.now, Priority: ms.Priority, TTL: ms.TTL}
	if ms.To >= 0 {
		res.Recipients = []int{ms.To}
	} else {
		for _, x := range e.teams[ms.Team].spec.Members {
			if x != ms.From {
				res.Recipients = append(res.Recipients, x)
			}
		}
	}
	e.msgs = append(e.msgs, res)
	op, eff, err := m.team.Send(e.clock(), crdt.Message{Text: filler(ms.Size), Priority: ms.Priority})
	if err != nil {
		res.Failed = err.Error()
		return nil
	}
	id := op.ID()
	e.byID[id] = len(e.msgs) - 1
	e.pending += len(res.Recipients)
	e.apply(n, ms.Team, eff)
	for _, r := range eff.Write.Envelopes {
		if r.ID == id {
			res.Size = len(r.Data)
		}
	}
	n.held[id] = &holding{at: e.now, copies: int32(e.cfg.Strategy.copiesFor(e.teamCopies(ms.Team), ms.Priority))}
	e.kick(n)
	return nil
}

// kick starts a round on n's open contacts that are idle: what it just
// stored or made goes out while they last, as the node's gossip would.
func (e *engine) kick(n *node) {
	for _, o := range sortedKeys(n.open) {
		c := n.open[o]
		if c.active == 0 && c.rounds < maxRounds {
			e.startRound(c)
		}
	}
}

func (e *engine) onTick(i int) error {
	n := e.nodes[i]
	before := n.version
	for _, ti := range sortedKeys(n.teams) {
		m := n.teams[ti]
		eff := m.team.Tick(e.clock(), device.TickOptions{})
		e.apply(n, ti, eff)
	}
	e.expireCarried(n)
	if n.version != before {
		e.kick(n)
	}
	e.push(&event{at: e.now + e.cfg.TickEvery, kind: evTick, idx: i})
	return nil
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// filler is a message text of n bytes.
func filler(n int) string {
	if n < 1 {
		n = 1
	}
	if n > crdt.MaxTextLen {
		n = crdt.MaxTextLen
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}
