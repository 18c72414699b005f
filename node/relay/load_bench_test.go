package relay

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// The load benchmark's size. Its defaults keep `make bench` (every benchmark once) short; `make
// relay-load` runs the issue's figures: 10^6 envelopes of 100 teams, 50 devices at once.
var (
	loadEnvelopes = flag.Int("relay.envelopes", 20_000, "BenchmarkRelayLoad: envelopes the relay holds before the sessions")
	loadTopics    = flag.Int("relay.topics", 20, "BenchmarkRelayLoad: topics (teams) the envelopes are spread over, evenly")
	loadDevices   = flag.Int("relay.devices", 10, "BenchmarkRelayLoad: devices reconciling with the relay at once, one topic each (round robin)")
	loadMissing   = flag.Float64("relay.missing", 0.01, "BenchmarkRelayLoad: fraction of its topic's envelopes each device lacks (chosen at random)")
	loadNew       = flag.Int("relay.new", 10, "BenchmarkRelayLoad: envelopes each device holds that the relay lacks")
	loadSeed      = flag.Uint64("relay.seed", 0, "BenchmarkRelayLoad: seed of the envelopes and the devices' subsets (0: random; the seed is logged)")
)

const (
	// loadMinSize and loadMaxSize bound the envelopes' sizes (uniform), in bytes: a short text
	// message sealed in the chain form.
	loadMinSize, loadMaxSize = 300, 400
	// loadSpan is how far back the filled envelopes' times reach: a week, inside the retention.
	loadSpan = 7 * 24 * time.Hour
	// loadIdleRuns is how many sessions, one at a time, measure the idle baseline (their median).
	loadIdleRuns = 5
	// loadFillBatch is how many envelopes one fill call stores.
	loadFillBatch = 4096
)

// BenchmarkRelayLoad is the relay under load: a relay holding -relay.envelopes envelopes (300–400
// bytes, sealed-looking, valid headers) of -relay.topics teams serves reconciliation to
// -relay.devices devices at once. Each device is a libp2p host on loopback TCP, connected to the
// relay and enrolled (relayclient.Enrol) for one topic; it holds its topic's envelopes except a
// random -relay.missing of them, plus -relay.new of its own the relay lacks, and runs one
// reconciliation session (recon.Protocol, device as initiator) against the real relay: its host,
// handleSync and its encrypted Badger store. The store is filled directly (Relay.store, which is what
// a session's envelopes go through), since filling is not what is measured.
//
// One op is one round: every device's session started at the same moment. It reports, over every
// session of every round: p50-ms and p99-ms, a session's wall time (open stream to the relay's
// close, so the relay has stored what the device sent); x-idle-p50 and x-idle-p99, those over the
// median of loadIdleRuns sessions on the idle relay in the same run (the machine is shared: ratios
// travel, milliseconds do not); B/session, frame bytes both ways; overhead-B/session, without the
// envelope bodies; x-every-id, that overhead over the least a "send every id" exchange would cost
// (32 bytes for each id the device holds and for each the relay lacks); x-serial, the fastest round
// over as many idle sessions one after another (below 1: concurrency helps); relay-started-sessions,
// the sessions the relay opened itself during the rounds: its follow-up to an enrolment whose
// session has not completed within followerDelay (these devices refuse them; a node would run them);
// relay-rss-MiB, the process's VmRSS with the relay filled and no device yet; rss-MiB, before the
// round; peak-rss-MiB, its VmHWM during the rounds (reset through /proc/self/clear_refs; the whole
// run's peak where that is refused). Process figures include the test binary, and from rss-MiB on
// the devices (their ids, not their envelopes). After each round it checks that
// every device holds every envelope its topic held and the relay received each device's own, and
// that the relay lost none (its store holds every envelope filled or sent, and each one a device
// received is byte for byte the relay's).
//
// Run at the issue's size with `make relay-load`; smaller with e.g. `make relay-load
// RELAY_ENVELOPES=100000`. Use -benchtime=1x: a round is seconds long.
func BenchmarkRelayLoad(b *testing.B) {
	n, nt, nd := *loadEnvelopes, *loadTopics, *loadDevices
	switch {
	case nt < 1 || nd < 1 || n < nt:
		b.Fatalf("relay load: %d envelopes, %d topics, %d devices: want at least one topic, one device and an envelope a topic", n, nt, nd)
	case *loadMissing < 0 || *loadMissing > 1 || *loadNew < 0:
		b.Fatalf("relay load: -relay.missing %v, -relay.new %d: want a fraction and a count", *loadMissing, *loadNew)
	}
	seed := *loadSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	b.Logf("relay load: %d envelopes in %d topics, %d devices at once, each lacking %.2g%% of its topic and holding %d the relay lacks; -relay.seed=%d",
		n, nt, nd, 100**loadMissing, *loadNew, seed)
	var key [32]byte
	copy(key[:], strconv.FormatUint(seed, 10))
	src := rand.NewChaCha8(key)
	rng := rand.New(src)

	// The relay, with room for everything (no envelope may be dropped by a quota) and its logs
	// discarded (debug logs would cost a line per envelope).
	r, err := New(Config{Dir: b.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Quota: 1 << 40, SyncInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := r.Close(); err != nil {
			b.Errorf("closing the relay: %v", err)
		}
	})
	topics := make([]loadTopic, nt)
	for i := range topics {
		var team [32]byte
		copy(team[:], fmt.Sprintf("load team %d", i))
		topics[i].code = relayproto.CodeFor(team, testAdmin)
		if _, err := r.Admit(topics[i].code); err != nil {
			b.Fatal(err)
		}
	}
	idleTopic := nd % nt // no device's topic when there are more topics than devices

	// Fill.
	fillStart := time.Now()
	var filledBytes int64
	now := time.Now()
	for ti := range topics {
		t := &topics[ti]
		count := n / nt
		if ti < n%nt {
			count++
		}
		keep := ti < nd || ti == idleTopic
		t.want = int64(count)
		batch := make([]record, 0, loadFillBatch)
		flush := func() {
			added, err := r.store(batch, "fill")
			if err != nil || added != len(batch) {
				b.Fatalf("filling topic %d: stored %d of %d: %v", ti, added, len(batch), err)
			}
			batch = batch[:0]
		}
		from := now.Add(-loadSpan).UnixMilli()
		for i := range count {
			ms := from + int64(i)*loadSpan.Milliseconds()/int64(count)
			rec, err := randomEnvelope(src, t.code.Topic, uint64(ms)<<16, loadMinSize+rng.IntN(loadMaxSize-loadMinSize+1))
			if err != nil {
				b.Fatal(err)
			}
			filledBytes += int64(len(rec.Data))
			if keep {
				t.items = append(t.items, recon.Item{Time: rec.Time, ID: rec.ID})
			}
			if batch = append(batch, rec); len(batch) == loadFillBatch {
				flush()
			}
		}
		if len(batch) > 0 {
			flush()
		}
		sortItems(t.items)
	}
	fillTime := time.Since(fillStart)
	if got, _, _ := r.st.totals(); got != int64(n) {
		b.Fatalf("after the fill the relay holds %d envelopes; want %d", got, n)
	}
	fillHWM := procStatus("VmHWM")
	disk := r.Status().DiskBytes
	runtime.GC()
	debug.FreeOSMemory()
	// The relay alone (and the test binary), its store filled: anonymous memory, and the database's
	// files mapped in (Badger maps its tables; the kernel may drop those pages).
	relayRSS, relayAnon, relayFile := procStatus("VmRSS"), procStatus("RssAnon"), procStatus("RssFile")

	// The devices, connected and enrolled; then the idle baseline, one session at a time.
	enrol := func(d *device, t *loadTopic) {
		res := d.enrol(b, r, map[envelope.Topic]relayproto.Key{t.code.Topic: t.code.Key})
		if len(res) != 1 || !res[0].OK() {
			b.Fatalf("enrolment: %+v", res)
		}
	}
	idle := newDevice(b)
	idle.connect(b, r)
	enrol(idle, &topics[idleTopic])
	var idleTimes []time.Duration
	for range loadIdleRuns {
		ld := &loadDevice{device: idle, topic: &topics[idleTopic]}
		ld.reset(src, rng, *loadMissing, *loadNew, time.Now())
		res := ld.run(r)
		if res.err != nil {
			b.Fatalf("idle session: %v", res.err)
		}
		if err := ld.check(r); err != nil {
			b.Fatalf("idle session: %v", err)
		}
		idleTimes = append(idleTimes, res.dur)
	}
	idleMedian := percentile(idleTimes, 0.5)
	devs := make([]*loadDevice, nd)
	for i := range devs {
		d := newDevice(b)
		d.connect(b, r)
		devs[i] = &loadDevice{device: d, topic: &topics[i%nt]}
	}
	for _, d := range devs {
		enrol(d.device, d.topic)
	}

	var results []sessionResult
	var rounds []time.Duration
	runtime.GC()
	debug.FreeOSMemory()
	rssBefore := procStatus("VmRSS")
	peakReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	started := r.initiatedSessions(b)
	for b.Loop() {
		b.StopTimer()
		for _, d := range devs {
			d.reset(src, rng, *loadMissing, *loadNew, time.Now())
		}
		round := make([]sessionResult, nd)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, d := range devs {
			wg.Go(func() {
				<-start
				round[i] = d.run(r)
			})
		}
		b.StartTimer()
		t0 := time.Now()
		close(start)
		wg.Wait()
		rounds = append(rounds, time.Since(t0))
		b.StopTimer()
		var errs []error
		for i, d := range devs {
			if round[i].err != nil {
				errs = append(errs, fmt.Errorf("device %d: session: %w", i, round[i].err))
			} else if err := d.check(r); err != nil {
				errs = append(errs, fmt.Errorf("device %d: %w", i, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		results = append(results, round...)
		b.StartTimer()
	}
	peak := procStatus("VmHWM")
	started = r.initiatedSessions(b) - started

	// No envelope lost: the relay holds every envelope filled or sent, topic by topic.
	_, _, per := r.st.totals()
	var total int64
	for ti, t := range topics {
		if got := per[t.code.Topic].n; got != t.want {
			b.Errorf("topic %d: the relay holds %d envelopes; want %d", ti, got, t.want)
		}
		total += t.want
	}
	uploaded := total - int64(n)
	if got, _, _ := r.st.totals(); got != total {
		b.Errorf("the relay holds %d envelopes; want %d (%d filled, %d sent by devices)", got, total, n, uploaded)
	}

	var times []time.Duration
	var wire, overhead, everyID []float64
	for _, res := range results {
		st := res.stats
		times = append(times, res.dur)
		w := float64(st.BytesSent + st.BytesReceived)
		o := w - float64(st.EnvelopeBytesSent+st.EnvelopeBytesReceived)
		wire = append(wire, w)
		overhead = append(overhead, o)
		everyID = append(everyID, o/float64(32*(res.held+int(st.EnvelopesSent))))
	}
	p50, p99 := percentile(times, 0.5), percentile(times, 0.99)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(float64(p50)/float64(idleMedian), "x-idle-p50")
	b.ReportMetric(float64(p99)/float64(idleMedian), "x-idle-p99")
	b.ReportMetric(median(wire), "B/session")
	b.ReportMetric(median(overhead), "overhead-B/session")
	b.ReportMetric(median(everyID), "x-every-id")
	roundTime := slices.Min(rounds)
	xSerial := float64(roundTime) / float64(time.Duration(nd)*idleMedian)
	b.ReportMetric(xSerial, "x-serial")
	b.ReportMetric(float64(started), "relay-started-sessions")
	b.ReportMetric(float64(relayRSS)/(1<<20), "relay-rss-MiB")
	b.ReportMetric(float64(rssBefore)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
	peakNote := "during the rounds"
	if !peakReset {
		peakNote = "of the whole run (/proc/self/clear_refs refused)"
	}
	var tb strings.Builder
	fmt.Fprintf(&tb, "fill: %d envelopes (%d MiB, %.0f B each) in %v (%.0f/s); database %d MiB on disk; peak RSS %d MiB while filling\n",
		n, filledBytes>>20, float64(filledBytes)/float64(n), fillTime.Round(time.Millisecond), float64(n)/fillTime.Seconds(), disk>>20, fillHWM>>20)
	fmt.Fprintf(&tb, "idle session (median of %d, one at a time)   %8.1f ms\n", loadIdleRuns, ms(idleMedian))
	fmt.Fprintf(&tb, "session p50, %3d at once (%d round(s))      %8.1f ms  %5.1fx idle\n", nd, len(results)/nd, ms(p50), float64(p50)/float64(idleMedian))
	fmt.Fprintf(&tb, "session p99 (nearest rank)                   %8.1f ms  %5.1fx idle\n", ms(p99), float64(p99)/float64(idleMedian))
	fmt.Fprintf(&tb, "bytes per session (median, both ways)        %8.0f B   %.0f B without envelope bodies: %.3fx every-id\n", median(wire), median(overhead), median(everyID))
	fmt.Fprintf(&tb, "round: %v for %d sessions, %.2fx %d idle sessions one after another; the relay started %d of its own meanwhile (follow-ups to enrolments; refused here)\n",
		roundTime.Round(time.Millisecond), nd, xSerial, nd, started)
	fmt.Fprintf(&tb, "RSS: relay alone %d MiB (%d anon, %d file); with the devices %d MiB; peak %s %d MiB (+%d MiB)\n", relayRSS>>20, relayAnon>>20, relayFile>>20, rssBefore>>20, peakNote, peak>>20, (peak-rssBefore)>>20)
	fmt.Fprintf(&tb, "relay store after: %d envelopes = %d filled + %d sent by devices; none lost", total, n, uploaded)
	b.Log(tb.String())
}

// loadTopic is one topic of the load benchmark.
type loadTopic struct {
	code relayproto.Code
	// items are the envelopes the topic was filled with, sorted; kept for the topics a device
	// reconciles only.
	items []recon.Item
	// want is how many envelopes the relay must hold for it: the fill and the devices' own.
	want int64
}

// loadDevice is one device of the load benchmark and what it holds for its one topic.
type loadDevice struct {
	*device
	topic *loadTopic
	src   *loadSource
	own   []record     // the envelopes it holds that the relay lacks
	lacks []recon.Item // the envelopes of the fill it lacks
}

// reset gives the device its topic's envelopes except a fraction missing of them, chosen at random,
// and newCount envelopes of its own stamped just before now.
func (d *loadDevice) reset(src *rand.ChaCha8, rng *rand.Rand, missing float64, newCount int, now time.Time) {
	items := make([]recon.Item, 0, len(d.topic.items)+newCount)
	d.lacks = d.lacks[:0]
	for _, it := range d.topic.items {
		if rng.Float64() < missing {
			d.lacks = append(d.lacks, it)
		} else {
			items = append(items, it)
		}
	}
	d.own = d.own[:0]
	s := &loadSource{own: make(map[[recon.IDSize]byte][]byte), got: make(map[[recon.IDSize]byte][]byte)}
	for i := range newCount {
		ts := uint64(now.Add(-time.Minute).UnixMilli()+int64(i)) << 16
		rec, err := randomEnvelope(src, d.topic.code.Topic, ts, loadMinSize+rng.IntN(loadMaxSize-loadMinSize+1))
		if err != nil {
			panic(err) // a ChaCha8 never fails
		}
		d.own = append(d.own, rec)
		s.own[rec.ID] = rec.Data
		items = append(items, recon.Item{Time: rec.Time, ID: rec.ID})
	}
	sortItems(items)
	s.items = items
	d.src = s
	d.topic.want += int64(newCount)
}

// sessionResult is one measured session.
type sessionResult struct {
	dur   time.Duration
	stats recon.Stats
	held  int // items the device held when it started
	err   error
}

// run runs the device's session with the relay and measures it.
func (d *loadDevice) run(r *Relay) sessionResult {
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	held := len(d.src.items)
	start := time.Now()
	sess, err := d.session(ctx, r, d.topic.code.Topic, d.src)
	res := sessionResult{dur: time.Since(start), held: held, err: err}
	if sess != nil {
		res.stats = sess.Stats()
	}
	return res
}

// check reports what the device or the relay lacks after the device's session: the device must have
// received every envelope of the fill it lacked, byte for byte as the relay holds it, and the relay
// must hold the device's own.
func (d *loadDevice) check(r *Relay) error {
	for _, it := range d.lacks {
		got, ok := d.src.got[it.ID]
		if !ok {
			return fmt.Errorf("the device lacks envelope %x of its topic after its session", it.ID[:4])
		}
		want, err := r.st.envelope(d.topic.code.Topic, it.ID)
		if err != nil {
			return fmt.Errorf("the relay lost envelope %x: %w", it.ID[:4], err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("envelope %x: the device received other bytes than the relay holds", it.ID[:4])
		}
	}
	for _, rec := range d.own {
		got, err := r.st.envelope(d.topic.code.Topic, rec.ID)
		if err != nil || !bytes.Equal(got, rec.Data) {
			return fmt.Errorf("the relay did not store the device's envelope %x: %v", rec.ID[:4], err)
		}
	}
	return nil
}

// loadSource is a load device's topic: the items it holds and the bodies of its own envelopes only
// (the relay holds the rest, so it never asks for them), and what it receives.
type loadSource struct {
	items []recon.Item // sorted; not changed once a session has it

	mu  sync.Mutex // guards got
	own map[[recon.IDSize]byte][]byte
	got map[[recon.IDSize]byte][]byte
}

var _ deviceSource = (*loadSource)(nil)

func (s *loadSource) Items() ([]recon.Item, error) { return s.items, nil }

func (s *loadSource) Envelope(id [recon.IDSize]byte) ([]byte, error) {
	if b, ok := s.own[id]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("the relay asked for envelope %x, which it holds", id[:4])
}

func (s *loadSource) add(recs ...record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.got[r.ID] = r.Data
	}
}

func sortItems(items []recon.Item) {
	slices.SortFunc(items, func(a, b recon.Item) int {
		if a.Time != b.Time {
			if a.Time < b.Time {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
}

// percentile returns the p-th quantile of ds by nearest rank (p99 of 50 sessions is the slowest).
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// procStatus returns a size field of /proc/self/status (such as VmRSS) in bytes; 0 where there is none.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// initiatedSessions returns how many reconciliation sessions the relay has started (its metrics,
// whatever their result).
func (r *Relay) initiatedSessions(b *testing.B) int {
	mfs, err := r.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "fieldmesh_relay_sync_sessions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "role" && l.GetValue() == "initiator" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int(n)
}
