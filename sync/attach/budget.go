package attach

import (
	"cmp"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// DefaultBudget is the storage budget for attachments a device keeps when its user set none: 512
// MiB, about 1,500 re-encoded photos, a small share of a phone's storage.
const DefaultBudget = 512 << 20

// Evictable reports whether device me may evict the chunks of message m's attachments to keep
// within its storage budget; the message itself (its text and manifests) always stays, and its
// chunks can be fetched again from a peer or relay that still holds them. It may when:
//
//   - the message was filed to the health record (m.Filed), whoever read it; or
//   - someone else wrote it and me read it (me is in m.ReadBy); or
//   - me wrote it, and another member read it or a relay confirmed it holds all its chunks
//     (relayHolds): the chunks are no longer only here.
//
// So it never evicts the chunks of a message me has not read, nor of its own message that nobody
// read, and so never those of an urgent or emergency message no one acknowledged: a read is the
// acknowledgement that stops escalation.
func Evictable(m crdt.MessageView, me identity.DeviceID, relayHolds bool) bool {
	switch {
	case m.Filed != nil:
		return true
	case m.Author != me:
		return slices.Contains(m.ReadBy, me)
	case m.Priority >= crdt.Urgent:
		return len(m.ReadBy) > 0
	default:
		return len(m.ReadBy) > 0 || relayHolds
	}
}

// Held is what a device holds of one message's attachments, for the storage budget.
type Held struct {
	Message   crdt.OpID
	Time      crdt.HLC // the message's time: the oldest are evicted first
	Bytes     int64    // sealed chunk bytes stored
	Evictable bool     // Evictable, and not pinned by the user asking for it
}

// OverBudget returns the messages whose chunks to evict so that what is held fits budget bytes:
// evictable ones holding bytes, oldest first (by Time, then id), until the rest fits. If what is not
// evictable alone exceeds the budget, it evicts every evictable one and the device stays over
// budget: it never drops what is unread. A budget of 0 or less evicts nothing.
func OverBudget(held []Held, budget int64) []crdt.OpID {
	if budget <= 0 {
		return nil
	}
	var total int64
	var cands []Held
	for _, h := range held {
		total += h.Bytes
		if h.Evictable && h.Bytes > 0 {
			cands = append(cands, h)
		}
	}
	slices.SortFunc(cands, func(a, b Held) int {
		if c := cmp.Compare(a.Time, b.Time); c != 0 {
			return c
		}
		return a.Message.Compare(b.Message)
	})
	var out []crdt.OpID
	for _, h := range cands {
		if total <= budget {
			break
		}
		out = append(out, h.Message)
		total -= h.Bytes
	}
	return out
}
