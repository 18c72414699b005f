package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Errors of the decoders. Each decoding error wraps one of these.
var (
	ErrTooLarge  = errors.New("crdt: encoding too large")
	ErrTruncated = errors.New("crdt: encoding truncated")
	ErrVersion   = errors.New("crdt: unknown encoding version")
	ErrTrailing  = errors.New("crdt: trailing bytes after encoding")
	ErrMalformed = errors.New("crdt: malformed encoding")
	ErrInvalid   = errors.New("crdt: invalid value")
)

// decoder reads a byte slice front to back. The first error sticks: later
// reads return zero values, so callers check err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(ErrTruncated)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// fixed returns the next n bytes (a sub-slice of the input).
func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail(ErrTruncated)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32be() uint32 {
	b := d.fixed(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (d *decoder) uint64be() uint64 {
	b := d.fixed(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// uvarint reads a minimally encoded unsigned varint.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail(ErrTruncated)
		return 0
	case n < 0:
		d.fail(fmt.Errorf("%w: varint overflows 64 bits", ErrMalformed))
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail(fmt.Errorf("%w: varint not minimally encoded", ErrMalformed))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a uvarint count of items of size bytes each, refusing more than
// max items or more than the remaining input can hold, before any allocation.
func (d *decoder) count(max, size int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(max) {
		d.fail(fmt.Errorf("%w: %d items, limit %d", ErrTooLarge, n, max))
		return 0
	}
	if n*uint64(size) > uint64(len(d.b)) {
		d.fail(ErrTruncated)
		return 0
	}
	return int(n)
}

// bytes reads a uvarint length and that many bytes (a sub-slice of the input).
func (d *decoder) bytes(max int) []byte {
	n := d.count(max, 1)
	return d.fixed(n)
}

// str reads a length-prefixed valid UTF-8 string of at most max bytes.
func (d *decoder) str(what string, max int) string {
	b := d.bytes(max)
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.fail(fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what))
		return ""
	}
	return string(b)
}

// bool reads a byte that must be 0 or 1.
func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail(fmt.Errorf("%w: boolean byte not 0 or 1", ErrMalformed))
	return false
}

// version reads the version byte and checks it.
func (d *decoder) version(what string, want byte) {
	if v := d.byte(); d.err == nil && v != want {
		d.fail(fmt.Errorf("%w: %s version %d", ErrVersion, what, v))
	}
}

// finish returns the first error, or ErrTrailing if input is left over.
func (d *decoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d bytes", ErrTrailing, len(d.b))
	}
	return nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
