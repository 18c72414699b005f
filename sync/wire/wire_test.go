package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"unicode/utf8"
)

// read is one decoder run over an input: it reads fields and returns what it read.
type read func(r *Reader) any

func TestReaderReads(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		read read
		want any
		left int // Len after the read
	}{
		{"byte", []byte{7, 8}, func(r *Reader) any { return r.Byte() }, byte(7), 1},
		{"fixed", []byte{1, 2, 3}, func(r *Reader) any { return r.Fixed(2) }, []byte{1, 2}, 1},
		{"fixed 0", []byte{1}, func(r *Reader) any { return r.Fixed(0) }, []byte{}, 1},
		{"uint16", []byte{1, 2}, func(r *Reader) any { return r.Uint16() }, uint16(0x0102), 0},
		{"uint32", []byte{1, 2, 3, 4}, func(r *Reader) any { return r.Uint32() }, uint32(0x01020304), 0},
		{"uint64", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, func(r *Reader) any { return r.Uint64() }, uint64(0x0102030405060708), 1},
		{"uvarint 0", []byte{0}, func(r *Reader) any { return r.Uvarint() }, uint64(0), 0},
		{"uvarint 300", []byte{0xac, 0x02}, func(r *Reader) any { return r.Uvarint() }, uint64(300), 0},
		{"uvarint max", binary.AppendUvarint(nil, math.MaxUint64), func(r *Reader) any { return r.Uvarint() }, uint64(math.MaxUint64), 0},
		{"count", []byte{2, 0, 0, 0, 0}, func(r *Reader) any { return r.Count(2, 2) }, 2, 4},
		{"count of empty items", []byte{3}, func(r *Reader) any { return r.Count(3, 0) }, 3, 0},
		{"bytes", []byte{2, 'h', 'i', '!'}, func(r *Reader) any { return r.Bytes(2) }, []byte("hi"), 1},
		{"string", []byte{3, 0xe2, 0x9c, 0x93}, func(r *Reader) any { return r.String("s", 3) }, "✓", 0},
		{"empty string", []byte{0}, func(r *Reader) any { return r.String("s", 0) }, "", 0},
		{"bool false", []byte{0}, func(r *Reader) any { return r.Bool() }, false, 0},
		{"bool true", []byte{1}, func(r *Reader) any { return r.Bool() }, true, 0},
		{"version", []byte{3, 9}, func(r *Reader) any { r.Version("x", 3); return r.Byte() }, byte(9), 0},
	}
	for _, tt := range tests {
		r := NewReader(tt.in)
		got := tt.read(r)
		if err := r.Err(); err != nil {
			t.Errorf("%s: error %v", tt.name, err)
			continue
		}
		if !equal(got, tt.want) {
			t.Errorf("%s: got %#v; want %#v", tt.name, got, tt.want)
		}
		if r.Len() != tt.left {
			t.Errorf("%s: %d bytes left; want %d", tt.name, r.Len(), tt.left)
		}
		if err := r.Finish(); (err == nil) != (tt.left == 0) {
			t.Errorf("%s: Finish = %v with %d bytes left", tt.name, err, tt.left)
		}
	}
}

func equal(a, b any) bool {
	if ab, ok := a.([]byte); ok {
		bb, ok := b.([]byte)
		return ok && bytes.Equal(ab, bb)
	}
	return a == b
}

func TestReaderRefuses(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		read read
		want error
	}{
		{"byte of nothing", nil, func(r *Reader) any { return r.Byte() }, ErrTruncated},
		{"fixed truncated", []byte{1, 2}, func(r *Reader) any { return r.Fixed(3) }, ErrTruncated},
		{"fixed negative", []byte{1, 2}, func(r *Reader) any { return r.Fixed(-1) }, ErrMalformed},
		{"uint16 truncated", []byte{1}, func(r *Reader) any { return r.Uint16() }, ErrTruncated},
		{"uint32 truncated", []byte{1, 2, 3}, func(r *Reader) any { return r.Uint32() }, ErrTruncated},
		{"uint64 truncated", []byte{1, 2, 3, 4, 5, 6, 7}, func(r *Reader) any { return r.Uint64() }, ErrTruncated},
		{"uvarint of nothing", nil, func(r *Reader) any { return r.Uvarint() }, ErrTruncated},
		{"uvarint truncated", []byte{0x80, 0x80}, func(r *Reader) any { return r.Uvarint() }, ErrTruncated},
		{"uvarint non-minimal 0", []byte{0x80, 0x00}, func(r *Reader) any { return r.Uvarint() }, ErrMalformed},
		{"uvarint non-minimal 1", []byte{0x81, 0x80, 0x00}, func(r *Reader) any { return r.Uvarint() }, ErrMalformed},
		{"uvarint overflow", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, func(r *Reader) any { return r.Uvarint() }, ErrMalformed},
		{"uvarint 11 bytes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, func(r *Reader) any { return r.Uvarint() }, ErrMalformed},
		{"count over max", []byte{3, 0, 0, 0}, func(r *Reader) any { return r.Count(2, 1) }, ErrTooLarge},
		{"count over negative max", []byte{1, 0}, func(r *Reader) any { return r.Count(-1, 1) }, ErrTooLarge},
		{"count over remaining input", []byte{3, 0, 0, 0, 0, 0}, func(r *Reader) any { return r.Count(10, 2) }, ErrTruncated},
		{"huge count of huge items", binary.AppendUvarint(nil, math.MaxInt64), func(r *Reader) any { return r.Count(math.MaxInt, math.MaxInt) }, ErrTruncated},
		{"bytes over max", []byte{3, 'a', 'b', 'c'}, func(r *Reader) any { return r.Bytes(2) }, ErrTooLarge},
		{"bytes truncated", []byte{3, 'a', 'b'}, func(r *Reader) any { return r.Bytes(5) }, ErrTruncated},
		{"bytes with a non-minimal length", []byte{0x81, 0x00, 'a'}, func(r *Reader) any { return r.Bytes(5) }, ErrMalformed},
		{"string not UTF-8", []byte{2, 0xff, 0xfe}, func(r *Reader) any { return r.String("s", 5) }, ErrInvalid},
		{"string cut inside a character", []byte{2, 0xe2, 0x9c}, func(r *Reader) any { return r.String("s", 5) }, ErrInvalid},
		{"bool 2", []byte{2}, func(r *Reader) any { return r.Bool() }, ErrMalformed},
		{"bool truncated", nil, func(r *Reader) any { return r.Bool() }, ErrTruncated},
		{"version", []byte{2}, func(r *Reader) any { r.Version("x", 1); return nil }, ErrVersion},
		{"version truncated", nil, func(r *Reader) any { r.Version("x", 1); return nil }, ErrTruncated},
	}
	for _, tt := range tests {
		r := NewReader(tt.in)
		got := tt.read(r)
		if err := r.Err(); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v; want %v", tt.name, err, tt.want)
		}
		if !isZero(got) {
			t.Errorf("%s: got %#v after an error; want the zero value", tt.name, got)
		}
		if r.Len() != 0 {
			t.Errorf("%s: %d bytes left after an error; want 0", tt.name, r.Len())
		}
		if err := r.Finish(); !errors.Is(err, tt.want) {
			t.Errorf("%s: Finish = %v; want %v", tt.name, err, tt.want)
		}
	}
}

func isZero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case []byte:
		return v == nil
	case byte:
		return v == 0
	case uint16:
		return v == 0
	case uint32:
		return v == 0
	case uint64:
		return v == 0
	case int:
		return v == 0
	case string:
		return v == ""
	case bool:
		return !v
	}
	return false
}

func TestReaderTrailing(t *testing.T) {
	r := NewReader([]byte{1, 2, 3})
	r.Byte()
	if err := r.Finish(); !errors.Is(err, ErrTrailing) {
		t.Errorf("Finish = %v; want ErrTrailing", err)
	}
	if r.Err() != nil {
		t.Errorf("Err = %v after Finish; want nil (Finish reports, it does not fail)", r.Err())
	}
	r.Fixed(2)
	if err := r.Finish(); err != nil {
		t.Errorf("Finish = %v once everything is read", err)
	}
}

// TestReaderSticky: the first error sticks; later reads return zero values and neither replace
// the error nor consume input.
func TestReaderSticky(t *testing.T) {
	r := NewReader([]byte{0x80, 0x00, 1, 2, 3, 4, 5, 6, 7, 8})
	r.Uvarint()
	first := r.Err()
	if !errors.Is(first, ErrMalformed) {
		t.Fatalf("Uvarint: %v; want ErrMalformed", first)
	}
	if v := r.Byte(); v != 0 {
		t.Errorf("Byte after an error = %d", v)
	}
	if b := r.Fixed(1); b != nil {
		t.Errorf("Fixed after an error = %v", b)
	}
	if v := r.Uint64(); v != 0 {
		t.Errorf("Uint64 after an error = %d", v)
	}
	if n := r.Count(10, 1); n != 0 {
		t.Errorf("Count after an error = %d", n)
	}
	r.Version("x", 9)
	r.Fail(errors.New("later"))
	if r.Err() != first || r.Finish() != first {
		t.Errorf("error became %v (Finish %v); want the first, %v", r.Err(), r.Finish(), first)
	}
}

func TestFail(t *testing.T) {
	mine := errors.New("ids out of order")
	r := NewReader([]byte{1, 2})
	r.Fail(mine)
	if r.Err() != mine || r.Len() != 0 || r.Byte() != 0 || r.Err() != mine {
		t.Errorf("after Fail: Err %v, Len %d", r.Err(), r.Len())
	}
}

func TestZeroReader(t *testing.T) {
	var r Reader
	if err := r.Finish(); err != nil {
		t.Errorf("zero Reader: Finish = %v", err)
	}
	r.Byte()
	if !errors.Is(r.Err(), ErrTruncated) {
		t.Errorf("zero Reader: Byte: %v; want ErrTruncated", r.Err())
	}
}

// TestCapped: slices the Reader returns cannot be appended to over the rest of the input.
func TestCapped(t *testing.T) {
	in := []byte{2, 'a', 'b', 'c', 'd', 'e'}
	r := NewReader(in)
	b := r.Bytes(10)
	f := r.Fixed(2)
	if cap(b) != len(b) || cap(f) != len(f) {
		t.Fatalf("cap %d for %d bytes, cap %d for %d bytes", cap(b), len(b), cap(f), len(f))
	}
	_ = append(b, 'X')
	_ = append(f, 'Y')
	if string(in) != "\x02abcde" {
		t.Errorf("input became %q", in)
	}
}

func TestAppend(t *testing.T) {
	var b []byte
	b = AppendBytes(b, []byte{9, 9})
	b = AppendString(b, "✓")
	b = AppendBool(b, true)
	b = AppendBool(b, false)
	b = AppendBytes(b, nil)
	want := []byte{2, 9, 9, 3, 0xe2, 0x9c, 0x93, 1, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("got %x; want %x", b, want)
	}
	r := NewReader(b)
	if got := r.Bytes(2); !bytes.Equal(got, []byte{9, 9}) {
		t.Errorf("Bytes = %x", got)
	}
	if got := r.String("s", 3); got != "✓" {
		t.Errorf("String = %q", got)
	}
	if !r.Bool() || r.Bool() || len(r.Bytes(0)) != 0 {
		t.Error("bools or empty bytes did not round-trip")
	}
	if err := r.Finish(); err != nil {
		t.Error(err)
	}
}

func TestUvarintLen(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 255, 16383, 16384, 1<<21 - 1, 1 << 21, 1<<56 - 1, 1 << 56, 1<<63 - 1, 1 << 63, math.MaxUint64} {
		if got, want := UvarintLen(v), len(binary.AppendUvarint(nil, v)); got != want {
			t.Errorf("UvarintLen(%d) = %d; want %d", v, got, want)
		}
	}
}

// FuzzReader runs a sequence of reads chosen by prog's bytes over in. No input may make the Reader
// panic; every slice it returns is the next bytes of in, with capacity capped; every value re-encodes
// to the bytes it was read from; limits hold; the first error sticks and leaves nothing to read.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0, 1, 4, 2, 3, 4, 5, 6, 10, 11}, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte{5, 5, 5, 11}, []byte{0x80, 0x00, 0xac, 0x02})
	f.Add([]byte{6, 3, 2, 7, 5, 8, 5, 9, 11}, []byte{2, 0, 0, 0, 0, 2, 'h', 'i', 3, 0xe2, 0x9c, 0x93, 1})
	f.Add([]byte{10, 1, 9, 9, 11}, []byte{1, 0, 1, 2})
	f.Add([]byte{1, 0x80, 1, 0xff}, []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, prog, in []byte) {
		r := NewReader(in)
		arg := func(i *int) int {
			*i++
			if *i < len(prog) {
				return int(int8(prog[*i]))
			}
			return 0
		}
		for i := 0; i < len(prog); i++ {
			before, errBefore := r.Len(), r.Err()
			off := len(in) - before
			var got []byte // a slice the read returned
			var value uint64
			var isValue bool
			op := prog[i] % 12
			switch op {
			case 0:
				value, isValue = uint64(r.Byte()), true
			case 1:
				got = r.Fixed(arg(&i))
			case 2:
				value, isValue = uint64(r.Uint16()), true
			case 3:
				value, isValue = uint64(r.Uint32()), true
			case 4:
				value, isValue = r.Uint64(), true
			case 5:
				v := r.Uvarint()
				if r.Err() == nil && !bytes.Equal(binary.AppendUvarint(nil, v), in[off:len(in)-r.Len()]) {
					t.Fatalf("Uvarint %d from %x: not its minimal encoding", v, in[off:len(in)-r.Len()])
				}
				value, isValue = v, true
			case 6:
				limit, size := arg(&i), arg(&i)
				n := r.Count(limit, size)
				if r.Err() == nil && (n < 0 || n > max(limit, 0) || (size > 0 && n*size > r.Len())) {
					t.Fatalf("Count(%d, %d) = %d with %d bytes left", limit, size, n, r.Len())
				}
				value, isValue = uint64(n), true
			case 7:
				limit := arg(&i)
				got = r.Bytes(limit)
				if len(got) > max(limit, 0) {
					t.Fatalf("Bytes(%d) returned %d bytes", limit, len(got))
				}
			case 8:
				limit := arg(&i)
				s := r.String("s", limit)
				if len(s) > max(limit, 0) || !utf8.ValidString(s) {
					t.Fatalf("String(%d) = %q", limit, s)
				}
				if end := len(in) - r.Len(); s != string(in[end-len(s):end]) {
					t.Fatalf("String = %q; not the input's bytes", s)
				}
			case 9:
				b := r.Bool()
				value, isValue = uint64(AppendBool(nil, b)[0]), true
			case 10:
				r.Version("v", byte(arg(&i)))
			case 11:
				if err := r.Finish(); (err == nil) != (r.Err() == nil && r.Len() == 0) {
					t.Fatalf("Finish = %v with Err %v and %d bytes left", err, r.Err(), r.Len())
				}
			}
			after := r.Len()
			switch {
			case after > before:
				t.Fatalf("Len grew from %d to %d", before, after)
			case errBefore != nil && r.Err() != errBefore:
				t.Fatalf("error %v replaced by %v", errBefore, r.Err())
			case r.Err() != nil && after != 0:
				t.Fatalf("%d bytes left after error %v", after, r.Err())
			case r.Err() != nil && (got != nil || (isValue && value != 0)):
				t.Fatalf("a read returned %x / %d with error %v", got, value, r.Err())
			}
			if got != nil {
				// The read's last len(got) bytes are got: a sub-slice of in, capacity capped.
				end := len(in) - after
				if len(got) > len(in) || len(got) > end-off || cap(got) != len(got) {
					t.Fatalf("got %d bytes (cap %d) from %d bytes of input read", len(got), cap(got), end-off)
				}
				if len(got) > 0 && &got[0] != &in[end-len(got)] {
					t.Fatalf("got bytes that are not the input's")
				}
			}
			if isValue && r.Err() == nil {
				// Fixed-size reads consume exactly their size; re-encode and compare.
				read := in[off : len(in)-after]
				var enc []byte
				switch op {
				case 0, 9:
					enc = []byte{byte(value)}
				case 2:
					enc = binary.BigEndian.AppendUint16(nil, uint16(value))
				case 3:
					enc = binary.BigEndian.AppendUint32(nil, uint32(value))
				case 4:
					enc = binary.BigEndian.AppendUint64(nil, value)
				case 5, 6:
					enc = binary.AppendUvarint(nil, value)
				}
				if !bytes.Equal(enc, read) {
					t.Fatalf("read %x, re-encoded %x", read, enc)
				}
			}
		}
	})
}
