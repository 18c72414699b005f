package device

import (
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestKeepsParentSealedInUnpermittedEpoch: a device that holds the outer key
// of an epoch (a prior key of a valid commit) whose commit it keeps but does
// not find permitted, and so never learned, still opens, through its own box
// in that commit, an op sealed in it that a counting op builds on, and keeps
// it. Refusing it left a gap in its log that, by the dark rule, hid a
// witness, and the device showed fewer messages than a member that had
// learned the epoch while it was permitted (TestAdversarial, histories 9099
// and 9167).
func TestKeepsParentSealedInUnpermittedEpoch(t *testing.T) {
	h := newHarness(t, 11)
	a := h.create("Ann")
	b := h.join(a, "Ben", true)
	y := h.join(a, "Yan", true)
	x := h.join(a, "Xia", false)
	h.mesh(a, b, y, x)

	// Ann and Xia on one side: Ann removes Ben.
	_, eff, err := a.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActRemove, Target: b.dev.ID()})
	if err != nil {
		t.Fatal(err)
	}
	a.apply(eff)
	h.mesh(a, x)

	// On the other side Ben adds Dan (cut by the removal: permitted, not
	// valid), and Dan adds Fay: Dan is no member where the removal stands,
	// so that commit is not permitted there, though it lists Xia.
	d := h.join(b, "Dan", true)
	h.mesh(b, y, d)
	h.join(d, "Fay", false)
	h.mesh(b, y, d)
	// Dan writes in his epoch; before Yan sees it, Yan adds Gus: a valid
	// commit whose prior keys carry the outer key of Dan's epoch.
	m := h.send(d, "from Dan")
	g := h.device("Gus")
	info := crdt.MemberInfo{Device: g.dev.ID(), Noise: g.dev.NoisePublic(), Name: "Gus"}
	yc, eff, err := y.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActAdd, Info: info})
	if err != nil {
		t.Fatal(err)
	}
	y.apply(eff)
	h.mesh(b, y, d)
	if !y.team.lg.Has(m.ID()) {
		t.Fatal("Yan does not hold Dan's message")
	}
	reply := h.send(y, "reply")
	if !slices.Contains(reply.Parents, m.ID()) {
		t.Fatalf("Yan's reply does not build on Dan's message")
	}

	// Xia gets the commits first (Yan's carries the outer key), then Dan's
	// message and Yan's reply.
	var first [][]byte
	for id, rec := range y.store.envs {
		if id != m.ID() && id != reply.ID() {
			first = append(first, rec.Data)
		}
	}
	h.gossip(y, x, first...)
	if !x.team.lg.Has(yc.ID()) {
		t.Fatal("Xia does not keep Yan's commit")
	}
	h.gossip(y, x, y.store.envs[m.ID()].Data)
	h.gossip(y, x, y.store.envs[reply.ID()].Data)
	h.mesh(y, x)
	if !x.team.State().Counts(reply.ID()) {
		t.Fatal("Xia does not show Yan's reply")
	}
	if !x.team.lg.Has(m.ID()) {
		t.Errorf("Xia's log lacks Dan's message, which Yan's reply builds on: a gap")
	}
}
