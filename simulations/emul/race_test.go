//go:build race

package emul

// raceEnabled: under the race detector (make test) an emulation takes about two and a half
// minutes, so TestEmulationAgreesWithSimulator skips its second emulation (the dropped-contacts
// control); make sim-emulate runs the whole test without it.
const raceEnabled = true
