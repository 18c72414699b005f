package sim

import (
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// oneRadio is the ONE's link (TestAgainstTheONE): 250 kB/s, one transfer
// at a time per device, a workload message an update of 1 s.
var oneRadio = Link{Bandwidth: 250000, Step: time.Second, Exclusive: true}

// burst is n messages of size bytes from `from` to `to` in team ti, sent
// in the first seconds.
func burst(ti, from, to, n, size int) []MessageSpec {
	var ms []MessageSpec
	for i := range n {
		ms = append(ms, MessageSpec{At: time.Duration(i+1) * time.Second, Team: ti, From: from, To: to, Size: size})
	}
	return ms
}

func up(at, d time.Duration, a, b int) []ContactEvent {
	return []ContactEvent{{At: at, A: a, B: b, Up: true}, {At: at + d, A: a, B: b}}
}

// TestRadioStep: ten 1 KB messages wait for a 5 s contact. At 250 kB/s
// the link alone carries them all; with Link.Step of 1 s each message
// holds the radios a second, so about five cross, as in the ONE.
func TestRadioStep(t *testing.T) {
	cfg := Config{Seed: 5, Devices: []DeviceSpec{{Name: "a"}, {Name: "b"}}, Teams: []TeamSpec{{Members: []int{0, 1}}},
		Contacts: up(time.Minute, 5*time.Second, 0, 1), Messages: burst(0, 0, 1, 10, 1000),
		Strategy: Strategies(0, 0)["members"], Duration: time.Hour, MaxFrame: recon.MinFrameSize, Link: Link{Bandwidth: 250000}}
	free, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Link = oneRadio
	stepped, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if free.Summary.Delivered != 10 {
		t.Fatalf("without Step: delivered %d of 10", free.Summary.Delivered)
	}
	if d := stepped.Summary.Delivered; d < 4 || d > 7 {
		t.Fatalf("with a 1 s Step over a 5 s contact: delivered %d of 10, want about 5", d)
	}
}

// TestRadioExclusive: a meets b and c at once, with ten messages for
// each. One radio carries about five messages over the 5 s, not five to
// each.
func TestRadioExclusive(t *testing.T) {
	cfg := Config{Seed: 6, Devices: []DeviceSpec{{Name: "a"}, {Name: "b"}, {Name: "c"}},
		Teams:    []TeamSpec{{Members: []int{0, 1}}, {Members: []int{0, 2}}},
		Contacts: append(up(time.Minute, 5*time.Second, 0, 1), up(time.Minute, 5*time.Second, 0, 2)...),
		Messages: append(burst(0, 0, 1, 10, 1000), burst(1, 0, 2, 10, 1000)...),
		Strategy: Strategies(0, 0)["members"], Duration: time.Hour, MaxFrame: recon.MinFrameSize, Link: oneRadio}
	cfg.Contacts[1], cfg.Contacts[2] = cfg.Contacts[2], cfg.Contacts[1] // sorted by time
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Summary.Delivered; d < 4 || d > 7 {
		t.Fatalf("one radio, two 5 s contacts: delivered %d of 20, want about 5", d)
	}
}

// TestRadioDeliverableFirst: a carries eight of c's messages for d
// (epidemic) when it meets b for 2 s with one message of its own for b.
// b also takes sealed envelopes, but what it can open goes first, as the
// ONE's routers offer deliverable messages first.
func TestRadioDeliverableFirst(t *testing.T) {
	cfg := Config{Seed: 7, Devices: []DeviceSpec{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}},
		// c and d's team first, so its sessions start first.
		Teams:    []TeamSpec{{Members: []int{2, 3}}, {Members: []int{0, 1}}},
		Contacts: append(up(10*time.Second, 100*time.Second, 2, 0), up(200*time.Second, 2*time.Second, 0, 1)...),
		Messages: append(burst(0, 2, 3, 8, 1000), MessageSpec{At: 150 * time.Second, Team: 1, From: 0, To: 1, Size: 1000}),
		Strategy: Strategies(0, 0)["epidemic"], Duration: time.Hour, MaxFrame: recon.MinFrameSize, Link: oneRadio}
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Relayed < 8 {
		t.Fatalf("a took %d of c's messages, want 8", res.Relayed)
	}
	if m := res.Messages[8]; len(m.Deliveries) != 1 {
		t.Fatalf("a's message to b: %d deliveries in a 2 s contact behind eight carried ones", len(m.Deliveries))
	}
}
