package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Acknowledgements.
//
// A device acknowledges messages in batches: every AckInterval it publishes at most one "read" ack op
// (the messages its user was shown since the last batch) and one "received" ack op (every other
// message of someone else it holds but has not acknowledged), each covering up to crdt.MaxAckIDs
// messages. So a 30-person team sends at most 29 ack ops per interval, however many messages flowed,
// instead of 29 per message. What still needs acknowledging is computed from the team state (the
// device's own acks are ops in it), so nothing is lost or repeated across restarts; only read marks
// not yet published are held in memory.

// MarkRead records that the user was shown these messages; they are acknowledged as read in the next
// batch.
func (n *Node) MarkRead(teamRef string, ids []crdt.OpID) error {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		t.readMarks[id] = struct{}{}
	}
	return nil
}

// FlushAcks publishes the pending acknowledgements of every team now, and returns how many ack ops it
// published. The node calls it every AckInterval.
func (n *Node) FlushAcks() (int, error) {
	var (
		count int
		errs  []error
	)
	for _, t := range n.teamList() {
		c, err := n.flushTeamAcks(t)
		count += c
		if err != nil {
			errs = append(errs, fmt.Errorf("team %s: %w", t.id.Short(), err))
		}
	}
	return count, errors.Join(errs...)
}

func (n *Node) flushTeamAcks(t *team) (int, error) {
	me := n.id.Device.ID()
	if !n.isMember(t, me) {
		return 0, nil
	}
	st := t.snapshot()
	t.mu.Lock()
	marks := t.readMarks
	t.readMarks = make(map[crdt.OpID]struct{})
	t.mu.Unlock()

	var recv, read []crdt.OpID
	for _, m := range st.Messages {
		if m.Author == me {
			continue
		}
		if _, shown := marks[m.ID]; shown {
			if !slices.Contains(m.ReadBy, me) {
				read = append(read, m.ID)
			}
			continue
		}
		if !slices.Contains(m.ReceivedBy, me) {
			recv = append(recv, m.ID)
		}
	}
	count := 0
	for _, batch := range []struct {
		read bool
		ids  []crdt.OpID
	}{{true, read}, {false, recv}} {
		for _, a := range crdt.SplitAcks(batch.read, batch.ids) {
			if _, err := n.publish(t, crdt.KindAck, a.Marshal()); err != nil {
				if batch.read {
					// Keep the marks for the next batch.
					t.mu.Lock()
					for _, id := range a.IDs {
						t.readMarks[id] = struct{}{}
					}
					t.mu.Unlock()
				}
				return count, err
			}
			count++
		}
	}
	return count, nil
}
