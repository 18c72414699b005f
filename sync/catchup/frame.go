package catchup

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Limits, in bytes unless stated otherwise.
const (
	// MinFrameSize, MaxFrameSize and DefaultFrameSize bound the maxFrame argument of
	// NewInitiator and NewResponder: 0 or less means DefaultFrameSize, smaller values are raised
	// to MinFrameSize, larger ones lowered to MaxFrameSize. Handle accepts frames of up to
	// MaxFrameSize from the peer, whatever its own maxFrame, so ends configured differently
	// still talk; read frames with ReadFrame(r, MaxFrameSize).
	MinFrameSize     = 4 << 10
	MaxFrameSize     = 4 << 20
	DefaultFrameSize = 1 << 20

	// EnvelopeOverhead is the most a GIVE frame adds around one envelope (frame header, flags,
	// count, id, length). A session can send envelopes of up to maxFrame-EnvelopeOverhead
	// bytes; a longer one makes the sending side fail with ErrEnvelopeTooLarge. Envelopes
	// (envelope.MaxSize, 80 KiB) therefore need maxFrame >= 80 KiB + EnvelopeOverhead, which the
	// default of 1 MiB is.
	EnvelopeOverhead = 48

	// MaxItems is the most ids a session accepts from its peer (the responder, in HAVE lists)
	// and the most envelopes it accepts (the initiator, in GIVE frames), and the most items an
	// initiator announces (Start fails with ErrTooManyItems beyond it). It bounds the work and
	// memory a peer can cause: 2^20 ids are 32 MiB, about 28 years of a team sending 100
	// messages a day.
	MaxItems = 1 << 20
)

const (
	version  = 1
	idLen    = 32
	flagMore = 1 << 0
	// prefixLen is the version byte, the type byte and the flags byte.
	prefixLen = 3
)

// frameType is the second byte of every frame.
type frameType byte

const (
	typeHave frameType = 1 // initiator -> responder: the ids it has
	typeNext frameType = 2 // responder -> initiator: send the next HAVE frame
	typeGive frameType = 3 // either way: envelopes the peer lacks
	typeWant frameType = 4 // responder -> initiator: the ids it lacks
)

func (t frameType) String() string {
	switch t {
	case typeHave:
		return "HAVE"
	case typeNext:
		return "NEXT"
	case typeGive:
		return "GIVE"
	case typeWant:
		return "WANT"
	}
	return fmt.Sprintf("type %d", byte(t))
}

// frame is a decoded frame. Slices point into the bytes it was decoded from.
type frame struct {
	typ  frameType
	more bool
	n    int     // number of ids (HAVE, WANT) or entries (GIVE)
	ids  []byte  // HAVE, WANT: n*idLen bytes
	give []entry // GIVE
}

type entry struct {
	id  [32]byte
	env []byte
}

func (f *frame) id(i int) [32]byte { return [32]byte(f.ids[i*idLen:]) }

// uvarintLen is the length of the minimal uvarint encoding of v.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// uvarint decodes a minimal uvarint from the start of b.
func uvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: bad uvarint", ErrMalformed)
	}
	if n != uvarintLen(v) {
		return 0, 0, fmt.Errorf("%w: non-minimal uvarint", ErrMalformed)
	}
	return v, n, nil
}

// parseFrame decodes one frame. It never panics, and checks every count against the bytes that
// follow before allocating anything.
func parseFrame(b []byte) (frame, error) {
	if len(b) > MaxFrameSize {
		return frame{}, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(b), MaxFrameSize)
	}
	if len(b) < 2 {
		return frame{}, fmt.Errorf("%w: %d bytes, need at least 2", ErrMalformed, len(b))
	}
	if b[0] != version {
		return frame{}, fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	f := frame{typ: frameType(b[1])}
	p := b[2:]
	switch f.typ {
	case typeNext:
		if len(p) != 0 {
			return frame{}, fmt.Errorf("%w: %d trailing bytes after NEXT", ErrMalformed, len(p))
		}
		return f, nil
	case typeHave, typeWant, typeGive:
	default:
		return frame{}, fmt.Errorf("%w: unknown %v", ErrMalformed, f.typ)
	}
	if len(p) < 1 {
		return frame{}, fmt.Errorf("%w: %v without flags", ErrMalformed, f.typ)
	}
	flags := p[0]
	if flags&^flagMore != 0 {
		return frame{}, fmt.Errorf("%w: %v with reserved flags %#x", ErrMalformed, f.typ, flags)
	}
	f.more = flags&flagMore != 0
	count, k, err := uvarint(p[1:])
	if err != nil {
		return frame{}, fmt.Errorf("%w (%v count)", err, f.typ)
	}
	p = p[1+k:]
	if f.typ == typeGive {
		// Every entry takes at least an id and a one-byte length.
		if count > uint64(len(p)/(idLen+1)) {
			return frame{}, fmt.Errorf("%w: GIVE count %d does not fit in %d bytes", ErrMalformed, count, len(p))
		}
		f.give = make([]entry, 0, count)
		for range count {
			if len(p) < idLen {
				return frame{}, fmt.Errorf("%w: GIVE entry truncated", ErrMalformed)
			}
			e := entry{id: [32]byte(p)}
			p = p[idLen:]
			l, k, err := uvarint(p)
			if err != nil {
				return frame{}, fmt.Errorf("%w (GIVE envelope length)", err)
			}
			p = p[k:]
			if l > uint64(len(p)) {
				return frame{}, fmt.Errorf("%w: GIVE envelope of %d bytes, %d left", ErrMalformed, l, len(p))
			}
			e.env = p[:l:l]
			p = p[l:]
			f.give = append(f.give, e)
		}
		if len(p) != 0 {
			return frame{}, fmt.Errorf("%w: %d trailing bytes after GIVE", ErrMalformed, len(p))
		}
	} else {
		if count > uint64(len(p)/idLen) || int(count)*idLen != len(p) {
			return frame{}, fmt.Errorf("%w: %v count %d does not match %d bytes", ErrMalformed, f.typ, count, len(p))
		}
		f.ids = p
	}
	f.n = int(count)
	if f.more && f.n == 0 {
		return frame{}, fmt.Errorf("%w: empty %v with the more flag", ErrMalformed, f.typ)
	}
	return f, nil
}

// nextFrame returns a NEXT frame (a new slice each time: frames returned are the caller's).
func nextFrame() []byte { return []byte{version, byte(typeNext)} }

func flagsFor(more bool) byte {
	if more {
		return flagMore
	}
	return 0
}

// idFrame encodes a HAVE or WANT frame.
func idFrame(t frameType, more bool, ids [][32]byte) []byte {
	b := make([]byte, 0, prefixLen+uvarintLen(uint64(len(ids)))+idLen*len(ids))
	b = append(b, version, byte(t), flagsFor(more))
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// idsPerFrame is how many ids fit in a HAVE or WANT frame of at most maxFrame bytes.
func idsPerFrame(maxFrame int) int {
	return (maxFrame - prefixLen - uvarintLen(uint64(maxFrame/idLen))) / idLen
}

// idFrames chunks ids into frames of at most maxFrame bytes. It returns at least one frame; the
// last one has the more flag clear.
func idFrames(t frameType, ids [][32]byte, maxFrame int) [][]byte {
	per := idsPerFrame(maxFrame)
	var out [][]byte
	for {
		n := min(per, len(ids))
		out = append(out, idFrame(t, n < len(ids), ids[:n]))
		ids = ids[n:]
		if len(ids) == 0 {
			return out
		}
	}
}

// giveWriter packs envelopes into GIVE frames of at most maxFrame bytes. Envelopes must be at
// most maxFrame-EnvelopeOverhead bytes (the caller checks).
type giveWriter struct {
	budget int // bytes available for entries: maxFrame minus prefix and the longest count
	body   []byte
	n      int
	frames [][]byte
}

func newGiveWriter(maxFrame int) *giveWriter {
	return &giveWriter{budget: maxFrame - prefixLen - uvarintLen(uint64(maxFrame/(idLen+1)))}
}

func (w *giveWriter) add(id [32]byte, env []byte) {
	size := idLen + uvarintLen(uint64(len(env))) + len(env)
	if w.n > 0 && len(w.body)+size > w.budget {
		w.flush()
	}
	w.body = append(w.body, id[:]...)
	w.body = binary.AppendUvarint(w.body, uint64(len(env)))
	w.body = append(w.body, env...)
	w.n++
}

func (w *giveWriter) flush() {
	b := make([]byte, 0, prefixLen+uvarintLen(uint64(w.n))+len(w.body))
	b = append(b, version, byte(typeGive), flagMore)
	b = binary.AppendUvarint(b, uint64(w.n))
	b = append(b, w.body...)
	w.frames = append(w.frames, b)
	w.body, w.n = w.body[:0], 0
}

// finish returns the frames, at least one, with the more flag clear on the last.
func (w *giveWriter) finish() [][]byte {
	if w.n > 0 || len(w.frames) == 0 {
		w.flush()
	}
	w.frames[len(w.frames)-1][2] = 0
	return w.frames
}
