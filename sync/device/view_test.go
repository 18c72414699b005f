package device

import (
	"reflect"
	"testing"
)

// TestViewMatchesCopy: the core's checks on the log's own State
// (Team.view, crdt.Log.View, not copied) decide exactly what the checks on
// a copy decided (copyViews, the core before view): over adversarial
// histories (removals, restarts, partitions, forged and replayed
// envelopes), every device's trace, writes, stored envelopes and ops,
// keys and final State are the same both ways.
func TestViewMatchesCopy(t *testing.T) {
	defer func() { copyViews = false }()
	type outcome struct {
		trace  []string
		stats  advStats
		stores []*memStore
		states []any
	}
	run := func(seed uint64, copying bool) outcome {
		copyViews = copying
		w := newAdvWorld(seed, 40)
		if err := w.run(); err != nil {
			t.Fatalf("seed %d (copying %v): %v", seed, copying, err)
		}
		o := outcome{trace: w.trace, stats: *w.stats}
		for _, d := range w.devs {
			o.stores = append(o.stores, d.store)
			if d.team != nil {
				o.states = append(o.states, d.team.State())
			}
		}
		return o
	}
	checked := 0
	for seed := uint64(1); seed <= 6; seed++ {
		fast, slow := run(seed, false), run(seed, true)
		if len(fast.trace) == 0 || len(fast.states) == 0 {
			t.Fatalf("seed %d: the history did nothing", seed)
		}
		if i := firstDiff(fast.trace, slow.trace); i >= 0 {
			t.Fatalf("seed %d: the traces part at step %d:\nview: %s\ncopy: %s", seed, i, at(fast.trace, i), at(slow.trace, i))
		}
		if !reflect.DeepEqual(fast.stats, slow.stats) {
			t.Fatalf("seed %d: stats differ:\nview: %+v\ncopy: %+v", seed, fast.stats, slow.stats)
		}
		for i := range fast.stores {
			a, b := fast.stores[i], slow.stores[i]
			for _, f := range []struct {
				what string
				a, b any
			}{{"keys", a.keys, b.keys}, {"ops", a.ops, b.ops}, {"envelopes", a.envs, b.envs}, {"dropped chunks", a.dropped, b.dropped}, {"alerts", a.alerts, b.alerts}} {
				if !reflect.DeepEqual(f.a, f.b) {
					t.Fatalf("seed %d: device %d stores other %s", seed, i, f.what)
				}
			}
		}
		if !reflect.DeepEqual(fast.states, slow.states) {
			t.Fatalf("seed %d: the final States differ", seed)
		}
		checked += len(fast.trace)
	}
	t.Logf("%d steps of history compared", checked)
}

func firstDiff(a, b []string) int {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(end)"
}
