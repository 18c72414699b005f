//go:build !race

package replica

// raceEnabled reports whether the race detector is on: TestConvergence runs
// fewer schedules by default under it (see defaultSchedules).
const raceEnabled = false
