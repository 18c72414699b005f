package sim

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
)

// A simulation allocates much and keeps most of it (every device's decoded team history), so with
// Go's default garbage-collector target (GOGC=100) the collector takes about half of a long run's
// CPU (BenchmarkField1k, 1,000 devices for a week: 146 s wall at the default, 70 s at 400, on the
// same loaded machine, with the same results). On a quiet machine, one run each: GOGC=200 65.7 s
// (2.3 GiB peak), 250 59.4 s, 300 54.5 s (3.0 GiB), 400 61.2 s, 800 71.1 s (5.8 GiB: the page
// faults of a larger heap cost more system time than the collector saves). While any Run is
// running, the target is gcPercent unless the GOGC environment variable sets one, and, if no memory
// limit is set (GOMEMLIMIT), the heap is limited to three quarters of the machine's memory, past
// which the collector works harder instead of letting the larger target take the machine. Both are
// put back when the last Run returns.
const gcPercent = 300

var gcTuning struct {
	sync.Mutex
	runs                 int
	oldPercent           int
	oldLimit             int64
	percentSet, limitSet bool
}

// tuneGC applies the settings above for one Run; the returned function undoes them once no Run is
// left.
func tuneGC() (restore func()) {
	g := &gcTuning
	g.Lock()
	defer g.Unlock()
	if g.runs == 0 {
		g.percentSet, g.limitSet = false, false
		if os.Getenv("GOGC") == "" {
			g.oldPercent, g.percentSet = debug.SetGCPercent(gcPercent), true
		}
		if old := debug.SetMemoryLimit(-1); old == math.MaxInt64 {
			if ram := physicalMemory(); ram > 0 {
				g.oldLimit, g.limitSet = old, true
				debug.SetMemoryLimit(ram / 4 * 3)
			}
		}
	}
	g.runs++
	return func() {
		g.Lock()
		defer g.Unlock()
		if g.runs--; g.runs > 0 {
			return
		}
		if g.percentSet {
			debug.SetGCPercent(g.oldPercent)
		}
		if g.limitSet {
			debug.SetMemoryLimit(g.oldLimit)
		}
	}
}

// physicalMemory returns the machine's memory in bytes (MemTotal of /proc/meminfo), or 0 where that
// cannot be read.
func physicalMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemTotal:"))
		if !ok {
			continue
		}
		kb, ok := bytes.CutSuffix(bytes.TrimSpace(rest), []byte(" kB"))
		if !ok {
			return 0
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(kb)), 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		return n << 10
	}
	return 0
}
