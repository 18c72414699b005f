package crdt

import (
	"math"
	"testing"
	"time"
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

func TestClockSaturates(t *testing.T) {
	c := Clock{Now: func() time.Time { return time.UnixMilli(1<<48 - 1) }}
	c.Observe(HLC(math.MaxUint64))
	if got, want := c.Next(), HLC(math.MaxUint64); got != want {
		t.Errorf("Next at the end of time: got %d; want %d", got, want)
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
