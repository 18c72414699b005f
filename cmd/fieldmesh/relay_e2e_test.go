// The end-to-end test of issue #5 (TestRelayE2E): a clinic relay R carries a team between two devices
// that are never up at the same time, as three (then four) real processes on loopback, driven through
// the CLI only.
//
//  1. R runs (`fieldmesh relay`). A (the team's creator) and B run with --relay R; A creates the team,
//     prints its relay code (`team relay-code`), the operator admits it at R (`relay admit`), B joins
//     while A and R are up; both log that they enrolled at R. Then B stops.
//  2. A sends (urgent, with a patient reference) while B is off; R stores it; A stops.
//  3. B comes back with no --relay (the relay is remembered), no bootstrap peer and no mDNS, so R is the
//     only peer it can reach: it shows A's message. B replies; R stores the reply; B stops.
//  4. A comes back the same way and shows B's reply.
//  5. X, a device whose team R does not carry, is refused with a clear message, in X's log and R's.
//  6. Every daemon exits 0 on SIGTERM with no race report or panic in its log, R's /metrics serves the
//     relay's and go-libp2p's metrics, and no message text, team name, patient reference or member
//     name is anywhere in R's data directory or log (a planted needle checks the scanner first).
//
// Every wait is on a log line or a printed message, with a deadline; nothing sleeps. Skipped with
// -short. Helpers from e2e_helpers_test.go; the ones here start daemons whose log lines a test can wait
// for.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node/humancode"
)

// e2eLines keeps a daemon's log lines so a test can wait for one.
type e2eLines struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newE2ELines() *e2eLines { return &e2eLines{changed: make(chan struct{})} }

func (l *e2eLines) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitLine waits until a line from index from on contains every part, and returns it with its index.
func (l *e2eLines) waitLine(t *testing.T, what string, from int, timeout time.Duration, exited <-chan struct{}, parts ...string) (string, int) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		for i := from; i < len(l.lines); i++ {
			ok := true
			for _, p := range parts {
				if !strings.Contains(l.lines[i], p) {
					ok = false
					break
				}
			}
			if ok {
				line := l.lines[i]
				l.mu.Unlock()
				return line, i
			}
		}
		from = max(from, len(l.lines))
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-exited:
			t.Fatalf("%s: the daemon exited first", what)
		case <-timer.C:
			t.Fatalf("%s: no log line with %q within %v", what, parts, timeout)
		}
	}
}

func (l *e2eLines) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// e2eStartWatched runs `fieldmesh ARGS...` as n's daemon (as e2eNode.start does for `up`), waits for
// its readiness line, and returns its log lines as they come.
func e2eStartWatched(t *testing.T, n *e2eNode, ready string, args ...string) *e2eLines {
	t.Helper()
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.started++
	fmt.Fprintf(f, "=== e2e: %s run %d of fieldmesh %s\n", n.label, n.started, strings.Join(args, " "))
	lines := newE2ELines()
	d := &e2eDaemon{ready: make(chan struct{}), exited: make(chan struct{})}
	var once sync.Once
	d.log = &e2eLogWriter{file: f, onLine: func(line string) {
		lines.add(line)
		if strings.Contains(line, ready) {
			once.Do(func() {
				d.readyAt = time.Now()
				close(d.ready)
			})
		}
	}}
	d.cmd = exec.Command(n.c.bin, append(slices.Clip(args), "--data="+n.dir)...)
	d.cmd.Env = n.environ(n.pass, true)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: starting fieldmesh %s: %v", n.label, args[0], err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		f.Close()
		close(d.exited)
	}()
	t.Cleanup(d.kill)
	timeout := n.c.timeout(30 * time.Second)
	select {
	case <-d.ready:
	case <-d.exited:
		t.Fatalf("%s: fieldmesh %s exited before it was ready (%v); log:\n%s", n.label, args[0], d.waitErr, e2eTail(n.logPath, 30))
	case <-time.After(timeout):
		t.Fatalf("%s: no %s line within %v; log:\n%s", n.label, ready, timeout, e2eTail(n.logPath, 30))
	}
	n.daemon = d
	return lines
}

// e2eUpWatched runs `fieldmesh up` for a device on loopback without mDNS.
func e2eUpWatched(t *testing.T, n *e2eNode, extra ...string) *e2eLines {
	t.Helper()
	args := append([]string{"up", "--no-mdns", "--listen=/ip4/127.0.0.1/tcp/0", "--log-level=debug"}, extra...)
	return e2eStartWatched(t, n, `msg="node ready"`, args...)
}

// e2eShortPeer is how libp2p's peer.ID.ShortString names a peer in logs.
func e2eShortPeer(id string) string {
	if len(id) < 8 {
		return id
	}
	return "<peer.ID " + id[:2] + "*" + id[len(id)-6:] + ">"
}

// e2eRelayStatus is the JSON of `relay status --json`.
type e2eRelayStatus struct {
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
	Topics []struct {
		Topic     string `json:"topic"`
		Envelopes int64  `json:"envelopes"`
		Devices   int    `json:"devices"`
	} `json:"topics"`
	Envelopes int64 `json:"envelopes"`
	Bytes     int64 `json:"bytes"`
	DiskBytes int64 `json:"disk_bytes"`
	PeersSeen int   `json:"peers_seen"`
}

var e2eKeysRelayStatus = []string{"peer_id", "addrs", "topics", "envelopes", "bytes", "quota", "retention", "disk_bytes", "peers_connected", "enrolled", "peers_seen", "refused_enrolments", "refused_envelopes"}

func TestRelayE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a relay and three devices; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	defer c.reportContract(t)

	const (
		teamName  = "Night Shift Ward 7"
		otherTeam = "Outreach Team Nine"
		patient   = "MRN-771203"
	)
	run := e2eRunTag(t)
	r := c.node(t, "R", "")
	a := c.node(t, "A", "Dr Mwale")
	b := c.node(t, "B", "Nurse Zulu")
	x := c.node(t, "X", "CHW Outsider")
	e2eInit(t, c, a, b, x)
	wait := c.timeout(30 * time.Second)

	t.Run("no relay running", func(t *testing.T) {
		msg := e2eFailsCleanly(t, "relay status with no relay", r.run(t, "relay", "status"))
		if !strings.Contains(msg, "no relay is running") {
			t.Errorf("relay status with no relay: %q; want it to say no relay is running", msg)
		}
	})

	// --- The relay.
	rLog, readyLine, rst, rAddr := e2eStartRelay(t, c, r, "--metrics=127.0.0.1:0")
	info, err := os.Stat(filepath.Join(r.dir, "relay.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("R's key file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}

	// --- A and B, with R; the team; R admits it; B joins.
	aLog := e2eUpWatched(t, a, "--relay="+rAddr)
	bLog := e2eUpWatched(t, b, "--relay="+rAddr)
	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", teamName), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	var code struct {
		Code  string `json:"code"`
		Topic string `json:"topic"`
	}
	if err := json.Unmarshal(a.runJSON(t, "team", "relay-code", teamName), &code); err != nil || !strings.HasPrefix(code.Code, humancode.Relay.Prefix()) {
		t.Fatalf("team relay-code: %+v, %v; want a code starting %s", code, err, humancode.Relay.Prefix())
	}
	t.Run("bad relay code", func(t *testing.T) {
		bad := []byte(code.Code)
		bad[len(bad)-3] = map[bool]byte{true: 'b', false: 'a'}[bad[len(bad)-3] == 'a']
		msg := e2eFailsCleanly(t, "relay admit with a mistyped code", r.run(t, "relay", "admit", string(bad)))
		if !strings.Contains(msg, "malformed relay code") || !strings.Contains(msg, "mistyped") {
			t.Errorf("relay admit with a mistyped code: %q; want it to say the code is mistyped", msg)
		}
	})
	var admitted struct {
		Topic string `json:"topic"`
		Added bool   `json:"added"`
	}
	if err := json.Unmarshal(r.runJSON(t, "relay", "admit", code.Code), &admitted); err != nil || !admitted.Added || admitted.Topic != code.Topic {
		t.Fatalf("relay admit: %+v, %v; want topic %s added", admitted, err, code.Topic)
	}
	// A was refused at connect (R did not carry the team yet); R joining the team's topic tells A's
	// node at once, without waiting for the retry.
	_, joinedAt := aLog.waitLine(t, "A hears R carries the team", 0, wait, a.daemon.exited, `msg="relay now carries the team: enrolling"`)
	aLog.waitLine(t, "A enrols at R", joinedAt, wait, a.daemon.exited, `msg="enrolled at relay"`)
	var inv e2eInviteOut
	if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &inv, e2eKeysInvite); err != nil {
		t.Fatal(err)
	}
	var joined e2eTeamOut
	if err := c.decode("team join", b.runJSON(t, "team", "join", inv.Code), &joined, e2eKeysTeam); err != nil || joined.ID != team.ID {
		t.Fatalf("B: team join: %+v, %v", joined, err)
	}
	bLog.waitLine(t, "B enrols at R", 0, wait, b.daemon.exited, `msg="enrolled at relay"`)
	t.Run("relay code is for admins", func(t *testing.T) {
		e2eFailsCleanly(t, "B: team relay-code", b.run(t, "team", "relay-code", team.ID))
	})
	if err := b.stop(t, e2eSignal); err != nil {
		t.Errorf("B: exit: %v", err)
	}

	// --- A sends while B is off; R stores it; A goes off.
	urgentText := "Bed 12 post-partum haemorrhage, 2 units cross-matched " + run
	var sent e2eSendOut
	from := rLog.count()
	if err := c.decode("send", a.runJSON(t, "send", team.ID, urgentText, "--priority", "urgent", "--patient", patient), &sent, e2eKeysSend); err != nil {
		t.Fatal(err)
	}
	rLog.waitLine(t, "R stores A's message", from, wait, r.daemon.exited, `msg="relay stored envelope"`, "id="+sent.ID[:8])
	if err := a.stop(t, e2eSignal); err != nil {
		t.Errorf("A: exit: %v", err)
	}

	// --- B comes back reaching R only (remembered relay, no bootstrap, no mDNS) and gets the message.
	bLog = e2eUpWatched(t, b)
	fb := b.follow(t, team.ID)
	fb.waitFor(t, wait, "B shows A's message, through R", e2eHasIDs([]string{sent.ID}))
	for _, m := range fb.snapshot() {
		if m.ID == sent.ID && (m.Text != urgentText || m.Patient != patient || m.Priority != "urgent" || m.Author != a.device || m.AuthorName != a.name) {
			t.Errorf("B shows A's message as %+v", m)
		}
	}
	for _, p := range []string{"--bootstrap", "--relay"} {
		if strings.Contains(strings.Join(b.daemon.cmd.Args, " "), p) {
			t.Fatalf("B's second run was given %s", p)
		}
	}
	replyText := "Theatre is ready, bring her up now " + run
	var reply e2eSendOut
	from = rLog.count()
	if err := c.decode("send", b.runJSON(t, "send", team.ID, replyText, "--reply-to", sent.ID), &reply, e2eKeysSend); err != nil {
		t.Fatal(err)
	}
	rLog.waitLine(t, "R stores B's reply", from, wait, r.daemon.exited, `msg="relay stored envelope"`, "id="+reply.ID[:8])
	fb.stop()
	if err := b.stop(t, e2eSignal); err != nil {
		t.Errorf("B: exit: %v", err)
	}

	// --- A comes back the same way and gets the reply.
	e2eUpWatched(t, a)
	fa := a.follow(t, team.ID)
	fa.waitFor(t, wait, "A shows B's reply, through R", e2eHasIDs([]string{sent.ID, reply.ID}))
	for _, m := range fa.snapshot() {
		if m.ID == reply.ID && (m.Text != replyText || m.Author != b.device || m.ReplyTo == nil || *m.ReplyTo != sent.ID) {
			t.Errorf("A shows B's reply as %+v", m)
		}
	}
	fa.stop()

	// --- X: a device whose team R does not carry is refused, with a reason, at both ends.
	xLog := e2eUpWatched(t, x, "--relay="+rAddr)
	if err := c.decode("team create", x.runJSON(t, "team", "create", otherTeam), new(e2eTeamOut), e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	refusal, _ := xLog.waitLine(t, "X is refused by R", 0, wait, x.daemon.exited, `msg="relay refused enrolment"`)
	if !strings.Contains(refusal, "does not carry topic") || !strings.Contains(refusal, "fieldmesh relay admit") {
		t.Errorf("X's log line does not say why it was refused: %s", refusal)
	}
	// R logs (and remembers) before it answers, so its line is there once X has the answer.
	rLog.waitLine(t, "R logs the refusal", 0, wait, r.daemon.exited, `msg="enrolment refused"`, e2eShortPeer(x.peerID), "topic not carried")
	if err := x.stop(t, e2eSignal); err != nil {
		t.Errorf("X: exit: %v", err)
	}

	// --- R's view, and its metrics.
	if err := c.decode("relay status", r.runJSON(t, "relay", "status"), &rst, e2eKeysRelayStatus); err != nil {
		t.Fatal(err)
	}
	if len(rst.Topics) != 1 || rst.Topics[0].Topic != code.Topic || rst.Topics[0].Devices != 2 || rst.Envelopes < 3 || rst.PeersSeen != 2 {
		t.Errorf("relay status: %+v; want one topic %s with 2 devices and at least 3 envelopes, 2 devices seen", rst, code.Topic)
	}
	t.Logf("R holds %d envelopes, %d bytes counted against its quota, %d bytes on disk", rst.Envelopes, rst.Bytes, rst.DiskBytes)
	_, metricsAt, _ := strings.Cut(readyLine, "metrics=")
	metricsAt, _, _ = strings.Cut(metricsAt, " ")
	resp, err := http.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatalf("R's metrics at %q: %v", metricsAt, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"fieldmesh_relay_envelopes ", "fieldmesh_relay_enrolments_total{result=\"not_carried\"}", "libp2p_"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("R's metrics lack %q", want)
		}
	}

	// --- Clean exits, and clean logs.
	if err := a.stop(t, e2eSignal); err != nil {
		t.Errorf("A: exit: %v", err)
	}
	if err := r.stop(t, e2eSignal); err != nil {
		t.Errorf("R: exit: %v", err)
	}
	for _, n := range []*e2eNode{r, a, b, x} {
		logText, err := os.ReadFile(n.logPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"DATA RACE", "panic:", "level=ERROR"} {
			if strings.Contains(string(logText), bad) {
				t.Errorf("%s's log contains %q:\n%s", n.label, bad, e2eTail(n.logPath, 40))
			}
		}
	}

	// --- Nothing readable at the relay.
	needles := []string{urgentText, replyText, teamName, otherTeam, patient, a.name, b.name, x.name}
	t.Run("scanner finds a planted needle", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "planted"), []byte("xx"+patient+"yy"), 0o600)
		hits, err := e2eScan([]string{dir}, needles, 4096)
		if err != nil || len(hits) != 1 {
			t.Fatalf("planted needle: %v hits, %v; want 1", hits, err)
		}
	})
	hits, err := e2eScan([]string{r.dir, r.logPath}, needles, e2eScanChunk)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		t.Errorf("plaintext at the relay: %q in %s", h.Needle, h.File)
	}
	files, size, _ := e2eFiles(r.dir)
	t.Logf("scanned R's data directory (%d files, %d bytes) and its log for %d needles: %d hits", files, size, len(needles), len(hits))
	if logText, _ := os.ReadFile(r.logPath); strings.Contains(string(logText), team.ID) {
		t.Errorf("R's log contains the team id")
	}
}
