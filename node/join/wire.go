package join

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// request is the joiner's introduction, the payload of the handshake's third message: its device
// id, its name, and a prekey (an X25519 key of its own, not of small order) that the commit adding it
// boxes its first epoch key to.
//
//	version 2 | device id 32 | uvarint len | name (at most crdt.MaxNameLen bytes) | prekey 32
type request struct {
	Device identity.DeviceID
	Name   string
	Prekey identity.NoisePublic
}

const requestVersion = 2

func (r request) marshal() []byte {
	b := []byte{requestVersion}
	b = append(b, r.Device[:]...)
	b = binary.AppendUvarint(b, uint64(len(r.Name)))
	b = append(b, r.Name...)
	return append(b, r.Prekey[:]...)
}

func unmarshalRequest(b []byte) (request, error) {
	var req request
	r := wire.NewReader(b)
	if v := r.Byte(); v != requestVersion {
		return req, errors.New("join: request: unknown version")
	}
	copy(req.Device[:], r.Fixed(32))
	req.Name = string(r.Bytes(crdt.MaxNameLen))
	copy(req.Prekey[:], r.Fixed(32))
	if err := r.Finish(); err != nil {
		return req, fmt.Errorf("join: request: malformed: %w", err)
	}
	if err := req.Prekey.Check(); err != nil {
		return req, fmt.Errorf("join: request: prekey: %w", err)
	}
	return req, nil
}

// answer is the inviter's last word: a refusal, or the admission — the team id, its genesis op id
// and the team's membership history (its create and commit ops, each sealed by its author, with their
// envelopes), which holds the commit that adds the joiner and carries the joiner's box of the new
// epoch key (and the prior keys of the epochs the inviter holds, so the joiner can read the earlier
// commits' envelopes too). The joiner's core checks all of it (device.Join).
//
//	version 3 | status 0 | team id 32 | genesis 32 | uvarint n | n × (uvarint len, op | uvarint len, envelope)
//	version 3 | status 1 | uvarint len, reason (at most maxReason bytes; marshal cuts a longer one)
type answer struct {
	Refusal string // non-empty: the join was refused, and why
	Admission
}

const (
	answerVersion = 3
	maxHistory    = 100000 // items in an answer
	maxReason     = 256    // bytes of a refusal's reason
)

func (a answer) marshal() []byte {
	if a.Refusal != "" {
		reason := a.Refusal
		if len(reason) > maxReason {
			// Cut at a character boundary.
			reason = strings.ToValidUTF8(reason[:maxReason], "")
		}
		b := []byte{answerVersion, 1}
		b = binary.AppendUvarint(b, uint64(len(reason)))
		return append(b, reason...)
	}
	b := []byte{answerVersion, 0}
	b = append(b, a.Team[:]...)
	b = append(b, a.Genesis[:]...)
	b = binary.AppendUvarint(b, uint64(len(a.History)))
	for _, h := range a.History {
		b = binary.AppendUvarint(b, uint64(len(h.Op)))
		b = append(b, h.Op...)
		b = binary.AppendUvarint(b, uint64(len(h.Env)))
		b = append(b, h.Env...)
	}
	return b
}

func unmarshalAnswer(b []byte) (answer, error) {
	var a answer
	r := wire.NewReader(b)
	if v := r.Byte(); v != answerVersion {
		return a, fmt.Errorf("join: answer: unknown version %d (the inviter runs another fieldmesh version)", v)
	}
	switch r.Byte() {
	case 0:
		copy(a.Team[:], r.Fixed(32))
		copy(a.Genesis[:], r.Fixed(crdt.IDSize))
		n := r.Count(maxHistory, 1+1) // two lengths an item
		for i := 0; i < n && r.Err() == nil; i++ {
			op := r.Bytes(crdt.MaxOpSize)
			env := r.Bytes(envelope.MaxSize)
			a.History = append(a.History, device.HistoryItem{Op: op, Env: env})
		}
	case 1:
		a.Refusal = string(r.Bytes(maxReason))
		if a.Refusal == "" {
			a.Refusal = "refused"
		}
	default:
		return a, errors.New("join: answer: unknown status")
	}
	if err := r.Finish(); err != nil {
		return a, fmt.Errorf("join: answer: malformed: %w", err)
	}
	return a, nil
}
