package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Sizes, in bytes.
const (
	MaxSize    = 80 << 10            // the largest marshalled envelope Unmarshal accepts
	HeaderSize = 1 + 16 + 4 + 32 + 8 // 61: everything before the ciphertext
	MinSize    = HeaderSize + seal.Overhead
	version    = 1
)

// Errors. Every error of Unmarshal and Open wraps one of these.
var (
	ErrTooLarge   = errors.New("envelope: too large")
	ErrShort      = errors.New("envelope: too short")
	ErrVersion    = errors.New("envelope: unknown version")
	ErrWrongTopic = errors.New("envelope: topic is not the team's")
	ErrOpen       = errors.New("envelope: cannot open (wrong key or tampered)")
	ErrBadOp      = errors.New("envelope: sealed op does not match the envelope")
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

// Envelope is a sealed op with its clear routing header.
type Envelope struct {
	Topic      Topic
	Epoch      uint32
	ID         crdt.OpID
	Time       crdt.HLC
	Ciphertext []byte
}

func (e *Envelope) appendHeader(b []byte) []byte {
	b = append(b, version)
	b = append(b, e.Topic[:]...)
	b = binary.BigEndian.AppendUint32(b, e.Epoch)
	b = append(b, e.ID[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(e.Time))
}

// Marshal returns the wire form: the 61-byte header, then the ciphertext.
func (e *Envelope) Marshal() []byte {
	b := e.appendHeader(make([]byte, 0, HeaderSize+len(e.Ciphertext)))
	return append(b, e.Ciphertext...)
}

// Unmarshal decodes the wire form. It refuses input longer than MaxSize,
// shorter than a header plus an AEAD tag, and unknown versions. It does not
// authenticate anything (see Open). The envelope does not alias b.
func Unmarshal(b []byte) (*Envelope, error) {
	switch {
	case len(b) > MaxSize:
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxSize)
	case len(b) < MinSize:
		return nil, fmt.Errorf("%w: %d bytes, minimum %d", ErrShort, len(b), MinSize)
	case b[0] != version:
		return nil, fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	e := new(Envelope)
	copy(e.Topic[:], b[1:17])
	e.Epoch = binary.BigEndian.Uint32(b[17:21])
	copy(e.ID[:], b[21:53])
	e.Time = crdt.HLC(binary.BigEndian.Uint64(b[53:61]))
	e.Ciphertext = bytes.Clone(b[HeaderSize:])
	return e, nil
}

func nonce(id crdt.OpID) [seal.NonceSize]byte { return [seal.NonceSize]byte(id[:seal.NonceSize]) }

// Seal encrypts op under key as epoch's envelope: topic, id and time come
// from the op, the associated data is the header, the nonce is ID[:12].
// The op should be valid (signed, at most crdt.MaxOpSize); Seal does not
// check it, Open does.
func Seal(op *crdt.Op, epoch uint32, key seal.EpochKey) *Envelope {
	pt := op.Marshal()
	e := &Envelope{
		Topic: TopicOf(op.Team),
		Epoch: epoch,
		ID:    sha256.Sum256(pt), // = op.ID()
		Time:  op.Time,
	}
	e.Ciphertext = seal.Seal(key, nonce(e.ID), e.appendHeader(make([]byte, 0, HeaderSize)), pt)
	return e
}

// Open authenticates and decrypts e with the key of its epoch (the caller
// picks the key by e.Epoch) and returns the op, after checking that e's
// topic is team's, that the op decodes, hashes to e.ID, has time e.Time,
// belongs to team and is signed by its author. It returns an error wrapping
// ErrWrongTopic, ErrOpen, ErrBadOp or crdt's decoding and signature errors.
func Open(e *Envelope, key seal.EpochKey, team crdt.TeamID) (*crdt.Op, error) {
	if e.Topic != TopicOf(team) {
		return nil, ErrWrongTopic
	}
	pt, err := seal.Open(key, nonce(e.ID), e.appendHeader(make([]byte, 0, HeaderSize)), e.Ciphertext)
	if err != nil {
		return nil, ErrOpen
	}
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

var _ slog.LogValuer = Topic{}
