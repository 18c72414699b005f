package recon

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Wire constants. doc.go describes the format.
const (
	version = 1

	typeRecon = 1 // answers to the receiver's open ranges; ends every flight
	typeGive  = 2 // envelope bytes

	flagOwe      = 1 << 0 // the sender still owes envelopes after this flight
	flagFin      = 1 << 1 // the sender is done: the receiver must not answer
	reservedMask = ^byte(flagOwe | flagFin)

	// Answer item types, the low two bits of an item header.
	ansDone  = 0 // arg+1 opens matched (or, for an id list, nothing needed)
	ansSplit = 1 // one fingerprint open replaced by arg+1 pieces
	ansNeed  = 2 // one id list open answered with a bitmap of the ids needed
	ansGroup = 3 // arg+1 consecutive opens (of any kind) merged into one piece

	modeFP   = 0 // piece payload: a fingerprint
	modeList = 1 // piece payload: uvarint count, count short hashes

	saltLen = 16
	fpLen   = 6
	hashLen = 6

	// listMax is the most ids a list carries. A side lists its items in a range when it has at
	// most listMax unsettled items there, and splits it otherwise.
	listMax = 11
	// maxSplit is the most pieces a split has: 16 buckets and a probe.
	maxSplit = 17
	// timeEscape marks a time delta sent raw, when its odd part does not fit in 56 bits.
	timeEscape = 63
)

// bound is a point in the (time, id) order: an item is below b when its time is lower, or equal
// and its id is lower than b's id prefix padded with zeros. inf is above every item.
type bound struct {
	time   uint64
	prefix [IDSize]byte // zero-padded beyond plen
	plen   uint8
	inf    bool
}

var (
	minBound = bound{}
	infBound = bound{inf: true}
)

func compareBounds(a, b *bound) int {
	switch {
	case a.inf || b.inf:
		return cmp.Compare(boolInt(a.inf), boolInt(b.inf))
	case a.time != b.time:
		return cmp.Compare(a.time, b.time)
	}
	return bytes.Compare(a.prefix[:], b.prefix[:])
}

func compareItemBound(it *Item, b *bound) int {
	switch {
	case b.inf:
		return -1
	case it.Time != b.time:
		return cmp.Compare(it.Time, b.time)
	}
	return bytes.Compare(it.ID[:], b.prefix[:])
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// between returns the cheapest bound b with p < b <= q (p < q), encoded after a bound of time
// prev <= p.Time. Different times need no id prefix, and the time is chosen with as many
// trailing zero bits (relative to prev) as the gap allows; equal times need the shortest prefix
// of q's id that p's id does not share.
func between(p, q *Item, prev uint64) bound {
	if p.Time < q.Time {
		lo, hi := p.Time+1-prev, q.Time-prev
		d := hi
		if lo != hi {
			b := bits.Len64((lo-1)^hi) - 1
			d = hi &^ (1<<b - 1)
		}
		return bound{time: prev + d}
	}
	j := 0
	for p.ID[j] == q.ID[j] {
		j++
	}
	b := bound{time: q.Time, plen: uint8(j + 1)}
	copy(b.prefix[:j+1], q.ID[:j+1])
	return b
}

// timeCode returns the code of a time delta: 0 for 0, else m<<6 | z for d = m<<z with m odd,
// or timeEscape (and then d itself follows) when m needs more than 56 bits or z is 63.
func timeCode(d uint64) (code uint64, raw bool) {
	if d == 0 {
		return 0, false
	}
	z := bits.TrailingZeros64(d)
	if m := d >> z; bits.Len64(m) <= 56 && z != timeEscape {
		return m<<6 | uint64(z), false
	}
	return timeEscape, true
}

// appendBound appends a bound after a bound of time prev, with the mode of the piece it ends:
// uvarint(timeCode<<2 | hasPrefix<<1 | mode), then d if the time code is the escape, then, if
// hasPrefix, the prefix length (1 to IDSize) and the prefix.
func appendBound(b []byte, x *bound, prev uint64, mode int) []byte {
	d := x.time - prev
	code, raw := timeCode(d)
	hasPrefix := x.plen > 0
	b = binary.AppendUvarint(b, code<<2|uint64(boolInt(hasPrefix))<<1|uint64(mode))
	if raw {
		b = binary.AppendUvarint(b, d)
	}
	if hasPrefix {
		b = append(b, x.plen)
		b = append(b, x.prefix[:x.plen]...)
	}
	return b
}

// reader decodes a frame body: each read goes through a wire.Reader over the bytes from off, and
// fails with ErrMalformed (wrapping the wire error) rather than read past the end; uvarints must be
// minimal. Unlike a wire.Reader it does not stick: each method returns its error, and onRecon
// rewinds off to walk the same answers twice.
type reader struct {
	b   []byte
	off int
}

func (r *reader) more() bool { return r.off < len(r.b) }

// unread returns a wire.Reader of the bytes not read yet; advance moves past what it read.
func (r *reader) unread() *wire.Reader { return wire.NewReader(r.b[r.off:]) }

func (r *reader) advance(w *wire.Reader, what string) error {
	if err := w.Err(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
	r.off = len(r.b) - w.Len()
	return nil
}

func (r *reader) uvarint(what string) (uint64, error) {
	w := r.unread()
	v := w.Uvarint()
	return v, r.advance(w, what)
}

func (r *reader) bytes(n int, what string) ([]byte, error) {
	w := r.unread()
	p := w.Fixed(n)
	return p, r.advance(w, what)
}

// time decodes the time of a bound from its time code, after a bound of time prev.
func (r *reader) time(c, prev uint64) (uint64, error) {
	var d uint64
	switch z, m := c&63, c>>6; {
	case z == timeEscape:
		if m != 0 {
			return 0, fmt.Errorf("%w: bad time escape", ErrMalformed)
		}
		var err error
		if d, err = r.uvarint("time"); err != nil {
			return 0, err
		}
		if z := bits.TrailingZeros64(d | 1<<63); bits.Len64(d>>z) <= 56 && z != timeEscape {
			return 0, fmt.Errorf("%w: needless time escape", ErrMalformed)
		}
	case m == 0:
		if z != 0 {
			return 0, fmt.Errorf("%w: non-canonical time", ErrMalformed)
		}
	default:
		if m&1 == 0 || bits.Len64(m)+int(z) > 64 {
			return 0, fmt.Errorf("%w: non-canonical time", ErrMalformed)
		}
		d = m << z
	}
	if d > math.MaxUint64-prev {
		return 0, fmt.Errorf("%w: time overflows", ErrMalformed)
	}
	return prev + d, nil
}

// bound decodes a bound after a bound of time prev, with the mode of the piece it ends.
func (r *reader) bound(prev uint64) (bound, uint64, error) {
	var x bound
	v, err := r.uvarint("bound")
	if err != nil {
		return x, 0, err
	}
	if x.time, err = r.time(v>>2, prev); err != nil {
		return x, 0, err
	}
	if v>>1&1 == 1 {
		pl, err := r.bytes(1, "prefix length")
		if err != nil {
			return x, 0, err
		}
		plen := int(pl[0])
		if plen < 1 || plen > IDSize {
			return x, 0, fmt.Errorf("%w: id prefix of %d bytes", ErrMalformed, plen)
		}
		pre, err := r.bytes(plen, "id prefix")
		if err != nil {
			return x, 0, err
		}
		if pre[plen-1] == 0 {
			return x, 0, fmt.Errorf("%w: id prefix ends in zero", ErrMalformed)
		}
		copy(x.prefix[:], pre)
		x.plen = uint8(plen)
	}
	return x, v & 1, nil
}

// piece is one range of the sender's new open ranges, as decoded: [lo, hi) with either the
// sender's fingerprint or its list of short hashes.
type piece struct {
	lo, hi bound
	list   bool
	fp     [fpLen]byte
	hashes []byte // list: n*hashLen bytes, pointing into the frame
	n      int
}

func (p *piece) hash(k int) []byte { return p.hashes[k*hashLen : (k+1)*hashLen] }

// payload decodes a piece's payload of the given mode.
func (r *reader) payload(p *piece, mode uint64) error {
	switch mode {
	case modeFP:
		f, err := r.bytes(fpLen, "fingerprint")
		if err != nil {
			return err
		}
		p.fp = [fpLen]byte(f)
	case modeList:
		w := r.unread()
		n := w.Count(listMax, hashLen)
		hashes := w.Fixed(n * hashLen)
		if err := r.advance(w, "id list"); err != nil {
			return err
		}
		p.list, p.n, p.hashes = true, n, hashes
	}
	return nil
}

// mode decodes the mode of a piece without a bound (a split's last piece, a group).
func (r *reader) mode() (uint64, error) {
	m, err := r.uvarint("piece mode")
	if err != nil {
		return 0, err
	}
	if m > modeList {
		return 0, fmt.Errorf("%w: piece mode %d", ErrMalformed, m)
	}
	return m, nil
}

// answers is what walkAnswers reports; the callbacks run in order.
type answers interface {
	// done: opens[first : first+n] are settled with nothing to transfer for the receiver.
	done(first, n int) error
	// need: opens[k], an id list, is settled and the peer needs the listed ids whose bit is set.
	need(k int, bitmap []byte) error
	// pieces: opens[first : first+n] are replaced by the peer's pieces ps (they alias an internal
	// buffer: copy what is kept).
	pieces(first, n int, ps []piece) error
}

// walkAnswers decodes the answer items of a RECON body against opens, the receiver's open ranges
// (the pieces of its last message), checking that they answer every open exactly once, in order,
// with well-formed pieces inside the ranges they replace. It never panics.
func walkAnswers(r *reader, opens []open, v answers) error {
	var buf [maxSplit]piece
	k := 0
	for r.more() {
		h, err := r.uvarint("answer")
		if err != nil {
			return err
		}
		typ, arg := h&3, h>>2
		if k == len(opens) {
			return fmt.Errorf("%w: answer beyond the %d open ranges", ErrProtocol, len(opens))
		}
		switch typ {
		case ansDone, ansGroup:
			n := arg + 1
			if n > uint64(len(opens)-k) {
				return fmt.Errorf("%w: answer covers %d ranges, %d open", ErrProtocol, n, len(opens)-k)
			}
			if typ == ansDone {
				if err := v.done(k, int(n)); err != nil {
					return err
				}
			} else {
				mode, err := r.mode()
				if err != nil {
					return err
				}
				p := &buf[0]
				*p = piece{lo: opens[k].lo, hi: opens[k+int(n)-1].hi}
				if err := r.payload(p, mode); err != nil {
					return err
				}
				if err := v.pieces(k, int(n), buf[:1]); err != nil {
					return err
				}
			}
			k += int(n)
		case ansNeed:
			o := &opens[k]
			if !o.list || len(o.listed) == 0 {
				return fmt.Errorf("%w: NEED for a range that is not a non-empty id list", ErrProtocol)
			}
			bm, err := r.bytes((len(o.listed)+7)/8, "bitmap")
			if err != nil {
				return err
			}
			var any byte
			for _, c := range bm {
				any |= c
			}
			if any == 0 {
				return fmt.Errorf("%w: empty NEED bitmap", ErrMalformed)
			}
			if pad := len(o.listed) % 8; pad != 0 && bm[len(bm)-1]>>pad != 0 {
				return fmt.Errorf("%w: NEED bitmap padding set", ErrMalformed)
			}
			if err := v.need(k, bm); err != nil {
				return err
			}
			k++
		case ansSplit:
			o := &opens[k]
			if o.list {
				return fmt.Errorf("%w: SPLIT of an id list", ErrProtocol)
			}
			n := arg + 1
			if n > maxSplit {
				return fmt.Errorf("%w: split into %d pieces, limit %d", ErrMalformed, n, maxSplit)
			}
			lo := o.lo
			for i := range int(n) {
				p := &buf[i]
				*p = piece{lo: lo, hi: o.hi}
				var mode uint64
				if i == int(n)-1 {
					if mode, err = r.mode(); err != nil {
						return err
					}
				} else {
					var hi bound
					if hi, mode, err = r.bound(lo.time); err != nil {
						return err
					}
					if compareBounds(&hi, &lo) <= 0 || compareBounds(&hi, &o.hi) >= 0 {
						return fmt.Errorf("%w: split bound out of order", ErrProtocol)
					}
					p.hi = hi
				}
				if err := r.payload(p, mode); err != nil {
					return err
				}
				lo = p.hi
			}
			if err := v.pieces(k, 1, buf[:n]); err != nil {
				return err
			}
			k++
		}
	}
	if k != len(opens) {
		return fmt.Errorf("%w: %d of %d open ranges answered", ErrProtocol, k, len(opens))
	}
	return nil
}
