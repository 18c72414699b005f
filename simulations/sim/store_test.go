package sim

import (
	"reflect"
	"testing"
	"time"
)

// TestSharedBytesChangeNothing: the devices' stores sharing one copy of
// equal envelope bytes (interner), and their cores one decoded copy of
// equal ops (crdt.Pool), gives the same run as each keeping its own copy, on
// a day of the district scenario with carriers (epidemic) and with
// fieldmesh's strategy; and the stores and cores do share: the run holds
// most envelopes and decoded ops once, not once per device.
func TestSharedBytesChangeNothing(t *testing.T) {
	defer func() { shareBytes = true }()
	s := loadScenario(t, "district.toml")
	s.Duration = Duration(24 * time.Hour)
	s.Workload.StopBefore = 0
	for _, strategy := range []string{"epidemic", "fieldmesh"} {
		cfg, err := s.Build(s.Seed, strategy)
		if err != nil {
			t.Fatal(err)
		}
		run := func(share bool) (*engine, *Result) {
			shareBytes = share
			e, err := newEngine(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.run(); err != nil {
				t.Fatal(err)
			}
			return e, e.finish()
		}
		shared, withShare := run(true)
		own, without := run(false)
		if withShare.Summary.Delivered == 0 {
			t.Fatalf("%s: nothing delivered: the run checks little", strategy)
		}
		if !reflect.DeepEqual(withShare, without) {
			t.Fatalf("%s: sharing the bytes changed the run:\nshared: %+v\nown:    %+v", strategy, withShare.Summary, without.Summary)
		}
		copies := func(e *engine) (held, distinct int) {
			seen := make(map[*byte]bool)
			for _, n := range e.nodes {
				stores := []*store{}
				for _, m := range n.teams {
					stores = append(stores, m.store)
				}
				for _, c := range n.carried {
					stores = append(stores, c)
				}
				for _, st := range stores {
					for _, b := range st.envs {
						held++
						seen[&b[0]] = true
					}
				}
			}
			return held, len(seen)
		}
		// The cores: a member's store lists the envelopes of the ops its
		// core holds (and of the few it carries unopened).
		coreOps := 0
		for _, n := range shared.nodes {
			for _, m := range n.teams {
				coreOps += len(m.store.items)
			}
		}
		if own.ops != nil || shared.ops == nil || shared.ops.Len() == 0 || shared.ops.Len()*4 > coreOps {
			t.Fatalf("%s: the cores hold %d ops, the pool %v (own run's pool %v): want one decoded copy for most", strategy, coreOps, shared.ops, own.ops)
		}
		t.Logf("%s: the cores hold %d ops, %d decoded copies shared", strategy, coreOps, shared.ops.Len())
		heldS, distinctS := copies(shared)
		heldO, distinctO := copies(own)
		t.Logf("%s: %d envelopes held, in %d copies shared, %d each its own", strategy, heldS, distinctS, distinctO)
		if heldS != heldO || distinctS*4 > heldS || distinctO < heldO*9/10 {
			t.Fatalf("%s: %d held in %d copies shared, %d held in %d copies own: want one copy for most", strategy, heldS, distinctS, heldO, distinctO)
		}
	}
}
