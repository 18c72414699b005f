package chaos

import (
	mrand "math/rand/v2"
	"testing"
	"time"
)

// TestPlan checks the schedules of both sizes over many seeds: every disturbance planned, all
// within the chaos phase, partitions one at a time, and a device's kills and isolations apart.
func TestPlan(t *testing.T) {
	for _, size := range []Size{Short, Long} {
		for seed := range uint64(200) {
			r := &runner{cfg: Config{Size: size, Seed: seed}, rng: mrand.New(mrand.NewPCG(seed, 0x6669656c646d6573))}
			for range size.Devices {
				r.devs = append(r.devs, &proc{})
			}
			evs := r.plan()
			count := map[string]int{}
			var lastSplitEnd time.Duration
			busy := map[int][][2]time.Duration{}
			for _, e := range evs {
				count[e.kind]++
				if e.at < 0 || e.at+e.dur > size.Chaos {
					t.Fatalf("%s seed %d: %s ends after the chaos phase (%v)", size.Name, seed, e, size.Chaos)
				}
				switch e.kind {
				case "split":
					if e.at < lastSplitEnd {
						t.Fatalf("%s seed %d: %s overlaps the previous partition", size.Name, seed, e)
					}
					lastSplitEnd = e.at + e.dur
					if len(e.side) == 0 || len(e.side) > size.Devices/2 {
						t.Fatalf("%s seed %d: %s: side of %d", size.Name, seed, e, len(e.side))
					}
				case "kill", "isolate":
					for _, w := range busy[e.dev] {
						if e.at < w[1]+5*time.Second && w[0] < e.at+e.dur+5*time.Second {
							t.Fatalf("%s seed %d: %s overlaps another disturbance of d%d", size.Name, seed, e, e.dev)
						}
					}
					busy[e.dev] = append(busy[e.dev], [2]time.Duration{e.at, e.at + e.dur})
				}
			}
			if count["split"] != size.Splits || count["kill"] != size.Kills || count["isolate"] != size.Isolations {
				t.Fatalf("%s seed %d: planned %v; want %d splits, %d kills, %d isolations",
					size.Name, seed, count, size.Splits, size.Kills, size.Isolations)
			}
		}
	}
}
