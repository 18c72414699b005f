package framing

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	msgs := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{7}, 200_000)}
	for _, m := range msgs {
		if err := Write(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(&buf)
	for i, want := range msgs {
		got, err := Read(r, 1<<20)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("frame %d: got %d bytes; want %d", i, len(got), len(want))
		}
	}
	if _, err := Read(r, 1<<20); err != io.EOF {
		t.Errorf("after the last frame: err = %v; want io.EOF", err)
	}
}

func TestReadRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"over the limit", []byte{0x81, 0x01}, ErrTooLarge},
		{"non-minimal prefix", []byte{0x80, 0x00}, ErrMalformed},
		{"overlong prefix", bytes.Repeat([]byte{0xff}, 11), ErrMalformed},
		{"cut inside the prefix", []byte{0x80}, io.ErrUnexpectedEOF},
		{"cut inside the frame", []byte{0x05, 1, 2}, io.ErrUnexpectedEOF},
	} {
		_, err := Read(bytes.NewReader(tc.in), 100)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v; want %v", tc.name, err, tc.want)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte{0x03, 'a', 'b', 'c'})
	f.Add([]byte{0x80, 0x01})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Read(bytes.NewReader(in), 1<<16)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(in, buf.Bytes()) {
			t.Fatal("re-encoding a frame that was read does not give back the input")
		}
	})
}
