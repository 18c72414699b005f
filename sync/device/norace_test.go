//go:build !race

package device

// advDefaultHistories is the default of -device.histories without the race
// detector (make test runs under it, with fewer); make property runs 1,000
// and make soak 10,000.
const advDefaultHistories = 100
