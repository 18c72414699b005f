package device

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// file has d publish a filed op naming the messages, with one reference each.
func (h *harness) file(d *hdev, ids ...crdt.OpID) *crdt.Op {
	h.t.Helper()
	ids = slices.Clone(ids)
	slices.SortFunc(ids, crdt.OpID.Compare)
	f := crdt.Filed{At: uint64(h.now.UnixMilli())}
	for _, id := range ids {
		f.Entries = append(f.Entries, crdt.FiledEntry{Message: id, Ref: "Communication/c-" + id.Short()})
	}
	op, err := d.team.Make(h.tick(time.Second), crdt.KindFiled, f.Marshal())
	if err != nil {
		h.t.Fatalf("%s files: %v", d.name, err)
	}
	op, eff, err := d.team.Publish(h.now, op)
	if err != nil {
		h.t.Fatalf("%s publishes the filing: %v", d.name, err)
	}
	d.apply(eff)
	return op
}

func (h *harness) sendPatient(d *hdev, text, patient string) *crdt.Op {
	h.t.Helper()
	op, eff, err := d.team.Send(h.tick(time.Second), crdt.Message{Text: text, Patient: patient})
	if err != nil {
		h.t.Fatal(err)
	}
	d.apply(eff)
	return op
}

// shown returns d's view of message id, if it shows it.
func shown(d *hdev, id crdt.OpID) (crdt.MessageView, bool) {
	for _, m := range d.team.State().Messages {
		if m.ID == id {
			return m, true
		}
	}
	return crdt.MessageView{}, false
}

// storedBody reports whether d's store holds id's op with its body (the text in it).
func storedBody(d *hdev, id crdt.OpID, text string) bool {
	return bytes.Contains(d.store.ops[id], []byte(text))
}

// TestFiledThenDeleted: an admin's gateway files a member's message; every device shows it "filed"
// during the grace period and then deletes its body, in memory and in what it stores, and again
// after a restart. A device that receives the message only after the grace period deletes it at its
// next tick. A filing by a plain member, or by a removed admin, deletes nothing.
func TestFiledThenDeleted(t *testing.T) {
	h := newHarness(t, 71)
	gw := h.create("Clinic box")
	b := h.join(gw, "Ben", false)
	c := h.join(gw, "Cat", false)
	dan := h.join(gw, "Dan", false)
	h.mesh(gw, b, c, dan)
	m := h.sendPatient(b, "Bed 4 BP 160/110", "K-17")
	other := h.sendPatient(b, "Bed 5 stable", "K-18")
	h.mesh(gw, b, c)

	// A plain member's filing: kept and relayed, counts for nothing.
	h.file(c, other.ID())
	h.file(gw, m.ID())
	filedAt := h.now
	h.mesh(gw, b, c)

	for _, d := range []*hdev{gw, b, c} {
		v, ok := shown(d, m.ID())
		if !ok || v.Filed == nil || v.Filed.Ref != "Communication/c-"+m.ID().Short() || v.Filed.By != gw.dev.ID() {
			t.Fatalf("%s shows %+v; want it filed by the gateway", d.name, v)
		}
		if v, _ := shown(d, other.ID()); v.Filed != nil {
			t.Errorf("%s: a plain member's filing counts: %+v", d.name, v.Filed)
		}
		d.apply(d.team.Tick(filedAt.Add(DefaultFiledGrace-time.Minute), TickOptions{}))
		if _, ok := shown(d, m.ID()); !ok || !storedBody(d, m.ID(), "Bed 4") {
			t.Errorf("%s deleted the body before the grace period ended", d.name)
		}
		d.apply(d.team.Tick(filedAt.Add(DefaultFiledGrace), TickOptions{}))
		if _, ok := shown(d, m.ID()); ok {
			t.Errorf("%s still shows the filed message after the grace period", d.name)
		}
		if storedBody(d, m.ID(), "Bed 4") || storedBody(d, m.ID(), "K-17") {
			t.Errorf("%s still stores the filed message's body", d.name)
		}
		if !storedBody(d, other.ID(), "Bed 5") {
			t.Errorf("%s deleted a message a plain member filed", d.name)
		}
		d.restart(filedAt.Add(DefaultFiledGrace + time.Minute))
		if _, ok := shown(d, m.ID()); ok {
			t.Errorf("%s shows the filed message again after a restart", d.name)
		}
		if !d.team.Has(m.ID()) {
			t.Errorf("%s lost the filed message's place in the log", d.name)
		}
	}

	// Dan was away: it receives the message and its filing after the grace period.
	h.now = filedAt.Add(2 * DefaultFiledGrace)
	h.sync(b, dan)
	if _, ok := shown(dan, m.ID()); !ok {
		t.Fatalf("Dan did not receive the message")
	}
	dan.apply(dan.team.Tick(h.tick(time.Second), TickOptions{}))
	if _, ok := shown(dan, m.ID()); ok || storedBody(dan, m.ID(), "Bed 4") {
		t.Errorf("a late device keeps the body of a message filed long ago")
	}
}

// TestFiledByRemovedAdmin: an admin removed from the team (a leaver, or a stolen clinic box) cannot
// make the team delete messages: its filing after its removal counts for nothing.
func TestFiledByRemovedAdmin(t *testing.T) {
	h := newHarness(t, 72)
	a := h.create("Ann")
	x := h.join(a, "Box", true)
	b := h.join(a, "Ben", false)
	h.mesh(a, x, b)
	m := h.sendPatient(b, "Bed 9 sepsis screen", "K-20")
	h.mesh(a, x, b)
	// x, partitioned from the others, files after it was removed: the filing's parents include the
	// removal only on x's side if x had it; here x never saw its removal and its op is concurrent.
	_, eff, err := a.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActRemove, Target: personOf(t, a, x.dev.ID())})
	if err != nil {
		t.Fatal(err)
	}
	a.apply(eff)
	h.mesh(a, b)
	h.file(x, m.ID())
	h.mesh(a, x, b)
	for _, d := range []*hdev{a, b} {
		d.apply(d.team.Tick(h.now.Add(2*DefaultFiledGrace), TickOptions{}))
		if v, ok := shown(d, m.ID()); !ok || v.Filed != nil || !storedBody(d, m.ID(), "Bed 9") {
			t.Errorf("%s: a removed admin's filing counts (%+v, shown %v)", d.name, v.Filed, ok)
		}
	}
}

func personOf(t *testing.T, d *hdev, dev identity.DeviceID) identity.DeviceID {
	t.Helper()
	p, ok := d.team.State().PersonOf(dev)
	if !ok {
		t.Fatalf("no person for %s", dev.Short())
	}
	return p.ID
}

// TestUnfiledWarnsAdmins: a clinical message due for filing and not filed is listed for the team's
// admins once WarnUnfiled has passed, never for a plain member, and not once it is filed.
func TestUnfiledWarnsAdmins(t *testing.T) {
	h := newHarness(t, 73)
	a := h.create("Ann")
	b := h.join(a, "Ben", false)
	h.mesh(a, b)
	m := h.sendPatient(b, "Bed 2 review", "K-2")
	h.send(b, "tea at four") // no patient, not for the record: never due
	h.mesh(a, b)
	early := h.now.Add(DefaultWarnUnfiled - time.Hour)
	if got := a.team.Unfiled(early); len(got) != 0 {
		t.Errorf("warned early: %v", got)
	}
	late := h.now.Add(DefaultWarnUnfiled + time.Hour)
	if got := a.team.Unfiled(late); !slices.Equal(got, []crdt.OpID{m.ID()}) {
		t.Errorf("admin warned of %v; want the one message due", got)
	}
	if got := b.team.Unfiled(late); got != nil {
		t.Errorf("a plain member is warned: %v", got)
	}
	h.file(a, m.ID())
	if got := a.team.Unfiled(late); len(got) != 0 {
		t.Errorf("warned of a filed message: %v", got)
	}
}
