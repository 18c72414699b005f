package envelope

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

const (
	boxDomain    = "fieldmesh/v7/envelope/box"
	commitDomain = "fieldmesh/v7/envelope/commit"
)

// PriorKey is the outer key of an earlier epoch, carried inside a commit so
// that its recipients can open the outer layer of that epoch's envelopes
// (and so read its create and commit ops), but not its chains.
type PriorKey struct {
	Tag   uint32
	Outer seal.EpochKey
}

// BoxPrologue returns the Noise prologue of a commit envelope's boxes:
// "fieldmesh/v7/envelope/box" ‖ team id (32 bytes) ‖ the envelope's
// topic and header. A box moved into another envelope, epoch, topic or team does not
// open.
func BoxPrologue(team crdt.TeamID, e *Envelope) []byte {
	p := make([]byte, 0, len(boxDomain)+32+boundSize)
	p = append(p, boxDomain...)
	p = append(p, team[:]...)
	return e.appendBound(p, FormCommit)
}

// SealCommit seals op, a create or commit op by author, in commit form:
// the epoch key k in one box for each recipient (in the given order, which
// the boxes keep: give them in the order of the op's recipient list), and,
// under OuterKey(k), author's signature over the envelope, the prior outer
// keys and the op with its seal (crdt.NewOp seals create and commit ops).
// The epoch tag is the op's own (crdt.TagOf(op id)).
// prior must be strictly ascending by Tag, without the op's own tag, and
// hold at most MaxPriorKeys keys. rand supplies one ephemeral key a box
// (nil = crypto/rand).
//
// Sizes are checked before any work: an op over crdt.MaxOpSize or an
// envelope over MaxSize is ErrTooLarge; 0 or more than MaxBoxes recipients
// is ErrSeal.
func SealCommit(op *crdt.Op, author *identity.Device, k seal.EpochKey, recipients []identity.NoisePublic, prior []PriorKey, rand io.Reader) (*Envelope, error) {
	switch {
	case author.ID() != op.Author:
		return nil, fmt.Errorf("%w: the op is by %v, not the sealing device %v", ErrSeal, op.Author.Short(), author.ID().Short())
	case !isCommitKind(op.Kind):
		return nil, fmt.Errorf("%w: a %v op travels in chain form", ErrSeal, op.Kind)
	case len(recipients) == 0 || len(recipients) > MaxBoxes:
		return nil, fmt.Errorf("%w: %d recipients, want 1 to %d", ErrSeal, len(recipients), MaxBoxes)
	case len(prior) > MaxPriorKeys:
		return nil, fmt.Errorf("%w: %d prior keys, at most %d", ErrSeal, len(prior), MaxPriorKeys)
	}
	pt := op.Marshal()
	id := op.ID()
	tag := crdt.TagOf(id)
	if op.Seal.Epoch != tag || op.Seal.Index != 0 || len(op.Seal.Sig) != crdt.SigSize {
		return nil, fmt.Errorf("%w: the op is not sealed at its own epoch", ErrSeal)
	}
	for i, p := range prior {
		if p.Tag == tag || (i > 0 && p.Tag <= prior[i-1].Tag) {
			return nil, fmt.Errorf("%w: prior keys not strictly ascending by tag, or one of the commit's own tag", ErrSeal)
		}
	}
	n := len(recipients)
	e := &Envelope{Topic: TopicOf(op.Team), Epoch: tag, ID: id, Time: op.Time}
	hs := e.HeaderLen()
	size := hs + wire.UvarintLen(uint64(n)) + n*BoxSize +
		sigSize + wire.UvarintLen(uint64(len(prior))) + len(prior)*priorSize + len(pt) + seal.Overhead
	if len(pt) > crdt.MaxOpSize || size > MaxSize {
		return nil, fmt.Errorf("%w: op of %d bytes, envelope of %d, limits %d and %d", ErrTooLarge, len(pt), size, crdt.MaxOpSize, MaxSize)
	}
	raw := k.Bytes()
	defer clear(raw)
	boxes, err := epochkey.SealToEach(author, recipients, BoxPrologue(op.Team, e), raw, rand)
	if err != nil {
		return nil, fmt.Errorf("envelope: box the epoch key: %w", err)
	}
	c := make([]byte, 0, 1+size-hs)
	c = append(c, byte(FormCommit))
	c = binary.AppendUvarint(c, uint64(n))
	for _, b := range boxes {
		c = append(c, b...)
	}
	ad := append(e.appendBound(make([]byte, 0, boundSize+len(c)), FormCommit), c...)
	priorBlob := appendPrior(nil, prior)
	defer clear(priorBlob)
	plain := make([]byte, 0, sigSize+len(priorBlob)+len(pt))
	plain = append(plain, author.Sign(commitSigned(op.Team, ad, priorBlob))...)
	plain = append(plain, priorBlob...)
	plain = append(plain, pt...)
	sealed := outerSeal(OuterKey(k), nonceOf(id), ad, plain)
	clear(plain)
	e.Ciphertext = append(c, sealed...)
	return e, nil
}

// commitSigned is what the author of a commit signs:
// "fieldmesh/v7/envelope/commit" ‖ team ‖ header ‖ form ‖ box count ‖ boxes
// ‖ prior-key list.
func commitSigned(team crdt.TeamID, ad, priorBlob []byte) []byte {
	m := make([]byte, 0, len(commitDomain)+32+len(ad)+len(priorBlob))
	m = append(m, commitDomain...)
	m = append(m, team[:]...)
	m = append(m, ad...)
	return append(m, priorBlob...)
}

func appendPrior(b []byte, prior []PriorKey) []byte {
	b = binary.AppendUvarint(b, uint64(len(prior)))
	for _, p := range prior {
		b = binary.BigEndian.AppendUint32(b, p.Tag)
		raw := p.Outer.Bytes()
		b = append(b, raw...)
		clear(raw)
	}
	return b
}

func nonceOf(id crdt.OpID) [seal.NonceSize]byte { return [seal.NonceSize]byte(id[:seal.NonceSize]) }

// boxes returns the boxes of a commit-form envelope whose layout is valid.
func (e *Envelope) boxes() (boxes [][]byte, end int) {
	n, end, _ := e.commitLayout()
	start := end - n*BoxSize
	boxes = make([][]byte, n)
	for i := range boxes {
		boxes[i] = e.Ciphertext[start+i*BoxSize:][:BoxSize:BoxSize]
	}
	return boxes, end
}

// OpenBox trial-opens the boxes of a commit-form envelope with dev's static
// key and returns the epoch key of the first that opens, and the Noise
// static key of the device that sealed it (Noise X authenticates it: the
// caller checks it is the commit author's member key). It authenticates
// nothing else: open the rest with OpenCommit(e, OuterKey(k), team), which
// checks the author's signature over the boxes. It changes nothing.
//
// Cost: there are no recipient keys in the clear, so dev tries the boxes in
// turn; a box that is not its own costs one X25519 multiplication (see
// epochkey.OpenAny): about n/2+3 for one of n recipients, n+1 for a device
// that is none (30 devices: about 0.6 ms and 1.1 ms on the dev box; see
// the package documentation).
//
// Errors wrap ErrWrongTopic, ErrMalformed, ErrShort, ErrTooLarge,
// ErrNotRecipient, or ErrBadOp for a box that opens to something other than
// a 32-byte key.
func OpenBox(e *Envelope, dev *identity.Device, team crdt.TeamID) (seal.EpochKey, identity.NoisePublic, error) {
	return openBox(e, team, func(prologue []byte, boxes [][]byte) (int, identity.NoisePublic, []byte, error) {
		return epochkey.OpenAny(dev, prologue, boxes)
	})
}

// OpenBoxWith is OpenBox with one of the device's prekeys (a box sealed to a
// one-time key the device published, see crypto/epochkey.Prekey) in place of
// its static key.
func OpenBoxWith(e *Envelope, p epochkey.Prekey, team crdt.TeamID) (seal.EpochKey, identity.NoisePublic, error) {
	return openBox(e, team, func(prologue []byte, boxes [][]byte) (int, identity.NoisePublic, []byte, error) {
		return epochkey.OpenAnyWith(p, prologue, boxes)
	})
}

type boxOpener func(prologue []byte, boxes [][]byte) (int, identity.NoisePublic, []byte, error)

func openBox(e *Envelope, team crdt.TeamID, open boxOpener) (seal.EpochKey, identity.NoisePublic, error) {
	if _, err := e.openCommon(FormCommit, team); err != nil {
		return seal.EpochKey{}, identity.NoisePublic{}, err
	}
	boxes, _ := e.boxes()
	_, sender, payload, err := open(BoxPrologue(team, e), boxes)
	if err != nil {
		return seal.EpochKey{}, identity.NoisePublic{}, ErrNotRecipient
	}
	defer clear(payload)
	k, err := seal.EpochKeyFromBytes(payload)
	if err != nil {
		return seal.EpochKey{}, identity.NoisePublic{}, fmt.Errorf("%w: a box of %d bytes", ErrBadOp, len(payload))
	}
	return k, sender, nil
}

// OpenCommit opens a commit-form envelope with its epoch's outer key (from
// OpenBox, or held already) and returns the op (with its seal) and the
// prior outer keys it carries, after checking the layout, the form, that
// e's topic is team's, that the op decodes, hashes to the envelope's id,
// has its time and team, is a create or commit op and is sealed by its
// author, and that its author signed the envelope (its boxes and prior
// keys). It changes nothing.
//
// Errors wrap ErrWrongTopic, ErrMalformed, ErrShort, ErrTooLarge, ErrOpen or
// ErrBadOp.
func OpenCommit(e *Envelope, outer seal.EpochKey, team crdt.TeamID) (*crdt.Op, []PriorKey, error) {
	hdr, err := e.openCommon(FormCommit, team)
	if err != nil {
		return nil, nil, err
	}
	_, end := e.boxes()
	ad := append(hdr, e.Ciphertext[:end]...)
	plain, err := outerOpen(outer, nonceOf(e.ID), ad, e.Ciphertext[end:])
	if err != nil {
		return nil, nil, ErrOpen
	}
	defer clear(plain)
	if len(plain) < sigSize+1 {
		return nil, nil, fmt.Errorf("%w: %d bytes inside, want at least %d", ErrBadOp, len(plain), sigSize+1)
	}
	sig, rest := plain[:sigSize], plain[sigSize:]
	r := wire.NewReader(rest)
	m := r.Count(MaxPriorKeys, priorSize)
	if err := r.Err(); err != nil {
		return nil, nil, fmt.Errorf("%w: prior keys (at most %d): %w", ErrBadOp, MaxPriorKeys, err)
	}
	prior := make([]PriorKey, m)
	for i := range prior {
		prior[i].Tag = r.Uint32()
		if prior[i].Tag == e.Epoch || (i > 0 && prior[i].Tag <= prior[i-1].Tag) {
			return nil, nil, fmt.Errorf("%w: prior keys not strictly ascending by tag, or one of the commit's own tag", ErrBadOp)
		}
		prior[i].Outer, _ = seal.EpochKeyFromBytes(r.Fixed(seal.KeySize)) // Count checked the length
	}
	priorBlob := rest[:len(rest)-r.Len()]
	op, err := e.checkOp(r.Fixed(r.Len()), team)
	if err != nil {
		return nil, nil, err
	}
	if !isCommitKind(op.Kind) {
		return nil, nil, fmt.Errorf("%w: a %v op in commit form", ErrBadOp, op.Kind)
	}
	if !identity.Verify(op.Author, commitSigned(team, ad, priorBlob), sig) {
		return nil, nil, fmt.Errorf("%w: the author's signature over the commit envelope does not verify", ErrBadOp)
	}
	if len(prior) == 0 {
		prior = nil
	}
	return op, prior, nil
}
