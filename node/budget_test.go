package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestAttachmentBudget fills a device past its storage budget and checks what the node evicts:
// nothing while every message is unread; then, once one message is read and another filed to the
// record, those two, oldest first, and not a newer read one that the budget does not need; never the
// unread or urgent unacknowledged ones, never a message's text. An evicted attachment shows as
// such, is not fetched again by itself, and comes back from a peer when the user asks for it.
func TestAttachmentBudget(t *testing.T) {
	const size = 100_000           // plaintext bytes of each attachment: 4 chunks
	const sealed = size + 4*16     // what each takes in the store
	const budget = 3*sealed + 5000 // room for three
	_, ns := newMockNodesCfg(t, func(i int, c *Config) {
		if i == 1 {
			c.AttachmentBudget = budget
		}
	}, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	team, ref := clinicalTeam(t, a, "Ward", b)

	texts := []string{"read, oldest", "filed, unread", "unread", "urgent, unread", "read, newest"}
	var ids []crdt.OpID
	var docs [][]byte
	for i, text := range texts {
		doc := make([]byte, size)
		rand.Read(doc)
		m := crdt.Message{Text: text}
		if i == 3 {
			m.Priority = crdt.Urgent
		}
		id, _, err := a.SendAttached(ref, m, []Attachment{{Type: "application/pdf", Data: doc}})
		if err != nil {
			t.Fatal(err)
		}
		ids, docs = append(ids, id), append(docs, doc)
	}
	waitAttachments(t, b, ref, len(texts))
	if _, bytes, _ := b.st.ChunkBytes(); bytes != int64(len(texts)*sealed) {
		t.Fatalf("B holds %d bytes of chunks; want %d", bytes, len(texts)*sealed)
	}
	// Over the budget, but every message is unread: nothing goes.
	if n, err := b.enforceBudget(); err != nil || n != 0 {
		t.Fatalf("with every message unread, evicted %d (%v); want 0", n, err)
	}

	if err := a.PublishFiled(team.ID, crdt.Filed{At: uint64(time.Now().UnixMilli()), Entries: []crdt.FiledEntry{{Message: ids[1], Ref: "Communication/2"}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.MarkRead(ref, []crdt.OpID{ids[0], ids[4]}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.FlushAcks(); err != nil {
		t.Fatal(err)
	}
	me := b.id.Device.ID()
	waitState(t, b, ref, func(s *crdt.State) bool {
		read, filed := 0, false
		for _, m := range s.Messages {
			if slices.Contains(m.ReadBy, me) {
				read++
			}
			filed = filed || (m.ID == ids[1] && m.Filed != nil)
		}
		return read == 2 && filed
	})

	if n, err := b.enforceBudget(); err != nil || n != 2 {
		t.Fatalf("evicted %d (%v); want 2: the oldest read one and the filed one", n, err)
	}
	if n, err := b.enforceBudget(); err != nil || n != 0 {
		t.Fatalf("a second pass evicted %d (%v); want 0", n, err)
	}
	if _, bytes, _ := b.st.ChunkBytes(); bytes > budget {
		t.Errorf("B holds %d bytes of chunks after eviction; budget %d", bytes, budget)
	}
	wantEvicted := []bool{true, true, false, false, false}
	checkEvicted := func(when string, want []bool) {
		t.Helper()
		as, err := b.Attachments(ref)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			j := slices.IndexFunc(as, func(a AttachmentInfo) bool { return a.Message == id })
			if j < 0 {
				t.Fatalf("%s: message %q lost its attachment", when, texts[i])
			}
			got := as[j]
			if got.Evicted != want[i] || (got.Stored == 0) != want[i] || (!want[i] && got.Stored != got.Chunks) {
				t.Errorf("%s: %q: evicted %v, %d of %d chunks here; want evicted %v", when, texts[i], got.Evicted, got.Stored, got.Chunks, want[i])
			}
		}
	}
	checkEvicted("after eviction", wantEvicted)
	ms := b.mustMessages(t, ref)
	for _, text := range texts {
		if !slices.ContainsFunc(ms, func(m Message) bool { return m.Text == text }) {
			t.Errorf("the text %q went with its attachment", text)
		}
	}
	if st, err := b.AttachmentStorage(); err != nil || st.Evicted != 2 || st.Budget != budget {
		t.Errorf("AttachmentStorage: %+v, %v; want 2 evicted, budget %d", st, err, budget)
	}

	// A fetch from A (as after every sync) does not bring them back by itself.
	bt, err := b.teamByRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.fetchFrom(context.Background(), a.host.ID(), bt); err != nil {
		t.Fatal(err)
	}
	checkEvicted("after a fetch", wantEvicted)

	// Asked for, the oldest comes back from A, whole; it is no longer evicted.
	if _, _, err := b.OpenAttachment(ids[0].String(), 0); !errors.Is(err, ErrAttachmentMissing) {
		t.Fatalf("opening an evicted attachment: %v; want ErrAttachmentMissing", err)
	}
	waitAttachmentsOf(t, b, ref, ids[0])
	_, data, err := b.OpenAttachment(ids[0].String(), 0)
	if err != nil || !bytes.Equal(data, docs[0]) {
		t.Fatalf("the fetched-again attachment: %d bytes, %v; want the %d sent", len(data), err, len(docs[0]))
	}
	// The one the user asked for stays; the budget takes the newest read one instead. (The fetch
	// started a pass of its own, which may have done it first: either way, it is done once this one
	// returns.)
	if n, err := b.enforceBudget(); err != nil || n > 1 {
		t.Fatalf("after fetching one again, evicted %d (%v); want at most 1", n, err)
	}
	checkEvicted("after fetching one again", []bool{false, true, false, false, true})
}

// waitAttachmentsOf waits, on the node's watch events with a deadline, until message id's
// attachments are all on n and not marked evicted.
func waitAttachmentsOf(t *testing.T, n *testNode, team string, id crdt.OpID) {
	t.Helper()
	ch, cancel, err := n.Watch(team)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		as, err := n.Attachments(team)
		if err != nil {
			t.Fatal(err)
		}
		done := false
		for _, a := range as {
			if a.Message == id {
				done = a.Stored == a.Chunks && !a.Evicted
			}
		}
		if done {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: attachments %+v after the deadline; want %s's whole", n.id.Name, as, id.Short())
		}
	}
}
