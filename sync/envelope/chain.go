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
)

// SealChain seals op in chain form under the epoch with the given tag: the
// op is sealed with the next message key of s (this device's sender chain
// of that epoch, which it advances), then, with s's device id and the
// index, under outer (the epoch's outer key). s must be the chain of the
// op's author, and op must not be a create or commit op (those travel in
// commit form, see SealCommit).
//
// Sizes are checked before s advances: an op over crdt.MaxOpSize, or one
// whose envelope would be over MaxSize, is ErrTooLarge and leaves s as it
// was. Seal does not check the op's signature; OpenChain and Chain.Open do.
// Persist the advanced s before the envelope leaves the device (see
// crypto/senderkey).
func SealChain(op *crdt.Op, tag uint32, outer seal.EpochKey, s *senderkey.SenderState) (*Envelope, error) {
	switch {
	case s.Sender() != op.Author:
		return nil, fmt.Errorf("%w: sender chain of %v for an op by %v", ErrSeal, s.Sender().Short(), op.Author.Short())
	case isCommitKind(op.Kind):
		return nil, fmt.Errorf("%w: a %v op travels in commit form", ErrSeal, op.Kind)
	}
	pt := op.Marshal()
	if len(pt) > crdt.MaxOpSize || minChain+len(pt) > MaxSize {
		return nil, fmt.Errorf("%w: op of %d bytes, envelope of %d, limits %d and %d", ErrTooLarge, len(pt), minChain+len(pt), crdt.MaxOpSize, MaxSize)
	}
	e := &Envelope{
		Topic: TopicOf(op.Team),
		Epoch: tag,
		ID:    sha256.Sum256(pt), // = op.ID()
		Time:  op.Time,
	}
	// ad is header ‖ form, then header ‖ form ‖ mac for the outer layer.
	ad := append(e.appendHeader(make([]byte, 0, HeaderSize+1+macSize)), byte(FormChain))
	index, ct, err := innerSeal(s, ad, pt)
	if err != nil {
		return nil, fmt.Errorf("envelope: seal the inner layer: %w", err)
	}
	body, mac := ct[:len(ct)-macSize], ct[len(ct)-macSize:]
	plain := make([]byte, 0, 32+4+len(body))
	plain = append(plain, op.Author[:]...)
	plain = binary.BigEndian.AppendUint32(plain, index)
	plain = append(plain, body...)
	sealed := outerSeal(outer, [seal.NonceSize]byte(mac), append(ad, mac...), plain)
	clear(plain)
	c := make([]byte, 0, 1+macSize+len(sealed))
	c = append(c, byte(FormChain))
	c = append(c, mac...)
	e.Ciphertext = append(c, sealed...)
	return e, nil
}

// Chain is the outer layer of a chain-form envelope, opened: the sender
// and the index of the message in the sender's chain, and the sealed inner
// layer. Open it with the receiver state of Sender's chain.
type Chain struct {
	Sender identity.DeviceID
	Index  uint32

	team  crdt.TeamID
	e     *Envelope
	ad    []byte // header ‖ form: the inner layer's associated data
	inner []byte // inner body ‖ mac
}

// OpenChain opens the outer layer of a chain-form envelope with its epoch's
// outer key (the caller picks it by e.Epoch), after checking the layout,
// the form and that e's topic is team's. It changes nothing: it is what a
// gossip validator can check. Errors wrap ErrWrongTopic, ErrMalformed,
// ErrShort, ErrTooLarge or ErrOpen.
func OpenChain(e *Envelope, outer seal.EpochKey, team crdt.TeamID) (*Chain, error) {
	hdr, err := e.openCommon(FormChain, team)
	if err != nil {
		return nil, err
	}
	ad := append(hdr, byte(FormChain))
	mac := e.Ciphertext[1 : 1+macSize]
	plain, err := outerOpen(outer, [seal.NonceSize]byte(mac), append(ad, mac...), e.Ciphertext[1+macSize:])
	if err != nil {
		return nil, ErrOpen
	}
	c := &Chain{
		Sender: identity.DeviceID(plain[:32]),
		Index:  binary.BigEndian.Uint32(plain[32:36]),
		team:   team,
		e:      e,
		ad:     ad[:HeaderSize+1],
		inner:  append(plain[36:], mac...),
	}
	return c, nil
}

// Open opens the inner layer with r, the receiver state of c.Sender's chain
// in the envelope's epoch, and returns the op after checking, before r
// changes (senderkey's OpenChecked), that it decodes, hashes to the
// envelope's id, has its time and team, is not a create or commit op, was
// written by c.Sender and is signed by it. Only then does r delete the
// message key (and store the keys it skipped). On any error r is
// unchanged.
//
// Errors wrap ErrOpen (the inner layer does not authenticate), ErrBadOp,
// or senderkey.ErrReplay and senderkey.ErrTooFarAhead.
func (c *Chain) Open(r *senderkey.ReceiverState) (*crdt.Op, error) {
	if r.Sender() != c.Sender {
		return nil, fmt.Errorf("%w: receiver state of %v for a message of %v", ErrOpen, r.Sender().Short(), c.Sender.Short())
	}
	var op *crdt.Op
	check := func(pt []byte) error {
		o, err := c.e.checkOp(pt, c.team)
		if err != nil {
			return err
		}
		switch {
		case o.Author != c.Sender:
			return fmt.Errorf("%w: op by %v in the chain of %v", ErrBadOp, o.Author.Short(), c.Sender.Short())
		case isCommitKind(o.Kind):
			return fmt.Errorf("%w: a %v op in chain form", ErrBadOp, o.Kind)
		}
		op = o
		return nil
	}
	if _, err := innerOpen(r, c.Index, c.ad, c.inner, check); err != nil {
		if errors.Is(err, senderkey.ErrOpen) {
			return nil, fmt.Errorf("%w: inner layer: %w", ErrOpen, err)
		}
		return nil, fmt.Errorf("envelope: open the inner layer: %w", err)
	}
	return op, nil
}
