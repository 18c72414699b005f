package attach

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Protocol ids.
const (
	// Protocol is the pull stream: a device or relay answers requests for chunks by address
	// (Pull, Answer).
	Protocol = "/fieldmesh/chunk/1.0.0"
	// PushProtocol is the push stream a device uses to leave the chunks of an envelope at a clinic
	// relay, which cannot read the manifests and so cannot pull (Push, Take).
	PushProtocol = "/fieldmesh/chunk-push/2.0.0"
)

// MaxOfferChunks is the most chunks one offer names: all the chunks of one message's
// attachments.
const MaxOfferChunks = crdt.MaxAttachments * crdt.MaxAttachmentChunks

// MaxOfferFrame is the largest offer frame.
const MaxOfferFrame = 1 + 16 + OwnerSize + 2 + MaxOfferChunks*32

const offerVersion = 2

// OwnerSize is the length of an offer's owner: an envelope's id (a crdt.OpID), in bytes.
const OwnerSize = 16

// Offer is what a device offers a relay: the chunks (by address) of the attachments of one
// envelope of a topic. The relay keeps chunks with their envelope and drops them with it.
type Offer struct {
	Topic  [16]byte
	Owner  [OwnerSize]byte // the envelope's id
	Chunks [][32]byte
}

// Marshal encodes o:
//
//	version 2 | topic 16 | owner 16 | count uvarint (1..MaxOfferChunks) | count × address 32
func (o Offer) Marshal() []byte {
	b := make([]byte, 0, 1+16+OwnerSize+2+32*len(o.Chunks))
	b = append(b, offerVersion)
	b = append(b, o.Topic[:]...)
	b = append(b, o.Owner[:]...)
	b = appendUvarint(b, uint64(len(o.Chunks)))
	for _, c := range o.Chunks {
		b = append(b, c[:]...)
	}
	return b
}

// UnmarshalOffer decodes an offer. Every error wraps ErrBadPeer.
func UnmarshalOffer(b []byte) (Offer, error) {
	if len(b) > MaxOfferFrame {
		return Offer{}, fmt.Errorf("%w: offer of %d bytes", ErrBadPeer, len(b))
	}
	d := wire.NewReader(b)
	d.Version("chunk offer", offerVersion)
	var o Offer
	copy(o.Topic[:], d.Fixed(16))
	copy(o.Owner[:], d.Fixed(OwnerSize))
	n := d.Count(MaxOfferChunks, 32)
	if d.Err() == nil && n == 0 {
		d.Fail(fmt.Errorf("%w: empty offer", wire.ErrInvalid))
	}
	if d.Err() == nil {
		o.Chunks = make([][32]byte, n)
		for i := range o.Chunks {
			copy(o.Chunks[i][:], d.Fixed(32))
		}
	}
	if err := d.Finish(); err != nil {
		return Offer{}, fmt.Errorf("%w: %w", ErrBadPeer, err)
	}
	return o, nil
}

// MarshalWanted encodes which chunks of an offer the relay wants: a bitmap of ceil(n/8) bytes,
// chunk i in bit i%8 (least significant first) of byte i/8.
func MarshalWanted(want []bool) []byte {
	b := make([]byte, (len(want)+7)/8)
	for i, w := range want {
		if w {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// UnmarshalWanted decodes the answer to an offer of n chunks. Every error wraps ErrBadPeer: a
// bitmap of another length, or with bits set past n.
func UnmarshalWanted(b []byte, n int) ([]bool, error) {
	if n < 0 || len(b) != (n+7)/8 {
		return nil, fmt.Errorf("%w: answer of %d bytes to an offer of %d chunks", ErrBadPeer, len(b), n)
	}
	want := make([]bool, n)
	for i := range want {
		want[i] = b[i/8]&(1<<(i%8)) != 0
	}
	if n%8 != 0 && len(b) > 0 && b[len(b)-1]>>(n%8) != 0 {
		return nil, fmt.Errorf("%w: bits set past the offer", ErrBadPeer)
	}
	return want, nil
}

// Push offers o to a relay over rw and sends the chunks it wants, read through chunk, one frame
// each, then waits for the relay's confirmation that it stored them all (a uvarint count, the last
// frame of the session). It returns how many it sent.
func Push(rw io.ReadWriter, o Offer, chunk func(addr [32]byte) ([]byte, error)) (int, error) {
	if err := framing.Write(rw, o.Marshal()); err != nil {
		return 0, fmt.Errorf("attach: offering: %w", err)
	}
	br := bufio.NewReader(rw)
	ans, err := framing.Read(br, (MaxOfferChunks+7)/8)
	if err != nil {
		return 0, fmt.Errorf("attach: reading the relay's answer: %w", err)
	}
	want, err := UnmarshalWanted(ans, len(o.Chunks))
	if err != nil {
		return 0, err
	}
	sent := 0
	for i, w := range want {
		if !w {
			continue
		}
		c, err := chunk(o.Chunks[i])
		if err != nil {
			return sent, fmt.Errorf("attach: reading chunk: %w", err)
		}
		if err := framing.Write(rw, c); err != nil {
			return sent, fmt.Errorf("attach: pushing: %w", err)
		}
		sent++
	}
	done, err := framing.Read(br, binary.MaxVarintLen64)
	if err != nil {
		return sent, fmt.Errorf("attach: the relay did not confirm the chunks: %w", err)
	}
	took, n := binary.Uvarint(done)
	if n <= 0 || n != len(done) || took != uint64(sent) {
		return sent, fmt.Errorf("%w: the relay confirmed %d of %d chunks", ErrBadPeer, took, sent)
	}
	return sent, nil
}

// Take is the relay's side of Push: it reads an offer, asks decide which of its chunks to take (an
// error refuses the offer), stores through put each chunk it asked for, checked against its
// address (CheckAddressed) before put sees it, and confirms how many it stored. An error wrapping ErrBadPeer means the device sent a
// malformed offer or a chunk that is not the one offered; what was put before stays.
func Take(rw io.ReadWriter, decide func(Offer) ([]bool, error), put func(o Offer, addr [32]byte, sealed []byte) error) (int, error) {
	r := bufio.NewReader(rw)
	b, err := framing.Read(r, MaxOfferFrame)
	if err != nil {
		if errors.Is(err, framing.ErrTooLarge) || errors.Is(err, framing.ErrMalformed) {
			return 0, fmt.Errorf("%w: %w", ErrBadPeer, err)
		}
		return 0, fmt.Errorf("attach: reading an offer: %w", err)
	}
	o, err := UnmarshalOffer(b)
	if err != nil {
		return 0, err
	}
	want, err := decide(o)
	if err != nil {
		return 0, err
	}
	if err := framing.Write(rw, MarshalWanted(want)); err != nil {
		return 0, fmt.Errorf("attach: answering an offer: %w", err)
	}
	took := 0
	for i, w := range want {
		if !w {
			continue
		}
		c, err := framing.Read(r, crdt.MaxSealedChunk)
		switch {
		case errors.Is(err, framing.ErrTooLarge), errors.Is(err, framing.ErrMalformed):
			return took, fmt.Errorf("%w: %w", ErrBadPeer, err)
		case err != nil:
			return took, fmt.Errorf("attach: reading a pushed chunk: %w", err)
		}
		if err := CheckAddressed(o.Chunks[i], c); err != nil {
			return took, fmt.Errorf("%w: %w", ErrBadPeer, err)
		}
		if err := put(o, o.Chunks[i], c); err != nil {
			return took, err
		}
		took++
	}
	if err := framing.Write(rw, binary.AppendUvarint(nil, uint64(took))); err != nil {
		return took, fmt.Errorf("attach: confirming chunks: %w", err)
	}
	return took, nil
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
