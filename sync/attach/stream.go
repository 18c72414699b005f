package attach

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// Store is where a requester keeps the chunks it fetched: one durable write
// per chunk, so a transfer cut at any point keeps every chunk that arrived.
type Store interface {
	PutChunk(addr [32]byte, sealed []byte) error
}

// Pull runs the requester's side of a pull session over rw (a stream the
// caller opened and closes): it asks for wants, MaxRequest at a time, and
// stores each chunk as it arrives, after checking it. It returns how many
// chunks it stored. An error wrapping ErrBadPeer means the peer misbehaved
// (penalise it); what was stored before stays stored.
func Pull(rw io.ReadWriter, wants []Want, st Store) (int, error) {
	f := NewFetch(wants)
	r := bufio.NewReader(rw)
	stored := 0
	for req := f.Request(); req != nil; req = f.Request() {
		if err := framing.Write(rw, req); err != nil {
			return stored, fmt.Errorf("attach: sending a request: %w", err)
		}
		for f.Pending() {
			frame, err := framing.Read(r, f.Limit())
			switch {
			case errors.Is(err, framing.ErrTooLarge), errors.Is(err, framing.ErrMalformed):
				return stored, fmt.Errorf("%w: %w", ErrBadPeer, err)
			case err != nil:
				return stored, fmt.Errorf("attach: reading a chunk: %w", err)
			}
			addr, sealed, err := f.Handle(frame)
			if err != nil {
				return stored, err
			}
			if sealed == nil {
				continue
			}
			if err := st.PutChunk(addr, sealed); err != nil {
				return stored, fmt.Errorf("attach: storing a chunk: %w", err)
			}
			stored++
		}
	}
	return stored, nil
}

// Answer runs the server's side of a pull session over rw until the
// requester closes its side (io.EOF, a nil error): it answers each
// request with one frame per address, in order, each written as soon as
// chunk (nil, nil for one it does not have) returned it. An error wrapping ErrBadPeer means the
// requester sent a malformed request.
func Answer(rw io.ReadWriter, chunk func(addr [32]byte) ([]byte, error)) error {
	r := bufio.NewReader(rw)
	for {
		req, err := framing.Read(r, MaxRequestFrame)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, framing.ErrTooLarge), errors.Is(err, framing.ErrMalformed):
			return fmt.Errorf("%w: %w", ErrBadPeer, err)
		case err != nil:
			return fmt.Errorf("attach: reading a request: %w", err)
		}
		addrs, err := UnmarshalRequest(req)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			c, err := chunk(a)
			if err != nil {
				return fmt.Errorf("attach: reading chunk: %w", err)
			}
			if err := framing.Write(rw, MarshalResponse(c)); err != nil {
				return fmt.Errorf("attach: answering: %w", err)
			}
		}
	}
}

// Missing returns the wants of the attachments as that have no stored chunk
// (has reports whether one is stored), in order: what is left to fetch.
func Missing(as []crdt.Attachment, has func(addr [32]byte) (bool, error)) ([]Want, error) {
	var out []Want
	for _, a := range as {
		for _, w := range Wants(a) {
			ok, err := has(w.Addr)
			if err != nil {
				return nil, err
			}
			if !ok {
				out = append(out, w)
			}
		}
	}
	return out, nil
}

// FetchNow reports whether a device fetches a message's attachments as
// soon as it holds the message, without the user asking: always, unless
// it is in low-data mode; in low-data mode only for urgent and emergency
// messages, or over a free link (a LAN, the clinic's Wi-Fi). What it does
// not fetch now it fetches when the user opens the attachment.
func FetchNow(p crdt.Priority, lowData, freeLink bool) bool {
	return !lowData || freeLink || p >= crdt.Urgent
}
