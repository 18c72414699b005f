//go:build !race

package device

// convDefaultSchedules is the default of -device.schedules without the race
// detector: 1,000, so that go test ./... stays within its default timeout
// (make convergence runs 10,000 and make soak 100,000).
const convDefaultSchedules = 1_000
