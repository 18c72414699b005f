//go:build race

package device

// advDefaultHistories is the default of -device.histories under the race detector, which makes a
// history about ten times slower; CI runs the full count without it (make property).
const advDefaultHistories = 10
