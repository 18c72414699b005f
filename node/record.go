package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record"
)

// What the node offers the record gateway (node/recordgw), which does the HTTP.

// ErrNotAdmin is returned for what only a team's admin may do.
var ErrNotAdmin = errors.New("node: this device is not an admin of the team")

// RecordTeam is a clinical team as the record gateway sees it.
type RecordTeam struct {
	ID crdt.TeamID
	// Admin says this device is an admin's: only an admin's filings count (crdt.State.Filed).
	Admin bool
	// Due are the team's messages due for filing (record.Due), in display order.
	Due []crdt.MessageView
}

// RecordTeams returns the clinical teams this device is a member of, with their messages due for
// filing, sorted by team id.
func (n *Node) RecordTeams() []RecordTeam {
	var out []RecordTeam
	for _, t := range n.teamList() {
		s := t.snapshot()
		if s.Kind != crdt.Clinical || t.removed() {
			continue
		}
		rt := RecordTeam{ID: t.id}
		if p, ok := s.PersonOf(n.id.Device.ID()); ok {
			rt.Admin = p.Admin
		} else {
			continue
		}
		for _, m := range s.Messages {
			if record.Due(s.Kind, m) {
				rt.Due = append(rt.Due, m)
			}
		}
		out = append(out, rt)
	}
	slices.SortFunc(out, func(a, b RecordTeam) int { return compareTeam(a.ID, b.ID) })
	return out
}

func compareTeam(a, b crdt.TeamID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// PublishFiled publishes a filed op in team: the record confirmed it holds these messages. It
// returns once the op is durably stored. Only an admin's device may: another's filing would count
// for nothing, so it is refused with ErrNotAdmin.
func (n *Node) PublishFiled(team crdt.TeamID, f crdt.Filed) error {
	t := n.teamByID(team)
	if t == nil {
		return fmt.Errorf("%w: %s", ErrUnknownTeam, team.Short())
	}
	if p, ok := t.snapshot().PersonOf(n.id.Device.ID()); !ok || !p.Admin {
		return ErrNotAdmin
	}
	if err := f.Validate(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	_, err := n.publish(t, crdt.KindFiled, f.Marshal())
	return err
}

// Unfiled returns, for each clinical team this device is an admin of, the ids of the messages due
// for filing and not filed for longer than Config.WarnUnfiled (device.Team.Unfiled), by team.
func (n *Node) Unfiled() map[crdt.TeamID][]crdt.OpID {
	out := make(map[crdt.TeamID][]crdt.OpID)
	now := n.now()
	for _, t := range n.teamList() {
		t.mu.Lock()
		ids := t.core.Unfiled(now)
		t.mu.Unlock()
		if len(ids) > 0 {
			out[t.id] = ids
		}
	}
	return out
}

// RecordAttachments returns the attachments of message m of team, whole and each checked against
// its manifest (attach.Open: every chunk's hash, then the plaintext's), for the record gateway,
// which files a message only with all of them. If some chunks are not on this device (never
// fetched, or evicted by the storage budget) it asks the connected peers for them now, and from
// then on after every reconciliation, whatever the low-data mode (as when the user opens one), and
// returns an error wrapping ErrAttachmentMissing: the gateway tries again later.
func (n *Node) RecordAttachments(team crdt.TeamID, m crdt.MessageView) ([]Attachment, error) {
	if n.teamByID(team) == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTeam, team.Short())
	}
	missing, err := attach.Missing(m.Attachments, n.st.HasChunk)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if len(missing) > 0 {
		n.requestAttachments(m.ID)
		return nil, fmt.Errorf("%w: %d chunks of message %s; asking the connected peers for them", ErrAttachmentMissing, len(missing), m.ID.Short())
	}
	out := make([]Attachment, 0, len(m.Attachments))
	for _, a := range m.Attachments {
		data, err := attach.Open(a, func(i int) ([]byte, error) { return n.st.Chunk(a.Chunks[i]) })
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		out = append(out, Attachment{Type: a.Type, Data: data})
	}
	return out, nil
}

// DeviceID returns this device's id.
func (n *Node) DeviceID() identity.DeviceID { return n.id.Device.ID() }

// Store returns the node's store (the record gateway keeps its queue there).
func (n *Node) Store() *storage.Store { return n.st }
