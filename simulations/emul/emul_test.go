package emul

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldmesh/fieldmesh/simulations/sim"
)

// The emulation agrees with the simulator when, on the same contacts, seed and messages:
//   - their delivery ratios differ by at most ratioTolerance (absolute); and
//   - their median latencies differ by at most medianTolerance of the simulator's.
//
// Why these: the simulator abstracts what the node does with timers and GossipSub. A contact opens
// in the node a connection on which a sync session starts at once and GossipSub's mesh forms on its
// next one-second heartbeat, then syncs repeat every two minutes; the simulator starts a
// reconciliation round the instant a contact opens and whenever a side's store changes. Mocknet
// shares a link's bandwidth between its two directions. So a message created, or arriving, in the
// last moments of a contact can make it across in one and miss it in the other, and then waits for
// the next contact (tens of minutes here). On the scenario's ~85 (message, recipient) pairs, two such
// pairs move the ratio by 0.024: ratioTolerance is 0.03. One such delivery moved to the next contact
// moves the median by at most a few minutes when the median is near an hour: medianTolerance is 5%
// (three minutes here). Both are far tighter than what the controls below produce (a different
// strategy, half the contacts), so the test can tell agreement from a broken emulation.
const (
	ratioTolerance  = 0.03
	medianTolerance = 0.05
)

// agree returns why two runs' summaries disagree, or nil.
func agree(simulated, emulated sim.Summary) error {
	var errs []error
	if d := math.Abs(simulated.DeliveryRatio - emulated.DeliveryRatio); d > ratioTolerance {
		errs = append(errs, fmt.Errorf("delivery ratio %.3f (simulator) and %.3f (emulation) differ by %.3f > %.2f",
			simulated.DeliveryRatio, emulated.DeliveryRatio, d, ratioTolerance))
	}
	sm, em := simulated.LatencyMedian, emulated.LatencyMedian
	if d := (sm - em).Abs(); float64(d) > medianTolerance*float64(sm) {
		errs = append(errs, fmt.Errorf("median latency %v (simulator) and %v (emulation) differ by %v > %.0f%%",
			sm.Round(time.Second), em.Round(time.Second), d.Round(time.Second), 100*medianTolerance))
	}
	if simulated.Created != emulated.Created || simulated.Recipients != emulated.Recipients {
		errs = append(errs, fmt.Errorf("the runs sent %d messages to %d recipients (simulator) and %d to %d (emulation)",
			simulated.Created, simulated.Recipients, emulated.Created, emulated.Recipients))
	}
	return errors.Join(errs...)
}

func loadScenario(t *testing.T) *sim.Scenario {
	t.Helper()
	sc, err := sim.LoadScenario("../scenarios/emulation.toml")
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func build(t *testing.T, sc *sim.Scenario, strategy string) sim.Config {
	t.Helper()
	cfg, err := sc.Build(sc.Seed, strategy)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func simulate(t *testing.T, cfg sim.Config) *sim.Result {
	t.Helper()
	r, err := sim.Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// emulate runs cfg on nodes in a synctest bubble of its own and fails the test on any leak.
func emulate(t *testing.T, cfg sim.Config) *sim.Result {
	t.Helper()
	var rep *Report
	synctest.Test(t, func(t *testing.T) {
		var err error
		if rep, err = Run(cfg); err != nil {
			t.Fatal(err)
		}
	})
	if rep == nil {
		t.FailNow()
	}
	t.Logf("setup %v, steps at most %v late", rep.Setup, rep.Late)
	if rep.Late > time.Second {
		t.Errorf("a step of the trace ran %v after its time: the contacts were not the trace's", rep.Late)
	}
	if rep.OffContact != 0 {
		t.Errorf("%d deliveries reached devices with no open contact: the emulation leaked", rep.OffContact)
	}
	return rep.Result
}

func describe(s sim.Summary) string {
	return fmt.Sprintf("delivery %.3f (%d of %d), median %v, mean %v, p95 %v, %d messages", s.DeliveryRatio, s.Delivered,
		s.Recipients, s.LatencyMedian.Round(time.Second), s.LatencyMean.Round(time.Second), s.LatencyP95.Round(time.Second), s.Created)
}

// pairs compares two runs of the same messages (message, recipient) by (message, recipient): how
// many both delivered, how many only one did, and how far apart the common deliveries' times are.
func pairs(a, b *sim.Result) string {
	at := func(r *sim.Result) map[[2]int]time.Duration {
		m := map[[2]int]time.Duration{}
		for _, x := range r.Messages {
			for _, d := range x.Deliveries {
				m[[2]int{x.Index, d.Device}] = d.At
			}
		}
		return m
	}
	ma, mb := at(a), at(b)
	both, onlyA, onlyB := 0, 0, 0
	var maxGap, sumGap time.Duration
	for k, ta := range ma {
		tb, ok := mb[k]
		if !ok {
			onlyA++
			continue
		}
		both++
		gap := (ta - tb).Abs()
		maxGap = max(maxGap, gap)
		sumGap += gap
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			onlyB++
		}
	}
	mean := time.Duration(0)
	if both > 0 {
		mean = sumGap / time.Duration(both)
	}
	return fmt.Sprintf("%d delivered by both, %d by the simulator only, %d by the emulation only; delivery times apart by %v on average, %v at most",
		both, onlyA, onlyB, mean.Round(time.Millisecond), maxGap.Round(time.Millisecond))
}

// halfContacts drops every other meeting of each pair (its up and its down), keeping the rest.
func halfContacts(cs []sim.ContactEvent) []sim.ContactEvent {
	meetings := map[[2]int]int{}
	dropping := map[[2]int]bool{}
	var out []sim.ContactEvent
	for _, c := range cs {
		k := [2]int{min(c.A, c.B), max(c.A, c.B)}
		if c.Up {
			meetings[k]++
			dropping[k] = meetings[k]%2 == 0
		}
		if !dropping[k] {
			out = append(out, c)
		}
	}
	return out
}

// TestEmulationAgreesWithSimulator runs the emulation scenario (simulations/scenarios/emulation.toml)
// in the fast simulator and on real nodes on mocknet, on the same contacts, seed and messages, and
// checks that they agree on delivery ratio and median latency within the tolerances above. Two
// controls show the check can fail: the simulator under another strategy (epidemic: devices carry
// other teams' envelopes, which nodes do not), and an emulation that drops half the contacts.
func TestEmulationAgreesWithSimulator(t *testing.T) {
	sc := loadScenario(t)
	simRes := simulate(t, build(t, sc, Strategy))
	emuRes := emulate(t, build(t, sc, Strategy))
	simulated, emulated := simRes.Summary, emuRes.Summary
	t.Logf("simulator (members): %s", describe(simulated))
	t.Logf("emulation (nodes):   %s", describe(emulated))
	if err := agree(simulated, emulated); err != nil {
		t.Errorf("the simulator and the emulation disagree: %v", err)
	}
	if emulated.Delivered == 0 || emulated.Delivered == emulated.Recipients {
		t.Errorf("the emulation delivered %d of %d: the scenario should deliver some and not all", emulated.Delivered, emulated.Recipients)
	}
	t.Logf("per (message, recipient): %s", pairs(simRes, emuRes))

	t.Run("fails when the simulator's strategy changes", func(t *testing.T) {
		epidemic := simulate(t, build(t, sc, "epidemic")).Summary
		t.Logf("simulator (epidemic): %s", describe(epidemic))
		err := agree(epidemic, emulated)
		if err == nil {
			t.Fatal("the emulation agrees with the simulator under the epidemic strategy too: the check cannot tell")
		}
		t.Logf("as it should: %v", err)
	})
	t.Run("fails when the emulation drops contacts", func(t *testing.T) {
		if raceEnabled {
			t.Skip("a second emulation under the race detector: make sim-emulate runs it")
		}
		cfg := build(t, sc, Strategy)
		cfg.Contacts = halfContacts(cfg.Contacts)
		dropped := emulate(t, cfg).Summary
		t.Logf("emulation, half the contacts: %s", describe(dropped))
		err := agree(simulated, dropped)
		if err == nil {
			t.Fatal("an emulation with half the contacts agrees with the simulator: the check cannot tell")
		}
		t.Logf("as it should: %v", err)
	})
}

// TestRunRefuses: what the emulation cannot run faithfully is refused with an error, before any node
// starts, and Run outside a synctest bubble is refused rather than run for hours of real time.
func TestRunRefuses(t *testing.T) {
	sc := loadScenario(t)
	if _, err := Run(build(t, sc, Strategy)); !errors.Is(err, ErrNoBubble) {
		t.Errorf("Run outside a bubble: %v; want ErrNoBubble", err)
	}
	synctest.Test(t, func(t *testing.T) {
		for name, c := range map[string]struct {
			mod  func(*sim.Config)
			want error
		}{
			"epidemic strategy": {func(c *sim.Config) { c.Strategy, _ = sc.StrategyByName("epidemic") }, ErrStrategy},
			"direct strategy":   {func(c *sim.Config) { c.Strategy, _ = sc.StrategyByName("direct") }, ErrStrategy},
			"a relay":           {func(c *sim.Config) { c.Devices[3].Relay = true }, ErrRelays},
			"contact with an unknown device": {func(c *sim.Config) {
				c.Contacts = append(c.Contacts, sim.ContactEvent{At: time.Minute, A: 0, B: len(c.Devices), Up: true})
			}, nil},
			"message from a non-member": {func(c *sim.Config) { c.Messages[0].From = (c.Messages[0].From + 1) % len(c.Devices) }, nil},
			"no duration":               {func(c *sim.Config) { c.Duration = 0 }, nil},
		} {
			cfg := build(t, sc, Strategy)
			c.mod(&cfg)
			_, err := Run(cfg)
			if err == nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("%s: %v; want an error (%v)", name, err, c.want)
			}
		}
	})
}

// TestCountOffContact: the leak check counts a delivery at a device with no open contact at that
// instant, and not one over an open contact (including at the instant it closes: the delivery
// came over it first), nor one while another meeting of the same pair still holds it open.
func TestCountOffContact(t *testing.T) {
	m := time.Minute
	e := &emulation{devs: make([]*device, 3), cfg: sim.Config{Contacts: []sim.ContactEvent{
		{At: 10 * m, A: 0, B: 1, Up: true},
		{At: 15 * m, A: 1, B: 0, Up: true}, // the same pair again
		{At: 20 * m, A: 0, B: 1},
		{At: 30 * m, A: 0, B: 1},
		{At: 40 * m, A: 1, B: 2, Up: true},
		{At: 50 * m, A: 2, B: 1},
	}}}
	for _, c := range []struct {
		dev  int
		at   time.Duration
		want int
	}{
		{1, 5 * m, 1}, {1, 10 * m, 0}, {0, 25 * m, 0}, {0, 30 * m, 0}, {0, 31 * m, 1},
		{2, 35 * m, 1}, {2, 45 * m, 0}, {0, 45 * m, 1}, {2, 50 * m, 0}, {1, 51 * m, 1},
	} {
		if got := e.countOffContact([]offCheck{{c.dev, c.at}}); got != c.want {
			t.Errorf("delivery to %d at %v: counted %d; want %d", c.dev, c.at, got, c.want)
		}
	}
	all := []offCheck{{1, 5 * m}, {0, 31 * m}, {2, 45 * m}, {1, 51 * m}}
	if got := e.countOffContact(all); got != 3 {
		t.Errorf("counted %d of %v; want 3 (at 5m, 31m and 51m)", got, all)
	}
}
