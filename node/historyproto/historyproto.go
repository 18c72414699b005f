// Package historyproto carries a person's message history from one of their devices to a device
// newly linked to them (sync/device's HistoryFor and AcceptHistory decide what may be handed over and
// what is kept). It is one libp2p stream protocol, opened by the new device:
//
// /fieldmesh/history/1.0.0; every message is one sync/framing frame:
//
//	ask     asker  -> server  version u8 (1) | team id 32 | cursor: time u64 | op id
//	answer  server -> asker   status u8: 0 | sealed page, or 1 | reason (at most 200 bytes of text)
//
// The asker sends asks one after another on the same stream, each after the cursor the last page
// gave, until a page says no more follow or MaxPages pages were asked. A page is sealed end to end
// with one-way Noise X (crypto/epochkey.SealTo) from the server device's static key to the Noise key
// the team's membership lists for the asker, under a prologue that names the team, both devices and
// the ask; the asker checks that the page's sender key is the one the membership lists for the device
// it asked. So neither a relay forwarding the stream nor a peer holding another device's libp2p
// identity reads or forges a page: only the device whose key the link recorded opens it. The sealed
// payload is:
//
//	more u8 (0 or 1) | next cursor: time u64 | op id | uvarint n | n × (uvarint length | crdt.Op.Marshal)
//
// Ops are handed over opened, with their authors' seals: the asker checks each signature and judges
// each op itself (device.Team.AcceptHistory), so the server can hand over nothing the authors did not
// sign. Asking again from a cursor gives the same ops again, which the asker skips: a hand-over cut
// off is resumed from the last page stored, or started over, with nothing kept twice.
package historyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// Protocol is the stream protocol id.
const Protocol = "/fieldmesh/history/1.0.0"

const (
	version = 1
	domain  = "fieldmesh/v1/history"
	idLen   = len(crdt.OpID{})
	askLen  = 1 + len(crdt.TeamID{}) + 8 + idLen
	// headLen is the payload's fixed head: more, cursor time and id, and the count's uvarint at most.
	headLen = 1 + 8 + idLen + binary.MaxVarintLen32
	// maxReason bounds a refusal's text.
	maxReason = 200
	// maxFrame is the largest answer frame: a status byte and one Noise message.
	maxFrame = 1 + epochkey.MaxPayload + epochkey.Overhead
)

// Limits.
const (
	// PageBytes is the op bytes one page carries at most: what fits in one Noise message (64 KiB)
	// with each op's length prefix. An op larger than that (none with a message body comes near it)
	// is not handed over.
	PageBytes = epochkey.MaxPayload - headLen - 4096
	// MaxPages bounds the pages one stream carries: device.MaxHistoryBytes in full pages, and some.
	MaxPages = device.MaxHistoryBytes/PageBytes + 64
)

// Errors.
var (
	// ErrRefused: the server refused the ask (the wrapped text is the server's reason).
	ErrRefused = errors.New("history refused")
	// ErrMalformed: an ask or a page that does not decode, or a page that does not open for this
	// device from the expected sender.
	ErrMalformed = errors.New("historyproto: malformed ask or page")
)

// Ask is one request: a team's history after a cursor.
type Ask struct {
	Team  crdt.TeamID
	After device.HistoryCursor
}

// Marshal encodes a.
func (a Ask) Marshal() []byte {
	b := make([]byte, 0, askLen)
	b = append(b, version)
	b = append(b, a.Team[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.After.Time))
	return append(b, a.After.ID[:]...)
}

// UnmarshalAsk decodes an ask; it never panics.
func UnmarshalAsk(b []byte) (Ask, error) {
	var a Ask
	if len(b) != askLen || b[0] != version {
		return a, fmt.Errorf("%w: ask of %d bytes", ErrMalformed, len(b))
	}
	b = b[1:]
	b = b[copy(a.Team[:], b):]
	a.After.Time = crdt.HLC(binary.BigEndian.Uint64(b))
	copy(a.After.ID[:], b[8:])
	return a, nil
}

// Page is one answer: ops (crdt.Op.Marshal each), the cursor after the last, and whether more follow.
type Page struct {
	Ops  [][]byte
	Next device.HistoryCursor
	More bool
}

func (p Page) marshal() []byte {
	n := headLen
	for _, op := range p.Ops {
		n += binary.MaxVarintLen32 + len(op)
	}
	b := make([]byte, 0, n)
	more := byte(0)
	if p.More {
		more = 1
	}
	b = append(b, more)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Next.Time))
	b = append(b, p.Next.ID[:]...)
	b = binary.AppendUvarint(b, uint64(len(p.Ops)))
	for _, op := range p.Ops {
		b = binary.AppendUvarint(b, uint64(len(op)))
		b = append(b, op...)
	}
	return b
}

// unmarshalPage decodes a page's payload; it never panics and refuses non-minimal varints, counts
// above device.MaxHistoryOps, ops over crdt.MaxOpSize and trailing bytes.
func unmarshalPage(b []byte) (Page, error) {
	var p Page
	if len(b) < 1+8+idLen || b[0] > 1 {
		return p, fmt.Errorf("%w: page head", ErrMalformed)
	}
	p.More = b[0] == 1
	p.Next.Time = crdt.HLC(binary.BigEndian.Uint64(b[1:]))
	copy(p.Next.ID[:], b[9:])
	b = b[9+idLen:]
	count, b, err := uvarint(b)
	if err != nil || count > device.MaxHistoryOps {
		return p, fmt.Errorf("%w: op count", ErrMalformed)
	}
	for range count {
		var n uint64
		n, b, err = uvarint(b)
		if err != nil || n == 0 || n > crdt.MaxOpSize || n > uint64(len(b)) {
			return Page{}, fmt.Errorf("%w: op length", ErrMalformed)
		}
		p.Ops = append(p.Ops, bytes.Clone(b[:n]))
		b = b[n:]
	}
	if len(b) != 0 {
		return Page{}, fmt.Errorf("%w: trailing bytes", ErrMalformed)
	}
	return p, nil
}

// uvarint reads a minimally encoded uvarint.
func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		return 0, nil, ErrMalformed
	}
	return v, b[n:], nil
}

// prologue binds a sealed page to its team, both devices and the ask it answers.
func prologue(server, asker identity.DeviceID, ask []byte) []byte {
	b := make([]byte, 0, len(domain)+64+len(ask))
	b = append(b, domain...)
	b = append(b, server[:]...)
	b = append(b, asker[:]...)
	return append(b, ask...)
}

// Source is what a server hands over: the node's device cores.
type Source interface {
	// History returns the page of team's history after the cursor for device asker, at most maxBytes
	// of ops (device.Team.HistoryFor), and the Noise key the team's membership lists for asker. An
	// error refuses the ask; its text is shown to the asker, so it must say nothing of the team.
	History(team crdt.TeamID, asker identity.DeviceID, after device.HistoryCursor, maxBytes int) (Page, identity.NoisePublic, error)
}

// Serve answers the asks of one stream from asker (the device the connection's Noise handshake
// proved), until the asker closes its side, MaxPages were answered, or an ask is refused. Its error
// says why it stopped, io.EOF for a clean end.
func Serve(rw io.ReadWriter, self *identity.Device, asker identity.DeviceID, src Source) error {
	for range MaxPages {
		ask, err := framing.Read(rw, askLen)
		if err != nil {
			return err
		}
		a, err := UnmarshalAsk(ask)
		if err != nil {
			return err
		}
		page, noise, err := src.History(a.Team, asker, a.After, PageBytes)
		if err != nil {
			reason := err.Error()
			if len(reason) > maxReason {
				reason = reason[:maxReason]
			}
			_ = framing.Write(rw, append([]byte{1}, reason...))
			return err
		}
		sealed, err := epochkey.SealTo(self, noise, prologue(self.ID(), asker, ask), page.marshal(), nil)
		if err != nil {
			return fmt.Errorf("historyproto: seal page: %w", err)
		}
		if err := framing.Write(rw, append([]byte{0}, sealed...)); err != nil {
			return err
		}
	}
	return nil
}

// Fetch sends one ask on the stream and returns the page it answers, opened by self and checked to
// be sealed by serverNoise, the Noise key the team's membership lists for the server device.
func Fetch(rw io.ReadWriter, self *identity.Device, server identity.DeviceID, serverNoise identity.NoisePublic, a Ask) (Page, error) {
	ask := a.Marshal()
	if err := framing.Write(rw, ask); err != nil {
		return Page{}, err
	}
	ans, err := framing.Read(rw, maxFrame)
	if err != nil {
		return Page{}, fmt.Errorf("historyproto: read page: %w", err)
	}
	return openAnswer(ans, self, server, serverNoise, ask)
}

// openAnswer decodes an answer frame; it never panics.
func openAnswer(ans []byte, self *identity.Device, server identity.DeviceID, serverNoise identity.NoisePublic, ask []byte) (Page, error) {
	switch {
	case len(ans) == 0:
		return Page{}, fmt.Errorf("%w: empty answer", ErrMalformed)
	case ans[0] == 1:
		reason := ans[1:]
		if len(reason) > maxReason {
			reason = reason[:maxReason]
		}
		return Page{}, fmt.Errorf("%w: %q", ErrRefused, reason)
	case ans[0] != 0:
		return Page{}, fmt.Errorf("%w: status %d", ErrMalformed, ans[0])
	}
	sender, payload, err := epochkey.OpenFrom(self, prologue(server, self.ID(), ask), ans[1:])
	if err != nil {
		return Page{}, fmt.Errorf("%w: page does not open", ErrMalformed)
	}
	if sender != serverNoise {
		return Page{}, fmt.Errorf("%w: page sealed by another key than the device's", ErrMalformed)
	}
	return unmarshalPage(payload)
}
