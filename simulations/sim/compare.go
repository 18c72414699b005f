package sim

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Compare runs each strategy on the scenario's contacts and workload for
// one seed.
func Compare(s *Scenario, seed uint64, names []string, progress func(name string, now, total time.Duration)) ([]*Result, error) {
	var out []*Result
	for _, n := range names {
		cfg, err := s.Build(seed, n)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			cfg.Progress = func(now, total time.Duration) { progress(n, now, total) }
		}
		r, err := Run(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// WriteTable prints one row per run: delivery, latency, overhead, bytes
// and buffer, with each figure relative to the epidemic run if there is
// one.
func WriteTable(w io.Writer, rs []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tdelivery\tmean\tmedian\tp95\thops\toverhead\tKB/device\tbuffer max KB\t")
	for _, r := range rs {
		s := r.Summary
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%s\t%s\t%.2f\t%.2f\t%.0f\t%.0f\t\n", r.Strategy, s.DeliveryRatio,
			hm(s.LatencyMean), hm(s.LatencyMedian), hm(s.LatencyP95), s.HopsMean, s.Overhead, s.BytesPerDevice/1024, float64(s.BufferMeanMax)/1024)
	}
	return tw.Flush()
}

// hm formats a latency as hours and minutes.
func hm(d time.Duration) string {
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
