package device

// TestAdversarial is the membership property test: random team histories
// driven through real Teams, with adversaries among the devices that try
// every attack on membership, at random points. It checks, after a final
// full merge:
//
//   - every honest member device shows the same persons, devices and
//     equivocation alerts, and every message it can read (one sealed in an
//     epoch it is a recipient of) that counts anywhere;
//   - no honest device shows a message that does not count in the union of
//     what honest devices hold;
//   - every removal takes effect on every honest device that holds its
//     commit (checked during the run too);
//   - no honest device's clock moves because of a non-member;
//   - no removed device opens anything sealed after its removal by a
//     sender that knew of it, whatever old state it keeps;
//   - no adversary's op from outside its window is shown (attack ops are
//     delivered only to devices that already hold the removal, or are by
//     devices that never were members);
//   - no honest peer is banned.
//
// It prints the histories run, the attacks tried per kind, and the attacks
// that succeeded, which must be 0.
//
//	go test -run TestAdversarial ./sync/device/                                   # default count (fewer under -race)
//	go test -run TestAdversarial ./sync/device/ -device.histories=1000 -v         # CI (make property)
//	go test -run TestAdversarial ./sync/device/ -device.histories=10000 -v        # make soak
//	go test -run TestAdversarial ./sync/device/ -device.advseed=S -device.histories=1 -v  # replay one

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/adversary"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

var (
	advSeed      = flag.Uint64("device.advseed", 1, "TestAdversarial: seed of the first history (history i uses seed+i; 0: from the clock)")
	advHistories = flag.Int("device.histories", advDefaultHistories, "TestAdversarial: number of random histories")
	advMessages  = flag.Int("device.messages", 100, "TestAdversarial: honest messages per history")
)

// Attack kinds.
const (
	atkJunkPrior  = "junk prior keys"
	atkInvented   = "invented epoch"
	atkBackdated  = "back-dated parents"
	atkThrowaway  = "throwaway signer"
	atkLowOrder   = "low-order key"
	atkReseal     = "re-sealing"
	atkEquivocate = "equivocation"
	atkClockPush  = "clock push"
	atkBoxFlood   = "box flood"
	atkGarbage    = "garbage"
)

var attackKinds = []string{atkJunkPrior, atkInvented, atkBackdated, atkThrowaway, atkLowOrder, atkReseal, atkEquivocate, atkClockPush, atkBoxFlood, atkGarbage}

type advStats struct {
	Histories, Messages, Commits, Adds, Removes, Links, Unlinks, Promotes, Splits, Merges, Rotations, Restarts int
	Protected                                                                                                  int // (removed device, envelope sealed after its removal by a sender that knew) pairs
	Tried, Succeeded                                                                                           map[string]int
}

func (s *advStats) add(o *advStats) {
	s.Histories += o.Histories
	s.Messages += o.Messages
	s.Commits += o.Commits
	s.Adds += o.Adds
	s.Removes += o.Removes
	s.Links += o.Links
	s.Unlinks += o.Unlinks
	s.Promotes += o.Promotes
	s.Splits += o.Splits
	s.Merges += o.Merges
	s.Rotations += o.Rotations
	s.Restarts += o.Restarts
	s.Protected += o.Protected
	for _, k := range attackKinds {
		s.Tried[k] += o.Tried[k]
		s.Succeeded[k] += o.Succeeded[k]
	}
}

func newAdvStats() *advStats {
	return &advStats{Tried: make(map[string]int), Succeeded: make(map[string]int)}
}

func TestAdversarial(t *testing.T) {
	seed := *advSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	n := *advHistories
	t.Logf("seed %d, %d histories of %d honest messages (replay one: -device.advseed=S -device.histories=1)", seed, n, *advMessages)
	start := time.Now()
	total := newAdvStats()
	var (
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
	)
	next := make(chan uint64)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for s := range next {
				w := newAdvWorld(s, *advMessages)
				err := w.run()
				mu.Lock()
				total.add(w.stats)
				if err != nil && len(failures) < 5 {
					failures = append(failures, fmt.Sprintf("history %d: %v\n\treplay: go test -run TestAdversarial -v ./sync/device/ -device.advseed=%d -device.histories=1", s, err, s))
				}
				mu.Unlock()
			}
		})
	}
	for i := range uint64(n) {
		mu.Lock()
		stop := len(failures) >= 5
		mu.Unlock()
		if stop {
			break
		}
		next <- seed + i
	}
	close(next)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d histories in %s: %d messages, %d commits (%d adds, %d removals, %d links, %d unlinks, %d promotions, %d rotations), %d partitions, %d merges, %d restarts; %d (removed device, later envelope) pairs checked",
		total.Histories, time.Since(start).Round(time.Millisecond), total.Messages, total.Commits, total.Adds, total.Removes, total.Links, total.Unlinks, total.Promotes, total.Rotations, total.Splits, total.Merges, total.Restarts, total.Protected)
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %8s %10s\n", "attack", "tried", "succeeded")
	tried, won := 0, 0
	for _, k := range attackKinds {
		fmt.Fprintf(&b, "%-20s %8d %10d\n", k, total.Tried[k], total.Succeeded[k])
		tried += total.Tried[k]
		won += total.Succeeded[k]
	}
	fmt.Fprintf(&b, "%-20s %8d %10d", "all", tried, won)
	t.Logf("attacks:\n%s", b.String())
	if won != 0 {
		t.Errorf("%d attacks succeeded", won)
	}
	if n >= 100 {
		for _, k := range attackKinds {
			if total.Tried[k] == 0 {
				t.Errorf("no %s attack was tried", k)
			}
		}
		// A history ends early when every honest device was removed.
		if total.Messages < n**advMessages*9/10 || total.Removes == 0 || total.Links == 0 || total.Unlinks == 0 || total.Merges == 0 || total.Protected == 0 {
			t.Errorf("the histories did not exercise what they claim: %+v", *total)
		}
	}
}

// adev is one device of a history.
type adev struct {
	name      string
	dev       *identity.Device
	team      *Team
	store     *memStore
	cfg       Config
	group     int
	adversary bool
	// skew is added to the world's time for this device's clock.
	skew time.Duration
	// version counts the writes applied and restarts: a pair of devices
	// whose versions did not change since they last synced has nothing new.
	version int
}

func (d *adev) peer() Peer { return Peer{ID: d.name, Device: d.dev.ID()} }

// sent is an envelope sealed by an honest device, and the devices its state
// listed as removed when it sealed it.
type sentEnv struct {
	raw     []byte
	id      crdt.OpID
	removed []identity.DeviceID
}

type advWorld struct {
	seed  uint64
	rng   *mrand.Rand
	r     io.Reader
	now   time.Time
	team  crdt.TeamID
	devs  []*adev
	stats *advStats
	msgs  int
	// attackOps are ids of ops that must never show or count anywhere, by
	// kind: ops of devices that never were members, or of removed devices
	// sent outside their window (if the removal stands at the end: a
	// removal can be cut by a concurrent removal of its author, and then the
	// adversary is a member again and its ops count).
	attackOps map[crdt.OpID]string
	// junkTags are prior-key tags that must never be held.
	junkTags map[uint32]bool
	sent     []sentEnv
	banned   map[string]bool // peers some honest device banned
	trace    []string
	// synced remembers the versions of a pair when it last synced.
	synced map[[2]*adev][2]int
	// truth and members are the final union log and the devices it lists.
	truth   *crdt.Log
	members []*adev
	// floodRecips are the junk recipients of box floods.
	floodRecips []crdt.Recipient
	flooded     bool
}

func newAdvWorld(seed uint64, msgs int) *advWorld {
	w := &advWorld{
		seed:      seed,
		rng:       mrand.New(mrand.NewPCG(seed, seed^0x5eed)),
		r:         detRand(seed),
		now:       t0,
		stats:     newAdvStats(),
		msgs:      msgs,
		attackOps: make(map[crdt.OpID]string),
		junkTags:  make(map[uint32]bool),
		banned:    make(map[string]bool),
		synced:    make(map[[2]*adev][2]int),
	}
	w.stats.Histories = 1
	if _, err := io.ReadFull(w.r, w.team[:]); err != nil {
		panic(err)
	}
	return w
}

func (w *advWorld) tracef(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%s ", w.now.Format("01-02 15:04:05"))+fmt.Sprintf(format, args...))
}

func (w *advWorld) failf(format string, args ...any) error {
	tail := w.trace
	if len(tail) > 40 {
		tail = tail[len(tail)-40:]
	}
	return fmt.Errorf("%s\n\tlast steps:\n\t\t%s", fmt.Sprintf(format, args...), strings.Join(tail, "\n\t\t"))
}

func (w *advWorld) timeOf(d *adev) time.Time { return w.now.Add(d.skew) }

func (w *advWorld) newDevice(name string, adversary bool) *adev {
	dev, err := identity.Generate(w.r)
	if err != nil {
		panic(err)
	}
	d := &adev{name: name, dev: dev, store: newMemStore(), adversary: adversary,
		cfg: Config{Device: dev, Team: w.team, Rand: w.r, AckInterval: -1}}
	if w.rng.IntN(5) == 0 {
		d.skew = time.Duration(w.rng.IntN(40)-20) * time.Minute
	}
	w.devs = append(w.devs, d)
	return d
}

// apply makes d's effects durable and records bans.
func (w *advWorld) apply(d *adev, eff Effects) {
	if !eff.Write.Empty() || eff.Changed {
		d.version++
	}
	d.store.write(eff.Write)
	if !d.adversary {
		for _, p := range eff.Ban {
			w.banned[p.ID] = true
		}
	}
	if len(eff.Reopen) > 0 {
		var arr []Arrival
		for _, id := range eff.Reopen {
			arr = append(arr, Arrival{Raw: d.store.envs[id].Data, Reopen: true})
		}
		_, more := d.team.Receive(w.timeOf(d), arr)
		w.apply(d, more)
	}
}

// honestMembers are the honest devices that are members in their own view.
func (w *advWorld) honestMembers() []*adev {
	var out []*adev
	for _, d := range w.devs {
		if !d.adversary && d.team != nil && d.team.Member(d.dev.ID()) {
			out = append(out, d)
		}
	}
	return out
}

func (w *advWorld) pick(ds []*adev) *adev {
	if len(ds) == 0 {
		return nil
	}
	return ds[w.rng.IntN(len(ds))]
}

func (w *advWorld) admins(in []*adev) []*adev {
	var out []*adev
	for _, d := range in {
		if p, ok := d.team.State().PersonOf(d.dev.ID()); ok && p.Admin {
			out = append(out, d)
		}
	}
	return out
}

func (w *advWorld) run() error {
	creator := w.newDevice("d0", false)
	tm, eff, err := Create(creator.cfg, w.timeOf(creator), "Ward", crdt.Clinical, "d0")
	if err != nil {
		return err
	}
	creator.team = tm
	w.apply(creator, eff)
	w.stats.Commits++
	for i := range 3 + w.rng.IntN(4) {
		adv := i < 1+w.rng.IntN(2)
		if err := w.join(creator, adv, w.rng.IntN(3) == 0 || adv && w.rng.IntN(2) == 0); err != nil {
			return err
		}
	}
	w.meshAll()
	idle := 0
	for w.stats.Messages < w.msgs {
		before := w.stats.Messages
		if err := w.step(); err != nil {
			return err
		}
		if w.stats.Messages > before {
			idle = 0
			continue
		}
		if idle++; idle > 2000 {
			if len(w.honestMembers()) == 0 {
				break // every honest device was removed: the history is over
			}
			return w.failf("no honest member could send in %d steps", idle)
		}
	}
	return w.finish()
}

// join adds a new person through inviter (an admin in its view).
func (w *advWorld) join(inviter *adev, adversary, admin bool) error {
	d := w.newDevice(fmt.Sprintf("d%d", len(w.devs)), adversary)
	d.group = inviter.group
	info := crdt.MemberInfo{Device: d.dev.ID(), Noise: d.dev.NoisePublic(), Name: d.name, Admin: admin}
	return w.joinAs(inviter, d, crdt.Change{Action: crdt.ActAdd, Info: info})
}

func (w *advWorld) joinAs(inviter, d *adev, ch crdt.Change) error {
	// The join request's prekey, as node/join carries it.
	pk, err := epochkey.NewPrekey(w.r)
	if err != nil {
		return w.failf("prekey: %v", err)
	}
	_, eff, err := inviter.team.ChangeFor(w.timeOf(inviter), map[identity.DeviceID]identity.NoisePublic{d.dev.ID(): pk.Public}, ch)
	if err != nil {
		w.devs = w.devs[:len(w.devs)-1]
		w.tracef("%s could not add %s: %v", inviter.name, d.name, err)
		return nil
	}
	w.apply(inviter, eff)
	w.stats.Commits++
	hist := inviter.team.History(func(id crdt.OpID) []byte { return inviter.store.envs[id].Data })
	cfg := d.cfg
	cfg.Genesis = inviter.team.Genesis()
	cfg.JoinPrekey = &pk
	tm, jeff, err := Join(cfg, w.timeOf(d), hist)
	if err != nil {
		return w.failf("%s joins through %s: %v", d.name, inviter.name, err)
	}
	cfg.JoinPrekey = nil
	d.cfg, d.team = cfg, tm
	w.apply(d, jeff)
	w.tracef("%s adds %s (%v)", inviter.name, d.name, ch.Action)
	return nil
}

// syncPair delivers to b what a stores and b does not, if both allow it; a
// device refused because it was removed gets the removal proof.
func (w *advWorld) syncPair(a, b *adev) error {
	if a.team == nil || b.team == nil {
		return nil
	}
	if v, ok := w.synced[[2]*adev{a, b}]; ok && v == [2]int{a.version, b.version} {
		return nil
	}
	defer func() { w.synced[[2]*adev{a, b}] = [2]int{a.version, b.version} }()
	for _, x := range [][2]*adev{{a, b}, {b, a}} {
		from, to := x[0], x[1]
		if !to.team.MaySync(from.peer()) || !from.team.MaySync(to.peer()) {
			return w.exchangeMembership(a, b)
		}
	}
	w.deliver(a, b)
	w.deliver(b, a)
	return nil
}

// exchangeMembership is what two devices do when a sync is refused: each
// hands the other the membership ops it may see.
func (w *advWorld) exchangeMembership(a, b *adev) error {
	for _, x := range [][2]*adev{{a, b}, {b, a}} {
		from, to := x[0], x[1]
		wasRemoved := to.team.Removed()
		n, eff, err := to.team.AcceptMembership(w.timeOf(to), from.team.MembershipFor(to.dev.ID()))
		if err != nil {
			return w.failf("%s refuses %s's membership ops: %v", to.name, from.name, err)
		}
		w.apply(to, eff)
		if n > 0 {
			w.tracef("%s takes %d membership ops from %s (removed before %v, now %v)", to.name, n, from.name, wasRemoved, to.team.Removed())
		}
	}
	return nil
}

// deliver gives to what from stores that to does not.
func (w *advWorld) deliver(from, to *adev) {
	var arr []Arrival
	for _, raw := range from.store.envelopes() {
		e, err := envelope.Unmarshal(envelope.Topic{}, raw)
		if err != nil || to.team.Has(e.ID) {
			continue
		}
		arr = append(arr, Arrival{Raw: raw, From: from.peer()})
	}
	if len(arr) == 0 {
		return
	}
	_, eff := to.team.Receive(w.timeOf(to), arr)
	w.apply(to, eff)
}

// meshAll syncs every pair in each group until nothing changes (at most
// ten rounds).
func (w *advWorld) meshAll() {
	for range 10 {
		before := w.versions()
		for _, a := range w.devs {
			for _, b := range w.devs {
				if a != b && a.group == b.group {
					_ = w.syncPair(a, b)
				}
			}
		}
		if w.versions() == before {
			return
		}
	}
}

func (w *advWorld) versions() int {
	n := 0
	for _, d := range w.devs {
		n += d.version
	}
	return n
}

func (w *advWorld) step() error {
	w.now = w.now.Add(time.Duration(1+w.rng.IntN(120)) * time.Second)
	honest := w.honestMembers()
	x := w.rng.IntN(100)
	switch {
	case x < 45: // a message
		d := w.pick(honest)
		if d == nil {
			return nil
		}
		op, eff, err := d.team.Send(w.timeOf(d), crdt.Message{Text: fmt.Sprintf("m%d from %s", w.stats.Messages, d.name)})
		if err != nil {
			w.tracef("%s cannot send: %v", d.name, err)
			return nil
		}
		w.apply(d, eff)
		w.stats.Messages++
		w.record(d, op, eff)
	case x < 70: // sync a pair in one group
		a, b := w.pick(w.devs), w.pick(w.devs)
		if a != b && a.group == b.group {
			return w.syncPair(a, b)
		}
	case x < 73: // add a person
		if ad := w.pick(w.admins(honest)); ad != nil && len(w.devs) < 14 {
			w.stats.Adds++
			return w.join(ad, w.rng.IntN(6) == 0, w.rng.IntN(4) == 0)
		}
	case x < 75: // link a device
		if d := w.pick(honest); d != nil && len(w.devs) < 14 {
			p, _ := d.team.State().PersonOf(d.dev.ID())
			n := w.newDevice(fmt.Sprintf("d%d", len(w.devs)), false)
			n.group = d.group
			info := crdt.MemberInfo{Device: n.dev.ID(), Noise: n.dev.NoisePublic(), Name: n.name}
			w.stats.Links++
			return w.joinAs(d, n, crdt.Change{Action: crdt.ActLink, Info: info, Target: p.ID})
		}
	case x < 78: // remove a person (adversaries more often)
		ad := w.pick(w.admins(honest))
		if ad == nil {
			return nil
		}
		var targets []crdt.Person
		for _, p := range ad.team.State().Persons {
			if p.ID != ad.team.State().Creator || w.rng.IntN(8) == 0 {
				targets = append(targets, p)
			}
		}
		if len(targets) == 0 {
			return nil
		}
		p := targets[w.rng.IntN(len(targets))]
		for _, q := range targets {
			if w.isAdversaryPerson(q) && w.rng.IntN(2) == 0 {
				p = q
			}
		}
		return w.change(ad, crdt.Change{Action: crdt.ActRemove, Target: p.ID}, &w.stats.Removes)
	case x < 80: // unlink a device of a person with two or more
		d := w.pick(honest)
		if d == nil {
			return nil
		}
		me, _ := d.team.State().PersonOf(d.dev.ID())
		for _, p := range d.team.State().Persons {
			if len(p.Devices) > 1 && (p.ID == me.ID || me.Admin) {
				return w.change(d, crdt.Change{Action: crdt.ActUnlink, Target: p.Devices[w.rng.IntN(len(p.Devices))]}, &w.stats.Unlinks)
			}
		}
	case x < 81: // promote
		if ad := w.pick(w.admins(honest)); ad != nil {
			for _, p := range ad.team.State().Persons {
				if !p.Admin {
					return w.change(ad, crdt.Change{Action: crdt.ActPromote, Target: p.ID}, &w.stats.Promotes)
				}
			}
		}
	case x < 84: // partition
		groups := 2 + w.rng.IntN(2)
		for _, d := range w.devs {
			d.group = w.rng.IntN(groups)
		}
		w.stats.Splits++
		w.tracef("partition into %d groups", groups)
	case x < 87: // merge
		for _, d := range w.devs {
			d.group = 0
		}
		w.stats.Merges++
		w.tracef("merge")
	case x < 89: // time passes: ticks (rotation, re-keys)
		w.now = w.now.Add(time.Duration(1+w.rng.IntN(36)) * time.Hour)
		w.tickAll()
	case x < 91: // a restart
		d := w.pick(w.devs)
		if d != nil && d.team != nil {
			cfg := d.cfg
			cfg.Genesis = d.team.Genesis()
			tm, err := New(cfg, w.timeOf(d), d.store.stored())
			if err != nil {
				return w.failf("%s restores: %v", d.name, err)
			}
			d.team = tm
			d.version++
			w.stats.Restarts++
			w.tracef("%s restarts", d.name)
		}
	default:
		if err := w.attack(); err != nil {
			return err
		}
	}
	return w.checkRemovals()
}

func (w *advWorld) isAdversaryPerson(p crdt.Person) bool {
	for _, d := range w.devs {
		if d.adversary && slices.Contains(p.Devices, d.dev.ID()) {
			return true
		}
	}
	return false
}

func (w *advWorld) change(d *adev, ch crdt.Change, count *int) error {
	_, eff, err := d.team.Change(w.timeOf(d), ch)
	if err != nil {
		w.tracef("%s: %v refused: %v", d.name, ch.Action, err)
		return nil
	}
	w.apply(d, eff)
	*count++
	w.stats.Commits++
	w.tracef("%s commits %v of %s", d.name, ch.Action, ch.Target.Short())
	return nil
}

// record notes, for an envelope an honest device sealed, which devices its
// state listed as removed.
func (w *advWorld) record(d *adev, op *crdt.Op, eff Effects) {
	removed := slices.Clone(d.team.State().Removed)
	for _, raw := range eff.Publish {
		e, err := envelope.Unmarshal(envelope.Topic{}, raw)
		if err != nil || e.Form() != envelope.FormChain {
			continue
		}
		w.sent = append(w.sent, sentEnv{raw: raw, id: e.ID, removed: removed})
	}
}

func (w *advWorld) tickAll() {
	for _, d := range w.devs {
		if d.team == nil {
			continue
		}
		before := d.team.State().Epochs
		held := d.team.Pending()
		eff := d.team.Tick(w.timeOf(d), TickOptions{NoAcks: w.rng.IntN(2) == 0})
		w.apply(d, eff)
		if d.team.Pending() != held {
			d.version++ // what it dropped comes again with the next sync
		}
		if n := len(d.team.State().Epochs); n > len(before) && d.team.Member(d.dev.ID()) {
			w.stats.Rotations++
			w.stats.Commits++
		}
		if len(eff.Publish) > 0 && !d.adversary {
			for _, raw := range eff.Publish {
				e, err := envelope.Unmarshal(envelope.Topic{}, raw)
				if err == nil && e.Form() == envelope.FormChain {
					w.sent = append(w.sent, sentEnv{raw: raw, id: e.ID, removed: slices.Clone(d.team.State().Removed)})
				}
			}
		}
	}
}

// checkRemovals: every honest device that holds a counting removal of a
// person shows that person removed (no re-adds happen in these histories).
func (w *advWorld) checkRemovals() error {
	for _, d := range w.devs {
		if d.adversary || d.team == nil {
			continue
		}
		s := d.team.State()
		for _, op := range d.team.MembershipOps() {
			if op.Kind != crdt.KindMember || !s.Counts(op.ID()) {
				continue
			}
			c, _ := crdt.UnmarshalCommit(op.Body)
			for _, ch := range c.Changes {
				if ch.Action == crdt.ActRemove {
					for _, p := range s.Persons {
						if p.ID == ch.Target {
							return w.failf("%s holds the removal %s of %s and still shows the person", d.name, op.ID().Short(), ch.Target.Short())
						}
					}
				}
				if ch.Action == crdt.ActUnlink {
					if _, ok := s.Member(ch.Target); ok {
						return w.failf("%s holds the unlink %s of %s and still shows the device", d.name, op.ID().Short(), ch.Target.Short())
					}
				}
			}
		}
	}
	return nil
}

// removedIn reports whether the adversary a is removed in honest device h's state.
func removedIn(h, a *adev) bool {
	s := h.team.State()
	_, member := s.Member(a.dev.ID())
	return !member && slices.Contains(s.Removed, a.dev.ID())
}

// --- Attacks.

func (w *advWorld) attack() error {
	var advs []*adev
	for _, d := range w.devs {
		if d.adversary && d.team != nil {
			advs = append(advs, d)
		}
	}
	a := w.pick(advs)
	if a == nil {
		return nil
	}
	kind := attackKinds[w.rng.IntN(len(attackKinds))]
	// Victims: honest devices of a's group.
	var victims []*adev
	for _, d := range w.devs {
		if !d.adversary && d.team != nil && d.group == a.group {
			victims = append(victims, d)
		}
	}
	if len(victims) == 0 {
		return nil
	}
	w.tracef("%s tries %s", a.name, kind)
	switch kind {
	case atkJunkPrior:
		return w.junkPrior(a, victims)
	case atkInvented:
		return w.invented(a, victims)
	case atkBackdated:
		return w.backdated(a, victims)
	case atkThrowaway:
		return w.throwaway(a, victims)
	case atkLowOrder:
		return w.lowOrder(a, victims)
	case atkReseal:
		return w.reseal(a, victims)
	case atkEquivocate:
		return w.equivocate(a, victims)
	case atkClockPush:
		return w.clockPush(a, victims)
	case atkBoxFlood:
		if w.flooded || w.seed%4 != 0 {
			return w.garbage(a, victims) // a flood in one history of four, once: it costs the most to run
		}
		w.flooded = true
		return w.boxFlood(a, victims)
	case atkGarbage:
		return w.garbage(a, victims)
	}
	return nil
}

// hit delivers attack envelopes to victims from the adversary (as a peer, or
// through a relay when the victims no longer sync with it), and checks that
// no victim's clock moved past what its own time allows.
func (w *advWorld) hit(kind string, a *adev, victims []*adev, raws ...[]byte) error {
	w.stats.Tried[kind]++
	for _, v := range victims {
		from := a.peer()
		if !v.team.Member(a.dev.ID()) {
			from = Peer{ID: "relay", Relay: true}
		}
		var arr []Arrival
		for _, raw := range raws {
			arr = append(arr, Arrival{Raw: raw, From: from})
		}
		_, eff := v.team.Receive(w.timeOf(v), arr)
		w.apply(v, eff)
		if lim := crdt.MakeHLC(w.timeOf(v).Add(2*crdt.MaxDrift), 0); v.team.clock.Last() > lim && kind != atkEquivocate {
			w.stats.Succeeded[atkClockPush]++
			return w.failf("%s: %s's clock moved to %v", kind, v.name, v.team.clock.Last().Time())
		}
	}
	return nil
}

// mark records attack ops that must never show or count.
func (w *advWorld) mark(kind string, ids ...crdt.OpID) {
	for _, id := range ids {
		w.attackOps[id] = kind
	}
}

// epochKey returns the key of the epoch started by commit, from a's box in
// its stored envelope (the adversary holds every key it was given). A
// commit a sealed itself boxes a's copy to a key destroyed at once, but a
// malicious committer keeps K: then the key comes from another recipient's
// box, which holds the same K.
func (w *advWorld) epochKey(a *adev, commit crdt.OpID) (seal.EpochKey, bool) {
	r, ok := a.store.envs[commit]
	if !ok {
		return seal.EpochKey{}, false
	}
	e, err := envelope.Unmarshal(envelope.TopicOf(w.team), r.Data)
	if err != nil {
		return seal.EpochKey{}, false
	}
	if box, err := teamkeys.OpenBox(a.team.BoxKeys(), w.team, e); err == nil {
		return box.Key, true
	}
	if op, ok := a.team.Op(commit); !ok || op.Author != a.dev.ID() {
		return seal.EpochKey{}, false
	}
	for _, d := range w.devs {
		if d.team == nil {
			continue
		}
		if box, err := teamkeys.OpenBox(d.team.BoxKeys(), w.team, e); err == nil {
			return box.Key, true
		}
	}
	return seal.EpochKey{}, false
}

// sealCommit seals a commit op by dev with a fresh key boxed to recips (a
// recipient whose Noise key cannot take a box gets one to a random key).
func (w *advWorld) sealCommit(dev *identity.Device, op *crdt.Op, recips []crdt.Recipient, prior []envelope.PriorKey) []byte {
	key, _ := seal.NewEpochKey(w.r)
	var noise []identity.NoisePublic
	for _, r := range recips {
		if r.Noise == (identity.NoisePublic{}) {
			d, _ := identity.Generate(w.r)
			r.Noise = d.NoisePublic()
		}
		noise = append(noise, r.Noise)
	}
	e, err := envelope.SealCommit(op, dev, key, noise, prior, w.r)
	if err != nil {
		panic(err)
	}
	return e.Marshal()
}

// heads returns a's log heads at a time before t.
func heads(a *adev, t crdt.HLC) []crdt.OpID { return a.team.lg.HeadsBefore(t) }

func (w *advWorld) junkPrior(a *adev, victims []*adev) error {
	if a.team.Removed() || !a.team.Member(a.dev.ID()) {
		return nil
	}
	s := a.team.State()
	body, err := s.NextCommit(a.dev.ID())
	if err != nil {
		return nil
	}
	op := a.team.commitOp(body.Marshal())
	var prior []envelope.PriorKey
	for i := range 500 {
		k, _ := seal.NewEpochKey(w.r)
		tag := w.rng.Uint32()
		if i < 3 && len(s.Epochs) > 0 {
			tag = s.Epochs[w.rng.IntN(len(s.Epochs))].Tag // junk keys for real tags too
		}
		if slices.ContainsFunc(prior, func(p envelope.PriorKey) bool { return p.Tag == tag }) || tag == crdt.TagOf(op.ID()) {
			continue
		}
		prior = append(prior, envelope.PriorKey{Tag: tag, Outer: k})
		if i >= 3 {
			w.junkTags[tag] = true
		}
	}
	sort.Slice(prior, func(i, j int) bool { return prior[i].Tag < prior[j].Tag })
	raw := w.sealCommit(a.dev, op, body.Recipients, prior)
	return w.hit(atkJunkPrior, a, victims, raw)
}

// invented: a removed adversary makes an epoch of its own, with parents
// from before its removal, and seals messages under it.
func (w *advWorld) invented(a *adev, victims []*adev) error {
	victims = removedFor(a, victims)
	if len(victims) == 0 {
		return nil
	}
	s := a.team.State()
	if s.Current < 0 {
		return nil
	}
	var recips []crdt.Recipient
	recips = append(recips, s.Epochs[s.Current].Recipients...)
	ts := crdt.MakeHLC(w.timeOf(a), 0)
	body := crdt.Commit{Number: s.Epochs[len(s.Epochs)-1].Number + 1, Recipients: recips}
	if body.Validate() != nil {
		return nil
	}
	op := crdt.NewOp(a.dev, w.team, ts, heads(a, ts), crdt.KindMember, body.Marshal())
	key, _ := seal.NewEpochKey(w.r)
	var noise []identity.NoisePublic
	for _, r := range recips {
		noise = append(noise, r.Noise)
	}
	e, err := envelope.SealCommit(op, a.dev, key, noise, nil, w.r)
	if err != nil {
		return nil
	}
	raws := [][]byte{e.Marshal()}
	w.mark(atkInvented, op.ID())
	// Messages under the invented epoch.
	ep := teamkeys.NewEpoch(a.dev, key, op.ID(), recips)
	_ = ep
	sender := senderkey.NewSender(key, a.dev.ID())
	for i := range 3 {
		m := crdt.NewOp(a.dev, w.team, ts+crdt.HLC(i+1), []crdt.OpID{op.ID()}, crdt.KindMessage, crdt.Message{Text: "invented"}.Marshal())
		me, _, err := envelope.SealChain(m, a.dev, crdt.TagOf(op.ID()), envelope.OuterKey(key), sender, slices.IndexFunc(recips, func(r crdt.Recipient) bool { return r.Device == a.dev.ID() }))
		if err != nil {
			return nil
		}
		raws = append(raws, me.Marshal())
		w.mark(atkInvented, m.ID())
	}
	return w.hit(atkInvented, a, victims, raws...)
}

// removedFor keeps the victims that hold a's removal.
func removedFor(a *adev, victims []*adev) []*adev {
	var out []*adev
	for _, v := range victims {
		if removedIn(v, a) {
			out = append(out, v)
		}
	}
	return out
}

// backdated: a removed adversary writes messages, in an old epoch whose
// chain it holds, with parents from before its removal.
func (w *advWorld) backdated(a *adev, victims []*adev) error {
	victims = removedFor(a, victims)
	if len(victims) == 0 {
		return nil
	}
	s := a.team.State()
	var raws [][]byte
	for _, ep := range s.Epochs {
		if !a.team.keys.CanSend(ep.ID) {
			continue
		}
		ts := crdt.MakeHLC(w.timeOf(a), uint16(len(raws)))
		m := crdt.NewOp(a.dev, w.team, ts, heads(a, ts), crdt.KindMessage, crdt.Message{Text: "back-dated"}.Marshal())
		e, _, err := a.team.keys.Seal(m, ep.ID)
		if err != nil {
			continue
		}
		raws = append(raws, e.Marshal())
		w.mark(atkBackdated, m.ID())
	}
	if len(raws) == 0 {
		return nil
	}
	return w.hit(atkBackdated, a, victims, raws...)
}

// throwaway: keys that were never members sign a commit that makes them an
// admin, at a time far in the future, and messages; delivered by an
// adversary peer.
func (w *advWorld) throwaway(a *adev, victims []*adev) error {
	var raws [][]byte
	s := a.team.State()
	for range 2 {
		x, _ := identity.Generate(w.r)
		var recips []crdt.Recipient
		for _, m := range s.Members {
			recips = append(recips, crdt.Recipient{Device: m.Device, Noise: m.Noise})
		}
		recips = append(recips, crdt.Recipient{Device: x.ID(), Noise: x.NoisePublic()})
		slices.SortFunc(recips, func(p, q crdt.Recipient) int { return bytes.Compare(p.Device[:], q.Device[:]) })
		body := crdt.Commit{Number: 500, Changes: []crdt.Change{{Action: crdt.ActAdd, Info: crdt.MemberInfo{Device: x.ID(), Noise: x.NoisePublic(), Name: "x", Admin: true}}}, Recipients: recips}
		ts := crdt.MakeHLC(time.Date(2199, 1, 1, 0, 0, 0, 0, time.UTC), 0)
		op := crdt.NewOp(x, w.team, ts, heads(a, ts), crdt.KindMember, body.Marshal())
		raws = append(raws, w.sealCommit(x, op, recips, nil))
		w.mark(atkThrowaway, op.ID())
	}
	return w.hit(atkThrowaway, a, victims, raws...)
}

// lowOrder: a member links a device with an all-zero Noise key.
func (w *advWorld) lowOrder(a *adev, victims []*adev) error {
	if !a.team.Member(a.dev.ID()) {
		return nil
	}
	s := a.team.State()
	p, ok := s.PersonOf(a.dev.ID())
	if !ok || len(s.Epochs) == 0 {
		return nil
	}
	x, _ := identity.Generate(w.r)
	var recips []crdt.Recipient
	for _, m := range s.Members {
		recips = append(recips, crdt.Recipient{Device: m.Device, Noise: m.Noise})
	}
	recips = append(recips, crdt.Recipient{Device: x.ID()}) // all-zero Noise key
	slices.SortFunc(recips, func(p, q crdt.Recipient) int { return bytes.Compare(p.Device[:], q.Device[:]) })
	body := crdt.Commit{Number: s.Epochs[len(s.Epochs)-1].Number + 1,
		Changes: []crdt.Change{{Action: crdt.ActLink, Info: crdt.MemberInfo{Device: x.ID(), Name: "weak"}, Target: p.ID}}, Recipients: recips}
	if body.Validate() != nil {
		return nil
	}
	op := a.team.commitOp(body.Marshal())
	w.mark(atkLowOrder, op.ID())
	return w.hit(atkLowOrder, a, victims, w.sealCommit(a.dev, op, recips, nil))
}

// reseal: a member re-seals an honest sender's genuine op at a later index
// of that sender's chain (with the genuine signature, or its own).
func (w *advWorld) reseal(a *adev, victims []*adev) error {
	var genuine *crdt.Op
	for _, op := range a.team.lg.Ops() {
		if op.Kind == crdt.KindMessage && op.Author != a.dev.ID() && !w.isAdversaryDevice(op.Author) {
			genuine = op
		}
	}
	if genuine == nil {
		return nil
	}
	key, ok := w.epochKey(a, w.epochOf(a, genuine.Seal.Epoch))
	if !ok {
		return nil
	}
	j := genuine.Seal.Index + 1 + uint32(w.rng.IntN(3))
	slot := adversary.Slot(a.team.State(), genuine.Seal.Epoch, genuine.Author)
	raw := adversary.ForgeChain(genuine, genuine.Seal.Epoch, slot, j, adversary.Borrow(genuine.Seal.Sig), key)
	raw2 := adversary.ForgeChain(genuine, genuine.Seal.Epoch, slot, j, adversary.SignAs(a.dev, w.team, genuine.Seal.Epoch, genuine.Author, j, genuine.ID()), key)
	if err := w.hit(atkReseal, a, victims, raw, raw2); err != nil {
		return err
	}
	// The victims must still open the sender's real message at index j,
	// when it comes: checked by the final convergence (every member shows
	// every message it can read).
	return nil
}

// epochOf returns the id of the epoch with tag that a holds.
func (w *advWorld) epochOf(a *adev, tag uint32) crdt.OpID {
	for _, e := range a.team.State().Epoch(tag) {
		return e.ID
	}
	return crdt.OpID{}
}

// slotOf returns a's slot in the recipient list of the epoch started by
// commit, as a's log knows it (0 if none).
func (w *advWorld) slotOf(a *adev, commit crdt.OpID) int {
	for _, e := range a.team.State().Epochs {
		if e.ID == commit {
			return max(0, slices.IndexFunc(e.Recipients, func(r crdt.Recipient) bool { return r.Device == a.dev.ID() }))
		}
	}
	return 0
}

func (w *advWorld) isAdversaryDevice(d identity.DeviceID) bool {
	for _, x := range w.devs {
		if x.adversary && x.dev.ID() == d {
			return true
		}
	}
	return false
}

// equivocate: a member seals two different messages at one index of its
// own chain, and gives one to some victims and the other to the rest.
func (w *advWorld) equivocate(a *adev, victims []*adev) error {
	if !a.team.Member(a.dev.ID()) || a.team.Removed() {
		return nil
	}
	opA, eff, err := a.team.Send(w.timeOf(a), crdt.Message{Text: "A"})
	if err != nil {
		return nil
	}
	w.apply(a, eff)
	key, ok := w.epochKey(a, w.epochOf(a, opA.Seal.Epoch))
	if !ok || len(eff.Publish) == 0 {
		return nil
	}
	s := senderkey.NewSender(key, a.dev.ID())
	var nz [senderkey.NonceSize]byte
	for range opA.Seal.Index {
		_, _, _ = s.Seal(nz, nil, nil)
	}
	opB := crdt.NewOp(a.dev, w.team, opA.Time+1, opA.Parents, crdt.KindMessage, crdt.Message{Text: "B"}.Marshal())
	eb, _, err := envelope.SealChain(opB, a.dev, opA.Seal.Epoch, envelope.OuterKey(key), s, w.slotOf(a, w.epochOf(a, opA.Seal.Epoch)))
	if err != nil {
		return nil
	}
	// Not marked: if B reaches no honest member, A alone is no divergence.
	// The final convergence and the equal equivocation alerts check it.
	w.stats.Tried[atkEquivocate]++
	half := len(victims) / 2
	for i, v := range victims {
		raw := eff.Publish[len(eff.Publish)-1]
		if i < half {
			raw = eb.Marshal()
		}
		from := a.peer()
		if !v.team.Member(a.dev.ID()) {
			from = Peer{ID: "relay", Relay: true}
		}
		_, veff := v.team.Receive(w.timeOf(v), []Arrival{{Raw: raw, From: from}})
		w.apply(v, veff)
	}
	return nil
}

// clockPush: a removed adversary (or one with a throwaway key) sends ops
// stamped in the year 2199.
func (w *advWorld) clockPush(a *adev, victims []*adev) error {
	ts := crdt.MakeHLC(time.Date(2199, 6, 1, 0, 0, 0, 0, time.UTC), 0)
	var raws [][]byte
	if vs := removedFor(a, victims); len(vs) > 0 {
		victims = vs
		for _, ep := range a.team.State().Epochs {
			if a.team.keys.CanSend(ep.ID) {
				m := crdt.NewOp(a.dev, w.team, ts, heads(a, ts), crdt.KindMessage, crdt.Message{Text: "2199"}.Marshal())
				if e, _, err := a.team.keys.Seal(m, ep.ID); err == nil {
					raws = append(raws, e.Marshal())
					w.mark(atkClockPush, m.ID())
				}
			}
		}
	}
	x, _ := identity.Generate(w.r)
	for i := range 2 {
		c := crdt.Create{Name: "fake", Kind: crdt.Clinical, Creator: crdt.MemberInfo{Device: x.ID(), Noise: x.NoisePublic(), Name: "x"}}
		op := crdt.NewOp(x, w.team, ts+crdt.HLC(i), nil, crdt.KindCreate, c.Marshal())
		raws = append(raws, w.sealCommit(x, op, []crdt.Recipient{{Device: victims[0].dev.ID(), Noise: victims[0].dev.NoisePublic()}}, nil))
		w.mark(atkClockPush, op.ID())
	}
	return w.hit(atkClockPush, a, victims, raws...)
}

// boxFlood: a member sends commit envelopes of 256 junk boxes; what it may
// cost each victim is bounded by its budget.
func (w *advWorld) boxFlood(a *adev, victims []*adev) error {
	var raws [][]byte
	if w.floodRecips == nil {
		for range 256 {
			d, _ := identity.Generate(w.r)
			w.floodRecips = append(w.floodRecips, crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()})
		}
		slices.SortFunc(w.floodRecips, func(p, q crdt.Recipient) int { return bytes.Compare(p.Device[:], q.Device[:]) })
	}
	for i := range boxBurst/256 + 1 {
		recips := w.floodRecips
		ts := crdt.MakeHLC(w.timeOf(a), 0)
		op := crdt.NewOp(a.dev, w.team, ts, heads(a, ts), crdt.KindMember, crdt.Commit{Number: 900 + uint32(i), Recipients: recips}.Marshal())
		raws = append(raws, w.sealCommit(a.dev, op, recips, nil))
		w.mark(atkBoxFlood, op.ID())
	}
	before := make(map[*adev]int)
	for _, v := range victims {
		before[v] = v.team.PeerStats(a.name).BoxTrials
	}
	if err := w.hit(atkBoxFlood, a, victims, raws...); err != nil {
		return err
	}
	for _, v := range victims {
		if n := v.team.PeerStats(a.name).BoxTrials - before[v]; n > boxBurst {
			w.stats.Succeeded[atkBoxFlood]++
			return w.failf("box flood: %s tried %d boxes for %s at once; the budget is %d", v.name, n, a.name, boxBurst)
		}
	}
	return nil
}

// garbage: bytes that are no envelope, or an envelope of another topic.
func (w *advWorld) garbage(a *adev, victims []*adev) error {
	junk := make([]byte, 100+w.rng.IntN(400))
	for i := range junk {
		junk[i] = byte(w.rng.Uint32())
	}
	return w.hit(atkGarbage, a, victims, junk, append([]byte{3}, junk...))
}

// --- The end.

func (w *advWorld) finish() error {
	for _, d := range w.devs {
		d.group = 0
	}
	w.tracef("final merge")
	for _, wait := range []time.Duration{time.Minute, pendingTTL + time.Minute} {
		// A minute for re-keys; then as long as held ops wait for parents
		// no one has, once.
		for range 8 {
			before := w.versions()
			w.now = w.now.Add(wait)
			w.meshAll()
			w.tickAll()
			if w.versions() == before {
				break
			}
		}
	}
	w.meshAll()
	honest := w.honestMembers()
	if len(honest) == 0 {
		return nil
	}
	// The union of what the honest members hold is the truth: what a removed
	// device holds and never gave a member before its removal is its own.
	// Members are the devices the truth lists (a device can believe itself a
	// member that the truth has removed): repeat until they agree.
	var truth *crdt.Log
	var ts crdt.State
	members := honest
	for range len(honest) + 1 {
		truth = crdt.NewLog(w.team)
		for _, d := range members {
			for _, op := range d.team.lg.Ops() {
				if _, err := truth.Add(op); err != nil {
					return w.failf("the union of honest logs refuses an op of %s: %v", d.name, err)
				}
			}
		}
		ts = truth.State()
		var next []*adev
		for _, d := range members {
			if _, ok := ts.Member(d.dev.ID()); ok {
				next = append(next, d)
			}
		}
		if len(next) == len(members) {
			break
		}
		members = next
	}
	w.truth, w.members = truth, members
	counted := make(map[crdt.OpID]bool)
	for _, m := range ts.Messages {
		counted[m.ID] = true
	}
	for _, d := range members {
		s := d.team.State()
		if got, want := showPersons(s), showPersons(&ts); got != want {
			return w.failf("%s shows persons %s; the truth %s", d.name, got, want)
		}
		for _, q := range s.Equivocations {
			if !slices.Contains(ts.Equivocations, q) {
				return w.failf("%s shows equivocation %+v; the truth does not", d.name, q)
			}
		}
		for q, evs := range evidenceOf(truth, &ts) {
			if slices.Contains(s.Equivocations, q) {
				continue
			}
			for _, ev := range evs {
				if readable(&ts, ev.Seal.Epoch, d.dev.ID()) {
					return w.failf("%s does not show equivocation %+v, whose evidence %s it can read", d.name, q, ev.ID().Short())
				}
			}
		}
		shown := make(map[crdt.OpID]bool)
		for _, m := range s.Messages {
			shown[m.ID] = true
			if !counted[m.ID] {
				return w.failf("%s shows message %s that does not count in the truth", d.name, m.ID.Short())
			}
		}
		// A message d can read must show if it counts by the ops d can read.
		// Not every message that counts in the truth does: a removed
		// member's message concurrent with its removal counts only through a
		// witness (rule 6a), and the witness, or an op between it and the
		// message, may be one d cannot read: sealed in an epoch d is not a
		// recipient of (say a member's commit that removed d, later found
		// invalid, and the member's message sealed in it: history 9169), or
		// at a chain position whose key d spent on an equivocating twin. No
		// honest device can hand d such an op, so d's log lacks it, and the
		// state is a function of the log: the message counts on d exactly
		// when it counts with the ops d can read, which is what is checked.
		// (Such a gap only ever hides a witness, rule 6a: that d shows no
		// more than the truth is checked above.)
		var visible *crdt.State
		for _, m := range ts.Messages {
			op, _ := truth.Op(m.ID)
			if shown[m.ID] || !readable(&ts, op.Seal.Epoch, d.dev.ID()) {
				continue
			}
			if visible == nil {
				vs := visibleTo(w.team, truth, &ts, d).State()
				visible = &vs
			}
			if visible.Counts(m.ID) {
				return w.failf("%s does not show %s's message %s (%q), sealed in an epoch it is a recipient of", d.name, m.AuthorName, m.ID.Short(), m.Text)
			}
		}
	}
	// Attack ops never show or count on a member, unless their author is a
	// member in the end (its removal did not stand).
	for _, d := range members {
		s := d.team.State()
		for id, kind := range w.attackOps {
			if !s.Counts(id) {
				continue
			}
			if op, ok := d.team.lg.Op(id); ok {
				if _, member := ts.Member(op.Author); member {
					continue
				}
			}
			w.stats.Succeeded[kind]++
			return w.failf("%s: op %s counts on %s", kind, id.Short(), d.name)
		}
	}
	for _, d := range w.devs {
		if d.adversary || d.team == nil {
			continue
		}
		for _, ep := range d.team.keys.Epochs() {
			if w.junkTags[ep.Tag] {
				w.stats.Succeeded[atkJunkPrior]++
				return w.failf("%s holds a junk prior key (tag %08x)", d.name, ep.Tag)
			}
		}
	}
	for id := range w.banned {
		for _, d := range w.devs {
			if d.name == id && !d.adversary {
				return w.failf("honest %s was banned", id)
			}
		}
	}
	// Removed devices open nothing sealed after their removal by a sender
	// that knew of it.
	for _, d := range w.devs {
		if d.team == nil {
			continue
		}
		if _, ok := ts.Member(d.dev.ID()); ok {
			continue
		}
		for _, s := range w.sent {
			if !slices.Contains(s.removed, d.dev.ID()) {
				continue
			}
			w.stats.Protected++
			e, err := envelope.Unmarshal(d.team.topic, s.raw)
			if err != nil {
				continue
			}
			if o, err := d.team.keys.OpenChain(e); err == nil && o.Op != nil {
				return w.failf("removed %s opens %s, sealed after its removal by a sender that knew", d.name, s.id.Short())
			}
		}
	}
	return nil
}

// evidenceOf returns the counting evidence ops of the truth, by the
// equivocation they prove.
func evidenceOf(l *crdt.Log, s *crdt.State) map[crdt.Equivocation][]*crdt.Op {
	out := make(map[crdt.Equivocation][]*crdt.Op)
	for _, op := range l.Ops() {
		if op.Kind != crdt.KindEvidence || !s.Counts(op.ID()) {
			continue
		}
		e, err := crdt.UnmarshalEvidence(op.Body)
		if err != nil {
			continue
		}
		q := crdt.Equivocation{Device: e.Device, Epoch: e.Epoch, Index: e.Index, IDs: [2]crdt.OpID{e.A.ID, e.B.ID}}
		out[q] = append(out[q], op)
	}
	return out
}

// visibleTo returns the ops of the truth l (its state ts) that device d
// can read: the create and commit ops (members hand them over), and the
// others sealed in an epoch whose create or commit op in l lists d as a
// recipient, less the equivocated ops d does not hold (it spent their
// chain positions' keys on their twins, or may have).
func visibleTo(team crdt.TeamID, l *crdt.Log, ts *crdt.State, d *adev) *crdt.Log {
	tags := make(map[uint32]bool)
	for _, op := range l.Ops() {
		if !op.Kind.StartsEpoch() {
			continue
		}
		if rs, err := teamkeys.Recipients(op); err == nil && slices.ContainsFunc(rs, func(r crdt.Recipient) bool { return r.Device == d.dev.ID() }) {
			tags[crdt.TagOf(op.ID())] = true
		}
	}
	twins := make(map[crdt.OpID]bool)
	for _, q := range ts.Equivocations {
		for _, id := range q.IDs {
			if !d.team.lg.Has(id) {
				twins[id] = true
			}
		}
	}
	out := crdt.NewLog(team)
	for _, op := range l.Ops() {
		if op.Kind.StartsEpoch() || tags[op.Seal.Epoch] && !twins[op.ID()] {
			if _, err := out.Add(op); err != nil {
				panic(err) // l took it
			}
		}
	}
	return out
}

// readable reports whether device d is a recipient of an epoch with tag.
func readable(s *crdt.State, tag uint32, d identity.DeviceID) bool {
	for _, e := range s.Epoch(tag) {
		if slices.ContainsFunc(e.Recipients, func(r crdt.Recipient) bool { return r.Device == d }) {
			return true
		}
	}
	return false
}

func showPersons(s *crdt.State) string {
	var b strings.Builder
	for _, p := range s.Persons {
		fmt.Fprintf(&b, "%s admin=%v devices=%v; ", p.Name, p.Admin, p.Devices)
	}
	fmt.Fprintf(&b, "removed=%v", s.Removed)
	return b.String()
}
