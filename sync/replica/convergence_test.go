package replica

// TestConvergence is issue #4's convergence property test: 5 to 50
// replicas, random schedules of partitions, merges, drops, duplicates,
// reorders, restarts and clock skew up to ±24 h (and dead batteries in
// 1970), with a few replicas sending garbage. After a final full merge,
// every honest replica shows the identical state, no acknowledged op is
// lost, none is shown twice, and no reply (or child) appears before what it
// answers. It runs once per reconciliation protocol in the `protocols`
// table.
//
// Each schedule derives from one seed, printed on failure. Commands:
//
//	go test -run TestConvergence -count=1 ./sync/replica/                               # default: 10,000 schedules per protocol (250 under -race)
//	go test -run TestConvergence -count=1 ./sync/replica/ -replica.schedules=10000      # what CI runs, without -race
//	go test -run TestConvergence -count=1 -timeout 60m ./sync/replica/ -replica.schedules=100000  # make soak
//	go test -run TestConvergence/catchup -v ./sync/replica/ -replica.seed=N           # replay one schedule, with a trace
//
// -replica.base=N fixes the seed of the first schedule (default: from the
// time, printed), so a whole run replays too.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
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

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// defaultSchedules is the default of -replica.schedules, per protocol:
// 10,000 (the CI bar), or 250 under the race detector, which is
// about 10 times slower; CI runs the full count in a separate step without
// -race.
var defaultSchedules = func() int {
	if raceEnabled {
		return 250
	}
	return 10_000
}()

var (
	seedFlag      = flag.Uint64("replica.seed", 0, "TestConvergence: replay only the schedule with this seed, with a trace (0: run -replica.schedules schedules)")
	schedulesFlag = flag.Int("replica.schedules", defaultSchedules, "TestConvergence: schedules per protocol")
	baseFlag      = flag.Uint64("replica.base", 0, "TestConvergence: seed of the first schedule (0: from the time)")
)

func TestConvergence(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.Name, func(t *testing.T) { convergence(t, p) })
	}
}

func convergence(t *testing.T, p Protocol) {
	if *seedFlag != 0 {
		st, err := runSchedule(*seedFlag, p, t.Logf)
		if err != nil {
			t.Fatalf("schedule %d (%s): %v", *seedFlag, p.Name, err)
		}
		t.Logf("%s: schedule %d: %s", p.Name, *seedFlag, &st)
		return
	}
	// Schedules allocate many small, short-lived objects; collecting less
	// often saves a fifth of the run time.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	n := *schedulesFlag
	base := *baseFlag
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	t.Logf("%s: %d schedules, seeds %d to %d (replay one with -replica.seed=N, the run with -replica.base=%d)", p.Name, n, base, base+uint64(n)-1, base)
	start := time.Now()

	var (
		mu       sync.Mutex
		total    stats
		failures int
		wg       sync.WaitGroup
	)
	next := make(chan uint64)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for seed := range next {
				st, err := runSchedule(seed, p, nil)
				mu.Lock()
				total.add(st)
				if err != nil {
					failures++
					if failures <= 5 {
						t.Errorf("schedule %d (%s) failed: %v\n\treplay: go test -run 'TestConvergence/%s$' -v ./sync/replica/ -replica.seed=%d", seed, p.Name, err, p.Name, seed)
					}
				}
				mu.Unlock()
			}
		})
	}
	for i := range uint64(n) {
		if i%64 == 0 {
			mu.Lock()
			stop := failures > 5
			mu.Unlock()
			if stop {
				break
			}
		}
		next <- base + i
	}
	close(next)
	wg.Wait()
	if failures > 0 {
		t.Errorf("%d of %d schedules failed", failures, total.schedules)
	}
	// Over many schedules every failure path must have run.
	if total.schedules >= 200 {
		switch {
		case total.rejected == 0:
			t.Errorf("no garbage envelope was rejected in %d schedules", total.schedules)
		case total.sessionErrors == 0:
			t.Errorf("no reconciliation failed on a garbage frame in %d schedules", total.schedules)
		case total.impossible == 0:
			t.Errorf("no impossible-parent op was accepted in %d schedules", total.schedules)
		case total.restarts == 0 || total.dropped == 0 || total.duplicated == 0:
			t.Errorf("faults not exercised: %d restarts, %d dropped, %d duplicated", total.restarts, total.dropped, total.duplicated)
		}
	}
	t.Logf("%s: %s in %v", p.Name, &total, time.Since(start).Round(time.Millisecond))
}

// stats counts what schedules did.
type stats struct {
	schedules, replicas, garbageReplicas, ops, steps     int
	reconciles, rejected, sessionErrors, impossible      int
	restarts, deadBatteries, dropped, duplicated, frames int
	messages, acked                                      int
}

func (s *stats) add(o stats) {
	s.schedules += o.schedules
	s.replicas += o.replicas
	s.garbageReplicas += o.garbageReplicas
	s.ops += o.ops
	s.steps += o.steps
	s.reconciles += o.reconciles
	s.rejected += o.rejected
	s.sessionErrors += o.sessionErrors
	s.impossible += o.impossible
	s.restarts += o.restarts
	s.deadBatteries += o.deadBatteries
	s.dropped += o.dropped
	s.duplicated += o.duplicated
	s.frames += o.frames
	s.messages += o.messages
	s.acked += o.acked
}

func (s *stats) String() string {
	return fmt.Sprintf("%d schedules, %d replicas (%d garbage), %d ops, %d steps, %d reconciliations (%d frames), "+
		"garbage rejected: %d envelopes, %d sessions failed, %d impossible-parent ops ignored; "+
		"%d restarts (%d dead batteries), %d envelopes dropped, %d duplicated; %d messages shown, %d acked by someone",
		s.schedules, s.replicas, s.garbageReplicas, s.ops, s.steps, s.reconciles, s.frames,
		s.rejected, s.sessionErrors, s.impossible, s.restarts, s.deadBatteries, s.dropped, s.duplicated, s.messages, s.acked)
}

// world is one schedule's state.
type world struct {
	rng     *rand.Rand
	proto   Protocol
	logf    func(string, ...any) // trace; nil when not replaying
	team    crdt.TeamID
	key     seal.EpochKey
	now     time.Time // the true (virtual) time
	reps    []*Replica
	skew    []time.Duration // wall clock of replica i = now + skew[i]
	garbage []bool          // replica i sends garbage
	group   []int           // partition group of each replica
	acked   map[crdt.OpID]bool
	sent    map[crdt.OpID]bool // messages published by honest replicas
	st      stats
}

func (w *world) tracef(format string, args ...any) {
	if w.logf != nil {
		w.logf(format, args...)
	}
}

// skewed returns a random clock skew: mostly small, sometimes ±24 h.
func (w *world) skewed() time.Duration {
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

// devicePool returns 64 device identities, made once: key generation is a
// large part of a small schedule's cost, and which keys the replicas have
// does not matter (each schedule has its own team, so its op ids are its
// own). Schedules pick their devices from the pool by their seed.
var devicePool = sync.OnceValue(func() []*identity.Device {
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

// runSchedule builds and runs the schedule of seed and checks the
// properties; logf, if not nil, traces it.
func runSchedule(seed uint64, p Protocol, logf func(string, ...any)) (stats, error) {
	w := &world{
		rng:   rand.New(rand.NewPCG(seed, seed^0x5eed)),
		proto: p,
		logf:  logf,
		now:   time.Date(2025, 3, 1, 6, 0, 0, 0, time.UTC).Add(time.Duration(seed%1000) * time.Hour),
		acked: make(map[crdt.OpID]bool),
		sent:  make(map[crdt.OpID]bool),
	}
	err := w.run()
	w.st.schedules = 1
	return w.st, err
}

// skewedInt returns a random int in [lo, hi], skewed towards lo (u^e for
// u uniform in [0, 1)): most schedules are small and fast, some are large.
func (w *world) skewedInt(lo, hi int, e float64) int {
	return lo + int(float64(hi-lo+1)*math.Pow(w.rng.Float64(), e))
}

func (w *world) run() error {
	var keySeed [32]byte
	w.fill(keySeed[:])
	keys := rand.NewChaCha8(keySeed)
	var err error
	if w.team, err = crdt.NewTeamID(keys); err != nil {
		return err
	}
	if w.key, err = seal.NewEpochKey(keys); err != nil {
		return err
	}
	// Sizes: mean about 12 replicas, 16 ops and 33 steps; the cost of a
	// schedule grows with replicas × (replicas + ops).
	n := w.skewedInt(5, 50, 5)
	nGarbage := w.rng.IntN(min(3, n/4) + 1)
	nOps := w.skewedInt(5, 60, 4)
	nSteps := w.skewedInt(10, 80, 2)
	w.st.replicas, w.st.garbageReplicas = n, nGarbage
	w.tracef("%d replicas (%d garbage), %d ops, %d steps", n, nGarbage, nOps, nSteps)

	w.skew = make([]time.Duration, n)
	w.garbage = make([]bool, n)
	w.group = make([]int, n)
	devs := devicePool()
	for i, k := range w.rng.Perm(len(devs))[:n] {
		dev := devs[k]
		if i > 0 { // the creator's clock is right
			w.skew[i] = w.skewed()
		}
		r, err := New(Config{Device: dev, Team: w.team, Key: w.key, Now: func() time.Time { return w.now.Add(w.skew[i]) }})
		if err != nil {
			return err
		}
		w.reps = append(w.reps, r)
	}
	for _, i := range w.rng.Perm(n - 1)[:nGarbage] {
		w.garbage[i+1] = true
	}
	// The creator founds the team and adds everyone, some as admins; the
	// member ops reach the others by reconciliation like any op.
	c := w.reps[0]
	if err := w.publish(0, func() (*crdt.Op, error) { return c.Create("Ward 7", crdt.Clinical, "r0") }); err != nil {
		return err
	}
	for i := 1; i < n; i++ {
		info := w.reps[i].Info(fmt.Sprintf("r%d", i), w.rng.IntN(8) == 0)
		if err := w.publish(0, func() (*crdt.Op, error) { return c.AddMember(info) }); err != nil {
			return err
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
		if pub {
			w.st.ops++
			if err := w.publishSomething(); err != nil {
				return err
			}
			continue
		}
		w.st.steps++
		if err := w.step(); err != nil {
			return err
		}
	}
	return w.finish()
}

// publish runs a publication by replica i and records it as acknowledged.
func (w *world) publish(i int, f func() (*crdt.Op, error)) error {
	op, err := f()
	if err != nil {
		return fmt.Errorf("replica %d: %w", i, err)
	}
	w.acked[op.ID()] = true
	if op.Kind == crdt.KindMessage && !w.garbage[i] {
		w.sent[op.ID()] = true
	}
	w.tracef("r%d publishes %v %s at %v", i, op.Kind, op.ID().Short(), op.Time.Time().UTC())
	return nil
}

// publishSomething makes a random replica send a message (sometimes a
// reply, an urgent one, one with a patient reference) or acknowledge what
// it has.
func (w *world) publishSomething() error {
	i := w.rng.IntN(len(w.reps))
	r := w.reps[i]
	if w.rng.IntN(5) == 0 {
		read := w.rng.IntN(2) == 0
		ops, err := r.Ack(read)
		if err != nil {
			return fmt.Errorf("replica %d: ack: %w", i, err)
		}
		for _, op := range ops {
			w.acked[op.ID()] = true
		}
		w.tracef("r%d acks (read %v): %d ops", i, read, len(ops))
		return nil
	}
	m := crdt.Message{Text: fmt.Sprintf("from r%d at %v", i, w.now.Format(time.TimeOnly)), Priority: crdt.Priority(w.rng.IntN(3))}
	if w.rng.IntN(4) == 0 {
		m.Patient = fmt.Sprintf("MRN %04d", w.rng.IntN(10000))
	}
	if w.rng.IntN(3) == 0 {
		if msgs := r.State().Messages; len(msgs) > 0 {
			id := msgs[w.rng.IntN(len(msgs))].ID
			m.ReplyTo = &id
		}
	}
	return w.publish(i, func() (*crdt.Op, error) { return r.Send(m) })
}

// step runs one non-publishing event.
func (w *world) step() error {
	n := len(w.reps)
	switch x := w.rng.IntN(100); {
	case x < 10: // partition into 2 to 4 groups
		k := 2 + w.rng.IntN(3)
		for i := range w.group {
			w.group[i] = w.rng.IntN(k)
		}
		w.tracef("partition into %d groups: %v", k, w.group)
	case x < 18: // merge
		clear(w.group)
		w.tracef("merge")
	case x < 26: // restart, sometimes with a dead battery or a new skew
		i := w.rng.IntN(n)
		switch w.rng.IntN(4) {
		case 0:
			w.skew[i] = time.Unix(0, 0).Sub(w.now) // the wall clock reads 1970
			w.st.deadBatteries++
		case 1:
			w.skew[i] = w.skewed()
		}
		w.st.restarts++
		w.tracef("r%d restarts, skew %v", i, w.skew[i])
		return w.reps[i].Restart()
	case x < 30: // a clock changes
		i := w.rng.IntN(n)
		w.skew[i] = w.skewed()
		w.tracef("r%d clock skew now %v", i, w.skew[i])
	case x < 45: // a garbage replica attacks an honest one
		if g := w.pick(func(i int) bool { return w.garbage[i] }); g >= 0 {
			if h := w.pick(func(i int) bool { return !w.garbage[i] && w.group[i] == w.group[g] }); h >= 0 {
				return w.attack(g, h)
			}
		}
	case x < 70: // one pair meets
		a := w.rng.IntN(n)
		if b := w.pick(func(i int) bool { return i != a && w.group[i] == w.group[a] }); b >= 0 {
			return w.reconcile(a, b, true)
		}
	default: // a gossip round: several pairs meet
		for range 1 + w.rng.IntN(min(n, 6)) {
			a := w.rng.IntN(n)
			if b := w.pick(func(i int) bool { return i != a && w.group[i] == w.group[a] }); b >= 0 {
				if err := w.reconcile(a, b, true); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// pick returns a random replica index satisfying ok, or -1.
func (w *world) pick(ok func(int) bool) int {
	var c []int
	for i := range w.reps {
		if ok(i) {
			c = append(c, i)
		}
	}
	if len(c) == 0 {
		return -1
	}
	return c[w.rng.IntN(len(c))]
}

// reconcile runs a session between replicas a and b, with random faults
// if faulty. Between honest peers (garbage replicas behave here) it must
// succeed.
func (w *world) reconcile(a, b int, faulty bool) error {
	opt := Options{Protocol: w.proto}
	if faulty && w.rng.IntN(2) == 0 {
		opt.Faults = Faults{
			Rand:      w.rng,
			Drop:      w.rng.Float64() * 0.3,
			Duplicate: w.rng.Float64() * 0.3,
			Reorder:   w.rng.IntN(2) == 0,
		}
	}
	if w.rng.IntN(3) == 0 {
		opt.MaxFrame = 4096 // the slowest links' frame size
	}
	res, err := Reconcile(w.reps[a], w.reps[b], opt)
	w.st.reconciles++
	w.st.frames += res.Frames
	w.st.dropped += res.Initiator.Dropped + res.Responder.Dropped
	w.st.duplicated += res.Initiator.Duplicated + res.Responder.Duplicated
	w.tracef("r%d <-> r%d: +%d/+%d envelopes, %d frames, faults %+v", a, b, res.Initiator.Added, res.Responder.Added, res.Frames, opt.Faults.Drop > 0)
	if err != nil {
		return fmt.Errorf("reconcile r%d (initiator) with r%d: %w", a, b, err)
	}
	for _, id := range w.newIDs(a, b) {
		w.acked[id] = true
	}
	return nil
}

// newIDs returns the ids stored at a or b (acknowledged by them).
func (w *world) newIDs(rs ...int) []crdt.OpID {
	var ids []crdt.OpID
	for _, i := range rs {
		items, _ := w.reps[i].Items()
		for _, it := range items {
			if !w.acked[it.ID] {
				ids = append(ids, it.ID)
			}
		}
	}
	return ids
}

// attack makes garbage replica g send garbage to honest replica h: a
// throwaway replica with g's identity and key whose store holds only
// garbage, reconciled with h in a random role, sometimes with its frames
// mangled too. h must refuse it all: its state does not change, and it
// stores nothing but impossible-parent ops (which are valid envelopes that
// count for nothing).
func (w *world) attack(g, h int) error {
	bad, err := New(Config{Device: w.reps[g].dev, Team: w.team, Key: w.key, Now: w.reps[g].now})
	if err != nil {
		return err
	}
	// The garbage goes out on g's own sender chain: a fresh chain would reuse indices g's honest
	// messages hold, which is an attack on g's own messages only (see crypto/senderkey), not the
	// garbage this test is about.
	bad.sender = w.reps[g].sender
	target := w.reps[h]
	kinds := w.injectGarbage(bad, target, 1+w.rng.IntN(3))
	before, beforeLen := target.State(), target.Len()

	p := w.proto
	mangle := w.rng.IntN(3) == 0
	badIsInitiator := w.rng.IntN(2) == 0
	if mangle {
		p = mangled(p, w.rng, badIsInitiator)
	}
	var res Result
	if badIsInitiator {
		res, err = Reconcile(bad, target, Options{Protocol: p})
	} else {
		res, err = Reconcile(target, bad, Options{Protocol: p})
	}
	w.st.reconciles++
	w.st.frames += res.Frames
	switch {
	case errors.Is(err, ErrRejected):
		w.st.rejected++
	case err != nil:
		w.st.sessionErrors++
	}
	w.tracef("r%d attacks r%d with %v (mangled frames %v): %v", g, h, kinds, mangle, err)

	after := target.State()
	if !reflect.DeepEqual(after, before) {
		return fmt.Errorf("garbage %v from r%d changed the state of r%d", kinds, g, h)
	}
	grown := target.Len() - beforeLen
	imp := 0
	for _, k := range kinds {
		if k == "impossible" {
			imp++
		}
	}
	if grown < 0 || grown > imp {
		return fmt.Errorf("r%d stored %d envelopes of garbage %v from r%d; only impossible-parent ops (%d) may be stored", h, grown, kinds, g, imp)
	}
	w.st.impossible += grown
	for _, id := range w.newIDs(h) {
		w.acked[id] = true
	}
	return nil
}

// injectGarbage puts k garbage envelopes into bad's store, built to look
// plausible to target, and returns their kinds.
func (w *world) injectGarbage(bad, target *Replica, k int) []string {
	var kinds []string
	dev := bad.dev
	tm := w.now.Add(time.Duration(w.rng.IntN(1000)) * time.Millisecond)
	for range k {
		var (
			kind string
			e    *envelope.Envelope
			raw  []byte
		)
		msg := crdt.Message{Text: "garbage"}.Marshal()
		heads := target.log.Heads()
		switch w.rng.IntN(7) {
		case 0: // random bytes under a random id
			kind = "random bytes"
			raw = make([]byte, w.rng.IntN(200))
			for i := range raw {
				raw[i] = byte(w.rng.Uint32())
			}
			e = &envelope.Envelope{Time: crdt.MakeHLC(tm, 0)}
			w.fill(e.ID[:])
		case 1: // a valid header and random ciphertext
			kind = "random ciphertext"
			e = &envelope.Envelope{Topic: target.topic, Epoch: target.epoch, Time: crdt.MakeHLC(tm, 1), Ciphertext: make([]byte, 40+w.rng.IntN(100))}
			w.fill(e.ID[:])
			w.fill(e.Ciphertext)
		case 2: // a valid envelope, tampered, under a new id
			kind = "tampered"
			op := crdt.NewOp(dev, w.team, crdt.MakeHLC(tm, 2), heads, crdt.KindMessage, msg)
			e = mustSeal(sealAs(bad, op, target.epoch, w.key))
			e.Ciphertext[w.rng.IntN(len(e.Ciphertext))] ^= 1 << w.rng.IntN(8)
			w.fill(e.ID[:4])
		case 3: // a bad signature, sealed properly
			kind = "bad signature"
			op := crdt.NewOp(dev, w.team, crdt.MakeHLC(tm, 3), heads, crdt.KindMessage, msg)
			op.Sig[w.rng.IntN(len(op.Sig))] ^= 1 << w.rng.IntN(8)
			e = mustSeal(sealAs(bad, op, target.epoch, w.key))
		case 4: // a body that does not decode, sealed properly
			kind = "bad body"
			op := crdt.NewOp(dev, w.team, crdt.MakeHLC(tm, 4), heads, crdt.Kind(1+w.rng.IntN(4)), []byte{1, 9})
			e = mustSeal(sealAs(bad, op, target.epoch, w.key))
		case 5: // another key and epoch (an outsider)
			kind = "outsider"
			other, _ := seal.NewEpochKey(rand.NewChaCha8([32]byte{byte(w.rng.Uint32()), 1}))
			op := crdt.NewOp(dev, w.team, crdt.MakeHLC(tm, 5), heads, crdt.KindMessage, msg)
			e = mustSeal(sealAs(bad, op, target.epoch+uint32(w.rng.IntN(2)), other))
		default: // impossible parents: not after a parent the target has
			if len(heads) == 0 {
				continue
			}
			kind = "impossible"
			maxT := crdt.HLC(0)
			for _, id := range heads {
				op, _ := target.log.Op(id)
				maxT = max(maxT, op.Time)
			}
			t := maxT - min(maxT, crdt.HLC(w.rng.IntN(2)<<w.rng.IntN(40))) // at or before the parent, never wrapping around
			var body []byte
			opKind := crdt.KindMessage
			switch w.rng.IntN(3) {
			case 0:
				body = msg
			case 1:
				opKind, body = crdt.KindMember, crdt.Commit{
					Number:     2,
					Changes:    []crdt.Change{{Action: crdt.ActAdd, Info: crdt.MemberInfo{Device: identity.DeviceID{0xba, 0xd}, Name: "Mallory", Admin: true}}},
					Recipients: []crdt.Recipient{{Device: identity.DeviceID{0xba, 0xd}}},
				}.Marshal()
			default:
				if ms := target.State().Messages; len(ms) > 0 {
					opKind, body = crdt.KindAck, crdt.SplitAcks(true, []crdt.OpID{ms[0].ID})[0].Marshal()
				} else {
					body = msg
				}
			}
			op := crdt.NewOp(dev, w.team, t, heads, opKind, body)
			e = mustSeal(sealAs(bad, op, target.epoch, w.key))
		}
		if raw == nil {
			raw = e.Marshal()
		}
		bad.store[e.ID] = stored{time: uint64(e.Time), raw: raw}
		bad.items = nil
		kinds = append(kinds, kind)
	}
	return kinds
}

func (w *world) fill(b []byte) {
	for i := range b {
		b[i] = byte(w.rng.Uint32())
	}
}

// mangled wraps the sessions of one side of p (the initiator's if
// initiator) so that some frames they send are corrupted.
func mangled(p Protocol, rng *rand.Rand, initiator bool) Protocol {
	wrap := func(s Session) Session { return &mangler{Session: s, rng: rng} }
	q := p
	q.Name = p.Name + "+mangled"
	if initiator {
		q.NewInitiator = func(src Source, maxFrame int) Session { return wrap(p.NewInitiator(src, maxFrame)) }
	} else {
		q.NewResponder = func(src Source, maxFrame int) Session { return wrap(p.NewResponder(src, maxFrame)) }
	}
	return q
}

type mangler struct {
	Session
	rng *rand.Rand
}

func (m *mangler) Start() ([]byte, error) {
	f, err := m.Session.Start()
	if f != nil && err == nil {
		f = m.mangle(f)
	}
	return f, err
}

func (m *mangler) Handle(frame []byte) ([][]byte, [][]byte, bool, error) {
	out, recv, done, err := m.Session.Handle(frame)
	for i := range out {
		if m.rng.IntN(2) == 0 {
			out[i] = m.mangle(out[i])
		}
	}
	return out, recv, done, err
}

func (m *mangler) mangle(f []byte) []byte {
	f = bytes.Clone(f)
	switch m.rng.IntN(4) {
	case 0:
		if len(f) > 0 {
			f[m.rng.IntN(len(f))] ^= 1 << m.rng.IntN(8)
		}
	case 1:
		f = f[:m.rng.IntN(len(f)+1)]
	case 2:
		f = append(f, byte(m.rng.Uint32()), byte(m.rng.Uint32()))
	default:
		if len(f) > 1 {
			f[0] ^= 0xff // version
		}
	}
	return f
}

// finish heals the partitions, runs a full fault-free merge, and checks
// the properties.
func (w *world) finish() error {
	clear(w.group)
	w.now = w.now.Add(time.Hour)
	n := len(w.reps)
	// A star through replica 0, twice: everyone's ops reach 0, then 0's
	// reach everyone.
	for range 2 {
		for i := 1; i < n; i++ {
			a, b := i, 0
			if w.rng.IntN(2) == 0 {
				a, b = b, a
			}
			if err := w.reconcile(a, b, false); err != nil {
				return fmt.Errorf("final merge: %w", err)
			}
		}
	}
	// A restart must not change anything: the store is the truth.
	for _, i := range w.rng.Perm(n)[:2] {
		{
			before := w.reps[i].State()
			if err := w.reps[i].Restart(); err != nil {
				return err
			}
			w.st.restarts++
			if after := w.reps[i].State(); !reflect.DeepEqual(after, before) {
				return fmt.Errorf("r%d: state changed across a restart", i)
			}
		}
	}

	var ref *crdt.State
	var refIdx int
	for i, r := range w.reps {
		if w.garbage[i] {
			continue
		}
		// No acknowledged op is lost.
		for id := range w.acked {
			if !r.Has(id) {
				return fmt.Errorf("r%d lost acknowledged op %s", i, id.Short())
			}
		}
		if got, want := r.Len(), len(w.acked); got != want {
			return fmt.Errorf("r%d stores %d envelopes; want the %d acknowledged", i, got, want)
		}
		s := r.State()
		if ref == nil {
			ref, refIdx = &s, i
			if err := w.checkState(r, s); err != nil {
				return fmt.Errorf("r%d: %w", i, err)
			}
			continue
		}
		if !reflect.DeepEqual(s, *ref) {
			return fmt.Errorf("r%d and r%d show different states:\n%s", i, refIdx, diffStates(s, *ref))
		}
	}
	w.st.messages = len(ref.Messages)
	for _, m := range ref.Messages {
		if len(m.ReceivedBy) > 0 {
			w.st.acked++
		}
	}
	return nil
}

// checkState checks the shown state of replica r: every message published
// by an honest replica shown exactly once, nothing shown twice, nothing
// before what it replies to or builds on, and the state equal to that of a
// fresh log of the same ops.
func (w *world) checkState(r *Replica, s crdt.State) error {
	if got, want := len(s.Members), len(w.reps); got != want {
		return fmt.Errorf("%d members; want %d", got, want)
	}
	pos := make(map[crdt.OpID]int, len(s.Messages))
	for i, m := range s.Messages {
		if _, dup := pos[m.ID]; dup {
			return fmt.Errorf("message %s shown twice", m.ID.Short())
		}
		pos[m.ID] = i
	}
	for id := range w.sent {
		if _, ok := pos[id]; !ok {
			return fmt.Errorf("message %s, sent by an honest replica, not shown", id.Short())
		}
	}
	for _, m := range s.Messages {
		if m.Text == "garbage" {
			op, _ := r.log.Op(m.ID)
			var ps []string
			for _, p := range op.Parents {
				po, ok := r.log.Op(p)
				if ok {
					ps = append(ps, fmt.Sprintf("%s@%d(%v)", p.Short(), po.Time, po.Kind))
				} else {
					ps = append(ps, p.Short()+"@missing")
				}
			}
			return fmt.Errorf("garbage message %s (time %d, parents %v) shown", m.ID.Short(), op.Time, ps)
		}
		if m.ReplyTo != nil {
			if j, ok := pos[*m.ReplyTo]; ok && j >= pos[m.ID] {
				return fmt.Errorf("reply %s (at %d) shown before %s (at %d), which it answers", m.ID.Short(), pos[m.ID], m.ReplyTo.Short(), j)
			}
		}
		for _, d := range m.ReadBy {
			if _, ok := slices.BinarySearchFunc(m.ReceivedBy, d, func(a, b identity.DeviceID) int { return bytes.Compare(a[:], b[:]) }); !ok {
				return fmt.Errorf("message %s read but not received by %s", m.ID.Short(), d.Short())
			}
		}
	}
	// Causality: the latest shown ancestor of each shown message, through
	// any ops, is listed before it.
	ops := make(map[crdt.OpID]*crdt.Op)
	fresh := crdt.NewLog(w.team)
	for _, op := range r.Ops() {
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
			return fmt.Errorf("message %s (at %d) shown after a descendant? its ancestor at %d comes later", m.ID.Short(), pos[m.ID], j)
		}
	}
	if got := fresh.State(); !reflect.DeepEqual(got, s) {
		return fmt.Errorf("state differs from a fresh log of the same ops:\n%s", diffStates(got, s))
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
	fmt.Fprintf(&sb, "messages: %d vs %d\n", len(a.Messages), len(b.Messages))
	for i := range min(len(a.Messages), len(b.Messages)) {
		if !reflect.DeepEqual(a.Messages[i], b.Messages[i]) {
			fmt.Fprintf(&sb, "first difference at %d: %s %v vs %s %v\n", i, a.Messages[i].ID.Short(), a.Messages[i].Time, b.Messages[i].ID.Short(), b.Messages[i].Time)
			break
		}
	}
	return sb.String()
}

func mustSeal(e *envelope.Envelope, err error) *envelope.Envelope {
	if err != nil {
		panic("replica test: seal: " + err.Error()) // unreachable: the ops are small and well formed
	}
	return e
}
