package main

// The simulator commands: `fieldmesh sim run SCENARIO.toml` runs one
// strategy of a scenario (simulations/sim) and writes its results;
// `fieldmesh sim compare SCENARIO.toml` runs several strategies on the same
// contacts and workload and prints one table.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fieldmesh/fieldmesh/simulations/sim"
)

func simCmd() *cobra.Command {
	c := &cobra.Command{Use: "sim", Short: "Simulate the device core over contact traces (research)"}
	var seed uint64
	var out, strategy string
	var noPlots bool
	run := &cobra.Command{
		Use:   "run SCENARIO.toml",
		Short: "Run one strategy of a scenario and write its results (JSON, CSV, MessageStatsReport, plots)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := loadSimScenario(cmd, args[0], &seed)
			if err != nil {
				return err
			}
			if strategy == "" {
				strategy = "fieldmesh"
				if len(s.Strategies) > 0 {
					strategy = s.Strategies[0]
				}
			}
			start := time.Now()
			res, err := runSimStrategy(cmd, s, seed, strategy)
			if err != nil {
				return err
			}
			wall := time.Since(start)
			if out == "" {
				out = filepath.Join("sim-out", s.Name, fmt.Sprintf("%s-seed%d", strategy, seed))
			}
			if err := sim.WriteOutputs(out, res, !noPlots); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if err := sim.WriteTable(w, []*sim.Result{res}); err != nil {
				return err
			}
			fmt.Fprintf(w, "%d devices, %d events in %s (%.0f events/s, %.0f simulated seconds a second); results in %s\n",
				len(res.Devices), res.Events, wall.Round(time.Millisecond), float64(res.Events)/wall.Seconds(), res.Duration.Seconds()/wall.Seconds(), out)
			return nil
		},
	}
	run.Flags().Uint64Var(&seed, "seed", 0, "random seed (default: the scenario's)")
	run.Flags().StringVar(&out, "out", "", "directory for the results (default sim-out/NAME/STRATEGY-seedN)")
	run.Flags().StringVar(&strategy, "strategy", "", "strategy to run (default: the scenario's first): "+strings.Join(sim.StrategyNames, ", "))
	run.Flags().BoolVar(&noPlots, "no-plots", false, "do not draw the plots")

	var names string
	compare := &cobra.Command{
		Use:   "compare SCENARIO.toml",
		Short: "Run several strategies on the same contacts and workload and print one table",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := loadSimScenario(cmd, args[0], &seed)
			if err != nil {
				return err
			}
			list := s.Strategies
			if names != "" {
				list = strings.Split(names, ",")
			}
			if len(list) == 0 {
				list = sim.StrategyNames
			}
			var results []*sim.Result
			for _, n := range list {
				n = strings.TrimSpace(n)
				res, err := runSimStrategy(cmd, s, seed, n)
				if err != nil {
					return fmt.Errorf("%s: %w", n, err)
				}
				results = append(results, res)
				if out != "" {
					if err := sim.WriteOutputs(filepath.Join(out, res.Strategy), res, false); err != nil {
						return err
					}
				}
			}
			if out != "" {
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				if err := sim.WritePlots(out, results); err != nil {
					return err
				}
			}
			return sim.WriteTable(cmd.OutOrStdout(), results)
		},
	}
	compare.Flags().Uint64Var(&seed, "seed", 0, "random seed (default: the scenario's)")
	compare.Flags().StringVar(&out, "out", "", "directory for each strategy's results and the comparison plots (default: none)")
	compare.Flags().StringVar(&names, "strategies", "", "comma-separated strategies (default: the scenario's)")
	c.AddCommand(run, compare)
	return c
}

// loadSimScenario loads a scenario and, unless --seed was given, takes the
// scenario's own seed.
func loadSimScenario(cmd *cobra.Command, path string, seed *uint64) (*sim.Scenario, error) {
	s, err := sim.LoadScenario(path)
	if err != nil {
		return nil, err
	}
	if !cmd.Flags().Changed("seed") {
		*seed = s.Seed
	}
	return s, nil
}

// runSimStrategy runs one strategy of a scenario with a progress bar.
func runSimStrategy(cmd *cobra.Command, s *sim.Scenario, seed uint64, strategy string) (*sim.Result, error) {
	cfg, err := s.Build(seed, strategy)
	if err != nil {
		return nil, err
	}
	bar := newSimBar(cmd.ErrOrStderr(), s.Name+" "+strategy)
	cfg.Progress = bar.update
	res, err := sim.Run(cfg)
	bar.finish()
	return res, err
}

// simBar is a progress bar over simulated time, shown only on a terminal.
type simBar struct {
	bar   *progressbar.ProgressBar
	start time.Time
}

func newSimBar(w io.Writer, desc string) *simBar {
	b := &simBar{start: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.bar = progressbar.NewOptions64(1000, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(desc),
			progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond))
	}
	return b
}

func (b *simBar) update(now, total time.Duration) {
	if b.bar == nil || total <= 0 {
		return
	}
	b.bar.Set64(int64(1000 * now / total))
}

func (b *simBar) finish() {
	if b.bar != nil {
		b.bar.Finish()
		b.bar.Exit()
	}
}
