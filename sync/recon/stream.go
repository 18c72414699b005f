package recon

import (
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// WriteFrame writes frame to w preceded by its length as a uvarint, in a single Write call (one
// message on a libp2p stream): sync/framing, which the node uses for a Session's frames.
func WriteFrame(w io.Writer, f []byte) error {
	if err := framing.Write(w, f); err != nil {
		return fmt.Errorf("recon: %w", err)
	}
	return nil
}

// ReadFrame reads one frame written by WriteFrame (see framing.Read). It refuses a length above limit
// (use MaxFrameSize for Session frames) with ErrFrameTooLarge before allocating, and a non-minimal or
// overlong length prefix with ErrMalformed. It returns io.EOF when r ends cleanly before a frame and
// io.ErrUnexpectedEOF when it ends inside one.
func ReadFrame(r io.Reader, limit int) ([]byte, error) {
	f, err := framing.Read(r, limit)
	switch {
	case err == nil, err == io.EOF, err == io.ErrUnexpectedEOF:
		return f, err
	case errors.Is(err, framing.ErrTooLarge):
		return nil, fmt.Errorf("%w: %w", ErrFrameTooLarge, err)
	case errors.Is(err, framing.ErrMalformed):
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil, fmt.Errorf("recon: %w", err)
}
