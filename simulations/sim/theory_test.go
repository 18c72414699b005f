package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var theoryRuns = flag.Int("sim.theory", 0, "replicas per strategy for TestTheory's 3% check (make sim-check); 0 runs the short check")

// theoryConfig is R independent replicas, each a team of n devices meeting
// pairwise at rate lambda, with one direct message from its first member to
// its second at time zero.
func theoryConfig(r, n int, lambda float64, st Strategy, seed uint64) Config {
	rng := rand.New(rand.NewPCG(seed, 7))
	horizon := time.Duration(25 / lambda * float64(time.Second))
	cfg := Config{Seed: seed, Strategy: st, Duration: horizon, TickEvery: horizon, StopWhenDelivered: true}
	var all []ContactEvent
	for k := range r {
		var members []int
		for i := range n {
			cfg.Devices = append(cfg.Devices, DeviceSpec{Name: fmt.Sprintf("r%dd%d", k, i)})
			members = append(members, k*n+i)
		}
		cfg.Teams = append(cfg.Teams, TeamSpec{Members: members})
		cfg.Messages = append(cfg.Messages, MessageSpec{At: 0, Team: k, From: k * n, To: k*n + 1, Size: 100})
		for _, c := range Exponential(n, lambda, time.Millisecond, horizon, rng) {
			c.A += k * n
			c.B += k * n
			all = append(all, c)
		}
	}
	cfg.Contacts = sortContacts(all)
	return cfg
}

// TestTheory checks the simulator against Groenevelt, Nain & Koole (2005):
// with pairwise exponential meetings of rate λ among N devices, epidemic
// delivery's mean delay is H(N−1)/(λ(N−1)) and direct delivery's 1/λ.
// The short run (make test) uses few replicas and a tolerance of 4
// standard errors; -sim.theory=R (make sim-check) checks 3%.
func TestTheory(t *testing.T) {
	const n, lambda = 8, 1.0 / 3600
	runs := theoryDefaultRuns
	if *theoryRuns > 0 {
		runs = *theoryRuns
	}
	h := 0.0
	for k := 1; k < n; k++ {
		h += 1 / float64(k)
	}
	cases := []struct {
		st   Strategy
		want float64 // seconds
		cv   float64 // coefficient of variation of one delay
	}{
		{Strategies(0, 0)["direct"], 1 / lambda, 1},
		{Strategies(0, 0)["epidemic"], h / (lambda * (n - 1)), 0.8},
	}
	for _, c := range cases {
		t.Run(c.st.Name, func(t *testing.T) {
			res, err := Run(theoryConfig(runs, n, lambda, c.st, 11))
			if err != nil {
				t.Fatal(err)
			}
			if res.Summary.Delivered != runs {
				t.Fatalf("%d of %d delivered", res.Summary.Delivered, runs)
			}
			got := res.Summary.LatencyMean.Seconds()
			tol := 4 * c.cv / sqrtf(float64(runs))
			if *theoryRuns > 0 {
				tol = 0.03
			}
			rel := got/c.want - 1
			t.Logf("%s: %d runs, mean delay %.1f s, theory %.1f s, error %+.2f%% (tolerance %.1f%%)", c.st.Name, runs, got, c.want, 100*rel, 100*tol)
			if rel > tol || rel < -tol {
				t.Errorf("mean delay %.1f s is %+.2f%% from theory %.1f s", got, 100*rel, c.want)
			}
		})
	}
}
