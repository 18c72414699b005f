//go:build race

package sim

// theoryDefaultRuns is TestTheory's replicas a strategy under the race
// detector (make test), which makes a run about ten times slower.
const theoryDefaultRuns = 40
