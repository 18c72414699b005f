package envelope

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// SealChain seals op in chain form under the epoch with the given tag: the
// op's compact content (crdt.Op.MarshalCompact) is encrypted with ChaCha20
// under the next index's message key of s (this device's sender chain of
// that epoch, which advances) and the nonce id[:12] (the inner layer, no
// tag: the signed op id checks it); dev, the op's author, signs it at
// (tag, that index) with the hash of the inner layer, the slot and the
// header (InnerHash; crdt.Op.Sign), and with the team; then the slot, the
// index, the signature and the inner ciphertext are encrypted with
// ChaCha20 under outer (the epoch's outer key) and the same nonce (the
// outer layer, no tag either: the signature covers every byte of it).
// slot is dev's position in the epoch's recipient list (the order of the
// epoch's create or commit op), which the outer layer carries in place of
// the sender's device id. op must not be a create or commit op
// (those travel in commit form, see SealCommit). It returns the envelope
// and a copy of op with its seal.
//
// Sizes are checked before s advances: an op over crdt.MaxOpSize, or one
// whose envelope would be over MaxSize, is ErrTooLarge and leaves s as it
// was. Persist the advanced s before the envelope leaves the device (see
// crypto/senderkey).
func SealChain(op *crdt.Op, dev *identity.Device, tag uint32, outer seal.EpochKey, s *senderkey.SenderState, slot int) (*Envelope, *crdt.Op, error) {
	switch {
	case slot < 0 || slot >= MaxBoxes:
		return nil, nil, fmt.Errorf("%w: sender slot %d, want 0 to %d", ErrSeal, slot, MaxBoxes-1)
	case s.Sender() != op.Author || dev.ID() != op.Author:
		return nil, nil, fmt.Errorf("%w: sender chain of %v and device %v for an op by %v", ErrSeal, s.Sender().Short(), dev.ID().Short(), op.Author.Short())
	case isCommitKind(op.Kind):
		return nil, nil, fmt.Errorf("%w: a %v op travels in commit form", ErrSeal, op.Kind)
	case s.Next() > senderkey.MaxIndex:
		return nil, nil, fmt.Errorf("envelope: seal the inner layer: %w", senderkey.ErrExhausted)
	}
	pt := op.MarshalCompact()
	if n := op.ContentSize(); n > crdt.MaxOpSize || MaxHeaderSize+ChainOverhead+len(pt) > MaxSize {
		return nil, nil, fmt.Errorf("%w: op of %d bytes, envelope of %d, limits %d and %d", ErrTooLarge, n, MaxHeaderSize+ChainOverhead+len(pt), crdt.MaxOpSize, MaxSize)
	}
	e := &Envelope{
		Topic: TopicOf(op.Team),
		Epoch: tag,
		ID:    op.ID(),
		Time:  op.Time,
	}
	hdr := e.appendBound(make([]byte, 0, boundSize), FormChain)
	nonce := nonceOf(e.ID)
	index, body, err := innerSeal(s, nonce, pt)
	if err != nil {
		return nil, nil, fmt.Errorf("envelope: seal the inner layer: %w", err)
	}
	sealed := op.Clone()
	sealed.Sign(dev, tag, index, innerHash(hdr, slot, body))
	plain := make([]byte, 0, binary.MaxVarintLen16+binary.MaxVarintLen32+sigSize+len(body))
	plain = binary.AppendUvarint(plain, uint64(slot))
	plain = binary.AppendUvarint(plain, uint64(index))
	plain = append(plain, sealed.Seal.Sig...)
	plain = append(plain, body...)
	c := make([]byte, 1+len(plain))
	c[0] = byte(FormChain)
	outerStream(outer, nonce, c[1:], plain)
	clear(plain)
	e.Ciphertext = c
	return e, sealed, nil
}

// innerHash returns the hash of a chain-form envelope's inner layer that
// its seal signs (crdt.Seal.Inner): the first 16 bytes of
// SHA-256("fieldmesh/v9/envelope/inner" ‖ topic ‖ header (with the form) ‖
// slot uvarint ‖ inner ciphertext). With the op id (a hash of the op's content,
// the inner plaintext), epoch tag, team, sender and index that the seal
// also signs, it covers every byte of the envelope and its topic, so
// neither layer needs a Poly1305 tag: whoever holds the outer key checks
// the whole envelope by the signature, and a recipient checks the inner
// plaintext by the op id. The slot is signed too, not only the device it
// names: otherwise a member holding the outer key could re-encrypt a
// genuine envelope at another slot that a list of its own making (a commit
// ground to the epoch's tag) maps to the same sender, and a device holding
// that list would carry the changed copy.
func innerHash(bound []byte, slot int, body []byte) crdt.InnerHash {
	h := sha256.New()
	h.Write([]byte(innerHashDomain))
	h.Write(bound)
	var sl [binary.MaxVarintLen64]byte
	h.Write(binary.AppendUvarint(sl[:0], uint64(slot)))
	h.Write(body)
	var sum [sha256.Size]byte
	return crdt.InnerHash(h.Sum(sum[:0])[:crdt.InnerHashSize])
}

const innerHashDomain = "fieldmesh/v9/envelope/inner"

// Chain is the outer layer of a chain-form envelope, opened: the sender
// (the device at Slot in the epoch's recipient list), the index of the
// message in the sender's chain, the hash of the inner layer and the
// sender's signature of (team, epoch, sender, index, op id, inner hash),
// already verified, and the sealed inner layer. Open or peek it with the
// receiver state of Sender's chain.
type Chain struct {
	Sender identity.DeviceID
	Slot   int // the sender's position in the epoch's recipient list
	Index  uint32
	Inner  crdt.InnerHash
	Sig    []byte

	team  crdt.TeamID
	e     *Envelope
	inner []byte // the inner ciphertext
}

// Seal returns the seal of the envelope's op (crdt.Seal): its epoch, the
// index, the inner hash and the signature.
func (c *Chain) Seal() crdt.Seal {
	return crdt.Seal{Epoch: c.e.Epoch, Index: c.Index, Inner: c.Inner, Sig: c.Sig}
}

// OpenChain opens the outer layer of a chain-form envelope with its epoch's
// outer key (the caller picks it by e.Epoch), after checking the layout,
// the form and that e's topic is team's, takes the sender from recipients
// (the device ids of the epoch's recipient list, in the order of its
// create or commit op) at the slot the outer layer names, and verifies the
// sender's signature of the op id at (epoch, sender, index) with the hash
// of the inner layer and the header (crdt.VerifySeal): the outer layer has
// no Poly1305 tag, and this signature is what authenticates every byte of the
// envelope for a device that cannot open the inner layer. A slot outside
// the list is ErrBadSeal; a wrong list can only make the signature fail
// (it signs the full device id). With recipients nil (the caller does not
// have the epoch's list yet) it decrypts the outer layer, checks that it
// holds a slot, an index and a signature, and returns ErrNoList: keep the
// envelope until the epoch's commit op is known (nothing is authenticated
// yet). It changes nothing: it is what a device holding only the outer key
// checks before it keeps or passes on an envelope it cannot read. Errors
// wrap ErrWrongTopic, ErrMalformed, ErrShort, ErrTooLarge, ErrNoList or
// ErrBadSeal.
func OpenChain(e *Envelope, outer seal.EpochKey, team crdt.TeamID, recipients []identity.DeviceID) (*Chain, error) {
	hdr, err := e.openCommon(FormChain, team)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(e.Ciphertext)-1)
	outerStream(outer, nonceOf(e.ID), plain, e.Ciphertext[1:])
	r := wire.NewReader(plain)
	slot := r.Uvarint()
	index := r.Uvarint()
	sig := r.Fixed(sigSize)
	switch {
	case r.Err() != nil:
		return nil, fmt.Errorf("%w: the outer layer holds no sender slot, index and signature: %w", ErrBadSeal, r.Err())
	case slot >= MaxBoxes:
		return nil, fmt.Errorf("%w: sender slot %d, limit %d", ErrBadSeal, slot, MaxBoxes-1)
	case index > senderkey.MaxIndex:
		return nil, fmt.Errorf("%w: index %d, limit %d", ErrBadSeal, index, uint64(senderkey.MaxIndex))
	case recipients == nil:
		return nil, fmt.Errorf("%w: tag %08x", ErrNoList, e.Epoch)
	case slot >= uint64(len(recipients)):
		return nil, fmt.Errorf("%w: sender slot %d, the epoch lists %d devices", ErrBadSeal, slot, len(recipients))
	}
	body := r.Fixed(r.Len())
	c := &Chain{
		Sender: recipients[slot],
		Slot:   int(slot),
		Index:  uint32(index),
		Inner:  innerHash(hdr, int(slot), body),
		Sig:    sig,
		team:   team,
		e:      e,
		inner:  body,
	}
	if !crdt.VerifySeal(team, c.Sender, e.ID, c.Seal()) {
		return nil, ErrBadSeal
	}
	return c, nil
}

// Peek decrypts the inner layer with r, the receiver state of c.Sender's
// chain in the envelope's epoch, without changing r (senderkey
// PeekStream), and returns the op with its seal after checking that its
// compact content decodes and, rebuilt as the op of the team, by c.Sender
// (whose signature OpenChain verified), at the header's time, hashes to
// the envelope's id, and that it is not a create or commit op. That check
// is what authenticates the inner layer, which has no tag (since format 8).
// Consume the index with r.Consume(c.Index) once the op is accepted.
//
// Errors wrap ErrOpen (the caller's receiver state is not the sender's
// chain; or, with ErrBadOp, the inner layer is not the op of the
// envelope's id: the sender signed a ciphertext that does not decrypt to
// it in its own chain, or a body that does not decode), ErrBadOp (a create
// or commit op in chain form), or senderkey.ErrReplay and
// senderkey.ErrTooFarAhead.
func (c *Chain) Peek(r *senderkey.ReceiverState) (*crdt.Op, error) {
	if r.Sender() != c.Sender {
		return nil, fmt.Errorf("%w: receiver state of %v for a message of %v", ErrOpen, r.Sender().Short(), c.Sender.Short())
	}
	pt, err := innerPeek(r, c.Index, nonceOf(c.e.ID), c.inner)
	if err != nil {
		if errors.Is(err, senderkey.ErrOpen) {
			return nil, fmt.Errorf("%w: inner layer: %w", ErrOpen, err)
		}
		return nil, fmt.Errorf("envelope: open the inner layer: %w", err)
	}
	defer clear(pt)
	op, err := c.e.checkContent(pt, c.team, c.Sender)
	if err != nil {
		// The inner layer has no tag: what the sender signed (the op id)
		// is what checks it.
		return nil, fmt.Errorf("%w: the inner layer is not the op of the envelope's id: %w", ErrOpen, err)
	}
	if isCommitKind(op.Kind) {
		return nil, fmt.Errorf("%w: a %v op in chain form", ErrBadOp, op.Kind)
	}
	op.Seal = c.Seal()
	op.Seal.Sig = append([]byte(nil), c.Sig...)
	return op, nil
}

// Open is Peek followed by r.Consume(c.Index): on success the message key
// is deleted (and the keys of skipped indices stored). On any error r is
// unchanged.
func (c *Chain) Open(r *senderkey.ReceiverState) (*crdt.Op, error) {
	op, err := c.Peek(r)
	if err != nil {
		return nil, err
	}
	if err := r.Consume(c.Index); err != nil {
		return nil, fmt.Errorf("envelope: open the inner layer: %w", err)
	}
	return op, nil
}
