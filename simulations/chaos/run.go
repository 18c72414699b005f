package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Size is the scale of a run.
type Size struct {
	Name      string
	Devices   int           // device processes (team members); at least 3
	Chaos     time.Duration // how long the chaos phase lasts
	SendEvery time.Duration // one `fieldmesh send` from a random running device this often

	Splits     int              // partitions of the hosts into two sides, one at a time
	SplitFor   [2]time.Duration // how long each lasts: uniform in [min, max)
	Isolations int              // a device's port set down (out of coverage)
	IsolateFor [2]time.Duration
	Kills      int // kill -9 of a running device, restarted after DownFor
	DownFor    [2]time.Duration

	LossLinks int    // devices whose link drops LossPct percent of frames each way
	LossPct   int    // e.g. 20
	SlowLinks int    // devices whose link is limited to SlowRate
	SlowRate  string // a tc rate, e.g. "40kbit"
	// Reshuffle moves the lossy and slow links to other devices this often; 0 keeps them.
	Reshuffle time.Duration

	// Converge is the deadline for every device to list every acknowledged message, counted from
	// when the network is healed and every device runs again.
	Converge time.Duration
}

// Short is sized for CI: about 4 minutes of wall time including set-up and convergence.
var Short = Size{
	Name: "short", Devices: 6, Chaos: 100 * time.Second, SendEvery: 1500 * time.Millisecond,
	Splits: 3, SplitFor: [2]time.Duration{12 * time.Second, 25 * time.Second},
	Isolations: 2, IsolateFor: [2]time.Duration{8 * time.Second, 20 * time.Second},
	Kills: 4, DownFor: [2]time.Duration{2 * time.Second, 8 * time.Second},
	LossLinks: 2, LossPct: 20, SlowLinks: 1, SlowRate: "40kbit",
	Converge: 150 * time.Second,
}

// Long is `make chaos`: about 20 minutes.
var Long = Size{
	Name: "long", Devices: 8, Chaos: 15 * time.Minute, SendEvery: 1500 * time.Millisecond,
	Splits: 14, SplitFor: [2]time.Duration{20 * time.Second, 50 * time.Second},
	Isolations: 10, IsolateFor: [2]time.Duration{10 * time.Second, 60 * time.Second},
	Kills: 30, DownFor: [2]time.Duration{2 * time.Second, 30 * time.Second},
	LossLinks: 3, LossPct: 20, SlowLinks: 2, SlowRate: "40kbit", Reshuffle: 3 * time.Minute,
	Converge: 5 * time.Minute,
}

// Config configures a run.
type Config struct {
	Size
	Bin    string // the fieldmesh binary
	Root   string // the run's directory: data directories, logs, HOME, TMPDIR, the capture. Must exist, empty, with a short path
	Prefix string // network namespace prefix, unique to the run (NewPrefix)
	Seed   uint64 // the schedule's seed; the same seed gives the same schedule
	// Relay runs a relay process that every device uses (RelayCommands says whether the binary
	// can). Without it the devices only bootstrap to each other.
	Relay bool
	// Control says the binary was built with -tags fieldmesh_noseal, which turns sealing off: the
	// plaintext scans must then find needles, or they prove nothing.
	Control bool
	Logf    func(format string, args ...any) // progress lines; nil discards them
}

// Report is what a run did and found.
type Report struct {
	Size    string
	Seed    uint64
	Relay   bool
	Control bool

	Sent, Acked, Failed       int
	Attachments               int // sends that carried an attachment (AttachEvery)
	Kills, Splits, Isolations int
	LossLinks, SlowLinks      int // links that were lossy or slow at some point
	Converged                 bool
	ConvergedIn               time.Duration
	Listed                    int // messages each device lists at the end (when converged)

	Scans       []ScanGroup
	PcapPackets int
	PcapStreams int
	CanaryFound bool
	// AttachmentHits counts the hits (of Scans) that are runs of an attachment's bytes.
	AttachmentHits int

	// Problems are the checks that failed, one line each.
	Problems []string
}

// ScanGroup is one place the plaintext scan looked.
type ScanGroup struct {
	// "relay data" (raw files), "relay db (opened)" (keys and values, decrypted with relay.key),
	// "device data", "logs", "HOME and TMPDIR", "wire (pcap)", "wire (TCP streams)"
	Name  string
	Files int // files, databases or TCP flows
	Bytes int64
	Hits  []string // "file: needle" or "flow: needle", one per distinct pair
}

// String is the summary printed at the end of a run.
func (r *Report) String() string {
	var b strings.Builder
	mode := "sealed"
	if r.Control {
		mode = "CONTROL (built with -tags fieldmesh_noseal: plaintext must be found)"
	}
	relay := "no relay (devices bootstrap to each other)"
	if r.Relay {
		relay = "with relay"
	}
	fmt.Fprintf(&b, "chaos %s, seed %d, %s, %s\n", r.Size, r.Seed, relay, mode)
	fmt.Fprintf(&b, "  messages: %d sends, %d acknowledged, %d failed (daemon down or killed mid-send), %d with an attachment\n", r.Sent, r.Acked, r.Failed, r.Attachments)
	fmt.Fprintf(&b, "  chaos:    %d kill -9, %d partitions, %d isolations, %d lossy links, %d slow links\n",
		r.Kills, r.Splits, r.Isolations, r.LossLinks, r.SlowLinks)
	if r.Converged {
		fmt.Fprintf(&b, "  converged %v after healing: every device lists the same %d messages\n", r.ConvergedIn.Round(100*time.Millisecond), r.Listed)
	} else {
		fmt.Fprintf(&b, "  NOT converged within the deadline\n")
	}
	total := 0
	for _, g := range r.Scans {
		unit := "files"
		switch g.Name {
		case "relay db (opened)":
			unit = "dbs"
		case "wire (TCP streams)":
			unit = "flows"
		}
		fmt.Fprintf(&b, "  scan %-20s %6d %-5s %12d bytes  %d hits\n", g.Name+":", g.Files, unit, g.Bytes, len(g.Hits))
		total += len(g.Hits)
	}
	fmt.Fprintf(&b, "  capture:  %d packets, %d TCP flows reassembled, canary found: %v\n", r.PcapPackets, r.PcapStreams, r.CanaryFound)
	fmt.Fprintf(&b, "  plaintext hits: %d (%d of runs of attachments' bytes)\n", total, r.AttachmentHits)
	if len(r.Problems) == 0 {
		b.WriteString("  result: ok\n")
	} else {
		fmt.Fprintf(&b, "  result: %d problems\n", len(r.Problems))
	}
	return b.String()
}

// NewPrefix returns a fresh network namespace prefix, "fmc" and 6 random hex digits.
func NewPrefix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "fmc" + hex.EncodeToString(b)
}

// runner is the state of one run.
type runner struct {
	cfg   Config
	rng   *mrand.Rand
	lab   *Lab
	fleet *fleet
	devs  []*proc
	relay *proc
	team  string // team id
	tag   string // random, in every needle
	start time.Time

	mu            sync.Mutex
	sent          []Sent
	attachNeedles []string // runs of the attachments' bytes (attachment)
	report        *Report
}

// Run sets up the lab, runs the chaos schedule, heals, waits for convergence and checks. An error
// means the run could not be carried out (the lab or the fleet could not be set up); the checks
// that failed are in Report.Problems. The lab is torn down before Run returns, whatever happens.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if cfg.Devices < 3 {
		return nil, errors.New("chaos: at least 3 devices")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	tag := make([]byte, 4)
	rand.Read(tag)
	r := &runner{cfg: cfg, rng: mrand.New(mrand.NewPCG(cfg.Seed, 0x6669656c646d6573)), tag: hex.EncodeToString(tag),
		report: &Report{Size: cfg.Name, Seed: cfg.Seed, Relay: cfg.Relay, Control: cfg.Control}}
	lab, err := NewLab(ctx, cfg.Prefix)
	if lab == nil {
		return nil, err
	}
	defer func() {
		for _, p := range r.procs() {
			p.kill()
		}
		if cerr := lab.Cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err != nil {
		return nil, err
	}
	r.lab = lab
	if r.fleet, err = newFleet(cfg.Bin, cfg.Root); err != nil {
		return nil, err
	}
	if err := r.setUp(ctx); err != nil {
		return r.report, err
	}
	r.chaos(ctx)
	if err := ctx.Err(); err != nil {
		return r.report, err
	}
	r.converge(ctx)
	r.shutDown()
	if err := ctx.Err(); err != nil {
		return r.report, err
	}
	r.scan()
	sort.Strings(r.report.Problems)
	return r.report, nil
}

func (r *runner) logf(format string, args ...any) {
	if !r.start.IsZero() {
		format = "t+%5.1fs " + format
		args = append([]any{time.Since(r.start).Seconds()}, args...)
	}
	r.cfg.Logf(format, args...)
}

func (r *runner) problem(format string, args ...any) {
	r.mu.Lock()
	r.report.Problems = append(r.report.Problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *runner) procs() []*proc {
	ps := slices.Clone(r.devs)
	if r.relay != nil {
		ps = append(ps, r.relay)
	}
	return ps
}

func (r *runner) pcapPath() string { return filepath.Join(r.cfg.Root, "capture.pcap") }

func (r *runner) canary() string { return "chaos-canary-" + r.tag + "-crossed-the-bridge" }

// setUp builds the network, starts the capture and every process, and makes the devices one team.
func (r *runner) setUp(ctx context.Context) error {
	cfg := r.cfg
	var hosts []*Host
	for i := range cfg.Devices {
		h, err := r.lab.AddHost(ctx, "d"+strconv.Itoa(i), 11+i)
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
	}
	var relayHost *Host
	if cfg.Relay {
		var err error
		if relayHost, err = r.lab.AddHost(ctx, "relay", 2); err != nil {
			return err
		}
	}
	if err := r.lab.Capture(ctx, r.pcapPath(), filepath.Join(r.cfg.Root, "tcpdump.log")); err != nil {
		return err
	}
	// A canary datagram from d0 to d1 through the bridge: the scan must find it in the capture,
	// or the capture saw nothing and its zero hits mean nothing.
	if err := run(ctx, "ip", "netns", "exec", hosts[0].NS, "bash", "-c",
		`printf '%s' "$1" > /dev/udp/`+hosts[1].Addr+`/9`, "canary", r.canary()); err != nil {
		return err
	}

	for i, h := range hosts {
		name := fmt.Sprintf("CHW Chaos %s %d", r.tag, i)
		p, err := r.fleet.proc(h.Name, name, "pass-"+h.Name+"-"+r.tag+"-secret", h)
		if err != nil {
			return err
		}
		var out struct {
			PeerID string `json:"peer_id"`
		}
		if err := p.cliJSON(ctx, &out, "init", "--name", name); err != nil {
			return err
		}
		p.Peer = out.PeerID
		r.devs = append(r.devs, p)
	}
	if cfg.Relay {
		p, err := r.fleet.proc("relay", "", "", relayHost) // a relay has a key file, no passphrase or name
		if err != nil {
			return err
		}
		r.relay = p
		if err := startRelay(ctx, p); err != nil {
			return err
		}
		r.logf("relay %s up at %s", p.Label, p.Addr())
	}
	if err := r.each(func(p *proc) error { return r.up(ctx, p) }); err != nil {
		return err
	}
	r.logf("%d devices up in %s: %s", len(r.devs), Subnet, r.devAddrs())

	teamName := "Chaos Ward " + r.tag
	var team struct {
		ID string `json:"id"`
	}
	admin := r.devs[0]
	if err := admin.cliJSON(ctx, &team, "team", "create", teamName, "--kind", "clinical"); err != nil {
		return err
	}
	r.team = team.ID
	if cfg.Relay {
		// Admitted before anyone joins: a device enrols a team at the relay when it gets it, and
		// backs off (from 5 s, doubling) after a refusal.
		if err := admitRelay(ctx, admin, r.relay, r.team); err != nil {
			return err
		}
	}
	for _, p := range r.devs[1:] {
		var inv struct {
			Code string `json:"code"`
		}
		if err := admin.cliJSON(ctx, &inv, "team", "invite", r.team); err != nil {
			return err
		}
		var joined struct {
			ID string `json:"id"`
		}
		if err := p.cliJSON(ctx, &joined, "team", "join", inv.Code); err != nil {
			return err
		}
		if joined.ID != r.team {
			return fmt.Errorf("%s: joined team %s; want %s", p.Label, joined.ID, r.team)
		}
	}
	// Every device must know every member before the chaos starts.
	deadline := time.Now().Add(90 * time.Second)
	for {
		var behind []string
		for _, p := range r.devs {
			var teams []struct {
				ID      string `json:"id"`
				Members int    `json:"members"`
			}
			if err := p.cliJSON(ctx, &teams, "team", "list"); err != nil {
				return err
			}
			ok := false
			for _, t := range teams {
				ok = ok || t.ID == r.team && t.Members == len(r.devs)
			}
			if !ok {
				behind = append(behind, p.Label)
			}
		}
		if len(behind) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("set-up: %s do not list all %d members of the team within 90s", strings.Join(behind, ", "), len(r.devs))
		}
		if err := pause(ctx, time.Second); err != nil {
			return err
		}
	}
	r.logf("team %s (%q) has %d members; needles carry the tag %s", r.team[:8], teamName, len(r.devs), r.tag)
	return nil
}

func (r *runner) devAddrs() string {
	var s []string
	for _, p := range r.devs {
		s = append(s, p.Label+"="+p.Host.Addr)
	}
	return strings.Join(s, " ")
}

// each runs f for every device at once and joins the errors.
func (r *runner) each(f func(p *proc) error) error {
	errs := make([]error, len(r.devs))
	var wg sync.WaitGroup
	for i, p := range r.devs {
		wg.Go(func() { errs[i] = f(p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// up starts a device's daemon, listening on its address and dialling every other device (and the
// relay), and waits for its "node ready" line.
func (r *runner) up(ctx context.Context, p *proc) error {
	// The idle lock is off: a device the schedule leaves without a command for minutes must still
	// answer the convergence check.
	args := []string{"up", "--no-mdns", "--lock-after=0", "--listen=/ip4/" + p.Host.Addr + "/tcp/" + Port}
	for _, q := range r.devs {
		if q != p {
			args = append(args, "--bootstrap="+q.Addr())
		}
	}
	if r.relay != nil {
		args = append(args, "--relay="+r.relay.Addr())
	}
	_, err := p.start(ctx, 60*time.Second, `msg="node ready"`, args...)
	return err
}

// pause waits for d or for ctx to end. It paces the schedule and the convergence poll; it is never
// used to wait for something to have happened.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// event is one planned disturbance.
type event struct {
	at   time.Duration
	kind string // "split", "isolate", "kill", "reshuffle"
	dev  int    // isolate, kill
	side []int  // split: the indexes of one side (devices; len(devs) stands for the relay)
	dur  time.Duration
}

func (e event) String() string {
	switch e.kind {
	case "split":
		return fmt.Sprintf("t+%5.1fs split %v from the rest for %v", e.at.Seconds(), e.side, e.dur.Round(100*time.Millisecond))
	case "reshuffle":
		return fmt.Sprintf("t+%5.1fs move the lossy and slow links", e.at.Seconds())
	}
	return fmt.Sprintf("t+%5.1fs %s d%d for %v", e.at.Seconds(), e.kind, e.dev, e.dur.Round(100*time.Millisecond))
}

func (r *runner) between(span [2]time.Duration) time.Duration {
	return span[0] + time.Duration(r.rng.Int64N(int64(span[1]-span[0])+1))
}

// plan draws the schedule from the seed. Splits do not overlap each other; a device is never
// killed or isolated twice at once. Everything ends before the chaos phase does.
func (r *runner) plan() []event {
	cfg := r.cfg
	n := len(r.devs)
	var evs []event
	if cfg.Splits > 0 {
		window := cfg.Chaos / time.Duration(cfg.Splits)
		for i := range cfg.Splits {
			dur := min(r.between(cfg.SplitFor), window*9/10)
			at := time.Duration(i)*window + time.Duration(r.rng.Int64N(int64(window-dur)+1))
			size := 1 + r.rng.IntN(n/2)
			side := r.rng.Perm(n)[:size]
			if r.relay != nil && r.rng.IntN(2) == 0 {
				side = append(side, n) // the relay goes with the smaller side
			}
			sort.Ints(side)
			evs = append(evs, event{at: at, kind: "split", side: side, dur: dur})
		}
	}
	busy := make([][][2]time.Duration, n) // per device: kill and isolation windows
	place := func(kind string, count int, span [2]time.Duration) {
		for range count {
			for try := 0; try < 50; try++ {
				dur := r.between(span)
				if dur >= cfg.Chaos {
					dur = cfg.Chaos / 2
				}
				at := time.Duration(r.rng.Int64N(int64(cfg.Chaos - dur)))
				d := r.rng.IntN(n)
				free := true
				for _, w := range busy[d] {
					// 5 s apart, so a restart is usually over before the next disturbance
					// (a kill during start-up is handled, but is not what the plan is after).
					if at < w[1]+5*time.Second && w[0] < at+dur+5*time.Second {
						free = false
					}
				}
				if free {
					busy[d] = append(busy[d], [2]time.Duration{at, at + dur})
					evs = append(evs, event{at: at, kind: kind, dev: d, dur: dur})
					break
				}
			}
		}
	}
	place("kill", cfg.Kills, cfg.DownFor)
	place("isolate", cfg.Isolations, cfg.IsolateFor)
	if cfg.Reshuffle > 0 {
		for at := cfg.Reshuffle; at < cfg.Chaos; at += cfg.Reshuffle {
			evs = append(evs, event{at: at, kind: "reshuffle"})
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	return evs
}

// impair makes LossLinks devices' links lossy and SlowLinks devices' links slow, replacing the
// previous choice. Called from the schedule goroutine only.
func (r *runner) impair(ctx context.Context, rng *mrand.Rand, lossy, slow map[int]bool) error {
	for d := range lossy {
		if err := r.lab.SetLoss(ctx, r.devs[d].Host, 0); err != nil {
			return err
		}
		delete(lossy, d)
	}
	for d := range slow {
		if err := r.lab.SetSlow(ctx, r.devs[d].Host, ""); err != nil {
			return err
		}
		delete(slow, d)
	}
	perm := rng.Perm(len(r.devs))
	var names []string
	for _, d := range perm[:min(r.cfg.LossLinks, len(perm))] {
		if err := r.lab.SetLoss(ctx, r.devs[d].Host, r.cfg.LossPct); err != nil {
			return err
		}
		lossy[d] = true
		names = append(names, fmt.Sprintf("d%d %d%% loss", d, r.cfg.LossPct))
	}
	for _, d := range perm[len(perm)-min(r.cfg.SlowLinks, len(perm)):] {
		if err := r.lab.SetSlow(ctx, r.devs[d].Host, r.cfg.SlowRate); err != nil {
			return err
		}
		slow[d] = true
		names = append(names, fmt.Sprintf("d%d %s", d, r.cfg.SlowRate))
	}
	r.mu.Lock()
	r.report.LossLinks += min(r.cfg.LossLinks, len(perm))
	r.report.SlowLinks += min(r.cfg.SlowLinks, len(perm))
	r.mu.Unlock()
	r.logf("links: %s", strings.Join(names, ", "))
	return nil
}

// chaos runs the schedule and the senders for cfg.Chaos, then returns with every disturbance's
// goroutine finished (their undo steps are left to heal).
func (r *runner) chaos(parent context.Context) {
	evs := r.plan()
	for _, e := range evs {
		r.cfg.Logf("plan: %s", e)
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	r.start = time.Now()
	r.logf("chaos phase: %v, a send every %v", r.cfg.Chaos, r.cfg.SendEvery)
	impairRng := mrand.New(mrand.NewPCG(r.cfg.Seed, 2))
	lossy, slow := map[int]bool{}, map[int]bool{}
	if err := r.impair(ctx, impairRng, lossy, slow); err != nil {
		r.problem("impairing links: %v", err)
	}

	var wg sync.WaitGroup
	wg.Go(func() { r.send(ctx) })
	var splitMu sync.Mutex // one partition at a time
	for _, e := range evs {
		if pause(ctx, time.Until(r.start.Add(e.at))) != nil {
			break
		}
		switch e.kind {
		case "reshuffle":
			if err := r.impair(ctx, impairRng, lossy, slow); err != nil && ctx.Err() == nil {
				r.problem("impairing links: %v", err)
			}
		case "split":
			wg.Go(func() {
				splitMu.Lock()
				defer splitMu.Unlock()
				a, b := r.sides(e.side)
				if err := r.lab.Partition(ctx, a, b); err != nil {
					r.problem("partition: %v", err)
					return
				}
				r.count(func(rep *Report) { rep.Splits++ })
				r.logf("partition: %s | %s", labels(a), labels(b))
				if pause(ctx, e.dur) != nil {
					return
				}
				if err := r.lab.Partition(ctx, nil, nil); err != nil {
					r.problem("healing a partition: %v", err)
				}
				r.logf("partition healed")
			})
		case "isolate":
			wg.Go(func() {
				h := r.devs[e.dev].Host
				if err := r.lab.SetDown(ctx, h, true); err != nil {
					r.problem("isolate: %v", err)
					return
				}
				r.count(func(rep *Report) { rep.Isolations++ })
				r.logf("d%d out of coverage (link down) for %v", e.dev, e.dur.Round(100*time.Millisecond))
				if pause(ctx, e.dur) != nil {
					return
				}
				if err := r.lab.SetDown(ctx, h, false); err != nil {
					r.problem("link up: %v", err)
				}
				r.logf("d%d back in coverage", e.dev)
			})
		case "kill":
			wg.Go(func() {
				p := r.devs[e.dev]
				if !p.running() {
					r.logf("d%d is not running; no kill", e.dev)
					return
				}
				if err := p.kill(); err != nil {
					r.problem("%v", err)
					return
				}
				r.count(func(rep *Report) { rep.Kills++ })
				r.logf("kill -9 d%d; restart in %v", e.dev, e.dur.Round(100*time.Millisecond))
				if pause(ctx, e.dur) != nil {
					return
				}
				if err := r.up(ctx, p); err != nil {
					if errors.Is(err, errKilled) {
						r.logf("d%d killed again while restarting", e.dev)
						return
					}
					if ctx.Err() == nil {
						r.problem("restarting d%d after kill -9: %v", e.dev, err)
					}
					return
				}
				r.logf("d%d restarted", e.dev)
			})
		}
	}
	pause(ctx, time.Until(r.start.Add(r.cfg.Chaos)))
	cancel()
	wg.Wait()
}

func (r *runner) count(f func(*Report)) {
	r.mu.Lock()
	f(r.report)
	r.mu.Unlock()
}

// sides turns a split's side (device indexes, len(devs) for the relay) into the two host sets.
func (r *runner) sides(side []int) (a, b []*Host) {
	in := map[int]bool{}
	for _, i := range side {
		in[i] = true
	}
	all := r.procs()
	for i, p := range all {
		if in[i] {
			a = append(a, p.Host)
		} else {
			b = append(b, p.Host)
		}
	}
	return a, b
}

func labels(hs []*Host) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.Name
	}
	return strings.Join(s, ",")
}

// phrases make the messages look like what a health team sends; each message also carries the
// run's tag and its number, so every text is unique and no text can be found by accident.
var phrases = []string{
	"Bed 4 BP 160/110 two hours after delivery, starting magnesium",
	"Home visit done, baby feeding well, weight up 120 g",
	"Cold chain fridge at 9 degrees, moving vaccines to the cool box",
	"Out of ORS sachets at the outreach post, please send two boxes",
	"Referral to district hospital, ambulance ETA 40 minutes",
	"Malaria RDT positive, first dose of ACT given at 10:20",
	"Handing over to the night shift at 19:00",
}

// AttachEvery is how often a send carries an attachment: one send in AttachEvery. Each is a
// document of AttachSize bytes (sent as it is: only images are re-encoded).
const (
	AttachEvery = 8
	AttachSize  = 6000
)

// attachment writes the document that send number i attaches, outside every directory the scan
// looks in, and records runs of its bytes as needles: it must never be found in the clear either.
// It is hex of random bytes after a line naming the run, so a hit reads well in the report.
func (r *runner) attachment(i int) (string, error) {
	dir := filepath.Join(r.cfg.Root, "attachments")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	raw := make([]byte, AttachSize/2)
	rand.Read(raw)
	doc := []byte(fmt.Sprintf("chaos %s attachment %04d\n", r.tag, i))
	doc = append(doc, hex.EncodeToString(raw)...)[:AttachSize]
	path := filepath.Join(dir, fmt.Sprintf("doc-%04d.pdf", i))
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Attachments++
	for k := 1; k <= AttachNeedles; k++ {
		off := len(doc) * k / (AttachNeedles + 1)
		r.attachNeedles = append(r.attachNeedles, string(doc[off:off+AttachRun]))
	}
	return path, nil
}

// AttachRun is the length of the runs of an attachment's bytes the scan looks for (issue #17: no
// byte sequence of an attachment, 64 bytes or longer, in the clear), and AttachNeedles how many
// runs of each it takes, spread over the document.
const (
	AttachRun     = 64
	AttachNeedles = 4
)

// send sends a message from a random running device every SendEvery until ctx ends.
func (r *runner) send(ctx context.Context) {
	rng := mrand.New(mrand.NewPCG(r.cfg.Seed, 1))
	tick := time.NewTicker(r.cfg.SendEvery)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		first := rng.IntN(len(r.devs))
		p := r.devs[first]
		for k := range len(r.devs) { // the first running device from a random start
			if q := r.devs[(first+k)%len(r.devs)]; q.running() {
				p = q
				break
			}
		}
		s := Sent{From: p.Label, Text: fmt.Sprintf("%s (chaos %s msg %04d from %s)", phrases[i%len(phrases)], r.tag, i, p.Label)}
		args := []string{"send", r.team, s.Text, "--json"}
		if i%3 == 0 {
			s.Patient = fmt.Sprintf("MRN-%s-%04d", r.tag, i)
			args = append(args, "--patient", s.Patient)
		}
		if i%7 == 0 {
			args = append(args, "--priority", "urgent")
		}
		if i%AttachEvery == AttachEvery/2 {
			path, err := r.attachment(i)
			if err != nil {
				r.problem("writing attachment %04d: %v", i, err)
			} else {
				args = append(args, "--attach", path)
			}
		}
		// The send is not bound to ctx: one that has started runs to its end, so its outcome is known.
		res, err := p.cli(context.WithoutCancel(ctx), 60*time.Second, args...)
		switch {
		case err != nil:
			s.Err = err.Error()
		case res.code != 0:
			s.Err = strings.TrimSpace(res.stderr)
		default:
			var out struct {
				ID string `json:"id"`
			}
			if jerr := json.Unmarshal([]byte(res.stdout), &out); jerr != nil || out.ID == "" {
				s.Err = fmt.Sprintf("send exited 0 but printed no id: %q", res.stdout)
				r.problem("%s: send exited 0 but printed no id: %q", p.Label, res.stdout)
			} else {
				s.Acked, s.ID = true, out.ID
			}
		}
		r.mu.Lock()
		r.sent = append(r.sent, s)
		r.report.Sent++
		if s.Acked {
			r.report.Acked++
		} else {
			r.report.Failed++
		}
		r.mu.Unlock()
		if !s.Acked {
			r.logf("send %04d from %s failed (not acknowledged): %s", i, p.Label, s.Err)
		}
	}
}

// converge heals everything, restarts every device that is down, and polls `messages --json` on
// every device until they agree and hold every acknowledged message, or the deadline passes. Then
// it checks the listings.
func (r *runner) converge(ctx context.Context) {
	if err := r.lab.HealAll(ctx); err != nil {
		r.problem("healing: %v", err)
	}
	if err := r.each(func(p *proc) error {
		if p.running() {
			return nil
		}
		return r.up(ctx, p)
	}); err != nil {
		r.problem("restarting devices after the chaos: %v", err)
	}
	healed := time.Now()
	r.logf("healed: no partition, loss or rate limit; every device running; waiting up to %v for convergence", r.cfg.Converge)
	var listings map[string][]Message
	polls := 0
	for {
		listings = map[string][]Message{}
		var errs []error
		for _, p := range r.devs {
			msgs, err := p.messages(ctx, r.team)
			errs = append(errs, err)
			listings[p.Label] = msgs
		}
		polls++
		if err := errors.Join(errs...); err != nil {
			r.problem("listing messages: %v", err)
			return
		}
		if Converged(r.sent, listings) {
			r.report.Converged = true
			r.report.ConvergedIn = time.Since(healed)
			r.report.Listed = len(listings[r.devs[0].Label])
			r.logf("converged in %v (%d polls): %d messages on every device", r.report.ConvergedIn.Round(100*time.Millisecond), polls, r.report.Listed)
			break
		}
		if time.Since(healed) > r.cfg.Converge {
			var counts []string
			for _, p := range r.devs {
				counts = append(counts, fmt.Sprintf("%s lists %d", p.Label, len(listings[p.Label])))
				if res, err := p.cli(ctx, 30*time.Second, "status"); err == nil {
					r.logf("%s status:\n%s", p.Label, strings.TrimSpace(res.stdout))
				}
			}
			r.problem("not converged %v after healing (%d acknowledged): %s", r.cfg.Converge, r.report.Acked, strings.Join(counts, ", "))
			break
		}
		if pause(ctx, 2*time.Second) != nil {
			return
		}
	}
	for _, p := range Check(r.sent, listings) {
		r.problem("%s", p)
	}
}

// shutDown stops every daemon with SIGTERM (each must exit 0) and then the capture.
func (r *runner) shutDown() {
	var wg sync.WaitGroup
	for _, p := range r.procs() {
		wg.Go(func() {
			if err := p.stop(30 * time.Second); err != nil {
				r.problem("%v", err)
			}
		})
	}
	wg.Wait()
	if err := r.lab.StopCaptures(); err != nil {
		r.problem("%v", err)
	}
}

// needles are the strings that must never be found in the clear outside a device's memory.
func (r *runner) needles() []string {
	n := []string{"Chaos Ward " + r.tag}
	for _, s := range r.sent {
		n = append(n, s.Text)
		if s.Patient != "" {
			n = append(n, s.Patient)
		}
	}
	for _, p := range r.devs { // the relay has neither a name nor a passphrase
		n = append(n, p.Name, p.Pass)
	}
	return append(n, r.attachNeedles...)
}

// scan looks for every needle in the relay's data directory, the devices' data directories, the
// logs, the processes' HOME and TMPDIR, and the capture, as raw bytes and as reassembled TCP
// streams; and in the logs for panics and race reports.
func (r *runner) scan() {
	rep := r.report
	for _, p := range r.procs() {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			r.problem("%v", err)
			continue
		}
		for _, bad := range []string{"panic:", "fatal error:", "WARNING: DATA RACE"} {
			if strings.Contains(string(b), bad) {
				r.problem("%s: its log contains %q", p.Log, bad)
			}
		}
	}
	sc, err := NewScanner(append(r.needles(), r.canary()))
	if err != nil {
		r.problem("%v", err)
		return
	}
	canary := r.canary()
	files := func(name string, roots ...string) {
		g := ScanGroup{Name: name}
		hits, nf, size, err := sc.Files(roots...)
		if err != nil {
			r.problem("scan %s: %v", name, err)
		}
		g.Files, g.Bytes = nf, size
		for _, h := range hits {
			rel, _ := filepath.Rel(r.cfg.Root, h.File)
			g.Hits = append(g.Hits, rel+": "+h.Needle)
		}
		rep.Scans = append(rep.Scans, g)
	}
	if r.relay != nil {
		files("relay data", r.relay.Dir)
		g := ScanGroup{Name: "relay db (opened)"}
		dbs, size, hits, err := RelayDBs(r.relay.Dir, sc)
		if err != nil {
			r.problem("opening the relay's database with its key file: %v", err)
		}
		g.Files, g.Bytes, g.Hits = dbs, size, hits
		rep.Scans = append(rep.Scans, g)
	}
	var dirs, logs []string
	for _, p := range r.devs {
		dirs = append(dirs, p.Dir)
	}
	for _, p := range r.procs() {
		logs = append(logs, p.Log)
	}
	files("device data", dirs...)
	files("logs", logs...)
	files("HOME and TMPDIR", filepath.Join(r.cfg.Root, "home"), filepath.Join(r.cfg.Root, "tmp"))

	f, err := os.Open(r.pcapPath())
	if err != nil {
		r.problem("capture: %v", err)
		return
	}
	defer f.Close()
	raw := ScanGroup{Name: "wire (pcap)", Files: 1}
	rawHits := map[string]bool{}
	capture, err := Pcap(f, func(b []byte) {
		sc.Bytes(b, func(i int) { rawHits[sc.Needle(i)] = true })
	})
	if err != nil {
		r.problem("capture: %v", err)
		return
	}
	raw.Bytes = capture.Bytes
	for n := range rawHits {
		if n == canary {
			rep.CanaryFound = true
			continue
		}
		raw.Hits = append(raw.Hits, "capture.pcap: "+n)
	}
	sort.Strings(raw.Hits)
	streams := ScanGroup{Name: "wire (TCP streams)", Files: len(capture.Streams)}
	found := map[string]bool{}
	for _, s := range capture.Streams {
		for _, run := range s.Runs {
			streams.Bytes += int64(len(run))
			sc.Bytes(run, func(i int) { found[s.Flow+": "+sc.Needle(i)] = true })
		}
	}
	for h := range found {
		streams.Hits = append(streams.Hits, h)
	}
	sort.Strings(streams.Hits)
	rep.Scans = append(rep.Scans, raw, streams)
	rep.PcapPackets, rep.PcapStreams = capture.Packets, len(capture.Streams)
	if !rep.CanaryFound {
		r.problem("the canary datagram sent across the bridge is not in the capture: the capture saw nothing, so its zero hits prove nothing")
	}

	total, attachHits := 0, 0
	for _, g := range rep.Scans {
		total += len(g.Hits)
		for _, h := range g.Hits {
			if slices.ContainsFunc(r.attachNeedles, func(n string) bool { return strings.HasSuffix(h, ": "+n) }) {
				attachHits++
			}
		}
		if r.cfg.Control {
			continue
		}
		for _, h := range g.Hits {
			r.problem("plaintext in %s: %s", g.Name, h)
		}
	}
	rep.AttachmentHits = attachHits
	if r.cfg.Control && rep.Attachments > 0 && attachHits == 0 {
		r.problem("control run: %d attachments sent and no run of their bytes found anywhere the scan looks "+
			"(a fieldmesh_noseal build carries chunks in the clear on unencrypted connections), "+
			"so this run cannot show that the scan would see an attachment leak", rep.Attachments)
	}
	if r.cfg.Control && total == 0 {
		r.problem("control run: a binary built with -tags fieldmesh_noseal left no plaintext anywhere the scan looks " +
			"(on disk and in logs the stores' encryption at rest hides it; on the wire, libp2p's Noise, unless the tag turns it off too), " +
			"so this run cannot show that the scan would see a leak")
	}
}
