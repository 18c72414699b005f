package crdt

import (
	"bytes"
	"math"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
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

// MaxDrift is how far ahead of a Clock's reference time (see [Clock]) one
// peer's timestamp may be and still be merged.
const MaxDrift = time.Hour

// ClockQuorum is how many distinct authors must show timestamps beyond
// MaxDrift before a [Clock] concludes that its own wall clock is behind and
// jumps forward (see [Clock.ObserveFrom]).
const ClockQuorum = 2

// Plausible wall-clock range, in unix milliseconds. A wall clock that reads
// before minWall (2025-01-01 UTC) is certainly wrong (a phone whose battery
// died restarts in 1970 or 2000); no timestamp after maxWall (2200-01-01
// UTC) is merged from a peer, and a wall clock beyond it counts as maxWall,
// so the 48-bit millisecond field can never fill up.
const (
	minWall = 1_735_689_600_000
	maxWall = 7_258_118_400_000
)

// maxVoters bounds the authors a Clock remembers as being ahead.
const maxVoters = 64

// Clock issues HLC timestamps. The zero value is ready to use with the
// system clock. It is not safe for concurrent use.
//
// The rules, which keep ordering sensible when device clocks are a day
// wrong or reset to 1970, and keep one wildly wrong peer from dragging or
// freezing the team:
//
//  1. Monotonic: Next returns a timestamp greater than every earlier Next
//     result and every merged timestamp: the wall clock when it is ahead,
//     otherwise the last timestamp plus one. The counter carries into the
//     millisecond when it overflows (65,536 timestamps in one millisecond
//     borrow the next millisecond), so the clock never stops advancing.
//     Wall readings are clamped to the year 2200 and peers' timestamps beyond it
//     are never merged, so Next cannot reach math.MaxUint64 (it would
//     saturate there, around the year 10889).
//  2. Own timestamps are trusted: ObserveOwn merges a timestamp this device
//     issued before (read back from storage at start-up) whatever the wall
//     clock says. A device whose wall clock is far behind what it has issued
//     or merged (a dead battery) keeps counting from there.
//  3. The reference time is the later of the wall clock and the anchor: the
//     greatest own timestamp (rule 2) or quorum jump (rule 5). Moving the
//     anchor takes this device's own word or a quorum, never one peer's.
//  4. One peer moves the clock at most MaxDrift past the reference: Observe
//     and ObserveFrom merge a timestamp no more than MaxDrift ahead of the
//     reference time; a later one is not merged (the op is still kept and
//     shown; see Log.HeadsBefore for how new ops avoid naming it as a
//     parent until the clock reaches it). As single merges do not move the
//     anchor, a peer cannot walk the clock forward an hour at a time.
//  5. A quorum moves it further: ObserveFrom remembers, per author, the
//     greatest timestamp that was too far ahead. Once ClockQuorum distinct
//     authors agree (one author if the clock has nothing to go by: its wall
//     clock reads before 2025 and it has issued or merged nothing later) —
//     their remembered timestamps lie within MaxDrift of each other — the
//     clock merges the greatest remembered timestamp v such that
//     ClockQuorum of them lie in [v-MaxDrift, v], and anchors there. So a
//     device whose clock is a day behind catches up as soon as two
//     teammates' ops reach it, while one device far in the future, or two
//     that disagree by more than MaxDrift, move nobody. (Two are needed even
//     for a device in 1970 that has history: a device that followed a lone
//     liar would otherwise become the liar's second witness.) Authors must
//     be team members: one member could otherwise make up a quorum with
//     throwaway keys.
//
// Skewed lists the authors that are currently ahead, for display. What the
// rules do not fix: a device whose own clock runs far ahead issues
// timestamps in the future (HLCs never go back); its ops sort late until
// the others' clocks reach them. Two members whose clocks agree on a wrong
// future time pull everyone there (ordering still works, displayed times do
// not).
type Clock struct {
	// Now returns the wall-clock time; nil means time.Now.
	Now func() time.Time

	last   HLC // greatest timestamp issued or merged
	anchor HLC // greatest own or quorum timestamp (rule 3)
	ahead  map[identity.DeviceID]HLC
}

// wallMillis returns the wall clock in unix milliseconds, clamped to
// [0, maxWall], and whether it reads before minWall.
func (c *Clock) wallMillis() (ms uint64, implausible bool) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ms = min(clampMillis(now().UnixMilli()), maxWall)
	return ms, ms < minWall
}

// limit returns the greatest millisecond a peer's timestamp may have and be
// merged (rules 3 and 4).
func (c *Clock) limit() uint64 {
	wall, _ := c.wallMillis()
	ref := max(wall, c.anchor.Millis())
	return min(ref+uint64(MaxDrift/time.Millisecond), maxWall)
}

// Next returns a new timestamp, greater than every previous Next result and
// every merged timestamp.
func (c *Clock) Next() HLC {
	wall, _ := c.wallMillis()
	pt := HLC(wall) << 16
	switch {
	case pt > c.last:
		c.last = pt
	case c.last < math.MaxUint64:
		c.last++
	}
	return c.last
}

// Observe merges a timestamp of unknown or untrusted origin so that later
// Next results are greater than it, unless h is more than MaxDrift ahead of
// the reference time; then it is ignored. Prefer ObserveFrom for ops of team
// members and ObserveOwn for this device's own ops.
func (c *Clock) Observe(h HLC) {
	if h > c.last && h.Millis() <= c.limit() {
		c.last = h
	}
}

// ObserveFrom merges the timestamp h of an op by author, a team member: as
// Observe, and if h is too far ahead it counts as author's vote that this
// device's clock is behind (rule 5). It reports whether the clock now
// covers h (a later Next is greater than h).
func (c *Clock) ObserveFrom(author identity.DeviceID, h HLC) bool {
	if h <= c.last {
		return true
	}
	if h.Millis() <= c.limit() {
		c.last = h
		return true
	}
	if h.Millis() > maxWall {
		return false
	}
	if c.ahead == nil {
		c.ahead = make(map[identity.DeviceID]HLC)
	}
	if h > c.ahead[author] {
		c.ahead[author] = h
	}
	c.settle()
	return h <= c.last
}

// settle applies rule 5 and forgets votes the clock now covers.
func (c *Clock) settle() {
	_, implausible := c.wallMillis()
	quorum := ClockQuorum
	if implausible && c.last < HLC(minWall)<<16 {
		quorum = 1 // nothing to go by: follow the first teammate
	}
	if len(c.ahead) >= quorum {
		votes := make([]HLC, 0, len(c.ahead))
		for _, h := range c.ahead {
			votes = append(votes, h)
		}
		slices.Sort(votes)
		slices.Reverse(votes)
		// The greatest v such that quorum votes lie in [v-MaxDrift, v]:
		// votes[i] with votes[i+quorum-1] within MaxDrift below it.
		for i := 0; i+quorum-1 < len(votes); i++ {
			if votes[i].Millis()-votes[i+quorum-1].Millis() <= uint64(MaxDrift/time.Millisecond) {
				c.anchor = max(c.anchor, votes[i])
				c.last = max(c.last, votes[i])
				break
			}
		}
	}
	// Votes within reach of the (possibly new) reference are merged as
	// single observations would be; the rest stay, up to maxVoters.
	lim := c.limit()
	for a, h := range c.ahead {
		if h.Millis() <= lim {
			c.last = max(c.last, h)
			delete(c.ahead, a)
		}
	}
	for len(c.ahead) > maxVoters {
		var least identity.DeviceID
		first := true
		for a, h := range c.ahead {
			if first || h < c.ahead[least] || (h == c.ahead[least] && bytes.Compare(a[:], least[:]) < 0) {
				least, first = a, false
			}
		}
		delete(c.ahead, least)
	}
}

// ObserveOwn merges a timestamp this device issued earlier (read back from
// storage at start-up) unconditionally, and anchors the reference time
// there (rules 2 and 3).
func (c *Clock) ObserveOwn(h HLC) {
	c.last = max(c.last, h)
	c.anchor = max(c.anchor, h)
}

// Skewed returns, sorted, the authors whose latest timestamp given to
// ObserveFrom was too far ahead to merge and is still not covered: devices
// whose clocks run ahead (or, if many, this device's own clock is behind).
func (c *Clock) Skewed() []identity.DeviceID {
	lim := c.limit()
	var out []identity.DeviceID
	for a, h := range c.ahead {
		if h.Millis() > lim {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b identity.DeviceID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// Last returns the greatest timestamp issued or merged so far (0 at first).
func (c *Clock) Last() HLC { return c.last }
