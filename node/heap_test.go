package node

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// hiddenKey is a key the test captured, kept masked so that the test's own copy is not what a heap
// dump finds: only key XOR mask and mask are in memory until the dump is written.
type hiddenKey struct {
	what         string
	masked, mask [32]byte
}

func hide(what string, key []byte) hiddenKey {
	h := hiddenKey{what: what}
	if _, err := rand.Read(h.mask[:]); err != nil {
		panic(err)
	}
	for i := range h.masked {
		h.masked[i] = key[i] ^ h.mask[i]
	}
	return h
}

// heapHolds writes a heap dump of the process (live objects, stacks, globals) after collecting
// garbage, and reports, for each key, how many copies of it the dump holds.
func heapHolds(t *testing.T, keys []hiddenKey) []int {
	t.Helper()
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	path := filepath.Join(t.TempDir(), "heap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	debug.WriteHeapDump(f.Fd())
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	dump, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	counts := make([]int, len(keys))
	var key [32]byte
	for i, k := range keys {
		for j := range key {
			key[j] = k.masked[j] ^ k.mask[j]
		}
		counts[i] = bytes.Count(dump, key[:])
	}
	clear(key[:])
	clear(dump)
	return counts
}

// processHolds counts the copies of each key in the process's writable memory as Linux shows it in
// /proc/self/mem: the heap's freed memory included, which a heap dump leaves out. It is a
// measurement, not a check: freed memory keeps its bytes until reused (see docs/security.md). The
// unmasked keys and the read buffer live in a mapping of their own that the scan skips.
func processHolds(keys []hiddenKey) ([]int, error) {
	const keysLen, bufLen = 4096, 1 << 20
	if len(keys)*32 > keysLen {
		return nil, errors.New("too many keys")
	}
	m, err := syscall.Mmap(-1, 0, keysLen+bufLen, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	defer syscall.Munmap(m)
	defer clear(m)
	lo := uintptr(unsafe.Pointer(&m[0]))
	hi := lo + uintptr(len(m))
	for i, k := range keys {
		for j := range 32 {
			m[32*i+j] = k.masked[j] ^ k.mask[j]
		}
	}
	buf := m[keysLen:]
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	counts := make([]int, len(keys))
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[1], "rw") {
			continue
		}
		r := strings.SplitN(f[0], "-", 2)
		start, err1 := strconv.ParseUint(r[0], 16, 64)
		end, err2 := strconv.ParseUint(r[1], 16, 64)
		if err1 != nil || err2 != nil || (uintptr(start) < hi && uintptr(end) > lo) {
			continue
		}
		// Read in steps that overlap by 31 bytes; a copy counts in the step where it starts.
		step := uint64(bufLen - 31)
		for off := start; off < end; off += step {
			n, _ := mem.ReadAt(buf[:min(uint64(bufLen), end-off)], int64(off))
			for i := range keys {
				key := m[32*i : 32*i+32]
				for at := 0; ; {
					j := bytes.Index(buf[at:n], key)
					if j < 0 || uint64(at+j) >= step {
						break
					}
					counts[i]++
					at += j + 1
				}
			}
		}
	}
	return counts, nil
}

func sum(cs []int) int {
	n := 0
	for _, c := range cs {
		n += c
	}
	return n
}

// After the lock (each node closed, its cores' keys wiped, its store closed: what node/session's
// Lock does), a heap dump of the process holds no epoch outer key, no chain key and no store data
// key that the nodes used. The control, the same scan before the lock, finds every one of them.
// Both devices run in this process, so both are locked: each holds the team's epoch key.
func TestLockLeavesNoKeyInHeap(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	_, ref := clinicalTeam(t, a, "Ward", b)
	for i, n := range []*testNode{a, b, a, b} {
		if _, _, err := n.Send(ref, crdt.Message{Text: "obs round " + string(rune('1'+i))}); err != nil {
			t.Fatal(err)
		}
		waitMessages(t, a, ref, i+1)
		waitMessages(t, b, ref, i+1)
	}

	var keys []hiddenKey
	for _, n := range ns {
		name := n.id.Name
		n.st.WithDataKey(func(k []byte) { keys = append(keys, hide(name+" store data key", k)) })
		for _, tm := range n.teamList() {
			tm.mu.Lock()
			tm.core.Keys().Secrets(func(k []byte) { keys = append(keys, hide(name+" team key", k)) })
			tm.mu.Unlock()
		}
	}
	if len(keys) < 2+2*3 { // per device: a data key, the epoch's outer key, its sender and one receiver chain
		t.Fatalf("captured %d keys, want at least 8", len(keys))
	}

	before := heapHolds(t, keys)
	found := 0
	for i, c := range before {
		if c == 0 {
			t.Errorf("control: the heap before the lock holds no copy of %s %d", keys[i].what, i)
		}
		found += c
	}
	t.Logf("before the lock: %d keys captured, %d copies in the heap dump", len(keys), found)
	if runtime.GOOS == "linux" {
		if in, err := processHolds(keys); err == nil {
			t.Logf("before the lock: %d copies in the process's writable memory, freed memory included", sum(in))
		}
	}

	for _, n := range ns {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if err := n.WipeKeys(); err != nil {
			t.Fatal(err)
		}
		if err := n.st.Close(); err != nil {
			t.Fatal(err)
		}
	}

	after := heapHolds(t, keys)
	left := 0
	for i, c := range after {
		if c != 0 {
			t.Errorf("after the lock the heap holds %d copies of %s %d", c, keys[i].what, i)
		}
		left += c
	}
	t.Logf("after the lock: %d copies in the heap dump", left)
	if runtime.GOOS == "linux" {
		if in, err := processHolds(keys); err == nil {
			t.Logf("after the lock: %d copies in the process's writable memory, freed memory included (%v by key)", sum(in), in)
		}
	}
}
