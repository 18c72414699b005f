//go:build race

package device

// convDefaultSchedules is the default of -device.schedules under the race
// detector, which makes a schedule about ten times slower; make convergence
// runs the full count without it.
const convDefaultSchedules = 200
