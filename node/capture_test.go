package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/adversary"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestCaptureOfDataDirectory is the capture test of the wire-format issue (#8) on a real node and
// store: Nurse Phiri's device learns epochs through its prekeys and reads messages; the epoch they
// were sent in passes retention (its keys, its prekey and the messages' bodies deleted) and the node
// makes the deletions final (storage.Collect). A thief then opens her whole data directory with the passphrase, using
// the project's own code (storage.Open, LoadIdentity, adversary.Capture: every stored op, every key
// still held, every envelope): it reads 0 of those messages. The control build (-tags
// fieldmesh_keepprekeys: prekeys never destroyed) reads them all, so the test can fail.
func TestCaptureOfDataDirectory(t *testing.T) {
	_, ns := newMockNodesCfg(t, func(_ int, c *Config) {
		c.RotateEvery = 400 * time.Millisecond
		c.RetainKeys = time.Millisecond
		c.EpochCheck = 40 * time.Millisecond
		c.CollectEvery = 50 * time.Millisecond
		c.SyncInterval = 200 * time.Millisecond
	}, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	team, ref := clinicalTeam(t, a, "Ward", b)
	bID := b.id.Device.ID()

	// Wait for an epoch that Dr Banda committed after seeing Nurse Phiri's prekey: boxed to it.
	waitState(t, a, ref, func(s *crdt.State) bool { _, ok := s.Prekeys[bID]; return ok })
	seen := len(a.snapshot(ref).Epochs)
	waitState(t, a, ref, func(s *crdt.State) bool { return len(s.Epochs) > seen })
	var texts []string
	for i := range 3 {
		texts = append(texts, fmt.Sprintf("bed %d: oxytocin 10 IU given", i+1))
		if _, _, err := a.Send(ref, crdt.Message{Text: texts[i], Patient: "MRN-CAPTURE"}); err != nil {
			t.Fatal(err)
		}
	}
	waitMessages(t, b, ref, len(texts))
	// Rotation goes on; retention of the epochs the messages were sent in passes, and their bodies
	// are deleted on both devices.
	waitState(t, b, ref, func(s *crdt.State) bool {
		for _, m := range s.Messages {
			for _, txt := range texts {
				if m.Text == txt {
					return false
				}
			}
		}
		return true
	})
	// The node collects on its schedule (TestDeletionsMadeFinal); here once more now, as rotation
	// keeps writing key records.
	if _, err := b.st.Collect(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.st.Close(); err != nil {
		t.Fatal(err)
	}

	// The thief, with the data directory and the passphrase.
	st, err := storage.Open(b.dir, storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, err := LoadIdentity(st)
	if err != nil {
		t.Fatal(err)
	}
	keyRecord, err := st.Secret(keysSecret(team.ID))
	if err != nil {
		t.Fatal(err)
	}
	var ops, envs [][]byte
	if err := st.Ops(team.ID, func(d []byte) error { ops = append(ops, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.Envelopes(seal.Topic(team.ID), func(r storage.EnvelopeRecord) error { envs = append(envs, r.Data); return nil }); err != nil {
		t.Fatal(err)
	}
	read, err := adversary.Capture(team.ID, id.Device, keyRecord, ops, envs)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, txt := range texts {
		if read[txt] {
			got++
		}
	}
	t.Logf("control build: %v; the thief read %d of %d messages past retention (%d ops, %d envelopes in the store)", keepPrekeysBuild, got, len(texts), len(ops), len(envs))
	switch {
	case keepPrekeysBuild && got != len(texts):
		t.Errorf("control: with prekeys kept the thief read %d of %d; want all (the capture cannot fail otherwise)", got, len(texts))
	case !keepPrekeysBuild && got != 0:
		t.Errorf("the thief read %d of %d messages past retention from the data directory", got, len(texts))
	}
}
