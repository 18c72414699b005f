package node

import (
	"fmt"
	"strings"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Team policies: an admin publishes a team's lock policy as an op of its log (crdt.Policy, judged by
// the device core: only a current admin's counts); the session (node/session) applies the shortest
// of the device's own settings and every team's policy. This file publishes and reports them.

// SetPolicy publishes a team's lock policy (admins only; the core refuses a member's).
func (n *Node) SetPolicy(teamRef string, p crdt.Policy) error {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("node: team policy: %w", err)
	}
	_, err = n.publish(t, crdt.KindPolicy, p.Marshal())
	return err
}

// Policy returns a team's lock policy, and false if no admin published one.
func (n *Node) Policy(teamRef string) (crdt.Policy, bool, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return crdt.Policy{}, false, err
	}
	if p := t.snapshot().Policy; p != nil {
		return p.Policy, true, nil
	}
	return crdt.Policy{}, false, nil
}

// TeamLock is what one team's policy asks of this device's lock.
type TeamLock struct {
	Team crdt.TeamID
	// LockAfter is the team's idle timeout; zero: the team asks none.
	LockAfter time.Duration
	// OfflineLock is how long the device may go without reaching the team; zero: the team asks none.
	OfflineLock time.Duration
	// LastContact is when this node last completed a reconciliation with a member or relay of the
	// team, in this run; zero if not yet.
	LastContact time.Time
}

// TeamLocks returns the lock policies of the teams this device is a member of (a team it was removed
// from asks nothing of it), for the teams that have one.
func (n *Node) TeamLocks() []TeamLock {
	var out []TeamLock
	for _, t := range n.teamList() {
		p := t.snapshot().Policy
		if p == nil || t.removed() || p.LockAfter == 0 && p.OfflineLockDays == 0 {
			continue
		}
		out = append(out, TeamLock{Team: t.id, LockAfter: p.LockAfter, OfflineLock: p.OfflineLock(), LastContact: n.teamContact(t)})
	}
	return out
}

// teamContact returns when a reconciliation of t with any peer last completed in this run.
func (n *Node) teamContact(t *team) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	var last time.Time
	for k, at := range n.lastSync {
		if strings.HasSuffix(k, string(t.topic[:])) && at.After(last) {
			last = at
		}
	}
	return last
}
