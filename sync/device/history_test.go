package device

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// handOver runs a whole hand-over from one device to another, page by page of at most pageBytes,
// as node/historyproto does, and returns how many ops to kept and the first error of either end.
func handOver(h *harness, from, to *hdev, pageBytes int) (int, error) {
	h.t.Helper()
	var cur HistoryCursor
	kept := 0
	for range 10_000 {
		page, next, more, err := from.team.HistoryFor(to.dev.ID(), cur, pageBytes)
		if err != nil {
			return kept, err
		}
		n, eff, err := to.team.AcceptHistory(h.tick(time.Millisecond), from.dev.ID(), page)
		if err != nil {
			return kept, err
		}
		to.apply(eff)
		kept += n
		if !more {
			return kept, nil
		}
		cur = next
	}
	h.t.Fatal("hand-over did not end")
	return kept, nil
}

// historySetup: Ann (admin) and Ben talk, Ben acknowledges; then Ann links a second device, which
// reads none of it by itself.
func historySetup(t *testing.T) (h *harness, ann, ben, ann2 *hdev, early []string) {
	h = newHarness(t, 7)
	ann = h.create("Ann")
	ben = h.join(ann, "Ben", false)
	h.mesh(ann, ben)
	for _, s := range []string{"bp 120/80 bay 3", "seen, thanks", "transfer at noon"} {
		d := ann
		if s == "seen, thanks" {
			d = ben
		}
		h.send(d, s)
		h.mesh(ann, ben)
	}
	_, eff, err := ben.team.Acks(h.tick(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ben.apply(eff)
	h.mesh(ann, ben)
	early = texts(ann)
	if len(early) != 3 {
		t.Fatalf("Ann shows %q; want 3 messages", early)
	}
	ann2 = h.link(ann, "Ann's laptop")
	h.mesh(ann, ben, ann2)
	if got := texts(ann2); len(got) != 0 {
		t.Fatalf("before the hand-over the new device shows %q; want none (it is no recipient of those epochs)", got)
	}
	return h, ann, ben, ann2, early
}

// TestHistoryHandover: a person's new device gets the messages (and the acknowledgements) the
// person's other device opened before the link, page by page; a second hand-over keeps nothing new;
// the history survives a restart; and what is sent afterwards still arrives the ordinary way.
func TestHistoryHandover(t *testing.T) {
	h, ann, ben, ann2, early := historySetup(t)
	kept, err := handOver(h, ann, ann2, 300) // small pages: one or two ops each
	if err != nil {
		t.Fatal(err)
	}
	if kept < 4 {
		t.Errorf("kept %d ops; want the 3 messages and Ben's acknowledgement at least", kept)
	}
	if got := texts(ann2); !slices.Equal(got, early) {
		t.Fatalf("after the hand-over the new device shows %q; want %q", got, early)
	}
	for _, m := range ann2.team.State().Messages {
		if m.Author == ann.dev.ID() && !slices.Contains(m.ReceivedBy, ben.dev.ID()) {
			t.Errorf("Ann's %q does not show Ben's acknowledgement on the new device", m.Text)
		}
	}
	again, err := handOver(h, ann, ann2, 1<<16)
	if err != nil || again != 0 {
		t.Errorf("second hand-over kept %d, err %v; want 0, nil (idempotent)", again, err)
	}
	ann2.restart(h.tick(time.Second))
	if got := texts(ann2); !slices.Equal(got, early) {
		t.Errorf("after a restart the new device shows %q; want %q", got, early)
	}
	h.send(ben, "after the link")
	h.mesh(ann, ben, ann2)
	if got := texts(ann2); len(got) != 4 || got[3] != "after the link" {
		t.Errorf("new device shows %q; want the history and the new message", got)
	}
}

// TestHistoryRefused: only another current device of the same person is handed history, and takes
// it: another member asking, a device that was unlinked since, and a page from another member are
// all refused, and nothing changes.
func TestHistoryRefused(t *testing.T) {
	h, ann, ben, ann2, _ := historySetup(t)
	if _, _, _, err := ann.team.HistoryFor(ben.dev.ID(), HistoryCursor{}, 1<<16); !errors.Is(err, ErrNotSamePerson) {
		t.Errorf("another member asks: err %v; want ErrNotSamePerson", err)
	}
	if _, _, _, err := ann.team.HistoryFor(ann.dev.ID(), HistoryCursor{}, 1<<16); !errors.Is(err, ErrNotSamePerson) {
		t.Errorf("the device itself asks: err %v; want ErrNotSamePerson", err)
	}
	outsider, err := identity.Generate(h.r)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ann.team.HistoryFor(outsider.ID(), HistoryCursor{}, 1<<16); !errors.Is(err, ErrNotSamePerson) {
		t.Errorf("an outsider asks: err %v; want ErrNotSamePerson", err)
	}
	// Ben hands Ann's new device what he holds: refused whole, though every op is genuine.
	var genuine [][]byte
	for _, op := range ben.team.lg.Ops() {
		if op.Kind == crdt.KindMessage {
			genuine = append(genuine, op.Marshal())
		}
	}
	if n, eff, err := ann2.team.AcceptHistory(h.tick(time.Second), ben.dev.ID(), genuine); !errors.Is(err, ErrNotSamePerson) || n != 0 || !eff.Write.Empty() {
		t.Errorf("a page from another member: kept %d, err %v; want 0, ErrNotSamePerson", n, err)
	}
	if got := texts(ann2); len(got) != 0 {
		t.Errorf("after refused pages the new device shows %q", got)
	}
	// The laptop is unlinked (lost): Ann's device refuses it from then on.
	_, eff, err := ann.team.Change(h.tick(time.Second), crdt.Change{Action: crdt.ActUnlink, Target: ann2.dev.ID()})
	if err != nil {
		t.Fatal(err)
	}
	ann.apply(eff)
	if _, _, _, err := ann.team.HistoryFor(ann2.dev.ID(), HistoryCursor{}, 1<<16); !errors.Is(err, ErrNotSamePerson) {
		t.Errorf("an unlinked device asks: err %v; want ErrNotSamePerson", err)
	}
}

// TestHistoryForgeries: a device of the person is trusted with nothing the authors did not sign and
// the membership does not allow: a tampered op, an op that claims an epoch its author is no
// recipient of, and a create or commit op are each refused with the whole page; a page of messages
// past retention is refused; and bodies deleted past retention are never handed over.
func TestHistoryForgeries(t *testing.T) {
	h, ann, ben, ann2, _ := historySetup(t)
	var msg *crdt.Op
	for _, op := range ann.team.lg.Ops() {
		if op.Kind == crdt.KindMessage && op.Author == ben.dev.ID() {
			msg = op
		}
	}
	tampered := msg.Clone()
	tampered.Body = append([]byte(nil), tampered.Body...)
	tampered.Body[len(tampered.Body)-1] ^= 1
	// Ann signs a message of her own at an epoch she claims, with a chain index nobody used: it
	// verifies, but its epoch tag names no epoch that lists her.
	wrongEpoch := crdt.NewOp(ann.dev, ann.team.ID(), msg.Time+1, nil, crdt.KindMessage, crdt.Message{Text: "invented"}.Marshal())
	wrongEpoch.Sign(ann.dev, 0xdeadbeef, 9, crdt.InnerHash{})
	commit := ann.team.MembershipOps()[len(ann.team.MembershipOps())-1]
	for name, b := range map[string][]byte{
		"tampered":    tampered.Marshal(),
		"wrong epoch": wrongEpoch.Marshal(),
		"commit":      commit.Marshal(),
	} {
		good := msg.Marshal()
		n, eff, err := ann2.team.AcceptHistory(h.tick(time.Second), ann.dev.ID(), [][]byte{good, b})
		if err == nil || n != 0 || !eff.Write.Empty() {
			t.Errorf("%s: kept %d, err %v; want the page refused", name, n, err)
		}
	}
	if got := texts(ann2); len(got) != 0 {
		t.Errorf("after forged pages the new device shows %q", got)
	}
	// Past retention: Ann rotates and lets the old epochs' retention pass; their bodies are deleted
	// and not handed over.
	h.tick(31 * 24 * time.Hour)
	for range 3 {
		ann.apply(ann.team.Tick(h.tick(10*time.Minute), TickOptions{}))
		h.mesh(ann, ben, ann2)
	}
	ann.apply(ann.team.Tick(h.tick(31*24*time.Hour), TickOptions{}))
	if got := texts(ann); len(got) != 0 {
		t.Fatalf("Ann still shows %q past retention", got)
	}
	if _, err := handOver(h, ann, ann2, 1<<16); err != nil {
		t.Fatal(err)
	}
	if got := texts(ann2); len(got) != 0 {
		t.Errorf("past retention the hand-over gave %q", got)
	}
	// A page of genuine messages of an epoch past retention (kept by a device that did not delete
	// them) is refused.
	if n, _, err := ann2.team.AcceptHistory(h.now, ann.dev.ID(), [][]byte{msg.Marshal()}); err == nil || n != 0 {
		t.Errorf("a message past retention: kept %d, err %v; want refused", n, err)
	}
}

// TestHistoryRetention: history handed over is deleted on the new device when its epoch's
// retention ends there, though that device holds none of the epoch's keys (it never held its
// chains, and here its outer keys were evicted too, as a full key table evicts them).
func TestHistoryRetention(t *testing.T) {
	h, ann, ben, ann2, early := historySetup(t)
	if _, err := handOver(h, ann, ann2, 1<<16); err != nil {
		t.Fatal(err)
	}
	if got := texts(ann2); !slices.Equal(got, early) {
		t.Fatalf("new device shows %q; want %q", got, early)
	}
	s := ann2.team.State()
	for _, ep := range s.Epochs[:s.Current] {
		ann2.team.keys.Forget(ep.Tag)
	}
	for range 2 {
		h.tick(31 * 24 * time.Hour)
		for _, d := range []*hdev{ann, ben, ann2} {
			d.apply(d.team.Tick(h.tick(time.Minute), TickOptions{}))
		}
		h.mesh(ann, ben, ann2)
	}
	if got := texts(ann2); len(got) != 0 {
		t.Errorf("past retention the new device still shows %q", got)
	}
}

// BenchmarkHistoryHandover: a whole hand-over of 1,000 messages (and Ben's acknowledgements) from
// Ann's device to her new one, in 60 KiB pages: serving (HistoryFor) and taking (AcceptHistory into
// a device restored from its store before each run). It reports the bytes and pages handed over.
func BenchmarkHistoryHandover(b *testing.B) {
	h := newHarness(b, 11)
	ann := h.create("Ann")
	ben := h.join(ann, "Ben", false)
	h.mesh(ann, ben)
	for i := range 1000 {
		d := ann
		if i%3 == 0 {
			d = ben
		}
		_, eff, err := d.team.Send(h.tick(time.Second), crdt.Message{Text: "obs round: bp, pulse, temp all recorded for bay " + string(rune('A'+i%26))})
		if err != nil {
			b.Fatal(err)
		}
		d.apply(eff)
	}
	h.mesh(ann, ben)
	_, eff, err := ben.team.Acks(h.tick(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	ben.apply(eff)
	h.mesh(ann, ben)
	ann2 := h.link(ann, "Ann's laptop")
	h.mesh(ann, ann2)
	const pageBytes = 60 << 10
	var bytes, pages, kept int
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		ann2.restart(h.now) // its store never took the history: AcceptHistory's Write is not applied
		b.StartTimer()
		bytes, pages, kept = 0, 0, 0
		var cur HistoryCursor
		for {
			page, next, more, err := ann.team.HistoryFor(ann2.dev.ID(), cur, pageBytes)
			if err != nil {
				b.Fatal(err)
			}
			for _, op := range page {
				bytes += len(op)
			}
			pages++
			n, _, err := ann2.team.AcceptHistory(h.now, ann.dev.ID(), page)
			if err != nil {
				b.Fatal(err)
			}
			kept += n
			if !more {
				break
			}
			cur = next
		}
	}
	b.ReportMetric(float64(bytes), "history-bytes")
	b.ReportMetric(float64(pages), "pages")
	b.ReportMetric(float64(kept), "ops-kept")
}

// TestHistoryCap: the hand-over carries the newest ops that fit in the device's history bound, over
// all its pages, and leaves the older out: with a bound of the last two ops' bytes, the new device
// gets those two (the last message and Ben's acknowledgement), in small pages, and nothing older.
func TestHistoryCap(t *testing.T) {
	h, ann, _, ann2, early := historySetup(t)
	all, _, more, err := ann.team.HistoryFor(ann2.dev.ID(), HistoryCursor{}, 1<<20)
	if err != nil || more || len(all) < 4 {
		t.Fatalf("whole history: %d ops, more %v, %v; want 4 or more in one page", len(all), more, err)
	}
	last, prev := len(all[len(all)-1]), len(all[len(all)-2])
	ann.team.cfg.HistoryBytes = last + prev
	kept, err := handOver(h, ann, ann2, max(last, prev)) // one op a page
	if err != nil {
		t.Fatal(err)
	}
	if kept != 2 {
		t.Errorf("kept %d ops; want the 2 newest that fit the bound", kept)
	}
	if got := texts(ann2); !slices.Equal(got, early[len(early)-1:]) {
		t.Errorf("the new device shows %q; want only %q", got, early[len(early)-1:])
	}
}
