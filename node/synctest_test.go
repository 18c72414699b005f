package node

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestManyNodesVirtualTime runs a team of eight nodes on mocknet inside a synctest bubble: timers and
// deadlines use virtual time, so the test never sleeps and a stuck node fails at once instead of
// waiting out a real deadline. Each node knows only the admin who invited it, until the last one
// is healed to another: gossip reaches some of them only through IHAVE, so the nodes run the
// default sync interval and everyone must agree within one interval and a half.
func TestManyNodesVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"}
		mn, ns := newMockNodesCfg(t, func(_ int, c *Config) { c.SyncInterval = 0 }, names...)
		admin := ns[0]
		team, err := admin.CreateTeam("District team", crdt.Clinical)
		if err != nil {
			t.Fatal(err)
		}
		ref := team.ID.String()
		for _, j := range ns[1:] {
			inv, err := admin.Invite(ref, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := j.Join(context.Background(), inv.Code()); err != nil {
				t.Fatalf("%s: %v", j.id.Name, err)
			}
		}
		// Every node learns the last join (its commit starts the epoch everyone then sends under;
		// a node that sent before hearing of it would send under an epoch the joiner is not in).
		for _, n := range ns {
			waitState(t, n, ref, func(s *crdt.State) bool {
				return s.Current >= 0 && len(s.Epochs[s.Current].Recipients) == len(ns)
			})
		}
		// Cut the last node off, talk, heal, and check everyone converges on the same history.
		last := ns[len(ns)-1]
		cutOff(mn, last, ns[:len(ns)-1]...)
		const perNode = 5
		for i := 0; i < perNode; i++ {
			for _, n := range ns[:len(ns)-1] {
				if _, _, err := n.Send(ref, crdt.Message{Text: fmt.Sprintf("%s says %d", n.id.Name, i)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		want := perNode * (len(ns) - 1)
		bringInReach(t, mn, last, ns[1])
		within := 3 * time.Minute // SyncInterval is 2 minutes
		ref0 := ids(waitMessagesWithin(t, admin, ref, want, within))
		for _, n := range ns {
			if got := ids(waitMessagesWithin(t, n, ref, want, within)); fmt.Sprint(got) != fmt.Sprint(ref0) {
				t.Errorf("%s: %d messages, order differs from the admin's", n.id.Name, len(got))
			}
		}
		for _, n := range ns {
			n.Close()
		}
		mn.Close()
	})
}

// Two members that start a session towards each other at the same moment (a new member's first
// catch-up meets the inviter's session towards it) do not each wait responderWait for their own
// outgoing session before serving the other's: the end with the lower peer id serves at once. In
// virtual time, the crossing sessions take no time at all; waiting shows as responderWait.
func TestCrossingSessionsDoNotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, ns := newMockNodesCfg(t, func(_ int, c *Config) { c.SyncInterval = time.Hour }, "A", "B")
		a, b := ns[0], ns[1]
		_, ref := clinicalTeam(t, a, "Ward", b)
		time.Sleep(time.Minute) // virtual: the sessions the join started end
		synctest.Wait()
		ta, err := a.teamByRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := b.teamByRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		for round := range 5 {
			if _, _, err := a.Send(ref, crdt.Message{Text: fmt.Sprintf("round %d", round)}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			errs := make(chan error, 2)
			go func() { errs <- a.syncTeamErr(context.Background(), b.host.ID(), ta, true) }()
			go func() { errs <- b.syncTeamErr(context.Background(), a.host.ID(), tb, true) }()
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			if took := time.Since(start); took >= responderWait {
				t.Fatalf("round %d: the crossing sessions took %v (virtual): an end waited for its own session", round, took)
			}
			synctest.Wait()
		}
		for _, n := range ns {
			n.Close()
		}
	})
}
