package device

// TestConvergence is the convergence property test of the device core: 5
// to 50 devices of one team (created by one, the others joined through
// Join with its history, then met once so that everyone can read every
// message), random schedules of partitions, merges, reconciliations
// (Reconcile) whose envelopes are dropped, duplicated and reordered on the
// way, gossip, restarts (New from the device's store), re-keys, ticks,
// clock skew up to ±24 h and dead batteries in 1970 (each device's Team is
// given its own clock), and a few devices that send garbage in
// reconciliations. After a final full merge:
//
//   - every honest device shows the identical state, equal to that of a
//     fresh log of its ops;
//   - no acknowledged op (one that some device stored opened: its own, or
//     one it received and judged, in a Write that was applied) is lost:
//     every honest device stores its envelope and the op, and stores no
//     other op (it may carry envelopes it cannot read);
//   - every message whose Write was applied is shown exactly once, and no
//     reply (or child) before what it answers; read implies received.
//
// During the run: a restart changes no state; garbage changes no honest
// device's state and stores no op (a device may carry what a member sealed
// in an epoch it cannot read: it cannot tell garbage from history); honest
// peers never reject each other's envelopes, and no honest peer is ever
// named in an Effects.Ban.
//
// Each schedule derives from one seed, printed on failure with the last
// steps of its trace. Commands:
//
//	go test -run TestConvergence -count=1 ./sync/device/                                   # default: 1,000 schedules (200 under -race)
//	go test -run TestConvergence -count=1 ./sync/device/ -device.schedules=10000            # make convergence
//	go test -run TestConvergence -count=1 -timeout 120m ./sync/device/ -device.schedules=100000  # make soak
//	go test -run TestConvergence -v ./sync/device/ -device.seed=N                          # replay one schedule, with its whole trace
//
// -device.base=N fixes the seed of the first schedule (default: from the
// time, printed), so a whole run replays too.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

var (
	convSeed      = flag.Uint64("device.seed", 0, "TestConvergence: replay only the schedule with this seed, with its trace (0: run -device.schedules schedules)")
	convSchedules = flag.Int("device.schedules", convDefaultSchedules, "TestConvergence: number of schedules")
	convBase      = flag.Uint64("device.base", 0, "TestConvergence: seed of the first schedule (0: from the time)")
)

func TestConvergence(t *testing.T) {
	defer goleak.VerifyNone(t)
	if *convSeed != 0 {
		st, err := runConvergence(*convSeed, t.Logf)
		if err != nil {
			t.Fatalf("schedule %d: %v", *convSeed, err)
		}
		t.Logf("schedule %d: %s", *convSeed, &st)
		return
	}
	// Schedules allocate many small, short-lived objects; collecting less
	// often saves time.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	n := *convSchedules
	base := *convBase
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	t.Logf("%d schedules, seeds %d to %d (replay one with -device.seed=N, the run with -device.base=%d)", n, base, base+uint64(n)-1, base)
	start := time.Now()
	var (
		mu     sync.Mutex
		total  convStats
		failed []uint64
		wg     sync.WaitGroup
	)
	next := make(chan uint64)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for seed := range next {
				st, err := runConvergence(seed, nil)
				mu.Lock()
				total.add(st)
				if err != nil {
					failed = append(failed, seed)
					if len(failed) <= 5 {
						t.Errorf("schedule %d failed: %v\n\treplay: go test -run 'TestConvergence$' -v ./sync/device/ -device.seed=%d", seed, err, seed)
					}
				}
				mu.Unlock()
			}
		})
	}
	for i := range uint64(n) {
		next <- base + i
	}
	close(next)
	wg.Wait()
	if len(failed) > 0 {
		slices.Sort(failed)
		t.Errorf("%d of %d schedules failed; seeds %v", len(failed), total.schedules, failed[:min(len(failed), 50)])
	}
	// Over many schedules every path the test claims must have run.
	if total.schedules >= 200 {
		for _, c := range []struct {
			n    int
			what string
		}{
			{total.rejected, "garbage envelopes rejected"},
			{total.refused, "garbage envelopes refused"},
			{total.held, "garbage envelopes held"},
			{total.sessionErrors, "sessions failed on mangled frames"},
			{total.bans, "garbage senders banned"},
			{total.restarts, "restarts"},
			{total.deadBatteries, "dead batteries"},
			{total.dropped, "envelopes dropped"},
			{total.duplicated, "envelopes duplicated"},
			{total.gossiped, "envelopes gossiped"},
			{total.rekeys, "re-keys"},
			{total.acks, "ack ops"},
		} {
			if c.n == 0 {
				t.Errorf("no %s in %d schedules", c.what, total.schedules)
			}
		}
	}
	t.Logf("%s in %v", &total, time.Since(start).Round(time.Millisecond))
}

// convStats counts what schedules did.
type convStats struct {
	schedules, devices, garbageDevices, ops, steps int
	reconciles, frames, dropped, duplicated        int
	gossiped, syncAsked                            int
	attacks, garbage, rejected, refused, held      int
	sessionErrors, bans, refusedBanned             int
	restarts, deadBatteries, rekeys, ticks         int
	messages, acks, acked, finalRounds             int
	carried, garbageCarried, reopened              int
}

func (s *convStats) add(o convStats) {
	s.schedules += o.schedules
	s.devices += o.devices
	s.garbageDevices += o.garbageDevices
	s.ops += o.ops
	s.steps += o.steps
	s.reconciles += o.reconciles
	s.frames += o.frames
	s.dropped += o.dropped
	s.duplicated += o.duplicated
	s.gossiped += o.gossiped
	s.syncAsked += o.syncAsked
	s.attacks += o.attacks
	s.garbage += o.garbage
	s.rejected += o.rejected
	s.refused += o.refused
	s.held += o.held
	s.sessionErrors += o.sessionErrors
	s.bans += o.bans
	s.refusedBanned += o.refusedBanned
	s.restarts += o.restarts
	s.deadBatteries += o.deadBatteries
	s.rekeys += o.rekeys
	s.ticks += o.ticks
	s.messages += o.messages
	s.acks += o.acks
	s.acked += o.acked
	s.finalRounds += o.finalRounds
	s.carried += o.carried
	s.garbageCarried += o.garbageCarried
	s.reopened += o.reopened
}

func (s *convStats) String() string {
	return fmt.Sprintf("%d schedules, %d devices (%d sending garbage), %d publications, %d steps; "+
		"%d reconciliations (%d frames, %d envelopes dropped, %d duplicated), %d envelopes gossiped, %d syncs asked; "+
		"%d attacks: %d garbage envelopes (%d rejected, %d refused, %d held, %d carried by a device that could not read them), %d sessions failed on mangled frames, %d bans, %d syncs refused to banned peers; "+
		"%d restarts (%d dead batteries), %d re-keys, %d ticks; %d messages shown, %d ack ops, %d acknowledged ops, %d envelopes reopened, %d carried at the end; %d final merge rounds",
		s.schedules, s.devices, s.garbageDevices, s.ops, s.steps,
		s.reconciles, s.frames, s.dropped, s.duplicated, s.gossiped, s.syncAsked,
		s.attacks, s.garbage, s.rejected, s.refused, s.held, s.garbageCarried, s.sessionErrors, s.bans, s.refusedBanned,
		s.restarts, s.deadBatteries, s.rekeys, s.ticks, s.messages, s.acks, s.acked, s.reopened, s.carried, s.finalRounds)
}

// convDev is one device of a schedule.
type convDev struct {
	i       int
	name    string
	dev     *identity.Device
	cfg     Config
	team    *Team
	store   *memStore
	skew    time.Duration // its clock reads the world's time plus skew
	group   int           // partition group
	garbage bool          // it sends garbage in some reconciliations
	garbler *garbageMaker // how, if it does
	// bannedUntil is when the peers it banned (by index) may sync with it
	// again, in the world's time.
	bannedUntil map[int]time.Time
}

func (d *convDev) peer() Peer { return Peer{ID: d.name, Device: d.dev.ID()} }

// convWorld is one schedule's state.
type convWorld struct {
	rng   *rand.Rand
	r     io.Reader // keys and salts, from the seed
	logf  func(string, ...any)
	trace []string // the last steps, for a failure
	team  crdt.TeamID
	now   time.Time // the true (virtual) time
	devs  []*convDev
	// acked holds every op some device stored opened (in a Write that was
	// applied: its own, or one it received and judged); sent the messages
	// published (their Write applied). Envelopes a device stores without
	// opening them (carried for others) are not acknowledged by it.
	acked, sent map[crdt.OpID]bool
	outbox      []gossip // published, not yet gossiped
	st          convStats
}

// gossip is one envelope a device published.
type gossip struct {
	from *convDev
	raw  []byte
}

// convPool returns 64 device identities, made once: key generation is a
// large part of a small schedule's cost, and which keys the devices have
// does not matter (each schedule has its own team). Schedules pick their
// devices from the pool by their seed.
var convPool = sync.OnceValue(func() []*identity.Device {
	keys := rand.NewChaCha8([32]byte{'f', 'i', 'e', 'l', 'd', 'm', 'e', 's', 'h'})
	devs := make([]*identity.Device, 64)
	for i := range devs {
		d, err := identity.Generate(keys)
		if err != nil {
			panic(err) // a ChaCha8 reader does not fail
		}
		devs[i] = d
	}
	return devs
})

// runConvergence runs the schedule of seed and checks the properties;
// logf, if not nil, gets the whole trace.
func runConvergence(seed uint64, logf func(string, ...any)) (convStats, error) {
	w := &convWorld{
		rng:   rand.New(rand.NewPCG(seed, seed^0x5eed)),
		r:     detRand(seed),
		logf:  logf,
		now:   time.Date(2025, 3, 1, 6, 0, 0, 0, time.UTC).Add(time.Duration(seed%1000) * time.Hour),
		acked: make(map[crdt.OpID]bool),
		sent:  make(map[crdt.OpID]bool),
	}
	err := w.run()
	if err != nil {
		err = fmt.Errorf("%w\n\tlast steps:\n\t\t%s", err, strings.Join(w.trace, "\n\t\t"))
	}
	w.st.schedules = 1
	return w.st, err
}

func (w *convWorld) tracef(format string, args ...any) {
	line := w.now.Format("01-02 15:04:05 ") + fmt.Sprintf(format, args...)
	if w.logf != nil {
		w.logf("%s", line)
	}
	if len(w.trace) >= 40 {
		w.trace = w.trace[1:]
	}
	w.trace = append(w.trace, line)
}

// timeOf is d's clock reading.
func (w *convWorld) timeOf(d *convDev) time.Time { return w.now.Add(d.skew) }

// skewed returns a random clock skew: mostly small, sometimes ±24 h.
func (w *convWorld) skewed() time.Duration {
	switch x := w.rng.IntN(10); {
	case x < 5:
		return time.Duration(w.rng.IntN(4000)-2000) * time.Millisecond
	case x < 7:
		return time.Duration(w.rng.Int64N(int64(48*time.Hour))) - 24*time.Hour
	case x < 8:
		return 24 * time.Hour
	case x < 9:
		return -24 * time.Hour
	}
	return 0
}

// skewedInt returns a random int in [lo, hi], skewed towards lo (u^e for
// u uniform in [0, 1)): most schedules are small and fast, some are large.
func (w *convWorld) skewedInt(lo, hi int, e float64) int {
	return lo + int(float64(hi-lo+1)*math.Pow(w.rng.Float64(), e))
}

// apply makes d's effects durable and acts on the rest: what it publishes
// is gossiped later, the peers it bans are refused for an hour (an honest
// one is a failure), and what it can now read is given to it again.
func (w *convWorld) apply(d *convDev, eff Effects) error {
	d.store.write(eff.Write)
	for _, r := range eff.Write.Ops {
		w.acked[r.ID] = true
	}
	for _, raw := range eff.Publish {
		w.outbox = append(w.outbox, gossip{from: d, raw: raw})
	}
	w.st.syncAsked += len(eff.Sync)
	for _, p := range eff.Ban {
		j := slices.IndexFunc(w.devs, func(e *convDev) bool { return e.name == p.ID })
		if j < 0 || !w.devs[j].garbage {
			return fmt.Errorf("%s banned %s, an honest peer", d.name, p.ID)
		}
		d.bannedUntil[j] = w.now.Add(time.Hour)
		w.st.bans++
		w.tracef("%s bans %s", d.name, p.ID)
	}
	if len(eff.Reopen) > 0 {
		w.st.reopened += len(eff.Reopen)
		_, more := d.team.Receive(w.timeOf(d), reopened(d.store, eff.Reopen))
		return w.apply(d, more)
	}
	return nil
}

// side is d as a side of a Reconcile, with its real store.
func (w *convWorld) side(d *convDev) Side {
	return Side{
		Team:  d.team,
		Store: storeSource{d.store},
		Apply: func(eff Effects) error { return w.apply(d, eff) },
		Peer:  d.peer(),
		Now:   w.timeOf(d),
	}
}

func (w *convWorld) newDevice(i int, dev *identity.Device) *convDev {
	d := &convDev{i: i, name: fmt.Sprintf("d%d", i), dev: dev, store: newMemStore(), bannedUntil: make(map[int]time.Time),
		cfg: Config{Device: dev, Team: w.team, Rand: w.r, AckInterval: -1}}
	return d
}

func (w *convWorld) run() error {
	if _, err := io.ReadFull(w.r, w.team[:]); err != nil {
		return err
	}
	// Sizes: most schedules are small; the cost grows with devices ×
	// (devices + ops).
	n := w.skewedInt(5, 50, 5)
	nGarbage := w.rng.IntN(min(3, n/4) + 1)
	nOps := w.skewedInt(5, 60, 4)
	nSteps := w.skewedInt(10, 80, 2)
	w.st.devices, w.st.garbageDevices = n, nGarbage
	w.tracef("%d devices (%d sending garbage), %d publications, %d steps", n, nGarbage, nOps, nSteps)
	pool := convPool()
	perm := w.rng.Perm(len(pool))
	for i, k := range perm[:n] {
		d := w.newDevice(i, pool[k])
		if i > 0 { // the creator's clock is right
			d.skew = w.skewed()
		}
		w.devs = append(w.devs, d)
	}
	outsider := pool[perm[n]]
	for _, i := range w.rng.Perm(n - 1)[:nGarbage] {
		w.devs[i+1].garbage = true
	}
	if err := w.found(); err != nil {
		return err
	}
	for _, d := range w.devs {
		if d.garbage {
			d.garbler = &garbageMaker{g: d.team, store: d.store, outsider: outsider, rng: w.rng}
		}
	}
	// The schedule: nOps publications and nSteps other events, shuffled.
	events := make([]bool, nOps+nSteps) // true: publish
	for i := range nOps {
		events[i] = true
	}
	w.rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	for _, pub := range events {
		w.now = w.now.Add(time.Duration(w.rng.IntN(600_000)) * time.Millisecond)
		var err error
		if pub {
			w.st.ops++
			err = w.publish()
		} else {
			w.st.steps++
			err = w.step()
		}
		if err == nil {
			err = w.flushGossip(0.6)
		}
		if err != nil {
			return err
		}
	}
	return w.finish()
}

// found has d0 create the team and add the others, in one to four
// commits (one per device in small teams, as a join answer makes; fewer in
// large ones, since every device tries its box in each commit it
// receives); each joins with d0's history right after its commit. Some
// honest devices are admins.
func (w *convWorld) found() error {
	c := w.devs[0]
	tm, eff, err := Create(c.cfg, w.timeOf(c), "Ward 7", crdt.Clinical, c.name)
	if err != nil {
		return err
	}
	c.cfg.Genesis, c.team = tm.Genesis(), tm
	if err := w.apply(c, eff); err != nil {
		return err
	}
	rest := w.devs[1:]
	batches := 1 + w.rng.IntN(min(4, len(rest)))
	for b := range batches {
		batch := rest[b*len(rest)/batches : (b+1)*len(rest)/batches]
		var changes []crdt.Change
		for _, d := range batch {
			admin := !d.garbage && w.rng.IntN(8) == 0
			changes = append(changes, crdt.Change{Action: crdt.ActAdd, Info: crdt.MemberInfo{Device: d.dev.ID(), Noise: d.dev.NoisePublic(), Name: d.name, Admin: admin}})
		}
		w.now = w.now.Add(time.Second)
		// Each joiner's join-request prekey, as node/join carries it.
		prekeys := make(map[identity.DeviceID]*epochkey.Prekey, len(batch))
		boxTo := make(map[identity.DeviceID]identity.NoisePublic, len(batch))
		for _, d := range batch {
			pk, err := epochkey.NewPrekey(d.cfg.Rand)
			if err != nil {
				return err
			}
			prekeys[d.dev.ID()], boxTo[d.dev.ID()] = &pk, pk.Public
		}
		_, eff, err := c.team.ChangeFor(w.timeOf(c), boxTo, changes...)
		if err != nil {
			return fmt.Errorf("d0 adds %d devices: %w", len(batch), err)
		}
		if err := w.apply(c, eff); err != nil {
			return err
		}
		hist := c.team.History(func(id crdt.OpID) []byte { return c.store.envs[id].Data })
		for _, d := range batch {
			cfg := d.cfg
			cfg.Genesis = c.cfg.Genesis
			cfg.JoinPrekey = prekeys[d.dev.ID()]
			tm, eff, err := Join(cfg, w.timeOf(d), hist)
			if err != nil {
				return fmt.Errorf("%s joins: %w", d.name, err)
			}
			cfg.JoinPrekey = nil
			d.cfg, d.team = cfg, tm
			if err := w.apply(d, eff); err != nil {
				return err
			}
		}
		w.tracef("d0 adds %d devices", len(batch))
	}
	// Everyone meets d0 before anyone sends, so that every message is
	// sealed in an epoch every device is a recipient of: a device cannot
	// read what was sealed before it joined, and this test is about
	// devices that received the same ops.
	for _, d := range rest {
		if err := w.reconcile(d, c, false); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	for _, d := range w.devs {
		s := d.team.State()
		if s.Current < 0 || !d.team.keys.CanSend(s.Epochs[s.Current].ID) {
			return fmt.Errorf("setup: %s cannot send in the current epoch after meeting d0", d.name)
		}
	}
	return nil
}

// publish has a random device send a message (sometimes a reply, urgent,
// with a patient reference) or acknowledge what it shows (some of it as
// read).
func (w *convWorld) publish() error {
	d := w.devs[w.rng.IntN(len(w.devs))]
	now := w.timeOf(d)
	if w.rng.IntN(5) == 0 {
		if msgs := d.team.State().Messages; len(msgs) > 0 && w.rng.IntN(2) == 0 {
			var read []crdt.OpID
			for _, m := range msgs {
				if w.rng.IntN(2) == 0 {
					read = append(read, m.ID)
				}
			}
			d.team.MarkRead(read)
		}
		k, eff, err := d.team.Acks(now)
		if err != nil {
			w.tracef("%s cannot acknowledge: %v", d.name, err)
		}
		w.st.acks += k
		w.tracef("%s acknowledges: %d ops", d.name, k)
		return w.apply(d, eff)
	}
	m := crdt.Message{Text: fmt.Sprintf("from %s at %v", d.name, w.now.Format(time.TimeOnly)), Priority: crdt.Priority(w.rng.IntN(3))}
	if w.rng.IntN(4) == 0 {
		m.Patient = fmt.Sprintf("MRN %04d", w.rng.IntN(10000))
	}
	if w.rng.IntN(3) == 0 {
		if msgs := d.team.State().Messages; len(msgs) > 0 {
			id := msgs[w.rng.IntN(len(msgs))].ID
			m.ReplyTo = &id
		}
	}
	op, eff, err := d.team.Send(now, m)
	if err != nil {
		w.tracef("%s cannot send: %v", d.name, err)
		return nil
	}
	w.sent[op.ID()] = true
	w.tracef("%s sends %s at %v", d.name, op.ID().Short(), op.Time.Time().UTC().Format(time.DateTime))
	return w.apply(d, eff)
}

// step runs one event other than a publication.
func (w *convWorld) step() error {
	n := len(w.devs)
	switch x := w.rng.IntN(100); {
	case x < 10: // partition into 2 to 4 groups
		k := 2 + w.rng.IntN(3)
		for _, d := range w.devs {
			d.group = w.rng.IntN(k)
		}
		w.tracef("partition into %d groups", k)
	case x < 18: // merge
		for _, d := range w.devs {
			d.group = 0
		}
		w.tracef("merge")
	case x < 26: // restart, sometimes with a dead battery or a new skew
		d := w.devs[w.rng.IntN(n)]
		switch w.rng.IntN(4) {
		case 0:
			d.skew = time.Unix(0, 0).Sub(w.now) // the wall clock reads 1970
			w.st.deadBatteries++
		case 1:
			d.skew = w.skewed()
		}
		w.tracef("%s restarts, skew %v", d.name, d.skew)
		return w.restart(d)
	case x < 30: // a clock changes
		d := w.devs[w.rng.IntN(n)]
		d.skew = w.skewed()
		w.tracef("%s clock skew now %v", d.name, d.skew)
	case x < 33: // an admin re-keys
		d := w.devs[w.rng.IntN(n)]
		if p, ok := d.team.State().PersonOf(d.dev.ID()); ok && p.Admin {
			op, eff, err := d.team.Change(w.timeOf(d))
			if err != nil {
				w.tracef("%s cannot re-key: %v", d.name, err)
				return nil
			}
			w.st.rekeys++
			w.tracef("%s re-keys: %s", d.name, op.ID().Short())
			return w.apply(d, eff)
		}
	case x < 37: // time passes; every device ticks
		w.now = w.now.Add(time.Duration(w.rng.IntN(1800)) * time.Second)
		return w.tickAll()
	case x < 50: // a garbage device attacks an honest one
		if g := w.pick(func(d *convDev) bool { return d.garbage }); g != nil {
			if h := w.pick(func(d *convDev) bool { return !d.garbage && d.group == g.group }); h != nil {
				return w.attack(g, h)
			}
		}
	case x < 75: // one pair meets
		a := w.devs[w.rng.IntN(n)]
		if b := w.pick(func(d *convDev) bool { return d != a && d.group == a.group }); b != nil {
			return w.reconcile(a, b, true)
		}
	default: // a round: several pairs meet
		for range 1 + w.rng.IntN(min(n, 6)) {
			a := w.devs[w.rng.IntN(n)]
			if b := w.pick(func(d *convDev) bool { return d != a && d.group == a.group }); b != nil {
				if err := w.reconcile(a, b, true); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// pick returns a random device satisfying ok, or nil.
func (w *convWorld) pick(ok func(*convDev) bool) *convDev {
	var c []*convDev
	for _, d := range w.devs {
		if ok(d) {
			c = append(c, d)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[w.rng.IntN(len(c))]
}

// restart drops d's Team and restores it from its store, which must give
// the same state.
func (w *convWorld) restart(d *convDev) error {
	before := d.team.State()
	tm, err := New(d.cfg, w.timeOf(d), d.store.stored())
	if err != nil {
		return fmt.Errorf("%s restores: %w", d.name, err)
	}
	d.team = tm
	if d.garbler != nil {
		d.garbler.g = tm
	}
	w.st.restarts++
	if after := d.team.State(); !reflect.DeepEqual(after, before) {
		return fmt.Errorf("%s: state changed across a restart:\n%s", d.name, diffStates(*after, *before))
	}
	return nil
}

func (w *convWorld) tickAll() error {
	for _, d := range w.devs {
		eff := d.team.Tick(w.timeOf(d), TickOptions{NoAcks: w.rng.IntN(2) == 0})
		w.st.ticks++
		if err := w.apply(d, eff); err != nil {
			return err
		}
	}
	w.tracef("every device ticks")
	return nil
}

// flushGossip delivers what devices published to each other device of the
// publisher's group with probability p (each a Receive of one envelope),
// until nothing more is published.
func (w *convWorld) flushGossip(p float64) error {
	for round := 0; len(w.outbox) > 0; round++ {
		if round > 100 {
			return errors.New("gossip does not settle: devices keep publishing")
		}
		out := w.outbox
		w.outbox = nil
		for _, g := range out {
			for _, d := range w.devs {
				if d == g.from || d.group != g.from.group || w.rng.Float64() >= p {
					continue
				}
				_, eff := d.team.Receive(w.timeOf(d), []Arrival{{Raw: g.raw, From: g.from.peer()}})
				w.st.gossiped++
				if err := w.apply(d, eff); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// banned reports whether a or b refuses the other for now.
func (w *convWorld) banned(a, b *convDev) bool {
	return w.now.Before(a.bannedUntil[b.i]) || w.now.Before(b.bannedUntil[a.i])
}

// reconcile runs a reconciliation between a and b, with random faults if
// faulty. Between devices that follow the protocol (garbage devices do
// here) it must succeed.
func (w *convWorld) reconcile(a, b *convDev, faulty bool) error {
	if w.banned(a, b) {
		w.st.refusedBanned++
		w.tracef("%s and %s do not sync: banned", a.name, b.name)
		return nil
	}
	if !a.team.MaySync(b.peer()) || !b.team.MaySync(a.peer()) {
		return fmt.Errorf("%s and %s, both members, may not sync", a.name, b.name)
	}
	opt := ReconcileOptions{Rand: w.r}
	if faulty && w.rng.IntN(2) == 0 {
		f := LinkFaults{
			Rand:      w.rng,
			Drop:      w.rng.Float64() * 0.3,
			Duplicate: w.rng.Float64() * 0.3,
			Reorder:   w.rng.IntN(2) == 0,
		}
		opt.ToInitiator, opt.ToResponder = f, f
	}
	if w.rng.IntN(3) == 0 {
		opt.MaxFrame = recon.MinFrameSize // the slowest links' frames
	}
	res, err := Reconcile(w.side(a), w.side(b), opt)
	w.st.reconciles++
	w.st.frames += res.Frames
	w.st.dropped += res.Initiator.Dropped + res.Responder.Dropped
	w.st.duplicated += res.Initiator.Duplicated + res.Responder.Duplicated
	w.tracef("%s <-> %s: %v/%v, %d frames, faults %v", a.name, b.name, res.Initiator.Verdicts, res.Responder.Verdicts, res.Frames, opt.ToInitiator.Rand != nil)
	if err != nil {
		return fmt.Errorf("reconcile %s (initiator) with %s: %w", a.name, b.name, err)
	}
	for _, s := range []SideStats{res.Initiator, res.Responder} {
		if s.Verdicts[Rejected] > 0 {
			return fmt.Errorf("reconcile %s with %s: %d envelopes rejected between honest peers", a.name, b.name, s.Verdicts[Rejected])
		}
	}
	return nil
}

// attack has garbage device g reconcile with honest device h offering only
// garbage (and, a third of the time, mangling the frames h reads). h must
// refuse it all: what it shows and stores does not change.
func (w *convWorld) attack(g, h *convDev) error {
	if w.banned(g, h) {
		w.st.refusedBanned++
		w.tracef("%s does not sync with %s: banned", h.name, g.name)
		return nil
	}
	w.st.attacks++
	var src listSource
	var kinds []string
	k := 1 + w.rng.IntN(6)
	if w.rng.IntN(4) == 0 {
		k = 12 + w.rng.IntN(12) // a burst: enough to be banned for
	}
	for range k {
		kind := garbageKinds[w.rng.IntN(len(garbageKinds))]
		if t, id, raw, ok := g.garbler.make(kind, h.team, w.timeOf(g)); ok {
			src.add(t, id, raw)
			kinds = append(kinds, kind)
		}
	}
	w.st.garbage += len(kinds)
	before, beforeOps, beforeEnvs := h.team.State(), len(h.store.ops), len(h.store.envs)
	bad := w.side(g)
	bad.Store = &src
	var f LinkFaults
	if w.rng.IntN(3) == 0 {
		f = LinkFaults{Rand: w.rng, Mangle: 0.5}
	}
	var res ReconcileResult
	var err error
	var got SideStats
	if w.rng.IntN(2) == 0 {
		res, err = Reconcile(bad, w.side(h), ReconcileOptions{Rand: w.r, ToResponder: f})
		got = res.Responder
	} else {
		res, err = Reconcile(w.side(h), bad, ReconcileOptions{Rand: w.r, ToInitiator: f})
		got = res.Initiator
	}
	w.st.reconciles++
	w.st.frames += res.Frames
	w.st.rejected += got.Verdicts[Rejected]
	w.st.refused += got.Verdicts[Refused]
	w.st.held += got.Verdicts[Held]
	switch {
	case err == nil, errors.Is(err, ErrPeerBanned):
	case errors.Is(err, recon.ErrVersion), errors.Is(err, recon.ErrMalformed), errors.Is(err, recon.ErrProtocol),
		errors.Is(err, recon.ErrUnexpectedFrame), errors.Is(err, recon.ErrFrameTooLarge), errors.Is(err, recon.ErrTooManyItems),
		errors.Is(err, recon.ErrTooManyRounds), errors.Is(err, recon.ErrEnvelopeTooLarge):
		w.st.sessionErrors++
	default:
		return fmt.Errorf("%s attacks %s: %w", g.name, h.name, err)
	}
	w.tracef("%s attacks %s with %v (mangled frames %v): %v: %v", g.name, h.name, kinds, f.Rand != nil, got.Verdicts, err)
	if after := h.team.State(); !reflect.DeepEqual(after, before) {
		return fmt.Errorf("garbage %v from %s changed the state of %s:\n%s", kinds, g.name, h.name, diffStates(*after, *before))
	}
	// It may carry what it cannot read and a member sealed (it cannot
	// tell garbage from history), and store nothing opened.
	if got := len(h.store.ops); got != beforeOps {
		return fmt.Errorf("%s stored %d ops of garbage %v from %s", h.name, got-beforeOps, kinds, g.name)
	}
	w.st.garbageCarried += len(h.store.envs) - beforeEnvs
	return nil
}

// finish heals the partitions, lets bans expire, and merges everyone
// through d0 without faults: ticks, then a star through d0 twice (every
// device's envelopes reach d0, then d0's reach everyone), repeated (up to
// four rounds, 11 minutes apart, for held envelopes and box budgets that
// wait for time) until every honest device stores the same envelopes.
// Then it checks the properties.
func (w *convWorld) finish() error {
	for _, d := range w.devs {
		d.group = 0
	}
	w.now = w.now.Add(2 * time.Hour)
	w.tracef("final merge")
	n := len(w.devs)
	for round := range 4 {
		w.st.finalRounds++
		if err := w.tickAll(); err != nil {
			return err
		}
		for range 2 {
			for i := 1; i < n; i++ {
				a, b := w.devs[i], w.devs[0]
				if w.rng.IntN(2) == 0 {
					a, b = b, a
				}
				if err := w.reconcile(a, b, false); err != nil {
					return fmt.Errorf("final merge: %w", err)
				}
			}
		}
		if err := w.flushGossip(1); err != nil {
			return err
		}
		if w.storesAgree() {
			break
		}
		w.tracef("final merge round %d: stores differ", round)
		w.now = w.now.Add(11 * time.Minute)
	}
	// A restart must not change anything: the store is the truth.
	for _, k := range w.rng.Perm(n)[:2] {
		if err := w.restart(w.devs[k]); err != nil {
			return err
		}
	}
	var ref *convDev
	for _, d := range w.devs {
		if d.garbage {
			continue
		}
		// No acknowledged op is lost: each is stored, envelope and op. What
		// else is stored is carried, not opened.
		for _, id := range sortedIDs(w.acked) {
			if _, ok := d.team.Op(id); !ok || !d.team.Has(id) || d.store.envs[id].Data == nil || d.store.ops[id] == nil {
				return fmt.Errorf("%s lost acknowledged op %s: %s", d.name, id.Short(), w.whereIs(id, d))
			}
		}
		if got, want := len(d.store.ops), len(w.acked); got != want {
			return fmt.Errorf("%s stores %d ops; want the %d acknowledged", d.name, got, want)
		}
		w.st.carried += len(d.store.envs) - len(w.acked)
		if ref == nil {
			ref = d
			if err := w.checkState(d); err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
			continue
		}
		if got, want := d.team.State(), ref.team.State(); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("%s and %s show different states:\n%s", d.name, ref.name, diffStates(*got, *want))
		}
	}
	s := ref.team.State()
	w.st.messages = len(s.Messages)
	w.st.acked = len(w.acked)
	return nil
}

// whereIs describes op id as d has it, and who made it.
func (w *convWorld) whereIs(id crdt.OpID, d *convDev) string {
	var what string
	for _, o := range w.devs {
		if op, ok := o.team.Op(id); ok {
			what = fmt.Sprintf("a %v op by %s at %v (parents %d, epoch tag %08x)", op.Kind, w.nameOf(op.Author), op.Time.Time().UTC().Format(time.DateTime), len(op.Parents), op.Seal.Epoch)
			break
		}
	}
	_, opened := d.team.Op(id)
	switch {
	case opened && d.team.Has(id):
		return what + ", stored"
	case opened:
		return what + ", in its log without its envelope"
	case d.team.Has(id):
		return what + ", carried: stored, not opened"
	case d.team.pending.get(id) != nil:
		return what + ", held"
	}
	return what + ", never received or dropped"
}

func (w *convWorld) nameOf(dev identity.DeviceID) string {
	for _, d := range w.devs {
		if d.dev.ID() == dev {
			return d.name
		}
	}
	return dev.Short()
}

// storesAgree reports whether every honest device stores the acknowledged
// ops and no more.
func (w *convWorld) storesAgree() bool {
	for _, d := range w.devs {
		if !d.garbage && len(d.store.ops) != len(w.acked) {
			return false
		}
	}
	return true
}

func sortedIDs(m map[crdt.OpID]bool) []crdt.OpID {
	ids := make([]crdt.OpID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, crdt.OpID.Compare)
	return ids
}

// checkState checks what device d shows: every device a member, every
// message whose Write was applied shown exactly once, no garbage, nothing
// before what it replies to or builds on, read only if received, and the
// state equal to that of a fresh log of the same ops.
func (w *convWorld) checkState(d *convDev) error {
	s := d.team.State()
	if got, want := len(s.Members), len(w.devs); got != want {
		return fmt.Errorf("%d members; want %d", got, want)
	}
	pos := make(map[crdt.OpID]int, len(s.Messages))
	for i, m := range s.Messages {
		if _, dup := pos[m.ID]; dup {
			return fmt.Errorf("message %s shown twice", m.ID.Short())
		}
		pos[m.ID] = i
	}
	for _, id := range sortedIDs(w.sent) {
		if _, ok := pos[id]; !ok {
			return fmt.Errorf("message %s, whose Write was applied, not shown", id.Short())
		}
	}
	for _, m := range s.Messages {
		if m.Text == "garbage" {
			return fmt.Errorf("garbage message %s shown", m.ID.Short())
		}
		if m.ReplyTo != nil {
			if j, ok := pos[*m.ReplyTo]; ok && j >= pos[m.ID] {
				return fmt.Errorf("reply %s (at %d) shown before %s (at %d), which it answers", m.ID.Short(), pos[m.ID], m.ReplyTo.Short(), j)
			}
		}
		for _, r := range m.ReadBy {
			if _, ok := slices.BinarySearchFunc(m.ReceivedBy, r, func(a, b identity.DeviceID) int { return bytes.Compare(a[:], b[:]) }); !ok {
				return fmt.Errorf("message %s read but not received by %s", m.ID.Short(), r.Short())
			}
		}
	}
	// Causality: the latest shown ancestor of each shown message, through
	// any ops, is listed before it.
	ops := make(map[crdt.OpID]*crdt.Op)
	fresh := crdt.NewLog(w.team)
	for _, op := range d.team.lg.Ops() {
		ops[op.ID()] = op
		if _, err := fresh.Add(op); err != nil {
			return err
		}
	}
	latest := make(map[crdt.OpID]int) // memo: greatest position of a shown proper ancestor, -1 if none
	var anc func(id crdt.OpID) int
	anc = func(id crdt.OpID) int {
		if v, ok := latest[id]; ok {
			return v
		}
		latest[id] = -1 // a cycle cannot happen; this guards the recursion anyway
		best := -1
		for _, p := range ops[id].Parents {
			if _, ok := ops[p]; !ok {
				continue
			}
			if j, shown := pos[p]; shown {
				best = max(best, j)
			} else {
				best = max(best, anc(p))
			}
		}
		latest[id] = best
		return best
	}
	for _, m := range s.Messages {
		if j := anc(m.ID); j >= pos[m.ID] {
			return fmt.Errorf("message %s (at %d) shown before its ancestor at %d", m.ID.Short(), pos[m.ID], j)
		}
	}
	if got := fresh.State(); !reflect.DeepEqual(got, *s) {
		return fmt.Errorf("state differs from a fresh log of the same ops:\n%s", diffStates(got, *s))
	}
	return nil
}

// diffStates describes how two states differ, briefly.
func diffStates(a, b crdt.State) string {
	var sb strings.Builder
	if a.Name != b.Name || a.Creator != b.Creator || a.Kind != b.Kind {
		fmt.Fprintf(&sb, "team: %q %v vs %q %v\n", a.Name, a.Creator.Short(), b.Name, b.Creator.Short())
	}
	if !reflect.DeepEqual(a.Members, b.Members) {
		fmt.Fprintf(&sb, "members: %d vs %d\n", len(a.Members), len(b.Members))
	}
	if !reflect.DeepEqual(a.Epochs, b.Epochs) || a.Current != b.Current || a.NeedsRekey != b.NeedsRekey {
		fmt.Fprintf(&sb, "epochs: %d (current %d, re-key %v) vs %d (current %d, re-key %v)\n", len(a.Epochs), a.Current, a.NeedsRekey, len(b.Epochs), b.Current, b.NeedsRekey)
	}
	if !reflect.DeepEqual(a.Equivocations, b.Equivocations) {
		fmt.Fprintf(&sb, "equivocations: %v vs %v\n", a.Equivocations, b.Equivocations)
	}
	fmt.Fprintf(&sb, "messages: %d vs %d\n", len(a.Messages), len(b.Messages))
	for i := range min(len(a.Messages), len(b.Messages)) {
		if !reflect.DeepEqual(a.Messages[i], b.Messages[i]) {
			fmt.Fprintf(&sb, "first difference at %d: %s %v vs %s %v\n", i, a.Messages[i].ID.Short(), a.Messages[i].Time, b.Messages[i].ID.Short(), b.Messages[i].Time)
			break
		}
	}
	return sb.String()
}
