package adversary

import (
	"fmt"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// Capture is what a thief who holds a device and its passphrase does with one team's data, using
// the project's own code: it reads every opened op the store keeps; decodes the team's key record;
// opens every commit envelope with every key the device still holds (its prekeys and its static
// key), rebuilds each epoch it opens from K (every sender's chain from index 0) and opens every
// chain-form envelope with it, or else with the key record's own chains. It returns the texts of the
// messages it read.
func Capture(team crdt.TeamID, dev *identity.Device, keyRecord []byte, ops, envelopes [][]byte) (map[string]bool, error) {
	read := map[string]bool{}
	for _, b := range ops {
		op, err := crdt.UnmarshalStored(b)
		if err != nil {
			return nil, fmt.Errorf("adversary: stored op: %w", err)
		}
		if op.Kind != crdt.KindMessage {
			continue
		}
		if m, err := crdt.UnmarshalMessage(op.Body); err == nil {
			read[m.Text] = true
		}
	}
	keys, err := teamkeys.Unmarshal(team, dev, keyRecord)
	if err != nil {
		return nil, fmt.Errorf("adversary: key record: %w", err)
	}
	bk := keys.BoxKeys()
	epochs := map[uint32]*teamkeys.Epoch{}
	var chains []*envelope.Envelope
	for _, raw := range envelopes {
		e, err := envelope.Unmarshal(envelope.TopicOf(team), raw)
		if err != nil {
			return nil, fmt.Errorf("adversary: envelope: %w", err)
		}
		if e.Form() != envelope.FormCommit {
			chains = append(chains, e)
			continue
		}
		box, err := teamkeys.OpenBox(bk, team, e)
		if err != nil {
			continue
		}
		op, _, err := envelope.OpenCommit(e, envelope.OuterKey(box.Key), team)
		if err != nil {
			return nil, fmt.Errorf("adversary: commit: %w", err)
		}
		rs, err := teamkeys.Recipients(op)
		if err != nil {
			return nil, err
		}
		epochs[e.Epoch] = teamkeys.NewEpoch(dev, box.Key, op.ID(), rs)
	}
	for _, e := range chains {
		var op *crdt.Op
		if ep := epochs[e.Epoch]; ep != nil {
			if o, err := ep.OpenChain(e, team); err == nil {
				op = o.Op
			}
		}
		if op == nil {
			if o, err := keys.OpenChain(e); err == nil {
				op = o.Op
			}
		}
		if op == nil || op.Kind != crdt.KindMessage {
			continue
		}
		if m, err := crdt.UnmarshalMessage(op.Body); err == nil {
			read[m.Text] = true
		}
	}
	return read, nil
}
