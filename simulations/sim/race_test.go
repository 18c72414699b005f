//go:build race

package sim

// theoryDefaultRuns is TestTheory's replicas a strategy under the race
// detector (make test), which makes a run about ten times slower.
const theoryDefaultRuns = 20

// raceEnabled: the ONE comparison's short run is skipped under the race
// detector (make test); make sim-check runs it in full.
const raceEnabled = true
