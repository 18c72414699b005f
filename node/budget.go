package node

import (
	"fmt"

	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// The storage budget for attachments (Config.AttachmentBudget). Whenever chunks were stored (a
// fetch, a send), the node adds up the sealed chunks it holds of each message and, past the budget,
// evicts the chunks of the messages attach.OverBudget picks: evictable ones (attach.Evictable:
// filed to the record, or read), oldest first, never one the user asked for since the node started.
// An evicted message keeps its text and manifests, is marked evicted in the store (so its chunks are
// not fetched again by themselves), and shows as evicted in Attachments; opening it asks the
// connected peers and relays for its chunks again (OpenAttachment).

// AttachmentStorage is what the attachments take on this device.
type AttachmentStorage struct {
	Bytes   int64 // sealed chunk bytes stored
	Chunks  int   // chunks stored
	Budget  int64 // bytes the node keeps at most of evictable chunks; 0: no budget
	Evicted int   // attachments whose chunks were evicted and not fetched again
}

// budget returns the storage budget in bytes, 0 for none.
func (n *Node) budget() int64 {
	switch b := n.cfg.AttachmentBudget; {
	case b < 0:
		return 0
	case b == 0:
		return attach.DefaultBudget
	default:
		return b
	}
}

// AttachmentStorage returns what the attachments take on this device, and its budget.
func (n *Node) AttachmentStorage() (AttachmentStorage, error) {
	c, b, err := n.st.ChunkBytes()
	if err != nil {
		return AttachmentStorage{}, fmt.Errorf("node: %w", err)
	}
	out := AttachmentStorage{Bytes: b, Chunks: c, Budget: n.budget()}
	for _, t := range n.teamList() {
		for _, m := range t.snapshot().Messages {
			if len(m.Attachments) == 0 {
				continue
			}
			ev, err := n.st.Evicted(ownerKey(m.ID))
			if err != nil {
				return AttachmentStorage{}, fmt.Errorf("node: %w", err)
			}
			if ev {
				out.Evicted += len(m.Attachments)
			}
		}
	}
	return out, nil
}

// budgetSoon keeps the attachments within the budget, on a goroutine (one at a time; requests
// while it runs make it run once more).
func (n *Node) budgetSoon() {
	if n.budget() == 0 {
		return
	}
	n.att.jobs.soon("budget", n.goRun, func() {
		if _, err := n.enforceBudget(); err != nil && n.ctx.Err() == nil {
			n.log.Warn("keeping attachments within the storage budget failed", "err", err)
		}
	})
}

// enforceBudget evicts the chunks of the messages attach.OverBudget picks, and returns how many
// messages' chunks it evicted.
func (n *Node) enforceBudget() (int, error) {
	budget := n.budget()
	if budget == 0 {
		return 0, nil
	}
	n.att.budgetMu.Lock()
	defer n.att.budgetMu.Unlock()
	me := n.id.Device.ID()
	var (
		held  []attach.Held
		teams = map[crdt.OpID]*team{}
	)
	for _, t := range n.teamList() {
		for _, m := range t.snapshot().Messages {
			if len(m.Attachments) == 0 {
				continue
			}
			h := attach.Held{Message: m.ID, Time: m.Time}
			for _, a := range m.Attachments {
				for i, c := range a.Chunks {
					ok, err := n.st.HasChunk(c)
					if err != nil {
						return 0, fmt.Errorf("node: %w", err)
					}
					if ok {
						h.Bytes += int64(attach.SealedLen(a, i))
					}
				}
			}
			if h.Bytes == 0 {
				continue
			}
			relayHolds := false
			if m.Author == me {
				var err error
				if relayHolds, err = n.st.HeldByAny(ownerKey(m.ID)); err != nil {
					return 0, fmt.Errorf("node: %w", err)
				}
			}
			h.Evictable = attach.Evictable(m, me, relayHolds) && !n.isRequested(m.ID)
			held = append(held, h)
			teams[m.ID] = t
		}
	}
	evict := attach.OverBudget(held, budget)
	if len(evict) == 0 {
		return 0, nil
	}
	owners := make([][len(crdt.OpID{})]byte, len(evict))
	for i, id := range evict {
		owners[i] = ownerKey(id)
	}
	chunks, err := n.st.Evict(owners)
	if err != nil {
		return 0, fmt.Errorf("node: evicting attachments: %w", err)
	}
	n.att.mu.Lock()
	for _, id := range evict {
		delete(n.att.complete, id)
	}
	n.att.mu.Unlock()
	woken := map[*team]bool{}
	for _, id := range evict {
		if t := teams[id]; !woken[t] {
			woken[t] = true
			t.mu.Lock()
			t.wake()
			t.mu.Unlock()
		}
	}
	n.log.Info("evicted attachments to keep within the storage budget", "messages", len(evict), "chunks", chunks, "budget", budget)
	return len(evict), nil
}
