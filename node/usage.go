package node

import (
	"context"
	"errors"
	"fmt"
	stdsync "sync"

	"github.com/fieldmesh/fieldmesh/node/lowdata"
	"github.com/fieldmesh/fieldmesh/node/usage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// The node's glue to data accounting (package usage) and low-data mode (package lowdata).

// Usage returns the data usage report of a calendar month, "YYYY-MM" ("" is the current month, in
// the time zone of Config.Now). It includes the counts not yet written to the store. The report
// names teams: it is for the device's user, never for logs.
func (n *Node) Usage(month string) (usage.Report, error) {
	return n.usage.Report(month, usage.Names{Team: n.resolveTopic, Device: deviceOf})
}

// resolveTopic returns the id and name of the team whose topic is t.
func (n *Node) resolveTopic(t envelope.Topic) (crdt.TeamID, string, bool) {
	n.mu.Lock()
	tm := n.byTopic[t]
	n.mu.Unlock()
	if tm == nil {
		return crdt.TeamID{}, "", false
	}
	return tm.id, tm.snapshot().Name, true
}

// topicOfName returns the topic of the device's team whose gossip topic name is name.
func (n *Node) topicOfName(name string) (envelope.Topic, bool) {
	v, ok := n.topicNames.Load(name)
	if !ok {
		return envelope.Topic{}, false
	}
	return v.(*team).topic, true
}

// startLowData loads the low-data mode from the store (Config.LowData turns it on) and, when it is
// off, publishes what a previous run left queued. The node calls it once its teams are loaded, before
// any connection or sync.
func (n *Node) startLowData() error {
	on, err := n.low.Load(n.cfg.LowData)
	if err != nil {
		return err
	}
	if !on {
		if _, err := n.low.Flush(n.publishQueued); err != nil {
			n.log.Warn("publishing queued ops failed; they stay queued", "err", err)
		}
	}
	return nil
}

// publishQueued is the node's lowdata.Publisher: it publishes an op that waited in the outbox
// unless its team is gone or the op is in the team's log already.
func (n *Node) publishQueued(op *crdt.Op) (bool, error) {
	t := n.teamByID(op.Team)
	if t == nil {
		return false, lowdata.ErrNoTeam
	}
	if t.has(op.ID()) {
		return false, nil
	}
	if _, err := n.publishOp(t, op); err != nil {
		return false, err
	}
	return true, nil
}

// autoSyncAllowed reports whether automatic reconciliation of t may run (not in low-data mode, unless
// t has an urgent op pending).
func (n *Node) autoSyncAllowed(t *team) bool { return n.low.AutoSync(t.topic) }

// lowDataSynced records that a reconciliation session of t completed: its urgent mark is cleared.
func (n *Node) lowDataSynced(t *team) {
	if err := n.low.Synced(t.topic); err != nil {
		n.log.Warn("clearing a team's urgent mark failed", "team", t.id, "err", err)
	}
}

// LowData returns the low-data mode and what waits because of it.
func (n *Node) LowData() (lowdata.Status, error) { return n.low.Status() }

// SetLowData turns low-data mode on or off, durably. Turning it off publishes the queued ops (each
// once, in the order they were made), the pending acknowledgements, and reconciles with the
// connected peers. An error publishing leaves the rest queued for the next time the mode goes off or
// the node starts.
func (n *Node) SetLowData(on bool) (lowdata.Status, error) {
	was, err := n.low.Set(on)
	if err != nil {
		return lowdata.Status{}, err
	}
	if !on {
		if _, err := n.low.Flush(n.publishQueued); err != nil {
			return lowdata.Status{}, err
		}
		if was {
			if n.cfg.AckInterval > 0 {
				if _, err := n.FlushAcks(); err != nil {
					n.log.Warn("publishing acknowledgements failed", "err", err)
				}
			}
			for _, p := range n.host.Network().Peers() {
				n.goRun(func() { n.syncPeer(p) })
			}
		}
	}
	return n.low.Status()
}

// SyncNow reconciles every team with every connected peer whose device is a member of it, whatever
// the low-data mode, and returns when the sessions ended, with how many (peer, team) pairs were
// reconciled (a request coalesced into a session already queued counts as reconciled).
func (n *Node) SyncNow(ctx context.Context) (int, error) {
	teams := n.teamList()
	var (
		wg   stdsync.WaitGroup
		mu   stdsync.Mutex
		ok   int
		errs []error
	)
	for _, p := range n.host.Network().Peers() {
		if _, err := deviceOf(p); err != nil {
			continue
		}
		var mine []*team
		for _, t := range teams {
			if n.maySync(t, n.corePeer(p, t)) {
				mine = append(mine, t)
			}
		}
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, t := range mine {
				err := n.syncTeamErr(ctx, p, t, false)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("peer %s, team %s: %w", p.ShortString(), t.id.Short(), err))
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return ok, fmt.Errorf("node: sync: %w", errors.Join(errs...))
	}
	return ok, nil
}
