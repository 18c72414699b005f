package recon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// WriteFrame writes frame to w preceded by its length as a uvarint, in a single Write call (one
// message on a libp2p stream). It is the same framing as the foundation's catch-up protocol.
func WriteFrame(w io.Writer, frame []byte) error {
	b := make([]byte, 0, binary.MaxVarintLen64+len(frame))
	b = binary.AppendUvarint(b, uint64(len(frame)))
	b = append(b, frame...)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("recon: writing frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame written by WriteFrame. It refuses a length above limit (use
// MaxFrameSize for Session frames) with ErrFrameTooLarge before allocating, and a non-minimal or
// overlong length prefix with ErrMalformed. It allocates as the frame's bytes arrive, not as the
// prefix claims, so a peer that announces a large frame and sends little costs little memory.
// It returns io.EOF when r ends cleanly before a frame and io.ErrUnexpectedEOF when it ends
// inside one. Give it an io.ByteReader (such as a bufio.Reader) to save calls on r.
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
	pr := reader{b: prefix[:n]}
	length, err := pr.uvarint("length prefix")
	if err != nil {
		return nil, err
	}
	if length > uint64(max(limit, 0)) {
		return nil, fmt.Errorf("%w: length prefix %d, limit %d", ErrFrameTooLarge, length, limit)
	}
	const chunk = 64 << 10
	frame := make([]byte, 0, min(length, chunk))
	for uint64(len(frame)) < length {
		k := min(length-uint64(len(frame)), max(chunk, uint64(len(frame))))
		frame = append(frame, make([]byte, k)...)
		if _, err := io.ReadFull(r, frame[uint64(len(frame))-k:]); err != nil {
			return nil, readError(err, true)
		}
	}
	return frame, nil
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
	return fmt.Errorf("recon: reading frame: %w", err)
}
