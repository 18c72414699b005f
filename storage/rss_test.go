package storage

import (
	"bufio"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// vmRSS returns the VmRSS line of /proc/self/status, or "" off Linux.
func vmRSS() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestIdleRSS logs the process RSS before and after opening an idle store.
// Informational only: it asserts nothing (the race detector inflates it).
func TestIdleRSS(t *testing.T) {
	if vmRSS() == "" {
		t.Skip("no /proc/self/status")
	}
	s, dir := newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	debug.FreeOSMemory()
	before := vmRSS()
	s, err := Open(dir, testOptions("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	debug.FreeOSMemory()
	t.Logf("VmRSS before Open %s, after Open of an idle store %s", before, vmRSS())
}
