package node

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

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

// After the lock (each node closed, its cores' keys wiped, its store closed: what node/session's
// Lock does), a heap dump of the process holds no epoch outer key, no chain key and no store data
// key that the nodes used. The control, the same scan before the lock, finds every one of them.
// Both devices run in this process, so both are locked: each holds the team's epoch key.
func TestLockLeavesNoKeyInHeap(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b)
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
}
