package device

import (
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestAttachmentsFollowRetention: when a message's body is deleted at the
// end of its epoch's retention, the Write also deletes its attachment
// chunks (DropChunks), and only for messages that had attachments. A
// message may be only attachments, no text.
func TestAttachmentsFollowRetention(t *testing.T) {
	h := newHarness(t, 21)
	alice := h.create("alice")
	bob := h.join(alice, "bob", false)
	a, _, err := attach.Seal(detRand(3), "image/jpeg", []byte("a photo of a wound"))
	if err != nil {
		t.Fatal(err)
	}
	op, eff, err := alice.team.Send(h.tick(time.Second), crdt.Message{Attachments: []crdt.Attachment{a}})
	if err != nil {
		t.Fatalf("a message of one attachment and no text: %v", err)
	}
	alice.apply(eff)
	plain := h.send(alice, "no attachment")
	h.mesh(alice, bob)
	got := bob.team.State().Messages
	if len(got) != 2 || len(got[0].Attachments) != 1 || got[0].Attachments[0].Hash != a.Hash {
		t.Fatalf("bob shows %+v; want the attachment's manifest", got)
	}
	if _, eff, err := alice.team.Change(h.tick(time.Minute)); err != nil {
		t.Fatal(err)
	} else {
		alice.apply(eff)
	}
	h.mesh(alice, bob)
	h.tick(DefaultRetainKeys + time.Hour)
	for _, d := range []*hdev{alice, bob} {
		d.apply(d.team.Tick(h.tick(time.Second), TickOptions{}))
		if !slices.Equal(d.store.dropped, []crdt.OpID{op.ID()}) {
			t.Errorf("%s dropped the chunks of %v; want only those of %v (not of %v)", d.name, d.store.dropped, op.ID().Short(), plain.ID().Short())
		}
	}
}

// TestEmptyMessageRefused: a message with neither text nor attachment is
// still refused.
func TestEmptyMessageRefused(t *testing.T) {
	if err := CheckMessage(crdt.Message{Text: "  "}); err == nil {
		t.Fatal("an empty message passed")
	}
}
