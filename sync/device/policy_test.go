package device

import (
	"errors"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestTeamPolicyOnlyAdmins: an admin's team policy (lock timeouts) reaches every member's state; a
// member's core refuses to make one, and a member's forged policy (sealed and signed by its own
// keys, bypassing its core) is refused by the admin's core and by a third member's, and changes
// nobody's policy. A later admin policy replaces the earlier one.
func TestTeamPolicyOnlyAdmins(t *testing.T) {
	h := newHarness(t, 63)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	c := h.join(a, "Cat", false)
	h.mesh(a, b, c)

	want := crdt.Policy{LockAfter: 2 * time.Minute, OfflineLockDays: 3}
	op, err := a.team.Make(h.tick(time.Second), crdt.KindPolicy, want.Marshal())
	if err != nil {
		t.Fatalf("an admin makes a policy op: %v", err)
	}
	_, eff, err := a.team.Publish(h.tick(time.Second), op)
	if err != nil {
		t.Fatal(err)
	}
	a.apply(eff)
	h.mesh(a, b, c)
	for _, d := range []*hdev{a, b, c} {
		p := d.team.State().Policy
		if p == nil || p.Policy != want || p.By != a.dev.ID() {
			t.Fatalf("%s's policy = %+v; want %+v by Ann", d.name, p, want)
		}
	}

	forged := crdt.Policy{LockAfter: crdt.MaxLockAfter}
	if _, err := b.team.Make(h.tick(time.Second), crdt.KindPolicy, forged.Marshal()); !errors.Is(err, ErrRefused) {
		t.Fatalf("a member makes a policy op: %v; want ErrRefused", err)
	}
	// The forgery: Ben builds, signs and seals the op itself, later than Ann's.
	s := b.team.State()
	ts := b.team.clock.Next()
	fop := crdt.NewOp(b.dev, b.team.ID(), ts, b.team.lg.HeadsBefore(ts), crdt.KindPolicy, forged.Marshal())
	e, _, err := b.team.keys.Seal(fop, s.Epochs[s.Current].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []*hdev{a, c} {
		if v := h.gossip(b, to, e.Marshal()); v[0] == Accepted {
			t.Errorf("%s accepted a member's forged policy", to.name)
		}
		if p := to.team.State().Policy; p == nil || p.Policy != want {
			t.Errorf("%s's policy after the forgery = %+v; want Ann's %+v", to.name, p, want)
		}
		if to.store.ops[fop.ID()] != nil {
			t.Errorf("%s stored the forged policy", to.name)
		}
	}

	// A later admin policy wins.
	later := crdt.Policy{LockAfter: time.Minute}
	op, err = a.team.Make(h.tick(time.Second), crdt.KindPolicy, later.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if _, eff, err = a.team.Publish(h.tick(time.Second), op); err != nil {
		t.Fatal(err)
	}
	a.apply(eff)
	h.mesh(a, b, c)
	if p := c.team.State().Policy; p == nil || p.Policy != later {
		t.Errorf("Cat's policy = %+v; want the later %+v", p, later)
	}
}
