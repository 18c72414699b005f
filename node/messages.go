package node

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Message is a message as this device shows it: one of the team state's messages, or one of this
// device's own messages that low-data mode holds in the outbox (Queued: not sealed or sent yet, so
// acknowledged by no one). A queued message keeps its id when it is sent.
type Message struct {
	crdt.MessageView
	Queued bool
}

// ErrUnknownMessage is returned for a message id that matches no message of the team.
var ErrUnknownMessage = errors.New("node: no message with that id in the team")

// MinMessageRef is the fewest hex characters of a message id that MessageID accepts: the short
// form of an id (crdt.OpID.Short).
const MinMessageRef = 8

// Messages returns a team's messages in display order, with this device's own messages that low-data
// mode holds in the outbox among them, marked Queued, each where it was written.
func (n *Node) Messages(teamRef string) ([]Message, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, err
	}
	return n.messages(t)
}

// messages returns t's messages, queued ones included. The outbox is read before the state: an op
// published in between is in both, and shown once, as sent.
func (n *Node) messages(t *team) ([]Message, error) {
	ops, err := n.low.Queued(t.id)
	if err != nil {
		return nil, err
	}
	s := t.snapshot()
	if len(ops) == 0 {
		out := make([]Message, len(s.Messages))
		for i, m := range s.Messages {
			out[i] = Message{MessageView: m}
		}
		return out, nil
	}
	name := n.id.Name
	if p, ok := s.PersonOf(n.id.Device.ID()); ok {
		name = p.Name
	}
	var queued []crdt.MessageView
	for _, op := range ops {
		if op.Kind != crdt.KindMessage {
			continue
		}
		m, err := crdt.UnmarshalMessage(op.Body)
		if err != nil {
			continue
		}
		queued = append(queued, crdt.MessageView{ID: op.ID(), Author: op.Author, AuthorName: name, Time: op.Time, Message: m})
	}
	return withQueued(s.Messages, queued), nil
}

// withQueued merges queued messages, in (Time, ID) order, into shown, in display order: each goes
// before the first shown message later than it by (Time, ID), but after the message it replies to,
// and after the queued messages before it. One already in shown (published meanwhile) is left out.
func withQueued(shown, queued []crdt.MessageView) []Message {
	pos := make(map[crdt.OpID]int, len(shown))
	for i, m := range shown {
		pos[m.ID] = i
	}
	// at[k] is the index in shown before which queued[k] goes.
	at := make([]int, len(queued))
	last := 0
	for k, q := range queued {
		if _, ok := pos[q.ID]; ok {
			at[k] = -1
			continue
		}
		i := 0
		for i < len(shown) && (shown[i].Time < q.Time || shown[i].Time == q.Time && shown[i].ID.Compare(q.ID) < 0) {
			i++
		}
		if q.ReplyTo != nil {
			if p, ok := pos[*q.ReplyTo]; ok && i <= p {
				i = p + 1
			}
		}
		i = max(i, last)
		at[k], last = i, i
	}
	out := make([]Message, 0, len(shown)+len(queued))
	k := 0
	for i := 0; i <= len(shown); i++ {
		for ; k < len(queued) && at[k] <= i; k++ {
			if at[k] >= 0 {
				out = append(out, Message{MessageView: queued[k], Queued: true})
			}
		}
		if i < len(shown) {
			out = append(out, Message{MessageView: shown[i]})
		}
	}
	return out
}

// MessageID finds a message of a team, queued ones included, by its id or a unique prefix of it of
// at least MinMessageRef hex characters (in either case).
func (n *Node) MessageID(teamRef, ref string) (crdt.OpID, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return crdt.OpID{}, err
	}
	msgs, err := n.messages(t)
	if err != nil {
		return crdt.OpID{}, err
	}
	return matchMessage(msgs, ref)
}

// matchMessage returns the id of the one message of msgs whose id starts with ref, a hex prefix of
// at least MinMessageRef characters.
func matchMessage(msgs []Message, ref string) (crdt.OpID, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	full := 2 * len(crdt.OpID{})
	if ref == "" || strings.Trim(ref, "0123456789abcdef") != "" || len(ref) > full {
		return crdt.OpID{}, fmt.Errorf("node: %q is not a message id: want %d to %d hex characters", ref, MinMessageRef, full)
	}
	if len(ref) < MinMessageRef {
		return crdt.OpID{}, fmt.Errorf("node: message id %q is too short: give at least %d hex characters", ref, MinMessageRef)
	}
	var found []crdt.OpID
	for _, m := range msgs {
		if strings.HasPrefix(m.ID.String(), ref) {
			found = append(found, m.ID)
		}
	}
	switch len(found) {
	case 0:
		return crdt.OpID{}, fmt.Errorf("%w: %s", ErrUnknownMessage, ref)
	case 1:
		return found[0], nil
	default:
		return crdt.OpID{}, fmt.Errorf("node: %d messages have ids starting with %s: give more of the id", len(found), ref)
	}
}

// hasMessage reports whether id is one of t's messages, queued ones included.
func (n *Node) hasMessage(t *team, id crdt.OpID) (bool, error) {
	msgs, err := n.messages(t)
	if err != nil {
		return false, err
	}
	for _, m := range msgs {
		if m.ID == id {
			return true, nil
		}
	}
	return false, nil
}
