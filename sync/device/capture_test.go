package device

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/adversary"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// capture runs adversary.Capture on what st holds.
func capture(t *testing.T, team crdt.TeamID, dev *identity.Device, st *memStore) map[string]bool {
	t.Helper()
	var ops [][]byte
	for _, b := range st.ops {
		ops = append(ops, b)
	}
	read, err := adversary.Capture(team, dev, st.keys, ops, st.envelopes())
	if err != nil {
		t.Fatal(err)
	}
	return read
}

// TestCaptureAfterRetention is the capture test of the wire-format issue
// (#8) on the device core: Bob joins (his first epoch is boxed to the
// prekey of his join request), publishes a prekey, learns an epoch
// boxed to it and reads its messages, learns the next epoch through his
// next prekey, and the first prekey epoch passes retention: its keys, its
// prekey and its messages' bodies are deleted. A thief with everything
// Bob's store holds (key record, opened ops, envelopes) and his static key
// reads none of that epoch's messages. The control build (-tags
// fieldmesh_keepprekeys), where prekeys are never destroyed, reads them
// all: the test can fail. The epoch Bob joined in, past retention too, reads
// nothing either (its box went to the join request's prekey, not to his
// static key); the current epoch's messages are readable, as they must be.
func TestCaptureAfterRetention(t *testing.T) {
	h := newHarness(t, 11)
	alice := h.create("alice")
	bob := h.join(alice, "bob", false)
	tick := func(d *hdev) { d.apply(d.team.Tick(h.tick(time.Second), TickOptions{})) }
	rekey := func() crdt.OpID {
		t.Helper()
		op, eff, err := alice.team.Change(h.tick(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		alice.apply(eff)
		h.mesh(alice, bob)
		if !bob.team.HoldsKey(op.ID()) {
			t.Fatalf("bob did not learn epoch %v", op.ID().Short())
		}
		return op.ID()
	}
	say := func(prefix string, n int) []string {
		var texts []string
		for i := range n {
			texts = append(texts, prefix+string(rune('a'+i)))
			h.send(alice, texts[i])
		}
		h.mesh(alice, bob)
		return texts
	}
	joinTexts := say("in the epoch bob joined: ", 2)

	tick(bob) // publishes his first prekey
	h.mesh(alice, bob)
	if _, ok := alice.team.State().Prekeys[bob.dev.ID()]; !ok {
		t.Fatal("alice does not see bob's prekey")
	}
	e2 := rekey()
	// The box is sealed to the prekey, not to the static key.
	if _, err := teamkeys.OpenBox(teamkeys.StaticOnly(bob.dev), h.team, mustEnv(t, envelope.TopicOf(h.team), alice.store.envs[e2].Data)); err == nil {
		t.Fatal("bob's static key opens his box of an epoch boxed to his prekey")
	}
	oldTexts := say("in the prekey epoch: ", 3)
	for _, want := range oldTexts {
		if !slices.Contains(texts(bob), want) {
			t.Fatalf("bob does not show %q", want)
		}
	}

	tick(bob) // his next prekey: the first one is used
	h.mesh(alice, bob)
	e3 := rekey()
	newTexts := say("in the current epoch: ", 2)

	// Retention of epoch 2 passes (it ended when epoch 3 started).
	h.tick(DefaultRetainKeys + time.Hour)
	tick(alice)
	tick(bob)
	if bob.team.HoldsKey(e2) {
		t.Fatal("bob still holds the keys of epoch 2 after its retention")
	}
	if !bob.team.HoldsKey(e3) && !bob.team.HoldsKey(bob.team.State().Epochs[bob.team.State().Current].ID) {
		t.Fatal("bob lost the current epoch")
	}

	for _, txt := range oldTexts {
		if slices.Contains(texts(bob), txt) {
			t.Errorf("bob still shows %q after its epoch's retention", txt)
		}
	}
	bob.restart(h.now)
	if got := texts(bob); !slices.Equal(got, newTexts) {
		t.Errorf("after a restart bob shows %q; want only the current epoch's %q", got, newTexts)
	}
	read := capture(t, h.team, bob.dev, bob.store)
	var got []string
	for _, txt := range oldTexts {
		if read[txt] {
			got = append(got, txt)
		}
	}
	t.Logf("control build: %v; the thief read %d of %d messages of the epoch past retention, %d of %d of the epoch bob joined, %d of %d of the current one",
		keepPrekeysBuild, len(got), len(oldTexts), count(read, joinTexts), len(joinTexts), count(read, newTexts), len(newTexts))
	if keepPrekeysBuild {
		if len(got) != len(oldTexts) {
			t.Errorf("control: with prekeys kept the thief read %d of %d; want all (the capture cannot fail otherwise)", len(got), len(oldTexts))
		}
		return
	}
	if len(got) != 0 {
		t.Errorf("the thief read %d messages of an epoch past retention: %s", len(got), strings.Join(got, "; "))
	}
	if n := count(read, joinTexts); n != 0 {
		t.Errorf("the thief read %d messages of the epoch bob joined in, past retention", n)
	}
	if n := count(read, newTexts); n != len(newTexts) {
		t.Errorf("the thief read %d of the %d messages of the current epoch; the capture reads what the device holds, or it proves nothing", n, len(newTexts))
	}
}

func count(read map[string]bool, texts []string) int {
	n := 0
	for _, t := range texts {
		if read[t] {
			n++
		}
	}
	return n
}

func mustEnv(t *testing.T, topic envelope.Topic, raw []byte) *envelope.Envelope {
	t.Helper()
	e, err := envelope.Unmarshal(topic, raw)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
