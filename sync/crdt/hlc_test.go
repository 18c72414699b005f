package crdt

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// fakeNow is a settable wall clock.
type fakeNow struct{ t time.Time }

func (f *fakeNow) Now() time.Time { return f.t }

func TestHLCParts(t *testing.T) {
	tm := time.UnixMilli(1_700_000_000_123)
	h := MakeHLC(tm, 7)
	if got, want := uint64(h), uint64(1_700_000_000_123)<<16|7; got != want {
		t.Errorf("MakeHLC: got %d; want %d", got, want)
	}
	if got, want := h.Millis(), uint64(1_700_000_000_123); got != want {
		t.Errorf("Millis: got %d; want %d", got, want)
	}
	if got, want := h.Counter(), uint16(7); got != want {
		t.Errorf("Counter: got %d; want %d", got, want)
	}
	if got, want := h.Time(), tm; !got.Equal(want) {
		t.Errorf("Time: got %v; want %v", got, want)
	}
	if got, want := MakeHLC(time.Unix(-5, 0), 1), HLC(1); got != want {
		t.Errorf("MakeHLC(before 1970): got %d; want %d", got, want)
	}
	if got, want := MakeHLC(time.Unix(1<<50, 0), 0).Millis(), uint64(1<<48-1); got != want {
		t.Errorf("MakeHLC(far future) millis: got %d; want %d", got, want)
	}
}

func TestClockMonotonic(t *testing.T) {
	f := &fakeNow{t: time.UnixMilli(1_000_000)}
	c := Clock{Now: f.Now}
	steps := []struct {
		name    string
		advance time.Duration
		want    HLC
	}{
		{"first", 0, 1_000_000 << 16},
		{"same ms", 0, 1_000_000<<16 | 1},
		{"same ms again", 0, 1_000_000<<16 | 2},
		{"forward", time.Millisecond, 1_000_001 << 16},
		{"backwards 1s", -time.Second, 1_000_001<<16 | 1},
		{"still behind", 500 * time.Millisecond, 1_000_001<<16 | 2},
		{"caught up", time.Second, 1_000_501 << 16},
	}
	prev := HLC(0)
	for _, s := range steps {
		f.t = f.t.Add(s.advance)
		got := c.Next()
		if got != s.want {
			t.Errorf("%s: Next got %d (%d|%d); want %d (%d|%d)", s.name, got, got.Millis(), got.Counter(), s.want, s.want.Millis(), s.want.Counter())
		}
		if got <= prev {
			t.Errorf("%s: Next got %d; want > %d", s.name, got, prev)
		}
		prev = got
	}
	if got, want := c.Last(), prev; got != want {
		t.Errorf("Last: got %d; want %d", got, want)
	}
}

func TestClockCounterOverflow(t *testing.T) {
	f := &fakeNow{t: time.UnixMilli(5000)}
	c := Clock{Now: f.Now}
	prev := c.Next()
	for range 70000 { // more than 2^16 in one millisecond
		h := c.Next()
		if h <= prev {
			t.Fatalf("Next got %d; want > %d", h, prev)
		}
		prev = h
	}
	if got, want := prev.Millis(), uint64(5001); got != want {
		t.Errorf("after overflow millis: got %d; want %d (carry)", got, want)
	}
}

func TestClockObserve(t *testing.T) {
	now := time.UnixMilli(10_000_000)
	cases := []struct {
		name     string
		observed HLC
		want     HLC // Next after Observe
	}{
		{"past", MakeHLC(now.Add(-time.Minute), 3), MakeHLC(now, 0)},
		{"same ms ahead counter", MakeHLC(now, 9), MakeHLC(now, 10)},
		{"slightly ahead", MakeHLC(now.Add(time.Second), 4), MakeHLC(now.Add(time.Second), 5)},
		{"at max drift", MakeHLC(now.Add(MaxDrift), 0), MakeHLC(now.Add(MaxDrift), 1)},
		{"beyond max drift", MakeHLC(now.Add(MaxDrift+time.Millisecond), 0), MakeHLC(now, 0)},
		{"wildly future", HLC(math.MaxUint64), MakeHLC(now, 0)},
	}
	for _, tc := range cases {
		c := Clock{Now: func() time.Time { return now }}
		c.Observe(tc.observed)
		if got := c.Next(); got != tc.want {
			t.Errorf("%s: Next after Observe(%d) got %d; want %d", tc.name, tc.observed, got, tc.want)
		}
	}
	// Observing something older than what was issued does not go back.
	c := Clock{Now: func() time.Time { return now }}
	a := c.Next()
	c.Observe(a - 100)
	if b := c.Next(); b <= a {
		t.Errorf("Next after Observe(older) got %d; want > %d", b, a)
	}
}

// TestClockNoFreeze checks that no timestamp from peers, however far ahead
// and however many agree, stops the clock from advancing with the wall
// clock, and that a wall clock past the year 2200 still leaves room to count.
func TestClockNoFreeze(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f := &fakeNow{t: now}
	c := Clock{Now: f.Now}
	c.Observe(HLC(math.MaxUint64))
	c.ObserveFrom(dev(1), HLC(math.MaxUint64))
	c.ObserveFrom(dev(2), HLC(math.MaxUint64))
	c.ObserveFrom(dev(3), HLC(math.MaxUint64-1))
	if got, want := c.Next(), MakeHLC(now, 0); got != want {
		t.Errorf("Next after peers at the end of time: got %d; want %d (the wall clock)", got, want)
	}
	f.t = f.t.Add(time.Second)
	if got, want := c.Next(), MakeHLC(f.t, 0); got != want {
		t.Errorf("Next a second later: got %d; want %d", got, want)
	}

	// A wall clock at the end of time counts from the year 2200.
	c = Clock{Now: func() time.Time { return time.Unix(1<<50, 0) }}
	prev := c.Next()
	if got, want := prev, HLC(maxWall)<<16; got != want {
		t.Errorf("Next with a wall clock past 2200: got %d; want %d", got, want)
	}
	for range 200_000 {
		h := c.Next()
		if h <= prev {
			t.Fatalf("Next got %d; want > %d", h, prev)
		}
		prev = h
	}
	if prev >= HLC(math.MaxUint64)-1<<40 {
		t.Errorf("Next near saturation: %d", prev)
	}
}

// dev returns a device id made of b.
func dev(b byte) identity.DeviceID { return identity.DeviceID{b} }

// TestClockSkew walks through the clock rules with wall clocks a day wrong
// and in 1970.
func TestClockSkew(t *testing.T) {
	T := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) // the true time
	at := func(d time.Duration) HLC { return MakeHLC(T.Add(d), 0) }
	A, B, L1, L2 := dev(1), dev(2), dev(3), dev(4)
	type obs struct {
		from identity.DeviceID // zero: ObserveOwn
		h    HLC
	}
	own := identity.DeviceID{}
	tests := []struct {
		name        string
		wall        time.Time
		obs         []obs
		wantAtLeast HLC // Next after the observations is greater than this
		wantBelow   HLC // ... and less than this
		skewed      []identity.DeviceID
	}{
		{
			name:        "a day behind: one teammate is not enough",
			wall:        T.Add(-24 * time.Hour),
			obs:         []obs{{A, at(0)}},
			wantAtLeast: at(-24*time.Hour) - 1, wantBelow: at(-23 * time.Hour),
			skewed: []identity.DeviceID{A},
		},
		{
			name:        "a day behind: two teammates that agree move it",
			wall:        T.Add(-24 * time.Hour),
			obs:         []obs{{A, at(0)}, {B, at(-30 * time.Minute)}},
			wantAtLeast: at(0), wantBelow: at(time.Minute),
		},
		{
			name:        "a day behind: after a quorum jump, one teammate within MaxDrift is merged",
			wall:        T.Add(-24 * time.Hour),
			obs:         []obs{{A, at(0)}, {B, at(-30 * time.Minute)}, {A, at(50 * time.Minute)}},
			wantAtLeast: at(50 * time.Minute), wantBelow: at(51 * time.Minute),
		},
		{
			name:        "a day behind: two teammates that disagree by more than MaxDrift do not",
			wall:        T.Add(-24 * time.Hour),
			obs:         []obs{{A, at(0)}, {B, at(-3 * time.Hour)}},
			wantAtLeast: at(-24*time.Hour) - 1, wantBelow: at(-23 * time.Hour),
			skewed: []identity.DeviceID{A, B},
		},
		{
			name:        "one peer a day ahead moves nobody",
			wall:        T,
			obs:         []obs{{L1, at(24 * time.Hour)}, {A, at(-time.Minute)}},
			wantAtLeast: at(0) - 1, wantBelow: at(time.Second),
			skewed: []identity.DeviceID{L1},
		},
		{
			name:        "two peers far ahead that disagree move nobody",
			wall:        T,
			obs:         []obs{{L1, at(24 * time.Hour)}, {L2, at(48 * time.Hour)}},
			wantAtLeast: at(0) - 1, wantBelow: at(time.Second),
			skewed: []identity.DeviceID{L1, L2},
		},
		{
			name: "one peer cannot walk the clock forward an hour at a time",
			wall: T,
			obs: []obs{
				{L1, at(59 * time.Minute)}, {L1, at(118 * time.Minute)}, {L1, at(177 * time.Minute)},
			},
			wantAtLeast: at(59 * time.Minute), wantBelow: at(60 * time.Minute),
			skewed: []identity.DeviceID{L1},
		},
		{
			name:        "1970 with own history: keeps counting from it",
			wall:        time.Unix(0, 0),
			obs:         []obs{{own, at(-5 * time.Hour)}},
			wantAtLeast: at(-5 * time.Hour), wantBelow: at(-5*time.Hour) + 100,
		},
		{
			name:        "1970 with own history: a teammate within MaxDrift of it is merged",
			wall:        time.Unix(0, 0),
			obs:         []obs{{own, at(-5 * time.Hour)}, {A, at(-4*time.Hour - time.Minute)}},
			wantAtLeast: at(-4*time.Hour - time.Minute), wantBelow: at(-4 * time.Hour),
		},
		{
			name:        "1970 with own history: one teammate far ahead is not enough",
			wall:        time.Unix(0, 0),
			obs:         []obs{{own, at(-5 * time.Hour)}, {A, at(0)}},
			wantAtLeast: at(-5 * time.Hour), wantBelow: at(-5*time.Hour) + 100,
			skewed: []identity.DeviceID{A},
		},
		{
			name:        "1970 with own history: two teammates that agree move it",
			wall:        time.Unix(0, 0),
			obs:         []obs{{own, at(-5 * time.Hour)}, {A, at(0)}, {B, at(-time.Minute)}},
			wantAtLeast: at(0), wantBelow: at(time.Second),
		},
		{
			name:        "fresh device in 1970 follows the first teammate",
			wall:        time.Unix(0, 0),
			obs:         []obs{{A, at(0)}},
			wantAtLeast: at(0), wantBelow: at(time.Second),
		},
	}
	for _, tt := range tests {
		c := Clock{Now: func() time.Time { return tt.wall }}
		for _, o := range tt.obs {
			if o.from == own {
				c.ObserveOwn(o.h)
			} else {
				c.ObserveFrom(o.from, o.h)
			}
		}
		got := c.Next()
		if got <= tt.wantAtLeast || got >= tt.wantBelow {
			t.Errorf("%s: Next got %v; want in (%v, %v)", tt.name, got.Time().UTC(), tt.wantAtLeast.Time().UTC(), tt.wantBelow.Time().UTC())
		}
		if got := c.Skewed(); !reflect.DeepEqual(got, tt.skewed) {
			t.Errorf("%s: Skewed got %v; want %v", tt.name, got, tt.skewed)
		}
		if next := c.Next(); next <= got {
			t.Errorf("%s: second Next got %d; want > %d", tt.name, next, got)
		}
	}
}

// TestClockObserveFromReports checks ObserveFrom's result.
func TestClockObserveFromReports(t *testing.T) {
	T := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	c := Clock{Now: func() time.Time { return T }}
	if !c.ObserveFrom(dev(1), MakeHLC(T.Add(time.Minute), 0)) {
		t.Errorf("ObserveFrom(a minute ahead): got false; want true")
	}
	if c.ObserveFrom(dev(1), MakeHLC(T.Add(24*time.Hour), 0)) {
		t.Errorf("ObserveFrom(a day ahead): got true; want false")
	}
	if !c.ObserveFrom(dev(2), MakeHLC(T.Add(24*time.Hour+time.Minute), 0)) {
		t.Errorf("ObserveFrom(a day ahead, second author): got false; want true (quorum)")
	}
	if got := c.Skewed(); len(got) != 0 {
		t.Errorf("Skewed after the quorum: got %v; want none", got)
	}
}

// TestClockVotersBounded checks that a flood of authors far ahead keeps at
// most maxVoters votes.
func TestClockVotersBounded(t *testing.T) {
	T := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	c := Clock{Now: func() time.Time { return T }}
	for i := range 500 {
		var d identity.DeviceID
		d[0], d[1] = byte(i), byte(i>>8)
		c.ObserveFrom(d, MakeHLC(T.Add(time.Duration(2+i*2)*time.Hour), 0))
	}
	if got := len(c.Skewed()); got > maxVoters {
		t.Errorf("Skewed: %d authors; want at most %d", got, maxVoters)
	}
	if got := c.Next(); got >= MakeHLC(T.Add(time.Hour), 0) {
		t.Errorf("Next after authors that all disagree: got %v; want about %v", got.Time().UTC(), T)
	}
}

func TestClockZeroValue(t *testing.T) {
	var c Clock
	before := time.Now().Add(-time.Second)
	h := c.Next()
	if h.Time().Before(before) || h.Time().After(time.Now().Add(time.Second)) {
		t.Errorf("zero Clock Next: got %v; want about now", h.Time())
	}
}
