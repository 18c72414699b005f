package recon

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"slices"
	"sort"
)

// sum256 is a 256-bit integer in little-endian 64-bit limbs: a sum of ids modulo 2^256.
type sum256 [4]uint64

func (a sum256) add(b sum256) sum256 {
	var c uint64
	a[0], c = bits.Add64(a[0], b[0], 0)
	a[1], c = bits.Add64(a[1], b[1], c)
	a[2], c = bits.Add64(a[2], b[2], c)
	a[3], _ = bits.Add64(a[3], b[3], c)
	return a
}

func (a sum256) sub(b sum256) sum256 {
	var c uint64
	a[0], c = bits.Sub64(a[0], b[0], 0)
	a[1], c = bits.Sub64(a[1], b[1], c)
	a[2], c = bits.Sub64(a[2], b[2], c)
	a[3], _ = bits.Sub64(a[3], b[3], c)
	return a
}

// idSum reads an id as a little-endian integer, widened to 256 bits (so
// sums of up to 2^128 ids never wrap).
func idSum(id *[IDSize]byte) sum256 {
	return sum256{
		binary.LittleEndian.Uint64(id[0:]),
		binary.LittleEndian.Uint64(id[8:]),
	}
}

func compareItems(a, b Item) int {
	return cmp.Or(cmp.Compare(a.Time, b.Time), bytes.Compare(a.ID[:], b.ID[:]))
}

// span is a half-open interval [lo, hi) of indices into itemSet.items.
type span struct{ lo, hi int }

// itemSet is one session's snapshot of its Source: the items sorted by (Time, ID) without
// duplicates, prefix sums of their ids (so the sum over any index interval costs O(1)), and the
// settled spans: items that lie in a range both ends have finished reconciling. Fingerprints,
// counts and splits only ever look at unsettled items, which is what lets the protocol merge
// ranges that contain settled ones (see doc.go, "Deferral").
type itemSet struct {
	items []Item
	sums  []sum256 // sums[i] = sum of items[:i] ids mod 2^256

	spans   []span   // settled, sorted, disjoint and not adjacent
	cumN    []int    // cumN[t] = items in spans[:t]
	cumS    []sum256 // cumS[t] = sum of ids in spans[:t]
	pending []span   // settled since the last flush, any order

	salt [saltLen]byte
}

// newItemSet sorts and deduplicates items (in place) and computes the prefix sums.
func newItemSet(items []Item) *itemSet {
	if !slices.IsSortedFunc(items, compareItems) {
		slices.SortFunc(items, compareItems)
	}
	items = slices.CompactFunc(items, func(a, b Item) bool { return a == b })
	s := &itemSet{items: items, sums: make([]sum256, len(items)+1)}
	for i := range items {
		s.sums[i+1] = s.sums[i].add(idSum(&items[i].ID))
	}
	s.cumN, s.cumS = []int{0}, []sum256{{}}
	return s
}

func (s *itemSet) len() int { return len(s.items) }

// lower returns the index of the first item at or above b.
func (s *itemSet) lower(b bound) int {
	if b.inf {
		return len(s.items)
	}
	return sort.Search(len(s.items), func(i int) bool { return compareItemBound(&s.items[i], &b) >= 0 })
}

// settledBefore returns the number and id sum of the settled items with index below x.
func (s *itemSet) settledBefore(x int) (int, sum256) {
	t := sort.Search(len(s.spans), func(t int) bool { return s.spans[t].hi > x })
	n, sum := s.cumN[t], s.cumS[t]
	if t < len(s.spans) && s.spans[t].lo < x {
		n += x - s.spans[t].lo
		sum = sum.add(s.sums[x].sub(s.sums[s.spans[t].lo]))
	}
	return n, sum
}

// unsettled returns the number and id sum of the unsettled items with index in [i, j).
func (s *itemSet) unsettled(i, j int) (int, sum256) {
	ni, si := s.settledBefore(i)
	nj, sj := s.settledBefore(j)
	return (j - i) - (nj - ni), s.sums[j].sub(s.sums[i]).sub(sj.sub(si))
}

// unsettledBefore returns how many unsettled items have index below x.
func (s *itemSet) unsettledBefore(x int) int {
	n, _ := s.settledBefore(x)
	return x - n
}

// nth returns the index of the m-th (from 0) unsettled item with index in [i, j); there must be
// more than m of them.
func (s *itemSet) nth(i, j, m int) int {
	base := s.unsettledBefore(i)
	return i + sort.Search(j-i, func(t int) bool { return s.unsettledBefore(i+t+1)-base > m })
}

// eachUnsettled calls fn with the index of every unsettled item in [i, j), in order.
func (s *itemSet) eachUnsettled(i, j int, fn func(x int)) {
	t := sort.Search(len(s.spans), func(t int) bool { return s.spans[t].hi > i })
	for x := i; x < j; {
		if t < len(s.spans) && s.spans[t].lo <= x {
			x = s.spans[t].hi
			t++
			continue
		}
		end := j
		if t < len(s.spans) {
			end = min(end, s.spans[t].lo)
		}
		for ; x < end; x++ {
			fn(x)
		}
	}
}

// settle marks the items with index in [i, j) settled, from the next flush on.
func (s *itemSet) settle(i, j int) {
	if i < j {
		s.pending = append(s.pending, span{i, j})
	}
}

// flush merges the pending spans into the settled set and rebuilds the cumulative sums. It costs
// O(spans + pending log pending).
func (s *itemSet) flush() {
	if len(s.pending) == 0 {
		return
	}
	slices.SortFunc(s.pending, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	merged := make([]span, 0, len(s.spans)+len(s.pending))
	a, b := s.spans, s.pending
	for len(a) > 0 || len(b) > 0 {
		var next span
		if len(b) == 0 || (len(a) > 0 && a[0].lo <= b[0].lo) {
			next, a = a[0], a[1:]
		} else {
			next, b = b[0], b[1:]
		}
		if k := len(merged); k > 0 && next.lo <= merged[k-1].hi {
			merged[k-1].hi = max(merged[k-1].hi, next.hi)
			continue
		}
		merged = append(merged, next)
	}
	s.spans, s.pending = merged, s.pending[:0]
	s.cumN = slices.Grow(s.cumN[:1], len(merged))
	s.cumS = slices.Grow(s.cumS[:1], len(merged))
	for t, sp := range merged {
		s.cumN = append(s.cumN, s.cumN[t]+sp.hi-sp.lo)
		s.cumS = append(s.cumS, s.cumS[t].add(s.sums[sp.hi].sub(s.sums[sp.lo])))
	}
}

// fingerprint is the first fpLen bytes of SHA-256(salt || "F" || sum (32 bytes, little-endian)
// || uvarint(count)): Negentropy's fingerprint, keyed with the session salt and truncated to
// fpLen bytes.
func (s *itemSet) fingerprint(n int, sum sum256) [fpLen]byte {
	var b [saltLen + 1 + 32 + binary.MaxVarintLen64]byte
	copy(b[:], s.salt[:])
	b[saltLen] = 'F'
	for k, limb := range sum {
		binary.LittleEndian.PutUint64(b[saltLen+1+8*k:], limb)
	}
	l := binary.PutUvarint(b[saltLen+33:], uint64(n))
	h := sha256.Sum256(b[:saltLen+33+l])
	return [fpLen]byte(h[:fpLen])
}

// hashID is the short, salted hash of an id that id lists carry: the first hashLen bytes of
// SHA-256(salt || "I" || id).
func (s *itemSet) hashID(id *[IDSize]byte) [hashLen]byte {
	var b [saltLen + 1 + IDSize]byte
	copy(b[:], s.salt[:])
	b[saltLen] = 'I'
	copy(b[saltLen+1:], id[:])
	h := sha256.Sum256(b[:])
	return [hashLen]byte(h[:hashLen])
}
