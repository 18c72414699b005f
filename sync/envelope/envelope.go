package envelope

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Sizes and limits, in bytes unless said otherwise.
const (
	// MaxSize is the largest marshalled envelope Unmarshal accepts and the
	// Seal functions produce.
	MaxSize = 80 << 10
	// HeaderSize is the clear header of an envelope whose time has a
	// logical counter of 0 (the usual case): the version-and-form byte,
	// the epoch tag, the id and the time's millisecond (6 bytes). The topic
	// is not in it: the gossip topic or sync session an envelope travels
	// in says which topic it belongs to (see Envelope.Topic).
	HeaderSize = 1 + 4 + crdt.IDSize + 6 // 27
	// MaxHeaderSize is the longest header: a time whose counter is not 0
	// adds it, a uvarint of 1 to 3 bytes.
	MaxHeaderSize = HeaderSize + 3 // 30
	// ChainOverhead is the most that the chain form adds to the op's
	// compact content (crdt.Op.MarshalCompact) after the header: sender
	// slot (a uvarint of 1 or 2 bytes: below MaxBoxes), index (a uvarint
	// of 1 to 5 bytes), the author's signature. Neither layer has a
	// Poly1305 tag (since version 8: the signature covers the outer layer
	// and, through the op id, the inner plaintext), and the form is in the
	// header's first byte (version 9). A slot and an index below 128 take
	// 1 byte each, so 66.
	ChainOverhead = maxSlotSize + binary.MaxVarintLen32 + sigSize // 71
	// BoxSize is one box of the commit form: a Noise X message of a 32-byte
	// epoch key (epochkey.SealToEach).
	BoxSize = epochkey.BoxSize // 128
	// MaxBoxes is the most boxes (recipient devices) a commit carries (count).
	MaxBoxes = epochkey.MaxRecipients // 256
	// MaxPriorKeys is the most prior outer keys a commit carries (count).
	MaxPriorKeys = 512

	version = 9
	// The header's first byte: the version in bits 4-7, bit 3 0, bit 2
	// set when a counter follows the millisecond, the form in bits 0-1.
	hdrCounter  = 1 << 2
	hdrFormMask = 3
	hdrZero     = 1 << 3
	// maxSlotSize is the longest uvarint of a sender slot (below MaxBoxes).
	maxSlotSize = 2
	// boundSize is the length of the bound header (appendBound): the
	// topic, then the header.
	boundSize = len(Topic{}) + MaxHeaderSize
	sigSize   = 64 // Ed25519
	priorSize = 4 + seal.KeySize

	// minChain is the shortest chain-form envelope: a one-byte slot and
	// index and one byte in the inner layer (an op's compact content is
	// longer: its head byte at least).
	minChain = HeaderSize + 1 + 1 + sigSize + 1
	// minCommitTail is what the commit form needs after its boxes: the
	// signature, an empty prior-key list and the outer tag.
	minCommitTail = sigSize + 1 + seal.Overhead
)

// Form says how an envelope is sealed: bits 0-1 of the header's first byte
// (version 9; it was the byte after the header).
type Form uint8

// Forms.
const (
	// FormChain: an op other than a create or commit, sealed by its author's
	// sender chain of an epoch, under that epoch's outer key.
	FormChain Form = 1
	// FormCommit: a create or commit op, with the new epoch's key boxed to
	// each recipient device, under the new epoch's outer key.
	FormCommit Form = 2
)

// String returns "chain", "commit" or "form(N)".
func (f Form) String() string {
	switch f {
	case FormChain:
		return "chain"
	case FormCommit:
		return "commit"
	}
	return fmt.Sprintf("form(%d)", uint8(f))
}

// Errors. Every error of this package wraps one of these (or, where said,
// an error of crypto/senderkey or sync/crdt).
var (
	ErrTooLarge = errors.New("envelope: too large")
	ErrShort    = errors.New("envelope: too short")
	// ErrVersion: an unknown version, including the versions before 9,
	// which are no longer accepted.
	ErrVersion = errors.New("envelope: unknown version")
	// ErrMalformed: the header (a bit 3, a counter) or the form and the
	// bytes after the header are not valid.
	ErrMalformed  = errors.New("envelope: malformed")
	ErrWrongTopic = errors.New("envelope: topic is not the team's")
	// ErrOpen: a layer does not authenticate (wrong key, moved, tampered).
	// It never says more.
	ErrOpen = errors.New("envelope: cannot open (wrong key, moved or tampered)")
	// ErrNotRecipient: no box of a commit opens for this device.
	ErrNotRecipient = errors.New("envelope: this device is not a recipient of the commit")
	// ErrBadOp: the layers open but their content does not match the
	// envelope (op id, time, team, author, kind, signatures).
	ErrBadOp = errors.New("envelope: sealed op does not match the envelope")
	// ErrBadSeal: the author's signature in the outer layer of a chain-form
	// envelope does not verify (it covers every byte of the envelope, so
	// this is also what any change to a chain-form envelope gives), or the
	// outer layer does not hold a sender, an index and a signature. Anyone
	// who holds the epoch's outer key can check it, so an honest device
	// never passes such an envelope on.
	ErrBadSeal = errors.New("envelope: the author's signature does not verify")
	// ErrNoList: the outer layer of a chain-form envelope opened, but the
	// caller gave no recipient list of its epoch, so its sender (a slot in
	// that list) is unknown: keep the envelope until the epoch's create or
	// commit op is known, as one of an unknown epoch.
	ErrNoList = errors.New("envelope: the epoch's recipient list is not known")
	// ErrSeal: a Seal function was called with arguments it cannot seal.
	ErrSeal = errors.New("envelope: cannot seal")
)

// Topic is the public name of a team's channel: seal.Topic of its id.
type Topic [16]byte

// TopicOf returns the topic of team (seal.Topic).
func TopicOf(team crdt.TeamID) Topic { return Topic(seal.Topic(team)) }

// String returns the topic as 32 lower-case hex characters.
func (t Topic) String() string { return hex.EncodeToString(t[:]) }

// Short returns the first 8 hex characters of the topic.
func (t Topic) Short() string { return hex.EncodeToString(t[:4]) }

// LogValue logs the short form of the topic.
func (t Topic) LogValue() slog.Value { return slog.StringValue(t.Short()) }

// Envelope is a sealed op with its clear routing header. Build one with
// [SealChain] or [SealCommit], or decode one with [Unmarshal].
type Envelope struct {
	// Topic is the topic the envelope belongs to. It is not on the wire:
	// Unmarshal sets it from its argument (the gossip topic or the sync
	// session the bytes came in), the Seal functions from the op's team.
	// Every layer binds it (associated data), so an envelope given the
	// wrong topic does not open.
	Topic Topic
	// Epoch is the epoch tag (crdt.TagOf of the op id of the commit that
	// started the epoch). A commit-form envelope's is that of its own op.
	Epoch uint32
	ID    crdt.OpID
	Time  crdt.HLC
	// Ciphertext is the form byte, then the form's layout (see the package
	// documentation): everything after the header, with the form, which
	// the wire carries in the header's first byte, in front.
	Ciphertext []byte
}

// appendHeader appends the header of an envelope of form f (see the
// package documentation).
func (e *Envelope) appendHeader(b []byte, f Form) []byte {
	counter := uint64(e.Time & 0xffff)
	first := byte(version<<4) | byte(f)&hdrFormMask
	if counter != 0 {
		first |= hdrCounter
	}
	b = append(b, first)
	b = binary.BigEndian.AppendUint32(b, e.Epoch)
	b = append(b, e.ID[:]...)
	ms := uint64(e.Time >> 16)
	b = append(b, byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms))
	if counter != 0 {
		b = binary.AppendUvarint(b, counter)
	}
	return b
}

// HeaderLen returns the length of e's header on the wire: HeaderSize, and the
// counter of its time if that is not 0.
func (e *Envelope) HeaderLen() int {
	if c := uint64(e.Time & 0xffff); c != 0 {
		return HeaderSize + wire.UvarintLen(c)
	}
	return HeaderSize
}

// Marshal returns the wire form: the header, which carries the form, then
// the rest of the ciphertext.
func (e *Envelope) Marshal() []byte {
	b := e.appendHeader(make([]byte, 0, e.Size()), e.Form())
	if len(e.Ciphertext) > 0 {
		b = append(b, e.Ciphertext[1:]...)
	}
	return b
}

// Size returns len(e.Marshal()).
func (e *Envelope) Size() int { return e.HeaderLen() + max(len(e.Ciphertext)-1, 0) }

// Form returns the envelope's form (0 if it has no ciphertext).
func (e *Envelope) Form() Form {
	if len(e.Ciphertext) == 0 {
		return 0
	}
	return Form(e.Ciphertext[0])
}

// Boxes returns the number of boxes of a commit-form envelope (0 for any
// other, or for a malformed one). Relays see it: it is the number of
// recipient devices of the new epoch.
func (e *Envelope) Boxes() int {
	if e.Form() != FormCommit {
		return 0
	}
	n, _, err := e.commitLayout()
	if err != nil {
		return 0
	}
	return n
}

// appendBound appends the bound header of an envelope of form f: the
// topic, then the header. It starts the associated data of every layer.
func (e *Envelope) appendBound(b []byte, f Form) []byte {
	b = append(b, e.Topic[:]...)
	return e.appendHeader(b, f)
}

// Unmarshal decodes the wire form of an envelope of topic (the gossip
// topic or the sync session it came in: the wire does not say). It refuses
// input longer than MaxSize before reading it, versions other than 9
// (those before it with their own message), a header bit 3 that is set,
// a counter that is 0, above 16 bits or not a minimal uvarint, unknown
// forms, and forms too short for their fixed parts; for the commit form, a
// box count that is not a minimal uvarint from 1 to MaxBoxes, and an epoch
// tag that is not the op id's. It authenticates nothing (see OpenChain,
// OpenCommit). The envelope does not alias b, and Marshal gives back
// exactly b.
func Unmarshal(topic Topic, b []byte) (*Envelope, error) {
	h, n, err := readHeader(b)
	if err != nil {
		return nil, err
	}
	e := &Envelope{Topic: topic, Epoch: h.Epoch, ID: h.ID, Time: h.Time}
	e.Ciphertext = make([]byte, 1+len(b)-n)
	e.Ciphertext[0] = byte(h.Form)
	copy(e.Ciphertext[1:], b[n:])
	if err := e.check(); err != nil {
		return nil, err
	}
	return e, nil
}

// Header is what an envelope's clear header says.
type Header struct {
	Form  Form
	Epoch uint32
	ID    crdt.OpID
	Time  crdt.HLC
}

// PeekHeader reads the clear header of an envelope's wire form, with the
// checks of Unmarshal on the header alone (and on the length): what a store
// needs of an envelope it keeps, without copying it. A form it returns is
// not checked to be known.
func PeekHeader(b []byte) (Header, error) {
	h, _, err := readHeader(b)
	return h, err
}

// readHeader reads the header of b and returns it with its length.
func readHeader(b []byte) (Header, int, error) {
	switch {
	case len(b) > MaxSize:
		return Header{}, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxSize)
	case len(b) == 0:
		return Header{}, 0, fmt.Errorf("%w: 0 bytes, minimum %d", ErrShort, HeaderSize)
	case b[0] >= 1 && b[0] < version:
		return Header{}, 0, fmt.Errorf("%w: version %d (before the form moved into the header) is no longer accepted", ErrVersion, b[0])
	case b[0]>>4 != version:
		return Header{}, 0, fmt.Errorf("%w: first byte %#x", ErrVersion, b[0])
	case b[0]&hdrZero != 0:
		return Header{}, 0, fmt.Errorf("%w: header bit 3 set", ErrMalformed)
	case len(b) < HeaderSize:
		return Header{}, 0, fmt.Errorf("%w: %d bytes, minimum %d", ErrShort, len(b), HeaderSize)
	}
	r := wire.NewReader(b[1:])
	h := Header{Form: Form(b[0] & hdrFormMask)}
	h.Epoch = r.Uint32()
	copy(h.ID[:], r.Fixed(len(h.ID)))
	ms := r.Fixed(6)
	h.Time = crdt.HLC(uint64(ms[0])<<40|uint64(ms[1])<<32|uint64(ms[2])<<24|uint64(ms[3])<<16|uint64(ms[4])<<8|uint64(ms[5])) << 16
	if b[0]&hdrCounter != 0 {
		c := r.Uvarint()
		switch {
		case errors.Is(r.Err(), wire.ErrTruncated):
			return Header{}, 0, fmt.Errorf("%w: the time's counter: %w", ErrShort, r.Err())
		case r.Err() != nil:
			return Header{}, 0, fmt.Errorf("%w: the time's counter: %w", ErrMalformed, r.Err())
		case c == 0 || c > 0xffff:
			return Header{}, 0, fmt.Errorf("%w: the time's counter is %d (1 to 65535 when bit 2 is set)", ErrMalformed, c)
		}
		h.Time |= crdt.HLC(c)
	}
	return h, len(b) - r.Len(), nil
}

// check validates the layout that Unmarshal validates, for envelopes built
// in memory too, so every open function starts from a sound layout.
func (e *Envelope) check() error {
	if n := e.Size(); n > MaxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, MaxSize)
	}
	switch e.Form() {
	case FormChain:
		if n := e.Size(); n < minChain {
			return fmt.Errorf("%w: chain form of %d bytes, minimum %d", ErrShort, n, minChain)
		}
		return nil
	case FormCommit:
		if e.Epoch != crdt.TagOf(e.ID) {
			return fmt.Errorf("%w: commit form under epoch tag %08x, not its own %08x", ErrMalformed, e.Epoch, crdt.TagOf(e.ID))
		}
		_, _, err := e.commitLayout()
		return err
	case 0:
		if len(e.Ciphertext) == 0 {
			return fmt.Errorf("%w: no form byte", ErrShort)
		}
	}
	return fmt.Errorf("%w: unknown form %d", ErrMalformed, e.Ciphertext[0])
}

// commitLayout returns the number of boxes of a commit-form envelope and
// the offset in Ciphertext where the boxes end (and the outer layer
// starts).
func (e *Envelope) commitLayout() (n, end int, err error) {
	r := wire.NewReader(e.Ciphertext[1:])
	n = r.Count(MaxBoxes, 0) // the boxes and the tail are checked below, as ErrShort
	switch {
	case r.Err() != nil:
		return 0, 0, fmt.Errorf("%w: commit form: box count (want 1 to %d): %w", ErrMalformed, MaxBoxes, r.Err())
	case n == 0:
		return 0, 0, fmt.Errorf("%w: commit form: 0 boxes, want 1 to %d", ErrMalformed, MaxBoxes)
	}
	end = len(e.Ciphertext) - r.Len() + n*BoxSize
	if need := end + minCommitTail; len(e.Ciphertext) < need {
		return 0, 0, fmt.Errorf("%w: commit form of %d bytes after the header, %d boxes need %d", ErrShort, len(e.Ciphertext), n, need)
	}
	return n, end, nil
}

const outerSalt = "fieldmesh/v1/outer"

// OuterKey derives the outer key of an epoch from its epoch key K:
// HKDF-SHA256(secret = K, salt = "fieldmesh/v1/outer", info = empty), 32
// bytes. Every device that learns an epoch keeps its outer key (and its
// sender chains) and forgets K.
func OuterKey(k seal.EpochKey) seal.EpochKey {
	secret := k.Bytes()
	defer clear(secret)
	out, err := hkdf.Key(sha256.New, secret, []byte(outerSalt), "", seal.KeySize)
	if err != nil {
		panic("envelope: hkdf: " + err.Error()) // unreachable: 32 bytes is within HKDF's limit
	}
	defer clear(out)
	ok, err := seal.EpochKeyFromBytes(out)
	if err != nil {
		panic("envelope: " + err.Error()) // unreachable: 32 bytes
	}
	return ok
}

// openCommon checks what every open function checks first: the layout,
// the form and the topic. It returns the bound header (appendBound).
func (e *Envelope) openCommon(form Form, team crdt.TeamID) ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	if f := e.Form(); f != form {
		return nil, fmt.Errorf("%w: %v form, want %v", ErrMalformed, f, form)
	}
	if e.Topic != TopicOf(team) {
		return nil, ErrWrongTopic
	}
	return e.appendBound(make([]byte, 0, boundSize), form), nil
}

// checkContent decodes a sealed op's compact content (crdt.MarshalCompact)
// as the op of team by author at the header's time, and checks that it
// hashes to the header's id. The op's seal is the caller's to set and
// check.
func (e *Envelope) checkContent(pt []byte, team crdt.TeamID, author identity.DeviceID) (*crdt.Op, error) {
	op, err := crdt.UnmarshalCompact(pt, team, author, e.Time)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOp, err)
	}
	if op.ID() != e.ID {
		return nil, fmt.Errorf("%w: id mismatch (another op, team, author or time)", ErrBadOp)
	}
	return op, nil
}

// checkOp decodes a sealed op with its seal (the commit form) and checks
// it against the envelope: it hashes to the id, has the header's time,
// belongs to team, and is sealed by its author.
func (e *Envelope) checkOp(pt []byte, team crdt.TeamID) (*crdt.Op, error) {
	op, err := crdt.UnmarshalOp(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOp, err)
	}
	switch {
	case op.ID() != e.ID:
		return nil, fmt.Errorf("%w: id mismatch", ErrBadOp)
	case op.Time != e.Time:
		return nil, fmt.Errorf("%w: time mismatch", ErrBadOp)
	case op.Team != team:
		return nil, fmt.Errorf("%w: team mismatch", ErrBadOp)
	}
	if err := op.Verify(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOp, err)
	}
	return op, nil
}

// isCommitKind reports whether ops of kind k travel in commit form.
func isCommitKind(k crdt.Kind) bool { return k.StartsEpoch() }

var _ slog.LogValuer = Topic{}
