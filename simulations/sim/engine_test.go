package sim

import (
	"math"
	"runtime/debug"
	"testing"
	"time"
)

// pair is two devices of one team with one contact and one message of
// size bytes sent before it.
func pair(contact time.Duration, bandwidth float64, size int) Config {
	return Config{
		Seed:     3,
		Devices:  []DeviceSpec{{Name: "a"}, {Name: "b"}},
		Teams:    []TeamSpec{{Members: []int{0, 1}}},
		Contacts: []ContactEvent{{At: time.Minute, A: 0, B: 1, Up: true}, {At: time.Minute + contact, A: 0, B: 1}},
		Messages: []MessageSpec{{At: time.Second, Team: 0, From: 0, To: 1, Size: size}},
		Strategy: Strategies(0, 0)["members"],
		Link:     Link{Bandwidth: bandwidth, Latency: 10 * time.Millisecond},
		Duration: time.Hour,
	}
}

// TestFrameLostWhenContactCloses: a 16 KB message over a 1 KB/s link needs
// about 16 s; a 5 s contact loses the frame in flight and delivers
// nothing, a 60 s one delivers it, at the time the bandwidth allows.
func TestFrameLostWhenContactCloses(t *testing.T) {
	short, err := Run(pair(5*time.Second, 1000, 16000))
	if err != nil {
		t.Fatal(err)
	}
	if short.Summary.Delivered != 0 || short.FramesLost == 0 {
		t.Fatalf("5 s contact: delivered %d, frames lost %d", short.Summary.Delivered, short.FramesLost)
	}
	long, err := Run(pair(time.Minute, 1000, 16000))
	if err != nil {
		t.Fatal(err)
	}
	if long.Summary.Delivered != 1 {
		t.Fatalf("60 s contact: delivered %d", long.Summary.Delivered)
	}
	d := long.Messages[0].Deliveries[0]
	lat := d.At - time.Minute
	if lat < 16*time.Second || lat > 30*time.Second || d.Hops != 1 {
		t.Fatalf("delivered %v after the contact opened over %d hops; want 16–30 s, 1 hop", lat, d.Hops)
	}
	if long.Devices[0].BytesSent < 16000 {
		t.Fatalf("sender sent %d bytes", long.Devices[0].BytesSent)
	}
}

// TestCarriersAndBuffer: a message crosses from a to c only through b,
// who is not in the team: members-only never delivers it, epidemic and
// spray do (b carries it sealed, as a relay would), and a buffer too small
// for it drops it at b. Under fieldmesh's strategy b carries it only while
// the team has enrolled no relay (e, a relay that meets no one): a team
// with a relay leans on it.
func TestCarriersAndBuffer(t *testing.T) {
	cfg := Config{
		Seed:    4,
		Devices: []DeviceSpec{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e", Relay: true}},
		Teams:   []TeamSpec{{Members: []int{0, 2}}, {Members: []int{1, 3}}},
		Contacts: []ContactEvent{
			{At: time.Minute, A: 0, B: 1, Up: true}, {At: 2 * time.Minute, A: 0, B: 1},
			{At: 10 * time.Minute, A: 1, B: 2, Up: true}, {At: 11 * time.Minute, A: 1, B: 2},
		},
		Messages: []MessageSpec{{At: time.Second, Team: 0, From: 0, To: 2, Size: 2000}},
		Duration: time.Hour,
	}
	for _, c := range []struct {
		st        Strategy
		relay     bool // e is enrolled for team 0
		delivered int
		hops      int
		dropped   int
	}{
		{Strategies(4, 0)["members"], false, 0, 0, 0},
		{Strategies(4, 0)["epidemic"], false, 1, 2, 0},
		{Strategies(4, 0)["spray"], false, 1, 2, 0},
		{Strategies(4, 0)["fieldmesh"], false, 1, 2, 0}, // no relay: b carries it
		{Strategies(4, 0)["fieldmesh"], true, 0, 0, 0},  // b is no relay, and the team has one
		{Strategies(4, 0)["epidemic"], true, 1, 2, 0},
		{Strategies(4, 1000)["epidemic"], false, 0, 0, 1},
	} {
		cfg.Strategy = c.st
		cfg.Teams[0].Relays = nil
		if c.relay {
			cfg.Teams[0].Relays = []int{4}
		}
		r, err := Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := r.Summary
		hops := 0
		if s.Delivered > 0 {
			hops = r.Messages[0].Deliveries[0].Hops
		}
		if s.Delivered != c.delivered || hops != c.hops || r.Dropped != c.dropped {
			t.Errorf("%s (buffer %d, relay %v): delivered %d over %d hops, dropped %d; want %d, %d, %d",
				c.st.Name, c.st.Buffer, c.relay, s.Delivered, hops, r.Dropped, c.delivered, c.hops, c.dropped)
		}
		if c.st.Buffer > 0 && r.Devices[1].BufferMax > c.st.Buffer {
			t.Errorf("buffer %d held %d bytes", c.st.Buffer, r.Devices[1].BufferMax)
		}
	}
}

// TestTTL: a carrier does not take a message past its TTL, so a member
// meeting it again and again does not hand it over (and count it relayed)
// each time; before the TTL it does, once.
func TestTTL(t *testing.T) {
	cfg := Config{
		Seed:     5,
		Devices:  []DeviceSpec{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}},
		Teams:    []TeamSpec{{Members: []int{0, 2}}, {Members: []int{1, 3}}},
		Messages: []MessageSpec{{At: time.Second, Team: 0, From: 0, To: 2, Size: 500, TTL: time.Hour}},
		Strategy: Strategies(0, 0)["epidemic"],
		Duration: 10 * time.Hour,
	}
	for _, c := range []struct {
		first   time.Duration
		relayed int
	}{{30 * time.Minute, 1}, {2 * time.Hour, 0}} {
		cfg.Contacts = nil
		for k := range 4 {
			at := c.first + time.Duration(k)*time.Hour
			cfg.Contacts = append(cfg.Contacts, ContactEvent{At: at, A: 0, B: 1, Up: true}, ContactEvent{At: at + time.Minute, A: 0, B: 1})
		}
		r, err := Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.Relayed != c.relayed {
			t.Errorf("first contact at %v: relayed %d, want %d", c.first, r.Relayed, c.relayed)
		}
	}
}

// TestTuneGC: Run's collector settings hold while any Run runs and are put back, both of them, once
// the last one returns; GOGC in the environment keeps its own target.
func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(137)
	defer debug.SetGCPercent(before)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(limit)
	outer := tuneGC()
	inner := tuneGC()
	if got := debug.SetGCPercent(-1); got != gcPercent {
		t.Errorf("GC percent during Run: %d; want %d", got, gcPercent)
	}
	debug.SetGCPercent(gcPercent)
	if ram := physicalMemory(); ram > 0 {
		if got := debug.SetMemoryLimit(-1); got != ram/4*3 {
			t.Errorf("memory limit during Run: %d; want %d (3/4 of %d)", got, ram/4*3, ram)
		}
	}
	inner()
	if got := debug.SetGCPercent(-1); got != gcPercent {
		t.Errorf("GC percent with one Run still running: %d; want %d", got, gcPercent)
	}
	debug.SetGCPercent(gcPercent)
	outer()
	if got := debug.SetGCPercent(-1); got != 137 {
		t.Errorf("GC percent after the last Run: %d; want 137 back", got)
	}
	debug.SetGCPercent(137)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit after the last Run: %d; want none", got)
	}
	t.Setenv("GOGC", "150")
	restore := tuneGC()
	if got := debug.SetGCPercent(-1); got != 137 {
		t.Errorf("GC percent with GOGC set: %d; want it left alone (137)", got)
	}
	debug.SetGCPercent(137)
	restore()
}
