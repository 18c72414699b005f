package epochkey

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
)

// Hand-over limits and sizes, in bytes unless said otherwise.
const (
	// BoxSize is the size of one box: a 32-byte epoch key sealed by SealTo.
	BoxSize = seal.KeySize + Overhead // 128
	// MaxRecipients is the most devices one hand-over can carry (count).
	// At 160 bytes a device, a full hand-over is about 40 KiB, which leaves
	// room for the op around it inside one 80 KiB envelope.
	MaxRecipients = 256
	// MaxHandoverSize is the largest encoding UnmarshalHandover accepts.
	MaxHandoverSize = handoverHeader + MaxRecipients*(32+BoxSize)

	handoverVersion = 1
	handoverHeader  = 1 + 32 + 4 + 2 // version, team, epoch, count

	prologueDomain = "fieldmesh/v1/epochkey"
)

// Box is one recipient's copy of an epoch key.
type Box struct {
	// Recipient is the static X25519 key of the device the box is sealed to.
	Recipient identity.NoisePublic
	// Ciphertext is a Noise X message (SealTo) of the 32-byte epoch key,
	// under the prologue of the hand-over's team and epoch. BoxSize bytes.
	Ciphertext []byte
}

// Handover delivers one team epoch key to each of a list of devices: one
// [Box] a device, sorted by recipient, each sealed by the same sender under
// a prologue that binds the team id and the epoch number.
//
// A Handover built by [NewHandover] or returned by [UnmarshalHandover] is
// valid; one built by hand is checked by MarshalBinary.
type Handover struct {
	Team  [32]byte // the team's secret id
	Epoch uint32   // the epoch whose key the boxes hold
	Boxes []Box    // strictly ascending by Recipient, 1 to MaxRecipients
}

// Prologue returns the Noise prologue of a hand-over's boxes:
// "fieldmesh/v1/epochkey" || team (32 bytes) || epoch (4 bytes, big-endian).
// A box sealed under one (team, epoch) fails to open under any other.
func Prologue(team [32]byte, epoch uint32) []byte {
	p := make([]byte, 0, len(prologueDomain)+32+4)
	p = append(p, prologueDomain...)
	p = append(p, team[:]...)
	return binary.BigEndian.AppendUint32(p, epoch)
}

// NewHandover seals key for each recipient, from sender, for team's epoch.
// recipients may come in any order (the hand-over sorts them) but must be
// distinct, and there must be 1 to [MaxRecipients] of them; include the
// sender's own device (and the member's other devices) if they need the key.
// rand supplies one ephemeral key a box (nil = crypto/rand).
func NewHandover(sender *identity.Device, team [32]byte, epoch uint32, key seal.EpochKey, recipients []identity.NoisePublic, rand io.Reader) (*Handover, error) {
	return newHandover(defaultSuite, sender, team, epoch, key, recipients, rand)
}

func newHandover(suite suiteFor, sender *identity.Device, team [32]byte, epoch uint32, key seal.EpochKey, recipients []identity.NoisePublic, rand io.Reader) (*Handover, error) {
	if n := len(recipients); n == 0 || n > MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients, want 1 to %d", ErrRecipients, n, MaxRecipients)
	}
	sorted := slices.Clone(recipients)
	slices.SortFunc(sorted, comparePublic)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return nil, fmt.Errorf("%w: %v appears twice", ErrRecipients, sorted[i].Short())
		}
	}
	prologue := Prologue(team, epoch)
	raw := key.Bytes()
	defer clear(raw)
	static := sender.NoiseKey()
	defer clear(static.Private)
	cs, done, err := suite(static)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSeal, err)
	}
	defer done()
	h := &Handover{Team: team, Epoch: epoch, Boxes: make([]Box, len(sorted))}
	for i, r := range sorted {
		ct, err := sealTo(cs, static, r, prologue, raw, rand)
		if err != nil {
			return nil, fmt.Errorf("epochkey: seal the key to %v: %w", r.Short(), err)
		}
		h.Boxes[i] = Box{Recipient: r, Ciphertext: ct}
	}
	return h, nil
}

// Open finds dev's box, opens it, checks that expectedSender sealed it and
// returns the epoch key. Errors: [ErrNotRecipient] (no box for dev: for
// example a device removed before this epoch), [ErrOpen] (the box does not
// authenticate for dev under this team and epoch), [ErrWrongSender],
// [ErrPayloadSize].
//
// Opening the same box twice gives the same key: replays are harmless only
// if the consumer installs a (team, epoch) key idempotently; see the package
// caveats.
func (h *Handover) Open(dev *identity.Device, expectedSender identity.NoisePublic) (seal.EpochKey, error) {
	return h.open(defaultSuite, dev, expectedSender)
}

func (h *Handover) open(suite suiteFor, dev *identity.Device, expectedSender identity.NoisePublic) (seal.EpochKey, error) {
	me := dev.NoisePublic()
	i, found := slices.BinarySearchFunc(h.Boxes, me, func(b Box, p identity.NoisePublic) int {
		return comparePublic(b.Recipient, p)
	})
	if !found {
		return seal.EpochKey{}, ErrNotRecipient
	}
	static := dev.NoiseKey()
	defer clear(static.Private)
	cs, done, err := suite(static)
	if err != nil {
		return seal.EpochKey{}, ErrOpen // unreachable: a Device's key is valid
	}
	defer done()
	sender, payload, err := openFrom(cs, static, Prologue(h.Team, h.Epoch), h.Boxes[i].Ciphertext)
	if err != nil {
		return seal.EpochKey{}, err
	}
	defer clear(payload)
	if !equalPublic(sender, expectedSender) {
		return seal.EpochKey{}, fmt.Errorf("%w: got %v, want %v", ErrWrongSender, sender.Short(), expectedSender.Short())
	}
	k, err := seal.EpochKeyFromBytes(payload)
	if err != nil {
		return seal.EpochKey{}, fmt.Errorf("%w: box holds %d bytes, want %d", ErrPayloadSize, len(payload), seal.KeySize)
	}
	return k, nil
}

// Recipients returns the devices the hand-over has a box for, ascending.
func (h *Handover) Recipients() []identity.NoisePublic {
	out := make([]identity.NoisePublic, len(h.Boxes))
	for i, b := range h.Boxes {
		out[i] = b.Recipient
	}
	return out
}

// MarshalBinary encodes the hand-over (version 1), integers big-endian:
//
//	version     1 byte   (1)
//	team       32 bytes
//	epoch       4 bytes
//	count       2 bytes  1 to MaxRecipients
//	count × { recipient 32 bytes, box BoxSize (128) bytes }, recipients strictly ascending
//
// Every valid hand-over has exactly one encoding. MarshalBinary returns an
// error wrapping [ErrEncoding] for a Handover that breaks these rules.
func (h *Handover) MarshalBinary() ([]byte, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, handoverHeader+len(h.Boxes)*(32+BoxSize))
	b = append(b, handoverVersion)
	b = append(b, h.Team[:]...)
	b = binary.BigEndian.AppendUint32(b, h.Epoch)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Boxes)))
	for _, box := range h.Boxes {
		b = append(b, box.Recipient[:]...)
		b = append(b, box.Ciphertext...)
	}
	return b, nil
}

func (h *Handover) check() error {
	if n := len(h.Boxes); n == 0 || n > MaxRecipients {
		return fmt.Errorf("%w: %d boxes, want 1 to %d", ErrEncoding, n, MaxRecipients)
	}
	for i, box := range h.Boxes {
		if len(box.Ciphertext) != BoxSize {
			return fmt.Errorf("%w: box %d is %d bytes, want %d", ErrEncoding, i, len(box.Ciphertext), BoxSize)
		}
		if i > 0 && comparePublic(h.Boxes[i-1].Recipient, box.Recipient) >= 0 {
			return fmt.Errorf("%w: recipients not strictly ascending at box %d", ErrEncoding, i)
		}
	}
	return nil
}

// UnmarshalHandover decodes the output of [Handover.MarshalBinary]. It
// accepts at most [MaxHandoverSize] bytes and exactly one encoding of each
// hand-over; the result does not alias b. It does not open anything.
func UnmarshalHandover(b []byte) (*Handover, error) {
	if len(b) > MaxHandoverSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrEncoding, len(b), MaxHandoverSize)
	}
	if len(b) < handoverHeader {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrEncoding, len(b), handoverHeader)
	}
	if b[0] != handoverVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrEncoding, b[0])
	}
	h := &Handover{Epoch: binary.BigEndian.Uint32(b[33:37])}
	copy(h.Team[:], b[1:33])
	n := int(binary.BigEndian.Uint16(b[37:39]))
	rest := b[handoverHeader:]
	if n == 0 || n > MaxRecipients {
		return nil, fmt.Errorf("%w: %d boxes, want 1 to %d", ErrEncoding, n, MaxRecipients)
	}
	if len(rest) != n*(32+BoxSize) {
		return nil, fmt.Errorf("%w: %d bytes of boxes, want %d for %d boxes", ErrEncoding, len(rest), n*(32+BoxSize), n)
	}
	h.Boxes = make([]Box, n)
	for i := range h.Boxes {
		rec := rest[i*(32+BoxSize):][:32+BoxSize]
		h.Boxes[i] = Box{Recipient: identity.NoisePublic(rec[:32]), Ciphertext: bytes.Clone(rec[32:])}
	}
	if err := h.check(); err != nil {
		return nil, err
	}
	return h, nil
}

func comparePublic(a, b identity.NoisePublic) int { return bytes.Compare(a[:], b[:]) }
