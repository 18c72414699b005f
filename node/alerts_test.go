package node

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/duty"
)

// TestAlertStateSurvivesRestart: the duty tracker's memory is kept in the store, so an admin's node
// reminded of a due membership review is not reminded again when it restarts on the same store (it
// was, before: the reminder's time was lost, and a restart reminded at once).
func TestAlertStateSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &alertLog{}
		_, ns := newMockNodesCfg(t, func(i int, c *Config) {
			c.Notify = log.notify
			c.ReviewEvery = 24 * time.Hour
		}, "Admin")
		admin := ns[0]
		if _, err := admin.CreateTeam("Clinic", crdt.Clinical); err != nil {
			t.Fatal(err)
		}
		reviews := func() int {
			log.mu.Lock()
			defer log.mu.Unlock()
			n := 0
			for _, a := range log.got {
				if a.Reason == duty.ReviewDue {
					n++
				}
			}
			return n
		}
		time.Sleep(24*time.Hour + 2*time.Minute)
		synctest.Wait()
		if got := reviews(); got != 1 {
			t.Fatalf("reminded %d times after a day; want 1", got)
		}
		cfg := admin.cfg
		if err := admin.Close(); err != nil {
			t.Fatal(err)
		}
		again, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if got := reviews(); got != 1 {
			t.Errorf("reminded %d times after a restart; want still 1", got)
		}
		// The reminder repeats a day after the last one, restart or not.
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if got := reviews(); got != 2 {
			t.Errorf("reminded %d times a day later; want 2", got)
		}
		again.Close()
	})
}
