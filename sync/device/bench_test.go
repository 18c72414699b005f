package device

import (
	"fmt"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// BenchmarkLongConversation measures one message of a long conversation:
// bob's Team.Send and ann's Team.Receive of it, in a team of three whose
// log already holds n messages and a removal (so that the author rules
// read the log's ancestry). Both replicas show their state after each step,
// as a node does. The log grows by one op per iteration.
func BenchmarkLongConversation(b *testing.B) {
	for _, n := range []int{1000, 3000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := newHarness(b, 91)
			ann := h.create("ann")
			bob := h.join(ann, "bob", false)
			cat := h.join(ann, "cat", false)
			dan := h.join(ann, "dan", false)
			h.mesh(ann, bob, cat, dan)
			_, eff, err := ann.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActRemove, Target: dan.dev.ID()})
			if err != nil {
				b.Fatal(err)
			}
			ann.apply(eff)
			h.mesh(ann, bob, cat)
			for i := range n {
				h.send([]*hdev{ann, bob, cat}[i%3], "observation")
			}
			h.mesh(ann, bob, cat)
			if got := len(ann.team.State().Messages); got != n {
				b.Fatalf("ann shows %d messages; want %d", got, n)
			}
			var last crdt.OpID
			for b.Loop() {
				op := h.send(bob, "one more")
				last = op.ID()
				_ = bob.team.State()
				v := h.gossip(bob, ann, bob.store.envs[op.ID()].Data)
				if len(v) != 1 {
					b.Fatalf("%d verdicts", len(v))
				}
				_ = ann.team.State()
			}
			if !ann.team.State().Counts(last) {
				b.Fatal("ann does not count bob's last message")
			}
		})
	}
}
