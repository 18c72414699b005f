package node

import (
	"testing"

	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// TestStoredEnvelopeEpochs: what a restart gives the device core of each stored envelope is that
// envelope's own epoch tag and form, read from its header. The core asks to read again, by epoch
// tag, the envelopes it carried sealed once it holds their epoch's chains; a wrong tag after a
// restart left them unread for good. (Before format 9 the node read the tag 16 bytes too far on,
// inside the op id, a leftover of the header of format 4.)
func TestStoredEnvelopeEpochs(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	team, err := a.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	joinAll(t, a, ref, b)
	for _, text := range []string{"BP 150/95 at 34 weeks", "on my way"} {
		if _, _, err := a.Send(ref, crdt.Message{Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	tm := a.teamByID(team.ID)
	stored, err := a.storedOf(tm.rec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[crdt.OpID]*envelope.Envelope{}
	commits := 0
	err = a.st.Envelopes(envelope.TopicOf(team.ID), func(r storage.EnvelopeRecord) error {
		e, err := envelope.Unmarshal(envelope.TopicOf(team.ID), r.Data)
		if err != nil {
			return err
		}
		want[e.ID] = e
		if e.Form() == envelope.FormCommit {
			commits++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 4 || commits < 2 {
		t.Fatalf("the store holds %d envelopes, %d commits; want a create, a commit and 2 messages at least", len(want), commits)
	}
	if len(stored.Envelopes) != len(want) || len(stored.Commits) != commits {
		t.Fatalf("restored %d envelopes, %d commits; the store holds %d, %d", len(stored.Envelopes), len(stored.Commits), len(want), commits)
	}
	for _, r := range stored.Envelopes {
		e := want[r.ID]
		if e == nil {
			t.Errorf("restored envelope %s is not in the store", r.ID.Short())
			continue
		}
		if r.Epoch != e.Epoch || r.Time != uint64(e.Time) {
			t.Errorf("envelope %s (%v) restored at epoch %08x, time %d; its header says %08x, %d", r.ID.Short(), e.Form(), r.Epoch, r.Time, e.Epoch, e.Time)
		}
	}
}
