package catchup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// WriteFrame writes frame to w preceded by its length as a uvarint, in a single Write call (one
// message on a libp2p stream). It is the framing the node uses to carry a Session's frames.
func WriteFrame(w io.Writer, frame []byte) error {
	b := make([]byte, 0, binary.MaxVarintLen64+len(frame))
	b = binary.AppendUvarint(b, uint64(len(frame)))
	b = append(b, frame...)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("catchup: writing frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame written by WriteFrame. It refuses a length above limit (use
// MaxFrameSize for Session frames) with ErrFrameTooLarge before allocating, and a non-minimal
// or overlong length prefix with ErrMalformed. Below the limit it allocates as the frame's
// bytes arrive, not as the prefix claims. It returns io.EOF when r ends cleanly before a
// frame and io.ErrUnexpectedEOF when it ends inside one. It reads the prefix a byte at a time:
// give it an io.ByteReader (such as a bufio.Reader) to save calls on r.
func ReadFrame(r io.Reader, limit int) ([]byte, error) {
	var prefix [binary.MaxVarintLen64]byte
	br, _ := r.(io.ByteReader)
	n := 0
	for {
		if n == len(prefix) {
			return nil, fmt.Errorf("%w: length prefix too long", ErrMalformed)
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
	length, _, err := uvarint(prefix[:n])
	if err != nil {
		return nil, fmt.Errorf("%w (length prefix)", err)
	}
	if length > uint64(max(limit, 0)) {
		return nil, fmt.Errorf("%w: length prefix %d, limit %d", ErrFrameTooLarge, length, limit)
	}
	// Grow the buffer with the bytes that actually arrive, so a peer that announces a large
	// frame and sends little costs little memory.
	frame := make([]byte, min(length, readChunk))
	for off := 0; ; {
		if _, err := io.ReadFull(r, frame[off:]); err != nil {
			return nil, readError(err, true)
		}
		off = len(frame)
		if uint64(off) == length {
			return frame, nil
		}
		frame = append(frame, make([]byte, min(length-uint64(off), uint64(off)))...)
	}
}

// readChunk is the most ReadFrame allocates before any of a frame's bytes arrive.
const readChunk = 64 << 10

// readError returns io.EOF for a clean end between frames, io.ErrUnexpectedEOF for an end inside
// one, and other errors wrapped.
func readError(err error, inside bool) error {
	switch {
	case errors.Is(err, io.EOF) && !inside:
		return io.EOF
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return io.ErrUnexpectedEOF
	}
	return fmt.Errorf("catchup: reading frame: %w", err)
}
