package senderkey

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// Encoding sizes, in bytes.
const (
	stateVersion = 1
	kindSender   = 1
	kindReceiver = 2

	senderSize     = 1 + 1 + 32 + 4 + 32 // 70
	receiverHeader = senderSize + 2      // 72
	skippedSize    = 4 + 32

	// MaxReceiverSize is the largest ReceiverState encoding (MaxSkipped
	// skipped keys): 36,072 bytes.
	MaxReceiverSize = receiverHeader + MaxSkipped*skippedSize
)

// MarshalBinary encodes the state (version 1), integers big-endian:
//
//	version  1 byte   (1)
//	kind     1 byte   (1: sender)
//	sender  32 bytes  device id
//	next     4 bytes  index of the next message
//	chain   32 bytes  chain key of index next
//
// The result is a secret (70 bytes); the storage layer encrypts it at rest.
func (s *SenderState) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, senderSize)
	b = append(b, stateVersion, kindSender)
	b = append(b, s.sender[:]...)
	b = binary.BigEndian.AppendUint32(b, s.next)
	return append(b, s.chain[:]...), nil
}

// UnmarshalSender decodes the output of [SenderState.MarshalBinary]: exactly
// 70 bytes, version 1, kind 1. The result does not alias b.
func UnmarshalSender(b []byte) (*SenderState, error) {
	if len(b) != senderSize {
		return nil, fmt.Errorf("%w: sender state is %d bytes, want %d", ErrEncoding, len(b), senderSize)
	}
	if b[0] != stateVersion || b[1] != kindSender {
		return nil, fmt.Errorf("%w: version %d kind %d, want version %d kind %d", ErrEncoding, b[0], b[1], stateVersion, kindSender)
	}
	s := &SenderState{sender: identity.DeviceID(b[2:34]), next: binary.BigEndian.Uint32(b[34:38])}
	copy(s.chain[:], b[38:70])
	return s, nil
}

// MarshalBinary encodes the state (version 1), integers big-endian:
//
//	version  1 byte   (1)
//	kind     1 byte   (2: receiver)
//	sender  32 bytes  device id
//	next     4 bytes  lowest index not reached
//	chain   32 bytes  chain key of index next
//	count    2 bytes  number of skipped keys, at most MaxSkipped
//	count × { index 4 bytes, message key 32 bytes }, indices strictly ascending and below next
//
// The result is a secret, at most [MaxReceiverSize] bytes; the storage layer
// encrypts it at rest. Each state has exactly one encoding.
func (r *ReceiverState) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, receiverHeader+len(r.skipped)*skippedSize)
	b = append(b, stateVersion, kindReceiver)
	b = append(b, r.sender[:]...)
	b = binary.BigEndian.AppendUint32(b, r.next)
	b = append(b, r.chain[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.skipped)))
	idx := slices.Sorted(maps.Keys(r.skipped))
	for _, i := range idx {
		k := r.skipped[i]
		b = binary.BigEndian.AppendUint32(b, i)
		b = append(b, k[:]...)
		clear(k[:])
	}
	return b, nil
}

// UnmarshalReceiver decodes the output of [ReceiverState.MarshalBinary]. It
// accepts at most [MaxReceiverSize] bytes and exactly one encoding of each
// state. The result does not alias b.
func UnmarshalReceiver(b []byte) (*ReceiverState, error) {
	if len(b) > MaxReceiverSize {
		return nil, fmt.Errorf("%w: receiver state is %d bytes, at most %d", ErrEncoding, len(b), MaxReceiverSize)
	}
	if len(b) < receiverHeader {
		return nil, fmt.Errorf("%w: receiver state is %d bytes, shorter than the %d-byte header", ErrEncoding, len(b), receiverHeader)
	}
	if b[0] != stateVersion || b[1] != kindReceiver {
		return nil, fmt.Errorf("%w: version %d kind %d, want version %d kind %d", ErrEncoding, b[0], b[1], stateVersion, kindReceiver)
	}
	r := &ReceiverState{sender: identity.DeviceID(b[2:34]), next: binary.BigEndian.Uint32(b[34:38])}
	copy(r.chain[:], b[38:70])
	n := int(binary.BigEndian.Uint16(b[70:72]))
	rest := b[receiverHeader:]
	if n > MaxSkipped {
		return nil, fmt.Errorf("%w: %d skipped keys, at most %d", ErrEncoding, n, MaxSkipped)
	}
	if len(rest) != n*skippedSize {
		return nil, fmt.Errorf("%w: %d bytes of skipped keys, want %d for %d keys", ErrEncoding, len(rest), n*skippedSize, n)
	}
	r.skipped = make(map[uint32]messageKey, n)
	for i := range n {
		e := rest[i*skippedSize:][:skippedSize]
		idx := binary.BigEndian.Uint32(e[:4])
		if idx >= r.next {
			return nil, fmt.Errorf("%w: skipped index %d is not below next %d", ErrEncoding, idx, r.next)
		}
		if i > 0 && idx <= binary.BigEndian.Uint32(rest[(i-1)*skippedSize:]) {
			return nil, fmt.Errorf("%w: skipped indices not strictly ascending at %d", ErrEncoding, i)
		}
		r.skipped[idx] = messageKey(e[4:])
	}
	return r, nil
}
