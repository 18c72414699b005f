package attach

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Protocol limits.
const (
	// MaxRequest is the most chunks one request asks for: 32 chunks, 1 MiB,
	// so a request answered in full is about 33 s of a 256 kbit/s link and
	// a contact that breaks loses little.
	MaxRequest = 32
	// MaxRequestFrame is the largest request frame.
	MaxRequestFrame = 1 + 1 + MaxRequest*32
	// MaxResponseFrame is the largest response frame: a status byte and a
	// sealed chunk.
	MaxResponseFrame = 1 + crdt.MaxSealedChunk
)

const requestVersion = 1

// Response statuses.
const (
	statusMissing = 0
	statusChunk   = 1
)

// ErrBadPeer wraps every error that shows the peer sent what no honest
// peer sends: a malformed frame, a chunk not asked for, or a chunk that
// does not match its address or length. Count it against the peer as a
// bad envelope.
var ErrBadPeer = errors.New("attach: bad peer")

// MarshalRequest encodes a request for the chunks at addrs (1..MaxRequest):
//
//	version 1 | count uvarint (1..MaxRequest) | count × address 32
func MarshalRequest(addrs [][32]byte) []byte {
	b := []byte{requestVersion, byte(len(addrs))}
	for _, a := range addrs {
		b = append(b, a[:]...)
	}
	return b
}

// UnmarshalRequest decodes a request. Every error wraps ErrBadPeer.
func UnmarshalRequest(b []byte) ([][32]byte, error) {
	if len(b) > MaxRequestFrame {
		return nil, fmt.Errorf("%w: request of %d bytes", ErrBadPeer, len(b))
	}
	d := wire.NewReader(b)
	d.Version("chunk request", requestVersion)
	n := d.Count(MaxRequest, 32)
	if d.Err() == nil && n == 0 {
		d.Fail(fmt.Errorf("%w: empty request", wire.ErrInvalid))
	}
	var out [][32]byte
	if d.Err() == nil {
		out = make([][32]byte, n)
		for i := range out {
			copy(out[i][:], d.Fixed(32))
		}
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPeer, err)
	}
	return out, nil
}

// MarshalResponse encodes the answer to one address of a request: the
// sealed chunk, or, if sealed is nil, that the server does not have it.
//
//	status 1 (0 missing, 1 chunk) | [sealed chunk: the rest of the frame]
func MarshalResponse(sealed []byte) []byte {
	if sealed == nil {
		return []byte{statusMissing}
	}
	return append([]byte{statusChunk}, sealed...)
}

// Want is a chunk a device wants: its address and its sealed length, both
// from a manifest it opened.
type Want struct {
	Addr [32]byte
	Len  int
}

// Wants returns every chunk of a as Wants, in order.
func Wants(a crdt.Attachment) []Want {
	out := make([]Want, len(a.Chunks))
	for i, c := range a.Chunks {
		out[i] = Want{Addr: c, Len: SealedLen(a, i)}
	}
	return out
}

// Fetch is the requester's side of one pull session with one peer: it asks
// for the chunks it is given, MaxRequest at a time, and checks each answer.
//
// Use: for req := f.Request(); req != nil; req = f.Request() { send req;
// for f.Pending() { read a frame of at most f.Limit() bytes; f.Handle it } }.
type Fetch struct {
	todo    []Want
	asked   []Want // asked and not yet answered, in order
	got     int
	missing int
}

// NewFetch returns a Fetch of wants. Wants with a length a sealed chunk
// cannot have are dropped.
func NewFetch(wants []Want) *Fetch {
	f := &Fetch{}
	for _, w := range wants {
		if w.Len > crdt.ChunkOverhead && w.Len <= crdt.MaxSealedChunk {
			f.todo = append(f.todo, w)
		}
	}
	return f
}

// Request returns the next request frame, or nil when every want was
// asked for. It is an error of the caller to ask for the next request
// while answers are pending; Request then returns nil.
func (f *Fetch) Request() []byte {
	if len(f.asked) > 0 || len(f.todo) == 0 {
		return nil
	}
	n := min(len(f.todo), MaxRequest)
	f.asked, f.todo = f.todo[:n:n], f.todo[n:]
	addrs := make([][32]byte, n)
	for i, w := range f.asked {
		addrs[i] = w.Addr
	}
	return MarshalRequest(addrs)
}

// Pending reports whether answers to the last request are still due.
func (f *Fetch) Pending() bool { return len(f.asked) > 0 }

// Limit is the most bytes the next response frame may hold: a frame
// longer than this is refused before it is read (ErrBadPeer). It is 0
// when no answer is due: any frame then is a chunk not asked for.
func (f *Fetch) Limit() int {
	if len(f.asked) == 0 {
		return 0
	}
	return 1 + f.asked[0].Len
}

// Handle takes the next response frame. It returns the address and sealed
// chunk to store (a copy, checked against its address and length), or a
// zero address and nil when the peer does not have it, or an error
// wrapping ErrBadPeer: the session ends and the peer is penalised, and
// nothing of this frame is stored.
func (f *Fetch) Handle(frame []byte) ([32]byte, []byte, error) {
	if len(f.asked) == 0 {
		return [32]byte{}, nil, fmt.Errorf("%w: a chunk that was not asked for", ErrBadPeer)
	}
	w := f.asked[0]
	if len(frame) == 0 || len(frame) > 1+w.Len {
		return [32]byte{}, nil, fmt.Errorf("%w: response of %d bytes, want at most %d", ErrBadPeer, len(frame), 1+w.Len)
	}
	switch frame[0] {
	case statusMissing:
		if len(frame) != 1 {
			return [32]byte{}, nil, fmt.Errorf("%w: missing with a body", ErrBadPeer)
		}
		f.asked = f.asked[1:]
		f.missing++
		return [32]byte{}, nil, nil
	case statusChunk:
	default:
		return [32]byte{}, nil, fmt.Errorf("%w: response status %d", ErrBadPeer, frame[0])
	}
	sealed := frame[1:]
	if len(sealed) != w.Len || sha256.Sum256(sealed) != w.Addr {
		return [32]byte{}, nil, fmt.Errorf("%w: %w", ErrBadPeer, ErrBadChunk)
	}
	f.asked = f.asked[1:]
	f.got++
	return w.Addr, append([]byte(nil), sealed...), nil
}

// Done reports whether every want was asked for and answered.
func (f *Fetch) Done() bool { return len(f.asked) == 0 && len(f.todo) == 0 }

// Counts returns how many chunks arrived and how many the peer did not have.
func (f *Fetch) Counts() (got, missing int) { return f.got, f.missing }

func readRand(r io.Reader, b []byte) error {
	if r == nil {
		r = rand.Reader
	}
	_, err := io.ReadFull(r, b)
	return err
}
