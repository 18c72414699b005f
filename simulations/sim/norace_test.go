//go:build !race

package sim

// theoryDefaultRuns is TestTheory's replicas a strategy without the race
// detector; make sim-check runs 10,000 and checks 3%.
const theoryDefaultRuns = 60

const raceEnabled = false
