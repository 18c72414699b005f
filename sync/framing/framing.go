// Package framing carries length-prefixed messages over a byte stream: a uvarint length, then the
// bytes. The node frames every message of its stream protocols (join, sync, relay enrolment and
// directory) with it; sync/recon re-exports it under its own error values.
//
// Read refuses a length above its limit before allocating, refuses non-minimal or overlong length
// prefixes, and allocates as the frame's bytes arrive rather than as the prefix claims, so a peer that
// announces a large frame and sends little costs little memory. It never panics.
package framing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Errors returned by Read. They are wrapped with detail: test with errors.Is.
var (
	// ErrTooLarge: a length prefix above the limit given to Read.
	ErrTooLarge = errors.New("framing: too large")
	// ErrMalformed: a non-minimal or overlong length prefix.
	ErrMalformed = errors.New("framing: malformed length prefix")
)

// Write writes b to w preceded by its length as a uvarint, in a single Write call (one message on a
// libp2p stream).
func Write(w io.Writer, b []byte) error {
	out := make([]byte, 0, binary.MaxVarintLen64+len(b))
	out = binary.AppendUvarint(out, uint64(len(b)))
	out = append(out, b...)
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("framing: writing: %w", err)
	}
	return nil
}

// readChunk is the most Read allocates before any of a frame's bytes arrive.
const readChunk = 64 << 10

// Read reads one frame written by Write. It refuses a length above limit with ErrTooLarge before
// allocating, and a non-minimal or overlong length prefix with ErrMalformed. It returns io.EOF when r
// ends cleanly before a frame and io.ErrUnexpectedEOF when it ends inside one. It reads the prefix a
// byte at a time: give it an io.ByteReader (such as a bufio.Reader) to save calls on r.
func Read(r io.Reader, limit int) ([]byte, error) {
	var prefix [binary.MaxVarintLen64]byte
	br, _ := r.(io.ByteReader)
	n := 0
	for {
		if n == len(prefix) {
			return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, len(prefix))
		}
		var err error
		if br != nil {
			prefix[n], err = br.ReadByte()
		} else {
			_, err = io.ReadFull(r, prefix[n:n+1])
		}
		if err != nil {
			return nil, readError(err, n > 0)
		}
		n++
		if prefix[n-1] < 0x80 {
			break
		}
	}
	pr := wire.NewReader(prefix[:n])
	length := pr.Uvarint()
	if err := pr.Finish(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if length > uint64(max(limit, 0)) {
		return nil, fmt.Errorf("%w: length prefix %d, limit %d", ErrTooLarge, length, limit)
	}
	b := make([]byte, min(length, readChunk))
	for off := 0; ; {
		if _, err := io.ReadFull(r, b[off:]); err != nil {
			return nil, readError(err, true)
		}
		off = len(b)
		if uint64(off) == length {
			return b, nil
		}
		b = append(b, make([]byte, min(length-uint64(off), uint64(off)))...)
	}
}

// readError returns io.EOF for a clean end between frames, io.ErrUnexpectedEOF for an end inside
// one, and other errors wrapped.
func readError(err error, inside bool) error {
	switch {
	case errors.Is(err, io.EOF) && !inside:
		return io.EOF
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return io.ErrUnexpectedEOF
	}
	return fmt.Errorf("framing: reading: %w", err)
}
