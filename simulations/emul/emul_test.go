package emul

import (
	"fmt"
	"time"
	"testing"
	"testing/synctest"

	"github.com/fieldmesh/fieldmesh/simulations/sim"
)

func loadScenario(t *testing.T) *sim.Scenario {
	t.Helper()
	sc, err := sim.LoadScenario("../scenarios/emulation.toml")
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func build(t *testing.T, sc *sim.Scenario, strategy string) sim.Config {
	t.Helper()
	cfg, err := sc.Build(sc.Seed, strategy)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestScratch(t *testing.T) {
	sc := loadScenario(t)
	sr, err := sim.Run(build(t, sc, "members"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sim: %+v", sr.Summary)
	synctest.Test(t, func(t *testing.T) {
		rep, err := Run(build(t, sc, "members"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("emul: %+v off=%d setup=%v", rep.Summary, rep.OffContact, rep.Setup)
	})
}

func init() {
	debugOff = func(dev int, at time.Duration) {
		sc, _ := sim.LoadScenario("../scenarios/emulation.toml")
		cfg, _ := sc.Build(sc.Seed, "members")
		var last sim.ContactEvent
		for _, c := range cfg.Contacts {
			if (c.A == dev || c.B == dev) && c.At <= at {
				last = c
			}
		}
		fmt.Printf("off: dev %d at %v; last contact event %+v (%v before)\n", dev, at, last, at-last.At)
	}
}
