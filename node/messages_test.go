package node

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestSendRefusesReplyToUnknown: a reply to a message the team does not have is refused, and
// nothing is sent.
func TestSendRefusesReplyToUnknown(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda")
	a := ns[0]
	team, err := a.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	parent, _, err := a.Send(ref, crdt.Message{Text: "bed 4 needs a review"})
	if err != nil {
		t.Fatal(err)
	}
	absent := parent
	absent[len(absent)-1] ^= 1
	if id, _, err := a.Send(ref, crdt.Message{Text: "reply to nothing", ReplyTo: &absent}); err == nil {
		t.Errorf("a reply to a message the team does not have was sent, as %s", id.Short())
	}
	if _, _, err := a.Send(ref, crdt.Message{Text: "on my way", ReplyTo: &parent}); err != nil {
		t.Errorf("a reply to a message of the team: %v", err)
	}
	if ms, _ := a.Messages(ref); len(ms) != 2 {
		t.Errorf("the team shows %d messages; want 2 (the message and the one valid reply)", len(ms))
	}
}

// TestMatchMessage: a message is named by its id or a unique prefix of at least 8 hex characters, in
// either case; a shorter, ambiguous, unknown or malformed one is an error that says which.
func TestMatchMessage(t *testing.T) {
	id := func(s string) crdt.OpID {
		t.Helper()
		id, err := crdt.ParseOpID(s + strings.Repeat("0", 2*len(crdt.OpID{})-len(s)))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a, b, c := id("1a2b3c4d11"), id("1a2b3c4d22"), id("9f8e7d6c")
	msgs := []Message{{MessageView: crdt.MessageView{ID: a}}, {MessageView: crdt.MessageView{ID: b}}, {MessageView: crdt.MessageView{ID: c}, Queued: true}}
	for _, tt := range []struct {
		ref  string
		want crdt.OpID
		err  string // a part of the error; "" for none
	}{
		{ref: "9f8e7d6c", want: c},
		{ref: " 9F8E7D6C ", want: c},
		{ref: "1a2b3c4d1", want: a},
		{ref: a.String(), want: a},
		{ref: "1a2b3c4d", err: "2 messages have ids starting with 1a2b3c4d"},
		{ref: "9f8e7d6", err: "at least 8"},
		{ref: "", err: "not a message id"},
		{ref: "9f8e7d6x", err: "not a message id"},
		{ref: c.String() + "0", err: "not a message id"},
		{ref: "77777777", err: "no message with that id in the team: 77777777"},
	} {
		got, err := matchMessage(msgs, tt.ref)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("matchMessage(%q) = %s, %v; want %s", tt.ref, got.Short(), err, tt.want.Short())
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("matchMessage(%q) = %s, %v; want an error containing %q", tt.ref, got.Short(), err, tt.err)
		}
	}
	if _, err := matchMessage(msgs, "77777777"); !errors.Is(err, ErrUnknownMessage) {
		t.Errorf("matchMessage of an unknown id: %v; want ErrUnknownMessage", err)
	}
}

// TestWithQueued: a queued message goes where its (Time, ID) puts it, but never before the message it
// replies to (a parent from a clock ahead), nor before an earlier queued one; one already shown (it was
// published meanwhile) is shown once, as sent.
func TestWithQueued(t *testing.T) {
	var n byte
	view := func(time crdt.HLC, replyTo *crdt.OpID) crdt.MessageView {
		n++
		return crdt.MessageView{ID: crdt.OpID{n}, Time: time, Message: crdt.Message{ReplyTo: replyTo}}
	}
	s1, s2, ahead := view(10, nil), view(20, nil), view(1000, nil) // shown, in display order
	q1 := view(15, nil)                                            // queued
	q2 := view(16, &ahead.ID)                                      // queued, replies to a message from a clock ahead
	q3 := view(17, nil)                                            // queued after q2
	got := withQueued([]crdt.MessageView{s1, s2, ahead}, []crdt.MessageView{q1, q2, q3, s2})
	var order []crdt.OpID
	var queued []bool
	for _, m := range got {
		order = append(order, m.ID)
		queued = append(queued, m.Queued)
	}
	want := []crdt.OpID{s1.ID, q1.ID, s2.ID, ahead.ID, q2.ID, q3.ID}
	if !slices.Equal(order, want) {
		t.Errorf("order %v; want %v", order, want)
	}
	if wantQ := []bool{false, true, false, false, true, true}; !slices.Equal(queued, wantQ) {
		t.Errorf("queued %v; want %v", queued, wantQ)
	}
}

// TestLowDataQueuedMessage: in low-data mode the sender's own routine message is in its Messages,
// marked Queued, with its name, and watchers hear of it; replies can name it; no other device has
// it. Once the mode is off it is shown once, sent, under the same id, and reaches the other device.
func TestLowDataQueuedMessage(t *testing.T) {
	_, ns := newMockNodes(t, "Nurse Phiri", "Dr Banda")
	a, b := ns[0], ns[1]
	team, ref := clinicalTeam(t, a, "Ward 3", b)
	first, _, err := a.Send(ref, crdt.Message{Text: "handover at 19:00"})
	if err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, ref, 1)
	if _, err := a.SetLowData(true); err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := a.Watch(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	for len(ch) > 0 {
		<-ch
	}
	queued, _, err := a.Send(ref, crdt.Message{Text: "stock count: 12 vials", ReplyTo: &first})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Error("no watch event after a message was queued")
	}
	ms, err := a.Messages(ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].ID != first || ms[0].Queued || ms[1].ID != queued || !ms[1].Queued ||
		ms[1].Text != "stock count: 12 vials" || ms[1].AuthorName != "Nurse Phiri" || ms[1].ReplyTo == nil || *ms[1].ReplyTo != first {
		t.Fatalf("in low-data mode the sender shows %+v; want the first message, then the queued reply marked queued", ms)
	}
	if got, err := a.MessageID(ref, queued.Short()); err != nil || got != queued {
		t.Errorf("MessageID(short id of the queued message) = %s, %v; want it", got.Short(), err)
	}
	if a.teamByID(team.ID).has(queued) {
		t.Error("the queued message is in the team log")
	}
	if _, err := a.SetLowData(false); err != nil {
		t.Fatal(err)
	}
	ms, err = a.Messages(ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[1].ID != queued || ms[1].Queued {
		t.Errorf("after the mode went off the sender shows %+v; want the message once, not queued", ms)
	}
	if ms := waitMessages(t, b, ref, 2); ms[1].ID != queued || ms[1].Queued {
		t.Errorf("b shows %v; want the formerly queued message, sent", ids(ms))
	}
}
