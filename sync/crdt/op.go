package crdt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Kind is the kind of an op, which says how to decode its body.
type Kind uint8

// Op kinds. Kind 0 is invalid; other unknown kinds decode and are kept in a
// [Log] (so a newer peer's ops are relayed) but do not change the [State].
const (
	KindCreate   Kind = 1  // body: Create
	KindMember   Kind = 2  // body: Commit
	KindMessage  Kind = 3  // body: Message
	KindAck      Kind = 4  // body: Ack
	KindEvidence Kind = 5  // body: Evidence
	KindRelay    Kind = 6  // body: Relay
	KindPrekey   Kind = 7  // body: Prekey
	KindFiled    Kind = 8  // body: Filed
	KindDuty     Kind = 9  // body: Duty
	KindRota     Kind = 10 // body: Rota
	KindReview   Kind = 11 // body: Review
	KindPolicy   Kind = 12 // body: Policy
)

// String returns "create", "member", "message", "ack", "evidence", "relay", "prekey", "filed", "duty",
// "rota", "review", "policy" or "kind(N)".
func (k Kind) String() string {
	switch k {
	case KindCreate:
		return "create"
	case KindMember:
		return "member"
	case KindMessage:
		return "message"
	case KindAck:
		return "ack"
	case KindEvidence:
		return "evidence"
	case KindRelay:
		return "relay"
	case KindPrekey:
		return "prekey"
	case KindFiled:
		return "filed"
	case KindDuty:
		return "duty"
	case KindRota:
		return "rota"
	case KindReview:
		return "review"
	case KindPolicy:
		return "policy"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// StartsEpoch reports whether ops of kind k start a key epoch (create and
// commit ops): they travel in an envelope's commit form and are sealed at
// their own epoch, index 0. Every other op travels in chain form.
func (k Kind) StartsEpoch() bool { return k == KindCreate || k == KindMember }

// Limits of an op.
const (
	MaxOpSize  = 64 << 10 // bytes of Marshal output
	MaxParents = 64
	SigSize    = 64 // an Ed25519 signature
)

const (
	opVersion = 3
	// sealDomain prefixes what an author signs (domain separation).
	sealDomain = "fieldmesh/op/v4"
	// opFixed is the size of version, team, author, time and kind.
	opFixed = 1 + 32 + 32 + 8 + 1
)

// ErrBadSignature is returned by Verify (and Log.Add) for an op whose
// signature does not verify under its author's key.
var ErrBadSignature = errors.New("crdt: bad op signature")

// ErrBadBody is returned by Log.Add and Log.Check for an op of a known kind
// whose body does not decode or breaks its limits. It wraps the decoder's
// error.
var ErrBadBody = errors.New("crdt: bad op body")

// Op is the unit of the CRDT: an immutable, content-addressed record, and
// the seal by which its author vouches for it. Treat an Op as immutable
// once made: changing a content field changes its id.
//
// Encoding (Marshal), all integers fixed-size big-endian unless noted:
//
//	content (MarshalContent; the op id is its SHA-256):
//	  version  1 byte  (3)
//	  team     32 bytes
//	  author   32 bytes
//	  time     8 bytes (HLC)
//	  kind     1 byte  (not 0)
//	  parents  uvarint count (<= MaxParents), then 16 bytes (IDSize) each, strictly ascending
//	  body     uvarint length, bytes
//	seal:
//	  epoch    4 bytes
//	  index    4 bytes
//	  inner    16 bytes (InnerHashSize; all zero for a create or commit op)
//	  sig      uvarint length (64), bytes
//
// Varints are minimally encoded and the whole is at most MaxOpSize bytes, so
// each op has exactly one encoding. The seal is not part of the id: see
// [Seal] for what the signature covers. On the wire, a chain-form envelope
// carries the shorter [Op.MarshalCompact] (no version, team, author or
// time: the envelope gives them) and the seal beside it.
type Op struct {
	Team    TeamID
	Author  identity.DeviceID
	Time    HLC
	Parents []OpID // strictly ascending; NewOp sorts them
	Kind    Kind
	Body    []byte
	Seal    Seal

	// redacted is the id of an op whose body was deleted (Log.Redact): its
	// content no longer hashes to it.
	redacted OpID
}

// Seal is where an author sealed an op, and its signature of that: Ed25519
// by the op's Author over
//
//	"fieldmesh/op/v4" ‖ team 32 ‖ epoch 4 ‖ author 32 ‖ index 4 ‖ op id 16 ‖ inner 16
//
// Inner is the hash of the envelope layer the op travelled in
// (sync/envelope: the truncated SHA-256 of a chain-form envelope's inner
// ciphertext and of the header it is bound to), so the signature also
// authenticates that ciphertext and the envelope's outer layer needs no
// tag of its own; it is all zero for a create or commit op, which travels
// in commit form. The log keeps it with the seal, so the seal re-verifies
// without the envelope (Verify, Evidence).
//
// For a create or commit op (Kind.StartsEpoch), Epoch is TagOf(its own id)
// and Index 0. For any other op, Epoch is the tag of the key epoch whose
// sender chain sealed it and Index its position in the author's chain there
// (sync/envelope's chain form): so an op re-sealed at another index or in
// another epoch does not verify, and two different ops signed for one
// (epoch, author, index) prove that the author equivocated (see Evidence).
// The same op (one id) may be sealed twice, for example once before a
// state rollback and once after; the log keeps whichever seal it met first.
type Seal struct {
	Epoch uint32
	Index uint32
	Inner InnerHash
	Sig   []byte
}

// InnerHash is the hash of a chain-form envelope's inner layer that a seal
// signs (see Seal): 16 bytes, as an op id, and for the same reason (only
// the author can sign, so what a collision would buy it is two inner
// ciphertexts under one signature, both of which must still decrypt to
// the op with the signed id; a second preimage stays at about 2^128).
type InnerHash [InnerHashSize]byte

// InnerHashSize is the length of an InnerHash.
const InnerHashSize = 16

// SignedBytes returns what the author of op id signs for a seal at (epoch,
// index) with inner (the hash of the envelope's inner layer, zero for a
// create or commit op): see [Seal].
func SignedBytes(team TeamID, epoch uint32, author identity.DeviceID, index uint32, id OpID, inner InnerHash) []byte {
	b := make([]byte, 0, len(sealDomain)+32+4+32+4+IDSize+InnerHashSize)
	b = append(b, sealDomain...)
	b = append(b, team[:]...)
	b = binary.BigEndian.AppendUint32(b, epoch)
	b = append(b, author[:]...)
	b = binary.BigEndian.AppendUint32(b, index)
	b = append(b, id[:]...)
	return append(b, inner[:]...)
}

// NewOp builds an op by dev. It copies parents and body; parents are
// sorted, de-duplicated and, if more than MaxParents remain, cut to the
// MaxParents smallest (the others stay heads and a later op merges them).
// A create or commit op is signed at once (its seal is fixed by its id);
// any other op is returned unsigned, to be signed by [Op.Sign] when it is
// sealed in an epoch. A body that makes the op larger than MaxOpSize yields
// an op that Log.Add and UnmarshalOp refuse; validate bodies first (see
// Message.Validate).
func NewOp(dev *identity.Device, team TeamID, t HLC, parents []OpID, kind Kind, body []byte) *Op {
	ps := slices.Clone(parents)
	slices.SortFunc(ps, OpID.Compare)
	ps = slices.Compact(ps)
	if len(ps) > MaxParents {
		ps = ps[:MaxParents]
	}
	if len(ps) == 0 {
		ps = nil
	}
	o := &Op{
		Team:    team,
		Author:  dev.ID(),
		Time:    t,
		Parents: ps,
		Kind:    kind,
		Body:    cloneNonEmpty(body),
	}
	if kind.StartsEpoch() {
		o.Sign(dev, TagOf(o.ID()), 0, InnerHash{})
	}
	return o
}

// Sign sets o's seal to (epoch, index, inner) with dev's signature; dev
// must be o's author. The envelope layer calls it when it seals an op in
// chain form (inner: the hash of its inner layer); create and commit ops
// are signed by NewOp, with a zero inner hash.
func (o *Op) Sign(dev *identity.Device, epoch, index uint32, inner InnerHash) {
	id := o.ID()
	o.Seal = Seal{Epoch: epoch, Index: index, Inner: inner, Sig: dev.Sign(SignedBytes(o.Team, epoch, o.Author, index, id, inner))}
	// dev just made this signature: remember it, so the device's own
	// Log.Add does not check it again.
	verified.add(sealKey(o.Team, o.Author, id, o.Seal))
}

// ContentSize returns len(o.MarshalContent()) without marshalling.
func (o *Op) ContentSize() int {
	return opFixed +
		wire.UvarintLen(uint64(len(o.Parents))) + IDSize*len(o.Parents) +
		wire.UvarintLen(uint64(len(o.Body))) + len(o.Body)
}

// size returns len(o.Marshal()) without marshalling.
func (o *Op) size() int {
	return o.ContentSize() + 8 + InnerHashSize + wire.UvarintLen(uint64(len(o.Seal.Sig))) + len(o.Seal.Sig)
}

// appendContent appends the content encoding (see [Op]).
func (o *Op) appendContent(b []byte) []byte {
	b = append(b, opVersion)
	b = append(b, o.Team[:]...)
	b = append(b, o.Author[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(o.Time))
	b = append(b, byte(o.Kind))
	b = binary.AppendUvarint(b, uint64(len(o.Parents)))
	for _, p := range o.Parents {
		b = append(b, p[:]...)
	}
	return wire.AppendBytes(b, o.Body)
}

// MarshalContent returns the encoding of o without its seal: what the op id
// hashes, and what a chain-form envelope carries (its seal travels beside
// it). It does not check limits.
func (o *Op) MarshalContent() []byte {
	return o.appendContent(make([]byte, 0, o.ContentSize()))
}

// Marshal returns the op's canonical encoding, seal included (see [Op]). It
// does not check limits; UnmarshalOp does.
func (o *Op) Marshal() []byte {
	b := o.appendContent(make([]byte, 0, o.size()))
	b = binary.BigEndian.AppendUint32(b, o.Seal.Epoch)
	b = binary.BigEndian.AppendUint32(b, o.Seal.Index)
	b = append(b, o.Seal.Inner[:]...)
	return wire.AppendBytes(b, o.Seal.Sig)
}

// ID returns the first 16 bytes (IDSize) of the SHA-256 of
// o.MarshalContent(), or, for an op whose body was deleted (Redacted), the
// id it had.
//
// Why 16 bytes are enough. Ids are content addresses within one team: the
// log, the relay store (keyed by topic) and reconciliation never compare
// the ids of two teams. What an id must resist is a collision, two ops of
// one team with one id, and a 128-bit truncation of SHA-256 gives that
// about 2^64 work (birthday bound); accidental collisions need about 2^64
// ops of one team, beyond any team's history. Second preimages (making an
// op with the id of an op someone else wrote) stay at about 2^128. So only
// a member who grinds 2^64 hashes of its own ops can make a pair of its
// own ops with one id, and what that buys is confusion in its own team:
// each replica keeps whichever of the two it met first, as with an op
// sealed twice. Both carry its signature, so the pair is evidence against
// it, and neither can be passed off as another member's op: a seal signs
// (team, epoch, author, index, id) and each author signs only ids it made.
// A relay or an outsider, who cannot sign, can make nothing that counts.
func (o *Op) ID() OpID {
	if o.redacted != (OpID{}) {
		return o.redacted
	}
	// Most ops fit the stack buffer, so hashing does not allocate.
	var buf [1024]byte
	h := sha256.Sum256(o.appendContent(buf[:0]))
	return OpID(h[:IDSize])
}

// Redacted reports whether the op's body was deleted (Log.Redact): it
// keeps its place in the log (id, author, time, parents, kind, seal) and
// nothing of what it said.
func (o *Op) Redacted() bool { return o.redacted != (OpID{}) }

// redactedVersion starts the stored form of a redacted op (MarshalStored);
// no op encoding starts with it (opVersion does).
const redactedVersion = 0xfe

// MarshalStored returns the form a device stores an op in: Marshal, or for
// a redacted op, redactedVersion | its id (16 bytes) | Marshal (its body
// empty). Only UnmarshalStored reads it, and only Log.AddStored adds it: it
// comes from the device's own store, never from the network.
func (o *Op) MarshalStored() []byte {
	if !o.Redacted() {
		return o.Marshal()
	}
	b := append([]byte{redactedVersion}, o.redacted[:]...)
	return append(b, o.Marshal()...)
}

// UnmarshalStored decodes MarshalStored's output.
func UnmarshalStored(b []byte) (*Op, error) {
	if len(b) == 0 || b[0] != redactedVersion {
		return UnmarshalOp(b)
	}
	if len(b) < 1+IDSize {
		return nil, fmt.Errorf("%w: redacted op of %d bytes", ErrMalformed, len(b))
	}
	o, err := UnmarshalOp(b[1+IDSize:])
	if err != nil {
		return nil, err
	}
	if len(o.Body) != 0 {
		return nil, fmt.Errorf("%w: a redacted op with a body", ErrMalformed)
	}
	copy(o.redacted[:], b[1:1+IDSize])
	if o.redacted == (OpID{}) {
		return nil, fmt.Errorf("%w: a redacted op with a zero id", ErrMalformed)
	}
	return o, nil
}

// Clone returns a deep copy of o.
func (o *Op) Clone() *Op {
	c := *o
	c.Parents = slices.Clone(o.Parents)
	c.Body = bytes.Clone(o.Body)
	c.Seal.Sig = bytes.Clone(o.Seal.Sig)
	return &c
}

// check enforces the structural rules that UnmarshalOp enforces, for ops
// built in memory.
func (o *Op) check() error {
	if o.Kind == 0 {
		return fmt.Errorf("%w: op kind 0", ErrMalformed)
	}
	if len(o.Parents) > MaxParents {
		return fmt.Errorf("%w: %d parents, limit %d", ErrTooLarge, len(o.Parents), MaxParents)
	}
	for i := 1; i < len(o.Parents); i++ {
		if o.Parents[i-1].Compare(o.Parents[i]) >= 0 {
			return fmt.Errorf("%w: op parents not strictly ascending", ErrMalformed)
		}
	}
	if n := o.size(); n > MaxOpSize {
		return fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, n, MaxOpSize)
	}
	return nil
}

// Verify checks that o is well formed (the rules UnmarshalOp enforces) and
// that its seal is Author's signature of it: for a create or commit op, at
// its own epoch and index 0. It returns nil or an error wrapping
// ErrBadSignature, ErrMalformed or ErrTooLarge.
//
// Verify remembers the seals that verified (see verifiedSeals), so an op met
// again (by the envelope layer and then Log.Add, or by the many replicas of
// a simulation in one process) costs a hash instead of a signature check.
// It is safe for concurrent use.
func (o *Op) Verify() error {
	if err := o.check(); err != nil {
		return err
	}
	return o.verify(o.ID())
}

// verify checks the seal of o, whose id is id.
func (o *Op) verify(id OpID) error {
	if o.Kind.StartsEpoch() && (o.Seal.Epoch != TagOf(id) || o.Seal.Index != 0 || o.Seal.Inner != InnerHash{}) {
		return fmt.Errorf("%w: a %v op sealed at epoch %08x index %d (or with an inner hash), not its own epoch", ErrBadSignature, o.Kind, o.Seal.Epoch, o.Seal.Index)
	}
	k := sealKey(o.Team, o.Author, id, o.Seal)
	if verified.has(k) {
		return nil
	}
	if !identity.Verify(o.Author, SignedBytes(o.Team, o.Seal.Epoch, o.Author, o.Seal.Index, id, o.Seal.Inner), o.Seal.Sig) {
		return ErrBadSignature
	}
	verified.add(k)
	return nil
}

// VerifySeal reports whether sig is author's signature of op id at (epoch,
// index) in team, by the memo of seals that verified or one Ed25519 check.
// The envelope layer calls it before it spends any key on an op.
func VerifySeal(team TeamID, author identity.DeviceID, id OpID, s Seal) bool {
	k := sealKey(team, author, id, s)
	if verified.has(k) {
		return true
	}
	if !identity.Verify(author, SignedBytes(team, s.Epoch, author, s.Index, id, s.Inner), s.Sig) {
		return false
	}
	verified.add(k)
	return true
}

// sealKey names a signature in the memo: a hash of everything it was
// checked against (the signed bytes and the key) and of itself.
func sealKey(team TeamID, author identity.DeviceID, id OpID, s Seal) [32]byte {
	var buf [32 + 32 + IDSize + 8 + InnerHashSize + SigSize + 8]byte
	b := append(buf[:0], team[:]...)
	b = append(b, author[:]...)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint32(b, s.Epoch)
	b = binary.BigEndian.AppendUint32(b, s.Index)
	b = append(b, s.Inner[:]...)
	b = append(b, s.Sig...)
	return sha256.Sum256(b)
}

// verifiedSeals is a bounded set of the keys (sealKey) of seals whose
// signature verified. A key hashes the team, the author, the op id, the
// epoch, the index and the signature: a seal whose key is in the set is
// byte for byte one that verified against the same key, so the
// set only saves work and never accepts a bad signature (short of a SHA-256
// collision). It holds two generations of at most verifiedGen keys each
// (about 4 MiB in all) and drops the older one when the newer fills up.
type verifiedSeals struct {
	mu       sync.Mutex
	cur, old map[[32]byte]struct{}
}

const verifiedGen = 1 << 16

var verified verifiedSeals

func (v *verifiedSeals) has(k [32]byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.cur[k]
	if !ok {
		_, ok = v.old[k]
	}
	return ok
}

func (v *verifiedSeals) add(k [32]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil || len(v.cur) >= verifiedGen {
		v.old, v.cur = v.cur, make(map[[32]byte]struct{})
	}
	v.cur[k] = struct{}{}
}

// compactSize returns len(o.MarshalCompact()) without marshalling.
func (o *Op) compactSize() int {
	n := 1 + IDSize*len(o.Parents) + len(o.Body)
	if len(o.Parents) >= compactManyParents {
		n += wire.UvarintLen(uint64(len(o.Parents) - compactManyParents))
	}
	return n
}

// The head byte of the compact encoding: the kind in its low 5 bits, the
// number of parents in its top 3 (compactManyParents: a uvarint of the
// number less compactManyParents follows).
const (
	compactKindMask    = 1<<5 - 1
	compactManyParents = 7
)

// MarshalCompact returns the compact encoding of o's content: what a
// chain-form envelope carries of it (sync/envelope). It leaves out what the
// envelope already says or the receiver already knows (the version, the
// team, the author and the time), and the body's length, which is the rest:
//
//	head     1 byte: the kind (1 to 31) in bits 0-4, the number of parents in
//	         bits 5-7 (0 to 6; 7: a uvarint of the number less 7 follows, minimal:
//	         at most MaxParents in all)
//	parents  16 bytes (IDSize) each, strictly ascending
//	body     the rest
//
// The op's id does not change: it is still the SHA-256 of MarshalContent,
// which the receiver rebuilds from the compact encoding and the fields the
// envelope gives (UnmarshalCompact). It does not check limits, and needs a
// kind below 32 (every Kind is).
func (o *Op) MarshalCompact() []byte {
	b := make([]byte, 0, o.compactSize())
	n := len(o.Parents)
	b = append(b, byte(o.Kind)&compactKindMask|byte(min(n, compactManyParents))<<5)
	if n >= compactManyParents {
		b = binary.AppendUvarint(b, uint64(n-compactManyParents))
	}
	for _, p := range o.Parents {
		b = append(b, p[:]...)
	}
	return append(b, o.Body...)
}

// UnmarshalCompact decodes the compact encoding of an op's content
// (MarshalCompact) into the op of team, by author, at time t; its seal is
// empty. It refuses input longer than MaxOpSize before reading it, and
// applies the checks of UnmarshalContent, to the op it rebuilds: kind 0,
// more than MaxParents parents, parents not strictly ascending, non-minimal
// varints, truncated input, and an op whose content (MarshalContent) is
// longer than MaxOpSize. The op does not alias b.
func UnmarshalCompact(b []byte, team TeamID, author identity.DeviceID, t HLC) (*Op, error) {
	if len(b) > MaxOpSize {
		return nil, fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, len(b), MaxOpSize)
	}
	d := wire.NewReader(b)
	o := &Op{Team: team, Author: author, Time: t}
	head := d.Byte()
	o.Kind = Kind(head & compactKindMask)
	if d.Err() == nil && o.Kind == 0 {
		d.Fail(fmt.Errorf("%w: op kind 0", ErrMalformed))
	}
	n := int(head >> 5)
	if n == compactManyParents {
		more := d.Uvarint()
		if d.Err() == nil && more > MaxParents-compactManyParents {
			d.Fail(fmt.Errorf("%w: %d op parents, limit %d", ErrTooLarge, more+compactManyParents, MaxParents))
		}
		n += int(more)
	}
	if d.Err() == nil && n > 0 {
		if d.Len() < n*IDSize {
			d.Fail(fmt.Errorf("%w: %d op parents in %d bytes", ErrTruncated, n, d.Len()))
		} else {
			o.Parents = make([]OpID, n)
			for i := range o.Parents {
				copy(o.Parents[i][:], d.Fixed(IDSize))
				if i > 0 && o.Parents[i-1].Compare(o.Parents[i]) >= 0 {
					d.Fail(fmt.Errorf("%w: op parents not strictly ascending", ErrMalformed))
					break
				}
			}
		}
	}
	if d.Err() == nil {
		o.Body = cloneNonEmpty(d.Fixed(d.Len()))
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	if n := o.ContentSize(); n > MaxOpSize {
		return nil, fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, n, MaxOpSize)
	}
	return o, nil
}

// UnmarshalOp decodes an op encoded by Marshal, seal included. It refuses
// input longer than MaxOpSize before reading it, unknown versions, kind 0,
// more than MaxParents parents, parents not strictly ascending, a
// signature that is not 64 bytes, non-minimal varints, truncated input and
// trailing bytes. It does not verify the signature (see Verify). The op
// does not alias b.
func UnmarshalOp(b []byte) (*Op, error) {
	if len(b) > MaxOpSize {
		return nil, fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, len(b), MaxOpSize)
	}
	d := wire.NewReader(b)
	o := readOpContent(d)
	o.Seal.Epoch = d.Uint32()
	o.Seal.Index = d.Uint32()
	copy(o.Seal.Inner[:], d.Fixed(InnerHashSize))
	o.Seal.Sig = cloneNonEmpty(d.Bytes(SigSize))
	if d.Err() == nil && len(o.Seal.Sig) != SigSize {
		d.Fail(fmt.Errorf("%w: signature of %d bytes", ErrMalformed, len(o.Seal.Sig)))
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return o, nil
}

// UnmarshalContent decodes an op's content (MarshalContent), with the same
// checks as UnmarshalOp; the op's seal is empty. A chain-form envelope
// carries the content and the seal apart.
func UnmarshalContent(b []byte) (*Op, error) {
	if len(b) > MaxOpSize {
		return nil, fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, len(b), MaxOpSize)
	}
	d := wire.NewReader(b)
	o := readOpContent(d)
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return o, nil
}

// readOpContent decodes the content fields of an op.
func readOpContent(d *wire.Reader) *Op {
	d.Version("op", opVersion)
	o := new(Op)
	copy(o.Team[:], d.Fixed(32))
	copy(o.Author[:], d.Fixed(32))
	o.Time = HLC(d.Uint64())
	o.Kind = Kind(d.Byte())
	if d.Err() == nil && o.Kind == 0 {
		d.Fail(fmt.Errorf("%w: op kind 0", ErrMalformed))
	}
	readParents(d, o)
	o.Body = cloneNonEmpty(d.Bytes(MaxOpSize))
	return o
}

// readParents decodes the parents of an op: a count, then the ids,
// strictly ascending.
func readParents(d *wire.Reader, o *Op) {
	if n := d.Count(MaxParents, IDSize); n > 0 {
		o.Parents = make([]OpID, n)
		for i := range o.Parents {
			copy(o.Parents[i][:], d.Fixed(IDSize))
			if i > 0 && d.Err() == nil && o.Parents[i-1].Compare(o.Parents[i]) >= 0 {
				d.Fail(fmt.Errorf("%w: op parents not strictly ascending", ErrMalformed))
			}
		}
	}
}

// cloneNonEmpty copies b, returning nil for an empty b.
func cloneNonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}
