package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// runSession runs s's checks until the test ends.
func runSession(t *testing.T, s *session.Session) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A team policy shortens the device's own idle timeout: with the device at 5 minutes and the team at
// 2, it locks 2 minutes after the last request; a policy longer than the device's does not lengthen it.
func TestTeamPolicyShortensIdleLock(t *testing.T) {
	dir, st := newStore(t, "Dr Banda")
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	s := start(t, dir, st, func(c *session.Config) {
		c.Now, c.IdleLock, c.CheckEvery = clk.Now, 5*time.Minute, time.Millisecond
		c.Node.Now = clk.Now
	})
	n := current(t, s)
	ward, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.SetPolicy(ward.ID.String(), crdt.Policy{LockAfter: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	other, err := n.CreateTeam("Outreach", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.SetPolicy(other.ID.String(), crdt.Policy{LockAfter: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := session.IdleLimit(5*time.Minute, n.TeamLocks()); got != 2*time.Minute {
		t.Fatalf("idle limit = %v; want the team's 2m", got)
	}
	s.Touch()
	runSession(t, s)
	_, gone, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute + 50*time.Second)
	// The checks run every millisecond: give them a chance to (wrongly) lock before the two minutes.
	if waitLocked(s, gone, 200*time.Millisecond) {
		t.Fatal("locked before the team's 2 minutes")
	}
	clk.Add(10 * time.Second)
	if !waitLocked(s, gone, 30*time.Second) {
		t.Fatal("not locked 2 minutes after the last request, with a team policy of 2 minutes")
	}
}

// A team policy of N offline days locks a device that has not reached that team for N days, though
// the device's own rule is off.
func TestTeamPolicyOfflineLock(t *testing.T) {
	dir, st := newStore(t, "Dr Banda")
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	s := start(t, dir, st, func(c *session.Config) {
		c.Now, c.UnreachedLock, c.CheckEvery = clk.Now, -1, time.Millisecond
		c.Node.Now = clk.Now
	})
	n := current(t, s)
	ward, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.SetPolicy(ward.ID.String(), crdt.Policy{OfflineLockDays: 3}); err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	_, gone, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(71 * time.Hour)
	s.Touch()
	if waitLocked(s, gone, 200*time.Millisecond) {
		t.Fatal("locked before the team's 3 days")
	}
	clk.Add(time.Hour)
	if !waitLocked(s, gone, 30*time.Second) {
		t.Fatal("not locked 3 days without reaching the team, with a team policy of 3 days")
	}
}

// waitLocked reports whether the node goes (gone closes) within d.
func waitLocked(s *session.Session, gone <-chan struct{}, d time.Duration) bool {
	select {
	case <-gone:
		return s.Locked()
	case <-time.After(d):
		return false
	}
}
