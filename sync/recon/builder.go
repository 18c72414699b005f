package recon

import (
	"bytes"
	"encoding/binary"
	"math"

	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Tuning of the answers. They change what an honest side sends, not what it accepts, so they can
// change without a new protocol version.
const (
	// kDense and kSparse are the fan-outs of a split: dense where most sibling ranges differed
	// (many differences per range: fewer, wider levels save bytes and round trips), sparse where
	// few did (an isolated difference is located most cheaply by narrow splits).
	kDense, kSparse = 16, 4
	// denseCount is the item count above which a range with no siblings to judge by (the first
	// split, a merged range) is split densely.
	denseCount = 1024
	// groupCost bounds the bytes of one deferred (bounced or merged) answer.
	groupCost = 13
)

// pieceInfo is this side's view of one of the peer's pieces.
type pieceInfo struct {
	i, j  int // the items of the piece's range
	c     int // unsettled items
	sum   sum256
	match bool // the fingerprints are equal
}

// builder is the second pass over the peer's answers: it answers the peer's pieces in order,
// fully while the frame has room, and then defers the rest by bouncing or merging them (see
// doc.go, "Deferral").
type builder struct {
	s     *Session
	set   *itemSet
	b     []byte
	limit int

	remaining int // the peer's pieces not handled yet
	doneRun   int // DONE answers not written yet
	opens     []open
	needs     int // NEED answers written

	deferring  bool
	groupBase  int // pieces per deferred group, plus one for the first groupExtra groups
	groupExtra int
	groupSize  int // pieces in the current group, when complete
	inGroup    int // pieces in the current group so far
	groupLo    bound

	extra []int32 // scratch
}

func (s *Session) newBuilder(pieces int, hdr []byte) *builder {
	return &builder{s: s, set: s.set, b: hdr, limit: s.maxFrame, remaining: pieces}
}

func (b *builder) done(int, int) error    { return nil }
func (b *builder) need(int, []byte) error { return nil }
func (b *builder) pieces(_, _ int, ps []piece) error {
	b.answer(ps, false)
	return nil
}

// doneLen is the size of the pending DONE run once written.
func (b *builder) doneLen() int {
	if b.doneRun == 0 {
		return 0
	}
	return wire.UvarintLen(uint64(b.doneRun-1) << 2)
}

func (b *builder) flushDone() {
	if b.doneRun > 0 {
		b.b = binary.AppendUvarint(b.b, uint64(b.doneRun-1)<<2|ansDone)
		b.doneRun = 0
	}
}

// fits reports whether an answer of n bytes to the current piece leaves room to defer the
// pieces after it: a bounce each, but never more than half the frame.
func (b *builder) fits(n int) bool {
	reserve := min((b.remaining-1)*groupCost, b.limit/2) + 8
	return len(b.b)+b.doneLen()+n+reserve <= b.limit
}

// answer handles a run of the peer's pieces: the pieces of one split, one merged piece, or (for
// Start) the whole space, which has no fingerprint.
func (b *builder) answer(ps []piece, virtual bool) {
	var infos [maxSplit]pieceInfo
	fps, mismatched := 0, 0
	if !b.deferring {
		for t := range ps {
			p, in := &ps[t], &infos[t]
			in.i, in.j = b.set.lower(p.lo), b.set.lower(p.hi)
			in.c, in.sum = b.set.unsettled(in.i, in.j)
			in.match = !p.list && !virtual && b.set.fingerprint(in.c, in.sum) == p.fp
			if !p.list {
				fps++
				if !in.match {
					mismatched++
				}
			}
		}
	}
	for t := range ps {
		p, in := &ps[t], &infos[t]
		if !b.deferring {
			switch {
			case p.list:
				if b.answerList(p, in) {
					b.remaining--
					continue
				}
			case in.match:
				b.doneRun++
				b.set.settle(in.i, in.j)
				b.remaining--
				continue
			default:
				k := kSparse
				if dense(virtual, fps, mismatched, in.c) {
					k = kDense
				}
				if sc, opens := b.full(p, in, k); b.fits(len(sc)) {
					b.flushDone()
					b.b = append(b.b, sc...)
					b.opens = append(b.opens, opens...)
					b.remaining--
					continue
				}
			}
			b.startDefer()
		}
		b.addToGroup(p)
	}
}

// dense reports whether a differing piece should be split kDense ways: when its siblings (the
// other pieces of the peer's split) mostly differed too, which means several differences per
// piece, or, with no siblings to judge by, when it is large.
func dense(virtual bool, siblings, mismatched, c int) bool {
	switch {
	case virtual:
		return true
	case siblings < 4:
		return c >= denseCount
	case mismatched == siblings:
		return true
	}
	return siblings >= 8 && 4*mismatched >= 3*siblings
}

// full builds this side's full answer to a piece whose fingerprint differs: the list of its
// items when it has at most listMax there, else a split into up to k ranges.
func (b *builder) full(p *piece, in *pieceInfo, k int) ([]byte, []open) {
	set := b.set
	var sc []byte
	var opens []open
	if in.c <= listMax {
		sc = append(sc, ansSplit, modeList)
		o := open{lo: p.lo, hi: p.hi, i: in.i, j: in.j, list: true}
		sc = b.appendList(sc, &o)
		return sc, append(opens, o)
	}
	k = min(k, in.c)
	// Boundaries: k-1 between the buckets, and, when this range holds this side's newest item,
	// a probe just after it (see doc.go, "Tails").
	var his [maxSplit]bound
	var hiIdx [maxSplit]int
	prev := p.lo.time
	for t := range k - 1 {
		s1 := (t + 1) * in.c / k
		y, x := set.nth(in.i, in.j, s1-1), set.nth(in.i, in.j, s1)
		his[t] = between(&set.items[y], &set.items[x], prev)
		hiIdx[t] = set.lower(his[t])
		prev = his[t].time
	}
	m := k - 1
	if after, _ := set.unsettled(in.j, set.len()); after == 0 {
		last := set.nth(in.i, in.j, in.c-1)
		if pb, ok := probe(&set.items[last], &p.hi); ok {
			his[m], hiIdx[m] = pb, set.lower(pb)
			m++
		}
	}
	his[m], hiIdx[m] = p.hi, in.j
	sc = binary.AppendUvarint(sc, uint64(m)<<2|ansSplit)
	lo, loIdx := p.lo, in.i
	for t := range m + 1 {
		hi, hj := his[t], hiIdx[t]
		cnt, sum := set.unsettled(loIdx, hj)
		// A bucket of at most one item is cheaper listed than fingerprinted.
		o := open{lo: lo, hi: hi, i: loIdx, j: hj, list: cnt <= 1}
		mode := modeFP
		if o.list {
			mode = modeList
		}
		if t < m {
			sc = appendBound(sc, &hi, lo.time, mode)
		} else {
			sc = binary.AppendUvarint(sc, uint64(mode))
		}
		if o.list {
			sc = b.appendList(sc, &o)
		} else {
			f := set.fingerprint(cnt, sum)
			sc = append(sc, f[:]...)
		}
		opens = append(opens, o)
		lo, loIdx = hi, hj
	}
	return sc, opens
}

// probe returns the lowest bound above last that needs no id prefix, (last.Time+1), if it is
// below hi: a probe must not skip any item the peer has after last.
func probe(last *Item, hi *bound) (bound, bool) {
	b := bound{time: last.Time + 1}
	if last.Time == math.MaxUint64 || compareBounds(&b, hi) >= 0 {
		return bound{}, false
	}
	return b, true
}

// appendList appends the count and short hashes of the unsettled items of o, and records them
// in o.listed.
func (b *builder) appendList(sc []byte, o *open) []byte {
	set := b.set
	n, _ := set.unsettled(o.i, o.j)
	sc = binary.AppendUvarint(sc, uint64(n))
	o.listed = make([]int32, 0, n)
	set.eachUnsettled(o.i, o.j, func(x int) {
		h := set.hashID(&set.items[x].ID)
		sc = append(sc, h[:]...)
		o.listed = append(o.listed, int32(x))
	})
	return sc
}

// answerList answers the peer's list: NEED for the listed ids this side lacks (or DONE), and
// this side's items in the range that the list lacks become owed. It reports false, changing
// nothing, when the answer might not fit.
func (b *builder) answerList(p *piece, in *pieceInfo) bool {
	// Check the room for the longest answer first: the hashing below costs one hash per item in
	// the range, which must only be spent on an answer that is sent (and settles the range).
	if !b.fits(1 + (p.n+7)/8) {
		return false
	}
	set := b.set
	var matched [listMax]bool
	extra := b.extra[:0]
	set.eachUnsettled(in.i, in.j, func(x int) {
		h := set.hashID(&set.items[x].ID)
		for t := range p.n {
			if !matched[t] && bytes.Equal(p.hash(t), h[:]) {
				matched[t] = true
				return
			}
		}
		extra = append(extra, int32(x))
	})
	b.extra = extra
	var bm [(listMax + 7) / 8]byte
	need := false
	for t := range p.n {
		if !matched[t] {
			bm[t/8] |= 1 << (t % 8)
			need = true
		}
	}
	if need {
		b.flushDone()
		b.b = append(b.b, ansNeed)
		b.b = append(b.b, bm[:(p.n+7)/8]...)
		b.needs++
	} else {
		b.doneRun++
	}
	b.s.owed = append(b.s.owed, extra...)
	set.settle(in.i, in.j)
	return true
}

// startDefer splits the remaining pieces into as many consecutive groups as the frame has room
// for: one piece each (a bounce) when there is room for all.
func (b *builder) startDefer() {
	b.deferring = true
	left := b.limit - len(b.b) - b.doneLen() - 4
	g := max(1, min(b.remaining, left/groupCost))
	b.groupBase, b.groupExtra = b.remaining/g, b.remaining%g
}

func (b *builder) addToGroup(p *piece) {
	if b.inGroup == 0 {
		b.groupLo = p.lo
		b.groupSize = b.groupBase
		if b.groupExtra > 0 {
			b.groupSize++
			b.groupExtra--
		}
	}
	b.inGroup++
	b.remaining--
	if b.inGroup < b.groupSize {
		return
	}
	set := b.set
	o := open{lo: b.groupLo, hi: p.hi}
	o.i, o.j = set.lower(o.lo), set.lower(o.hi)
	c, sum := set.unsettled(o.i, o.j)
	b.flushDone()
	b.b = binary.AppendUvarint(b.b, uint64(b.inGroup-1)<<2|ansGroup)
	if c <= 1 {
		o.list = true
		b.b = append(b.b, modeList)
		b.b = b.appendList(b.b, &o)
	} else {
		f := set.fingerprint(c, sum)
		b.b = append(b.b, modeFP)
		b.b = append(b.b, f[:]...)
	}
	b.opens = append(b.opens, o)
	b.inGroup = 0
}

// finish returns the frame and this side's new open ranges.
func (b *builder) finish() ([]byte, []open) {
	b.flushDone()
	return b.b, b.opens
}
