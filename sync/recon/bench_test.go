package recon_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// benchEnvelope is the envelope size of the figures (issue 4 asks for bytes with and without
// the envelope bodies).
const benchEnvelope = 300

// benchSet is a sorted history; the benchmarks share them (building 10^6 items once keeps a
// -benchtime=1x run affordable).
type benchSet struct{ items []recon.Item }

func (s benchSet) Items() ([]recon.Item, error) { return s.items, nil }

func (s benchSet) Envelope(id [recon.IDSize]byte) ([]byte, error) { return benchEnvelopeOf(id), nil }

func benchEnvelopeOf(id [recon.IDSize]byte) []byte {
	env := make([]byte, benchEnvelope)
	copy(env, id[:])
	return env
}

var (
	baseOnce sync.Once
	base     []recon.Item
	partials sync.Map // benchCase -> []recon.Item
	everyRun sync.Map // benchCase -> exchange
)

// benchBase returns a history of n items: one every 30 seconds as crdt.HLC timestamps, random
// ids.
func benchBase(n int) []recon.Item {
	baseOnce.Do(func() {
		const total = 1_000_000
		r := rand.New(rand.NewPCG(1, 2))
		base = make([]recon.Item, total)
		for i := range base {
			base[i].Time = uint64(1_700_000_000_000+30_000*i) << 16
			for k := 0; k < len(base[i].ID); k += 8 {
				binary.LittleEndian.PutUint64(base[i].ID[k:], r.Uint64())
			}
		}
	})
	return base[:n]
}

type benchCase struct {
	n, d  int
	shape string // "tail" or "scattered"
}

// partial returns the history without d items: the last d, or d random ones.
func (c benchCase) partial() []recon.Item {
	if v, ok := partials.Load(c); ok {
		return v.([]recon.Item)
	}
	full := benchBase(c.n)
	var p []recon.Item
	if c.shape == "tail" {
		p = full[:c.n-c.d]
	} else {
		r := rand.New(rand.NewPCG(uint64(c.n), uint64(c.d)))
		drop := make(map[int]bool, c.d)
		for len(drop) < c.d {
			drop[r.IntN(c.n)] = true
		}
		p = make([]recon.Item, 0, c.n-c.d)
		for i, it := range full {
			if !drop[i] {
				p = append(p, it)
			}
		}
	}
	partials.Store(c, p)
	return p
}

// exchange is what one run of a protocol cost.
type exchange struct {
	wire, envBytes uint64 // frame bytes both ways; the envelope bodies among them
	flights        int
	received       int
}

func (e exchange) overhead() uint64 { return e.wire - e.envBytes }
func (e exchange) roundTrips() int  { return (e.flights + 1) / 2 }

// drive runs two sessions against each other in memory, counting bytes and flights.
func drive(b *testing.B, ini, res *recon.Session) exchange {
	var e exchange
	first, err := ini.Start()
	if err != nil {
		b.Fatal(err)
	}
	e.flights = 1
	sides := [2]*recon.Session{res, ini}
	queue := [][]byte{first}
	to := 0 // 0: responder
	var done [2]bool
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		e.wire += uint64(len(f))
		out, recv, d, err := sides[to].Handle(f)
		if err != nil {
			b.Fatal(err)
		}
		done[to] = d
		e.received += len(recv)
		for _, env := range recv {
			e.envBytes += uint64(len(env))
		}
		if len(out) > 0 {
			if len(queue) > 0 {
				b.Fatal("answer before the end of the flight")
			}
			queue, to = out, 1-to
			e.flights++
		}
	}
	if !done[0] || !done[1] {
		b.Fatal("exchange did not finish")
	}
	return e
}

// everyIDRun is the "send every id" baseline for a case (sendEveryID), computed once per case.
func everyIDRun(c benchCase) exchange {
	if v, ok := everyRun.Load(c); ok {
		return v.(exchange)
	}
	e := sendEveryID(c.partial(), benchBase(c.n))
	everyRun.Store(c, e)
	return e
}

// everyIDFrame is the frame size of the "send every id" baseline: the foundation's catch-up
// protocol (removed with /fieldmesh/sync/1.0.0) at its default.
const everyIDFrame = 1 << 20

// sendEveryID is what the "send every id" baseline costs between an initiator holding ini and a
// responder holding res: the wire bytes, envelope bytes, flights and envelopes of the
// foundation's catch-up protocol (which no longer ships), counted without running it. The initiator
// lists every id it has (recon.IDSize bytes each; times are not sent) in frames of at most everyIDFrame
// bytes, one frame per round trip (the responder answers each but the last with a 2-byte NEXT);
// the responder then gives the envelopes the initiator lacks (each after its id and length) and
// lists the ids it lacks, and the initiator gives those. A frame is a version, a type and a
// flags byte, a uvarint count, then its entries; an envelope list is at least one frame, and
// so is an id list.
func sendEveryID(ini, res []recon.Item) exchange {
	const prefix = 3 // version, type, flags
	uvarintLen := func(v int) int { return len(binary.AppendUvarint(nil, uint64(v))) }
	idFrames := func(n int) (frames int, bytes uint64) {
		per := (everyIDFrame - prefix - uvarintLen(everyIDFrame/recon.IDSize)) / recon.IDSize
		for {
			k := min(per, n)
			frames++
			bytes += uint64(prefix + uvarintLen(k) + recon.IDSize*k)
			if n -= k; n == 0 {
				return frames, bytes
			}
		}
	}
	var e exchange
	giveFrames := func(envs []int) {
		budget := everyIDFrame - prefix - uvarintLen(everyIDFrame/(recon.IDSize+1))
		body, n := 0, 0
		flush := func() {
			e.wire += uint64(prefix + uvarintLen(n) + body)
			body, n = 0, 0
		}
		frames := 0
		for _, size := range envs {
			entry := recon.IDSize + uvarintLen(size) + size
			if n > 0 && body+entry > budget {
				flush()
				frames++
			}
			body += entry
			n++
			e.envBytes += uint64(size)
			e.received++
		}
		if n > 0 || frames == 0 {
			flush()
		}
	}
	has := func(items []recon.Item) map[[recon.IDSize]byte]bool {
		m := make(map[[recon.IDSize]byte]bool, len(items))
		for _, it := range items {
			m[it.ID] = true
		}
		return m
	}
	lacks := func(from []recon.Item, to map[[recon.IDSize]byte]bool) []int {
		var sizes []int
		for _, it := range from {
			if !to[it.ID] {
				sizes = append(sizes, len(benchEnvelopeOf(it.ID)))
			}
		}
		return sizes
	}
	iniHas, resHas := has(ini), has(res)
	haves, bytes := idFrames(len(ini))
	e.wire += bytes + uint64(2*(haves-1))
	e.flights = 2*haves - 1 + 1 // the HAVE and NEXT flights, then the responder's answer
	giveFrames(lacks(res, iniHas))
	wanted := lacks(ini, resHas)
	_, bytes = idFrames(len(wanted))
	e.wire += bytes
	if len(wanted) > 0 {
		e.flights++
		giveFrames(wanted)
	}
	return e
}

// BenchmarkReconcile measures range-based reconciliation for a history of n envelopes (10^6;
// 10^4 with -short) of which the initiator lacks d, as a recent tail (a device that was away) or
// scattered (gossip losses), against the "send every id" baseline (sendEveryID) for the same
// sets. It reports, per exchange: overhead-B, the bytes exchanged both ways without the
// envelope bodies; wire-B, with them (300-byte envelopes); round-trips (flights/2, rounded up);
// B/missing, overhead per missing item; and every-id-overhead-B, every-id-round-trips and
// x-every-id (overhead ratio) for the baseline. ns/op is the reconciliation alone.
func BenchmarkReconcile(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 10_000
	}
	for _, shape := range []string{"tail", "scattered"} {
		for _, d := range []int{1, 100, 10_000} {
			d = min(d, n/10)
			c := benchCase{n: n, d: d, shape: shape}
			b.Run(fmt.Sprintf("n=%d/%s/d=%d", n, shape, d), func(b *testing.B) {
				full, partial := benchSet{benchBase(n)}, benchSet{c.partial()}
				every := everyIDRun(c)
				b.ResetTimer()
				var e exchange
				for b.Loop() {
					e = drive(b, recon.NewInitiator(partial, 0), recon.NewResponder(full, 0))
				}
				if e.received != d || every.received != d {
					b.Fatalf("received %d (every id: %d) envelopes; want %d", e.received, every.received, d)
				}
				b.ReportMetric(float64(e.overhead()), "overhead-B")
				b.ReportMetric(float64(e.wire), "wire-B")
				b.ReportMetric(float64(e.roundTrips()), "round-trips")
				b.ReportMetric(float64(e.overhead())/float64(d), "B/missing")
				b.ReportMetric(float64(every.overhead()), "every-id-overhead-B")
				b.ReportMetric(float64(every.roundTrips()), "every-id-round-trips")
				b.ReportMetric(float64(e.overhead())/float64(every.overhead()), "x-every-id")
			})
		}
	}
}

// BenchmarkSmallFrames is BenchmarkReconcile's scattered case at the 4 KiB minimum frame size,
// where deferral to later rounds does most of the work.
func BenchmarkSmallFrames(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 10_000
	}
	for _, d := range []int{100, 10_000} {
		d = min(d, n/10)
		c := benchCase{n: n, d: d, shape: "scattered"}
		b.Run(fmt.Sprintf("n=%d/scattered/d=%d", n, d), func(b *testing.B) {
			full, partial := benchSet{benchBase(n)}, benchSet{c.partial()}
			var e exchange
			for b.Loop() {
				e = drive(b, recon.NewInitiator(partial, recon.MinFrameSize), recon.NewResponder(full, recon.MinFrameSize))
			}
			b.ReportMetric(float64(e.overhead()), "overhead-B")
			b.ReportMetric(float64(e.roundTrips()), "round-trips")
			b.ReportMetric(float64(e.overhead())/float64(d), "B/missing")
		})
	}
}
