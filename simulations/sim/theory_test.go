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
		// After every device's first tick (which publishes its prekey op),
		// so no later op of the author builds on the message and carries
		// it to others as an ancestor: the routers' bare model.
		cfg.Messages = append(cfg.Messages, MessageSpec{At: 2 * time.Minute, Team: k, From: k * n, To: k*n + 1, Size: 100})
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
// Direct delivery's mean must also equal, to the millisecond, the mean of
// the sample's own first meetings of author and recipient. The short run
// (make test) uses few replicas and a tolerance of 4 standard errors;
// -sim.theory=R (make sim-check, 10,000) checks 3%: at 1,000 replicas the
// sample itself strays by 3% (seed 11: its first meetings average 3,347 s
// against 1/λ = 3,600 s).
// theoryBatch is how many replicas TestTheory runs in one simulation.
const theoryBatch = 500

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
			// Replicas run in batches of at most theoryBatch, each its own
			// Run with its own seed, so that memory stays that of one batch
			// (10,000 replicas in one Run are 80,000 devices: over 10 GiB).
			var total time.Duration
			delivered := 0
			for b := 0; b*theoryBatch < runs; b++ {
				r := min(theoryBatch, runs-b*theoryBatch)
				cfg := theoryConfig(r, n, lambda, c.st, 11+uint64(b))
				res, err := Run(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if c.st.Name == "direct" {
					// Exactly the first meeting of author and recipient after
					// the message, replica by replica: the sample's own mean.
					first := map[int]time.Duration{}
					at := cfg.Messages[0].At
					for _, ct := range cfg.Contacts {
						if _, ok := first[ct.A/n]; !ok && ct.Up && ct.At >= at && ct.A%n == 0 && ct.B == ct.A+1 {
							first[ct.A/n] = ct.At - at
						}
					}
					var sum time.Duration
					for _, d := range first {
						sum += d
					}
					if want := sum / time.Duration(len(first)); len(first) != r || (res.Summary.LatencyMean-want).Abs() > time.Millisecond {
						t.Errorf("batch %d: direct delivery's mean %v is not the sample's first meetings' %v", b, res.Summary.LatencyMean, want)
					}
				}
				if res.Summary.Delivered != r {
					t.Fatalf("batch %d: %d of %d delivered", b, res.Summary.Delivered, r)
				}
				total += res.Summary.LatencyMean * time.Duration(r)
				delivered += r
			}
			got := (total / time.Duration(delivered)).Seconds()
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
