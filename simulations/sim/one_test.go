package sim

import (
	"bufio"
	"cmp"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/recon"
)

var oneCheck = flag.Bool("sim.one", false, "run TestAgainstTheONE on every committed ONE fixture (make sim-check)")

// oneFixture is one scenario the ONE simulator ran (testdata/one/NAME):
// its settings, the contact trace and message creations it reported
// (trace.txt, in StandardEventsReader format), and its MessageStatsReport
// for each router. testdata/one/README.md says how they were made.
type oneFixture struct {
	dir      string
	settings map[string]string
}

func readKV(t *testing.T, path, sep string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, sep)
		if ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return kv
}

func (f *oneFixture) float(t *testing.T, key string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(f.settings[key], "k"), "M"), 64)
	if err != nil {
		t.Fatalf("%s: setting %s: %v", f.dir, key, err)
	}
	switch {
	case strings.HasSuffix(f.settings[key], "k"):
		v *= 1000
	case strings.HasSuffix(f.settings[key], "M"):
		v *= 1e6
	}
	return v
}

// TestAgainstTheONE replays the ONE's contacts and messages through the
// simulator with the same three routers — Epidemic (every device carries
// everything: one team, members sync everything), DirectDelivery (copies
// 1) and binary SprayAndWait (copies L) — and compares delivery ratio
// (within 2 points) and median latency (within 10%) with the ONE's
// reports. The link is the ONE's: its interface speed without latency, one
// transfer at a time per host, a message an update (Link). Each
// pair of devices that exchanges messages is a team of two, and other
// devices carry its sealed envelopes as the strategy lets them.
func TestAgainstTheONE(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join("testdata", "one", "*"))
	var fixtures []*oneFixture
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "settings.txt")); err == nil && !st.IsDir() {
			fixtures = append(fixtures, &oneFixture{dir: d, settings: readKV(t, filepath.Join(d, "settings.txt"), "=")})
		}
	}
	if len(fixtures) == 0 {
		t.Fatal("no ONE fixtures in testdata/one")
	}
	if !*oneCheck {
		if raceEnabled {
			t.Skip("the ONE comparison runs without the race detector (go test ./simulations/sim, make sim-check)")
		}
		// The smallest fixture, direct delivery only.
		size := func(f *oneFixture) int64 {
			st, err := os.Stat(filepath.Join(f.dir, "trace.txt"))
			if err != nil {
				return 0
			}
			return st.Size()
		}
		slices.SortFunc(fixtures, func(a, b *oneFixture) int { return cmp.Compare(size(a), size(b)) })
		fixtures = fixtures[:1]
	}
	for _, fx := range fixtures {
		routers := map[string]Strategy{
			"EpidemicRouter": Strategies(0, 0)["epidemic"],
			// direct delivery: only the two members ever hold their envelopes.
			"DirectDeliveryRouter": Strategies(0, 0)["direct"],
			"SprayAndWaitRouter":   Strategies(int(fx.float(t, "SprayAndWaitRouter.nrofCopies")), 0)["spray"],
		}
		names := []string{"DirectDeliveryRouter", "SprayAndWaitRouter", "EpidemicRouter"}
		if !*oneCheck {
			names = names[:1]
		}
		tf, err := os.Open(filepath.Join(fx.dir, "trace.txt"))
		if err != nil {
			t.Fatal(err)
		}
		tr, err := ReadONE(tf)
		tf.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, router := range names {
			t.Run(filepath.Base(fx.dir)+"/"+router, func(t *testing.T) {
				one := readKV(t, filepath.Join(fx.dir, router+"_MessageStatsReport.txt"), ":")
				wantDel, err1 := strconv.ParseFloat(one["delivery_prob"], 64)
				wantMed, err2 := strconv.ParseFloat(one["latency_med"], 64)
				if err1 != nil || err2 != nil {
					t.Fatalf("ONE report: %v %v", err1, err2)
				}
				// The ONE's links: its interface speed, one transfer at a
				// time per host, deliverable first, each holding both
				// hosts until the next update (Link.Exclusive, Link.Step),
				// and recon's smallest frames (4 KiB: two or three of the
				// ONE's messages), as the ONE moves (and loses) messages
				// one by one.
				cfg := Config{Seed: 1, Strategy: routers[router], Duration: time.Duration(fx.float(t, "Scenario.endTime")) * time.Second,
					TickEvery: time.Hour, MaxFrame: recon.MinFrameSize, Link: Link{Bandwidth: fx.float(t, "btInterface.transmitSpeed"),
						Step: time.Duration(fx.float(t, "Scenario.updateInterval") * float64(time.Second)), Exclusive: true}}
				for i := range tr.N {
					cfg.Devices = append(cfg.Devices, DeviceSpec{Name: "n" + strconv.Itoa(i)})
				}
				// Each pair that exchanges messages is a team of two (a
				// direct conversation), so messages do not wait on
				// each other's history as in one big team's log.
				pairs := map[[2]int]int{}
				cfg.Contacts = tr.Contacts
				for _, m := range tr.Messages {
					k := pairKey(m.From, m.To)
					ti, ok := pairs[k]
					if !ok {
						ti = len(cfg.Teams)
						pairs[k] = ti
						cfg.Teams = append(cfg.Teams, TeamSpec{Members: []int{k[0], k[1]}})
					}
					cfg.Messages = append(cfg.Messages, MessageSpec{At: m.At, Team: ti, From: m.From, To: m.To, Size: max(1, m.Size-envelopeOverhead)})
				}
				start := time.Now()
				res, err := Run(cfg)
				if err != nil {
					t.Fatal(err)
				}
				s := res.Summary
				gotMed := s.LatencyMedian.Seconds()
				t.Logf("%s %s: delivery %.4f (ONE %.4f), median latency %.1f s (ONE %.1f s), overhead %.2f (ONE %s); %d devices, %d messages, %s",
					filepath.Base(fx.dir), router, s.DeliveryRatio, wantDel, gotMed, wantMed, s.Overhead, one["overhead_ratio"], tr.N, len(tr.Messages), time.Since(start).Round(time.Millisecond))
				if d := s.DeliveryRatio - wantDel; d > 0.02 || d < -0.02 {
					t.Errorf("delivery %.4f is %+.1f points from the ONE's %.4f", s.DeliveryRatio, 100*d, wantDel)
				}
				if r := gotMed/wantMed - 1; r > 0.10 || r < -0.10 {
					t.Errorf("median latency %.1f s is %+.1f%% from the ONE's %.1f s", gotMed, 100*r, wantMed)
				}
			})
		}
	}
}
