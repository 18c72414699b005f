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
)

// Kind is the kind of an op, which says how to decode its body.
type Kind uint8

// Op kinds. Kind 0 is invalid; other unknown kinds decode and are kept in a
// [Log] (so a newer peer's ops are relayed) but do not change the [State].
const (
	KindCreate  Kind = 1 // body: Create
	KindMember  Kind = 2 // body: Commit
	KindMessage Kind = 3 // body: Message
	KindAck     Kind = 4 // body: Ack
)

// String returns "create", "member", "message", "ack" or "kind(N)".
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
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Limits of an op.
const (
	MaxOpSize  = 64 << 10 // bytes of Marshal output
	MaxParents = 64
)

const (
	opVersion = 1
	// opDomain prefixes the signed bytes of an op (domain separation).
	opDomain = "fieldmesh/op/v1"
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

// Op is the unit of the CRDT: an immutable, signed, content-addressed record.
// Treat an Op as immutable once signed: changing any field changes its id and
// invalidates its signature.
//
// Encoding (Marshal), all integers fixed-size big-endian unless noted:
//
//	version  1 byte  (1)
//	team     32 bytes
//	author   32 bytes
//	time     8 bytes (HLC)
//	kind     1 byte  (not 0)
//	parents  uvarint count (<= MaxParents), then 32 bytes each, strictly ascending
//	body     uvarint length, bytes
//	sig      uvarint length, bytes (64 for Ed25519)
//
// Varints are minimally encoded and the whole is at most MaxOpSize bytes, so
// each op has exactly one encoding. The signature is Ed25519 by Author over
// "fieldmesh/op/v1" followed by the encoding up to and excluding the sig field.
type Op struct {
	Team    TeamID
	Author  identity.DeviceID
	Time    HLC
	Parents []OpID // strictly ascending; NewOp sorts them
	Kind    Kind
	Body    []byte
	Sig     []byte
}

// NewOp builds and signs an op by dev. It copies parents and body; parents
// are sorted, de-duplicated and, if more than MaxParents remain, cut to the
// MaxParents smallest (the others stay heads and a later op merges them).
// A body that makes the op larger than MaxOpSize yields an op that Log.Add
// and UnmarshalOp refuse; validate bodies first (see Message.Validate).
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
	o.Sig = dev.Sign(o.signingInput())
	// dev just made this signature: remember the op as verified, so the
	// device's own Log.Add (and envelope.Open) do not check it again.
	verified.add(o.ID())
	return o
}

// size returns len(o.Marshal()) without marshalling.
func (o *Op) size() int {
	return opFixed +
		uvarintLen(uint64(len(o.Parents))) + 32*len(o.Parents) +
		uvarintLen(uint64(len(o.Body))) + len(o.Body) +
		uvarintLen(uint64(len(o.Sig))) + len(o.Sig)
}

// appendUnsigned appends the encoding up to and excluding the sig field.
func (o *Op) appendUnsigned(b []byte) []byte {
	b = append(b, opVersion)
	b = append(b, o.Team[:]...)
	b = append(b, o.Author[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(o.Time))
	b = append(b, byte(o.Kind))
	b = binary.AppendUvarint(b, uint64(len(o.Parents)))
	for _, p := range o.Parents {
		b = append(b, p[:]...)
	}
	return appendBytes(b, o.Body)
}

func (o *Op) signingInput() []byte {
	b := make([]byte, 0, len(opDomain)+o.size())
	b = append(b, opDomain...)
	return o.appendUnsigned(b)
}

// Marshal returns the op's canonical encoding (see [Op]). It does not check
// limits; UnmarshalOp does.
func (o *Op) Marshal() []byte {
	b := o.appendUnsigned(make([]byte, 0, o.size()))
	return appendBytes(b, o.Sig)
}

// ID returns the SHA-256 of o.Marshal().
func (o *Op) ID() OpID {
	// Most ops fit the stack buffer, so hashing does not allocate.
	var buf [1024]byte
	b := o.appendUnsigned(buf[:0])
	return sha256.Sum256(appendBytes(b, o.Sig))
}

// Clone returns a deep copy of o.
func (o *Op) Clone() *Op {
	c := *o
	c.Parents = slices.Clone(o.Parents)
	c.Body = bytes.Clone(o.Body)
	c.Sig = bytes.Clone(o.Sig)
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
// that Sig is Author's signature of it. It returns nil or an error wrapping
// ErrBadSignature, ErrMalformed or ErrTooLarge.
//
// Verify remembers the ids of the ops that verified (see verifiedIDs), so
// an op met again, through gossip and reconciliation, by envelope.Open and
// then Log.Add, or by the many replicas of a simulation in one process,
// costs a hash instead of a signature check. It is safe for concurrent use.
func (o *Op) Verify() error {
	if err := o.check(); err != nil {
		return err
	}
	return o.verify(o.ID())
}

// verify checks the signature of o, whose id is id.
func (o *Op) verify(id OpID) error {
	if verified.has(id) {
		return nil
	}
	if !identity.Verify(o.Author, o.signingInput(), o.Sig) {
		return ErrBadSignature
	}
	verified.add(id)
	return nil
}

// verifiedIDs is a bounded set of the ids of ops whose signature verified.
// An OpID is the SHA-256 of the op's whole encoding, signature included, so
// an op whose id is in the set is byte for byte an op that verified: the set
// can only save work, never accept a bad signature (short of a SHA-256
// collision). It holds two generations of at most verifiedGen ids each
// (about 4 MiB in all) and drops the older one when the newer fills up.
type verifiedIDs struct {
	mu       sync.Mutex
	cur, old map[OpID]struct{}
}

const verifiedGen = 1 << 16

var verified verifiedIDs

func (v *verifiedIDs) has(id OpID) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.cur[id]
	if !ok {
		_, ok = v.old[id]
	}
	return ok
}

func (v *verifiedIDs) add(id OpID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil || len(v.cur) >= verifiedGen {
		v.old, v.cur = v.cur, make(map[OpID]struct{})
	}
	v.cur[id] = struct{}{}
}

// UnmarshalOp decodes an op encoded by Marshal. It refuses input longer than
// MaxOpSize before reading it, unknown versions, kind 0, more than MaxParents
// parents, parents not strictly ascending, non-minimal varints, truncated
// input and trailing bytes. It does not verify the signature (see Verify).
// The op does not alias b.
func UnmarshalOp(b []byte) (*Op, error) {
	if len(b) > MaxOpSize {
		return nil, fmt.Errorf("%w: op is %d bytes, limit %d", ErrTooLarge, len(b), MaxOpSize)
	}
	d := decoder{b: b}
	d.version("op", opVersion)
	o := new(Op)
	copy(o.Team[:], d.fixed(32))
	copy(o.Author[:], d.fixed(32))
	o.Time = HLC(d.uint64be())
	o.Kind = Kind(d.byte())
	if d.err == nil && o.Kind == 0 {
		d.fail(fmt.Errorf("%w: op kind 0", ErrMalformed))
	}
	if n := d.count(MaxParents, 32); n > 0 {
		o.Parents = make([]OpID, n)
		for i := range o.Parents {
			copy(o.Parents[i][:], d.fixed(32))
			if i > 0 && d.err == nil && o.Parents[i-1].Compare(o.Parents[i]) >= 0 {
				d.fail(fmt.Errorf("%w: op parents not strictly ascending", ErrMalformed))
			}
		}
	}
	o.Body = cloneNonEmpty(d.bytes(MaxOpSize))
	o.Sig = cloneNonEmpty(d.bytes(MaxOpSize))
	if err := d.finish(); err != nil {
		return nil, err
	}
	return o, nil
}

// cloneNonEmpty copies b, returning nil for an empty b.
func cloneNonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}
