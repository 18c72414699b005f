//go:build !race

package gossipbench

const raceEnabled = false
