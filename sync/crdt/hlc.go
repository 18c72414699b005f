package crdt

import (
	"math"
	"time"
)

// HLC is a hybrid logical clock timestamp: unix milliseconds << 16 | a 16-bit
// logical counter. Comparing two HLCs as integers orders them in time.
type HLC uint64

// MakeHLC returns the timestamp of t's unix millisecond with the given
// counter. Times before 1970 give millisecond 0; times past the 48-bit
// millisecond range (year 10889) saturate.
func MakeHLC(t time.Time, counter uint16) HLC {
	return HLC(clampMillis(t.UnixMilli()))<<16 | HLC(counter)
}

const maxMillis = 1<<48 - 1

func clampMillis(ms int64) uint64 {
	switch {
	case ms < 0:
		return 0
	case ms > maxMillis:
		return maxMillis
	}
	return uint64(ms)
}

// Time returns the wall-clock part of h (millisecond precision, local zone).
func (h HLC) Time() time.Time { return time.UnixMilli(int64(h.Millis())) }

// Millis returns the unix milliseconds part of h.
func (h HLC) Millis() uint64 { return uint64(h) >> 16 }

// Counter returns the logical counter part of h.
func (h HLC) Counter() uint16 { return uint16(h) }

// MaxDrift is how far ahead of the local wall clock a timestamp given to
// [Clock.Observe] may be and still be merged.
const MaxDrift = time.Hour

// Clock issues HLC timestamps. The zero value is ready to use with the
// system clock. It is not safe for concurrent use.
//
// Next returns a timestamp greater than every earlier Next result and every
// timestamp merged by Observe, even if the wall clock goes backwards (the
// logical counter then advances; a counter overflow carries into the
// millisecond, which stays monotonic).
//
// Observe guards against a peer with a wildly wrong clock in a basic way:
// a timestamp more than [MaxDrift] ahead of the local wall clock is not
// merged (otherwise one bad peer could drag every clock in the team into the
// far future, forever). The cost is that an op made after observing such a
// timestamp may sort before it. Issue #4 hardens this (per-peer accounting
// and surfacing of skewed devices).
type Clock struct {
	// Now returns the wall-clock time; nil means time.Now.
	Now func() time.Time

	last HLC
}

func (c *Clock) wall() HLC {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	return MakeHLC(now(), 0)
}

// Next returns a new timestamp, greater than every previous Next result and
// every merged Observe argument. It saturates at math.MaxUint64 rather than
// wrap (reachable only around the year 10889).
func (c *Clock) Next() HLC {
	pt := c.wall()
	switch {
	case pt > c.last:
		c.last = pt
	case c.last < math.MaxUint64:
		c.last++
	}
	return c.last
}

// Observe merges a timestamp received from a peer (or read back from
// storage at start-up) so that later Next results are greater than it,
// unless h is more than MaxDrift ahead of the wall clock; then it is ignored.
func (c *Clock) Observe(h HLC) {
	if h <= c.last {
		return
	}
	if h.Millis() > c.wall().Millis()+uint64(MaxDrift/time.Millisecond) {
		return
	}
	c.last = h
}

// Last returns the greatest timestamp issued or merged so far (0 at first).
func (c *Clock) Last() HLC { return c.last }
