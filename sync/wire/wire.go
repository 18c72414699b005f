// Package wire is the one bounded reader every fieldmesh decoder of untrusted bytes (network
// messages, stored records) goes through, and the few append helpers its formats share.
//
// The formats are plain and hand-laid-out: fixed fields, big-endian integers, unsigned varints
// (encoding/binary's uvarint, minimal encoding only, so every value has exactly one encoding),
// lengths and counts as uvarints before what they count, strings as a uvarint length and UTF-8
// bytes, booleans as one byte 0 or 1. Each package documents its own layouts; this package knows
// none of them.
//
// A [Reader] reads a byte slice front to back. The first error sticks: every later read returns a
// zero value and leaves the error alone, so a decoder reads all its fields and checks [Reader.Err]
// or [Reader.Finish] once. Lengths and counts are checked against their limit and against what the
// rest of the input can hold before anything is allocated, so no input makes a decoder allocate
// more than a small multiple of its own size. Slices returned by [Reader.Fixed] and [Reader.Bytes]
// alias the input and have their capacity capped at their length, so appending to one never writes
// over the input: a caller that keeps one past the input's lifetime copies it. A Reader is not safe
// for concurrent use; it never panics, whatever the input (fuzzed: FuzzReader).
//
// Every error wraps one of ErrTooLarge, ErrTruncated, ErrVersion, ErrTrailing, ErrMalformed or
// ErrInvalid. Packages that had error values of their own before keep them as aliases of these
// (sync/crdt) or wrap these under theirs with %w, so errors.Is works on both.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// Errors of a Reader. Every error it returns wraps one of these.
var (
	// ErrTooLarge: a length or count above the limit the decoder gave.
	ErrTooLarge = errors.New("wire: over the limit")
	// ErrTruncated: the input ends before a field, or a length or count claims more than the rest
	// of the input holds.
	ErrTruncated = errors.New("wire: unexpected end of input")
	// ErrVersion: a version byte the decoder does not know.
	ErrVersion = errors.New("wire: unknown version")
	// ErrTrailing: bytes left after the last field (Finish).
	ErrTrailing = errors.New("wire: trailing bytes")
	// ErrMalformed: bytes that are no encoding at all: a uvarint that overflows 64 bits or is not
	// minimally encoded, a boolean byte other than 0 or 1, a negative length.
	ErrMalformed = errors.New("wire: malformed encoding")
	// ErrInvalid: a well-formed field whose value is not allowed (a string that is not UTF-8).
	ErrInvalid = errors.New("wire: invalid value")
)

// Reader reads an encoding front to back; see the package documentation. The zero Reader reads an
// empty input.
type Reader struct {
	b   []byte // the input not read yet
	err error  // the first error; b is nil once it is set
}

// NewReader returns a Reader of b. It does not copy b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err returns the first error, or nil.
func (r *Reader) Err() error { return r.err }

// Len returns the number of bytes not read yet (0 after an error).
func (r *Reader) Len() int { return len(r.b) }

// Fail records err as the reader's error unless it has one already, and drops the rest of the
// input. Decoders use it for the checks of their own (an id list out of order, a zero kind) so
// that they too stick. err should wrap one of this package's errors or one of the caller's.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

// Finish returns the first error, or an error wrapping ErrTrailing if input is left.
func (r *Reader) Finish() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes", ErrTrailing, len(r.b))
	}
	return nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.Fail(ErrTruncated)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// Fixed reads the next n bytes: a sub-slice of the input with its capacity capped at n, or nil
// after an error.
func (r *Reader) Fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	switch {
	case n < 0:
		r.Fail(fmt.Errorf("%w: length %d", ErrMalformed, n))
		return nil
	case len(r.b) < n:
		r.Fail(ErrTruncated)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// Uint16 reads a big-endian uint16.
func (r *Reader) Uint16() uint16 {
	if b := r.Fixed(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

// Uint32 reads a big-endian uint32.
func (r *Reader) Uint32() uint32 {
	if b := r.Fixed(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// Uint64 reads a big-endian uint64.
func (r *Reader) Uint64() uint64 {
	if b := r.Fixed(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// Uvarint reads an unsigned varint. It refuses one that overflows 64 bits or is not minimally
// encoded (ErrMalformed), so each value has exactly one encoding.
func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.Fail(ErrTruncated)
		return 0
	case n < 0:
		r.Fail(fmt.Errorf("%w: varint overflows 64 bits", ErrMalformed))
		return 0
	case n > 1 && r.b[n-1] == 0:
		r.Fail(fmt.Errorf("%w: varint not minimally encoded", ErrMalformed))
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Count reads a uvarint count of items of at least size bytes each. It refuses a count above limit
// (ErrTooLarge) or one that the rest of the input cannot hold (ErrTruncated) before the caller
// allocates anything for the items. A negative limit counts as 0; a size of 0 or less skips the
// second check (for items that may be empty).
func (r *Reader) Count(limit, size int) int { return r.count(limit, size, "items") }

func (r *Reader) count(limit, size int, unit string) int {
	n := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(max(limit, 0)) {
		r.Fail(fmt.Errorf("%w: %d %s, limit %d", ErrTooLarge, n, unit, limit))
		return 0
	}
	if size > 0 && n > uint64(len(r.b)/size) {
		r.Fail(fmt.Errorf("%w: %d %s, %d bytes left", ErrTruncated, n, unit, len(r.b)))
		return 0
	}
	return int(n)
}

// Bytes reads a uvarint length of at most max and that many bytes: a sub-slice of the input with its
// capacity capped, or nil after an error.
func (r *Reader) Bytes(max int) []byte {
	return r.Fixed(r.count(max, 1, "bytes"))
}

// String reads a length-prefixed string of at most max bytes that must be valid UTF-8
// (ErrInvalid, naming what).
func (r *Reader) String(what string, max int) string {
	b := r.Bytes(max)
	if r.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		r.Fail(fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what))
		return ""
	}
	return string(b)
}

// Bool reads a byte that must be 0 or 1 (ErrMalformed).
func (r *Reader) Bool() bool {
	switch r.Byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.Fail(fmt.Errorf("%w: boolean byte not 0 or 1", ErrMalformed))
	return false
}

// Version reads a version byte and refuses any other than want (ErrVersion, naming what).
func (r *Reader) Version(what string, want byte) {
	if v := r.Byte(); r.err == nil && v != want {
		r.Fail(fmt.Errorf("%w: %s version %d", ErrVersion, what, v))
	}
}

// AppendBytes appends v's length as a uvarint, then v.
func AppendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// AppendString appends v's length as a uvarint, then v.
func AppendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// AppendBool appends 1 for true, 0 for false.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// UvarintLen returns the length in bytes of the uvarint encoding of v (1 to 10).
func UvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }
