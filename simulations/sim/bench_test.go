package sim

import (
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// benchFull runs the 1,000-device benchmarks for their whole duration. Without it (make bench, which
// runs every benchmark once so they keep compiling and running) they stop after benchShort of
// simulated time.
var benchFull = flag.Bool("sim.bench", false, "BenchmarkField1k*: simulate the whole duration (make sim-check), not the first hour")

// national runs BenchmarkNational10k (make sim-national), for
// nationalFor of simulated time if set (to see how time and memory grow
// from 1,000 to 10,000 devices on a shorter run), else the whole month.
var (
	national    = flag.Bool("sim.national", false, "run BenchmarkNational10k (make sim-national)")
	nationalFor = flag.Duration("sim.national.for", 0, "BenchmarkNational10k: simulate this long, not the scenario's thirty days")
)

// benchShort is how much simulated time the 1,000-device benchmarks run without -sim.bench.
const benchShort = time.Hour

// BenchmarkField1k runs the national-1k scenario (1,000 devices, field
// model) for its seven simulated days with fieldmesh's strategy, and
// reports events a second and simulated seconds a wall second.
// -benchtime=1x runs it once: make sim-check.
func BenchmarkField1k(b *testing.B) {
	benchScenario(b, "national-1k.toml", "fieldmesh", 0)
}

// BenchmarkField1kDay is BenchmarkField1k's first simulated day.
func BenchmarkField1kDay(b *testing.B) {
	benchScenario(b, "national-1k.toml", "fieldmesh", 24*time.Hour)
}

// BenchmarkNational10k runs the national-10k scenario (10,000 devices,
// thirty days) with fieldmesh's strategy, only with -sim.national: its
// time and peak memory (peak-MiB, the process's peak resident set).
func BenchmarkNational10k(b *testing.B) {
	if !*national {
		b.Skip("the 10,000-device month runs with -sim.national (make sim-national)")
	}
	benchScenario(b, "national-10k.toml", "fieldmesh", *nationalFor)
}

func benchScenario(b *testing.B, file, strategy string, dur time.Duration) {
	s := loadScenario(b, file)
	if !*benchFull && !*national {
		b.Logf("%s: the first %v of simulated time only (-sim.bench runs it whole)", file, benchShort)
		dur = benchShort
	}
	if dur > 0 {
		s.Duration = Duration(dur)
		s.Workload.StopBefore = 0
	}
	cfg, err := s.Build(s.Seed, strategy)
	if err != nil {
		b.Fatal(err)
	}
	if *national {
		cfg.Progress = dailyLog(time.Now())
	}
	var events int64
	var res *Result
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		res, err = Run(cfg)
		if err != nil {
			b.Fatal(err)
		}
		events += res.Events
	}
	wall := time.Since(start).Seconds()
	b.ReportMetric(float64(events)/wall, "events/s")
	b.ReportMetric(float64(b.N)*cfg.Duration.Seconds()/wall, "simsec/s")
	b.ReportMetric(float64(len(cfg.Devices)), "devices")
	b.ReportMetric(res.Summary.DeliveryRatio, "delivery")
	if rss := peakRSS(); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "peak-MiB")
	}
}

// dailyLog returns a Progress that logs, at the end of each simulated day,
// the wall time since start, the heap in use after a collection and the
// peak resident set so far: how the national run's time and memory grow.
// It prints as it goes (b.Logf would wait for the run's end), so a month
// cut short still shows how far it got.
func dailyLog(start time.Time) func(now, total time.Duration) {
	day := time.Duration(0)
	return func(now, total time.Duration) {
		if now < day+24*time.Hour && now < total {
			return
		}
		day = now.Truncate(24 * time.Hour)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("national: simulated %v: %v wall, %d MiB heap in use, %d MiB peak resident\n", now.Round(time.Minute), time.Since(start).Round(time.Second), ms.HeapInuse>>20, peakRSS()>>20)
	}
}
