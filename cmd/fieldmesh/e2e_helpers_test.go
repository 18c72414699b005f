package main

// Helpers for e2e_test.go: building the binary, running daemons and CLI commands as separate
// processes, following `messages --follow --json`, checking the CLI's JSON against the contract,
// and scanning files for plaintext. Everything here uses os/exec, the standard library and the
// chaos run's plaintext scanner (simulations/chaos, which imports nothing else of fieldmesh), so
// the end-to-end test compiles whatever state the rest of the package is in; every identifier
// starts with "e2e" so it cannot collide with the command's own code.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/simulations/chaos"
)

// e2eRaceEnabled reports whether this test binary was built with -race. The daemon binary is
// then built with -race too, so a data race in any of the three daemons fails the test, and every
// deadline is stretched by e2eRaceSlowdown.
func e2eRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

const e2eRaceSlowdown = 3

// e2eBinary is the fieldmesh binary the end-to-end tests run, built once per test binary (linking a
// race-enabled binary takes seconds, and every test needs the same one); TestMain removes it.
var e2eBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain runs the package's tests, then removes the binary e2eBuild built.
func TestMain(m *testing.M) {
	code := m.Run()
	if e2eBinary.dir != "" {
		os.RemoveAll(e2eBinary.dir)
	}
	os.Exit(code)
}

// e2eBuild builds the fieldmesh binary from the package directory (the test's working directory),
// once for the whole test binary, and returns its path.
func e2eBuild(t *testing.T, race bool) string {
	t.Helper()
	e2eBinary.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			e2eBinary.err = fmt.Errorf("go tool not on PATH: %v", err)
			return
		}
		if e2eBinary.dir, err = os.MkdirTemp("", "fmbin"); err != nil {
			e2eBinary.err = err
			return
		}
		bin := filepath.Join(e2eBinary.dir, "fieldmesh")
		args := []string{"build", "-o", bin}
		if race {
			args = append(args, "-race")
		}
		args = append(args, ".")
		start := time.Now()
		if out, err := exec.Command(goBin, args...).CombinedOutput(); err != nil {
			e2eBinary.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		e2eBinary.path = bin
		t.Logf("built %s (race=%v) in %v", bin, race, time.Since(start).Round(time.Millisecond))
	})
	if e2eBinary.err != nil {
		t.Fatal(e2eBinary.err)
	}
	return e2eBinary.path
}

// e2eRandHex returns n random bytes in hex.
func e2eRandHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// e2eRunTag returns 10 random lowercase letters that make a run's texts distinctive. It holds no
// digit, so a message text that carries it never looks like a phone number or another raw patient
// identifier to the send check (hex could: 8 hex characters are all digits about once in 40 runs).
func e2eRunTag(t *testing.T) string {
	t.Helper()
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return string(b)
}

// e2eCluster is the shared set-up of one test run: the binary, the root directory under which
// every process writes (data directories, logs, HOME, TMPDIR), and the deadlines.
type e2eCluster struct {
	bin   string
	root  string
	env   []string // base environment of every process, without a passphrase
	slow  time.Duration
	nodes []*e2eNode

	mu       sync.Mutex
	contract map[string]bool // CLI contract deviations seen, reported once each
}

// e2eNewCluster builds the binary and prepares a short root directory (unix socket paths are
// limited to 108 bytes, and DIR/api.sock must fit). The root is removed when the test ends,
// unless FIELDMESH_E2E_KEEP is set.
func e2eNewCluster(t *testing.T) *e2eCluster {
	t.Helper()
	race := e2eRaceEnabled()
	c := &e2eCluster{slow: 1, contract: map[string]bool{}}
	if race {
		c.slow = e2eRaceSlowdown
	}
	c.bin = e2eBuild(t, race)

	root, err := os.MkdirTemp("", "fm")
	if err != nil {
		t.Fatal(err)
	}
	if len(root) > 60 { // a long $TMPDIR: fall back to /tmp, which is short
		os.RemoveAll(root)
		if root, err = os.MkdirTemp("/tmp", "fm"); err != nil {
			t.Fatal(err)
		}
	}
	c.root = root
	t.Cleanup(func() {
		if os.Getenv("FIELDMESH_E2E_KEEP") != "" {
			t.Logf("kept %s (FIELDMESH_E2E_KEEP is set)", root)
			return
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("removing %s: %v", root, err)
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range c.nodes {
			t.Logf("last lines of %s:\n%s", n.logPath, e2eTail(n.logPath, 40))
		}
	})

	// Processes get a HOME, XDG directories and TMPDIR inside root, so anything written outside
	// --data is found by the plaintext scan too, and the user's real home is never touched.
	home := filepath.Join(root, "home")
	tmp := filepath.Join(root, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "FIELDMESH_"), strings.HasPrefix(k, "XDG_"),
			k == "HOME", k == "TMPDIR", k == "GORACE":
			continue
		}
		c.env = append(c.env, kv)
	}
	c.env = append(c.env,
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"TMPDIR="+tmp,
	)
	return c
}

// timeout scales a deadline for a race-enabled build.
func (c *e2eCluster) timeout(d time.Duration) time.Duration { return d * c.slow }

// deviation records a departure from the CLI contract; e2eReportContract turns each distinct one
// into one test error.
func (c *e2eCluster) deviation(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.contract[fmt.Sprintf(format, args...)] = true
}

func (c *e2eCluster) reportContract(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	msgs := make([]string, 0, len(c.contract))
	for m := range c.contract {
		msgs = append(msgs, m)
	}
	sort.Strings(msgs)
	for _, m := range msgs {
		t.Errorf("CLI contract: %s", m)
	}
}

// e2eNode is one fieldmesh installation: a data directory and, while it runs, a daemon.
type e2eNode struct {
	c        *e2eCluster
	label    string // "A", "B", "C"
	name     string // display name given to init
	dir      string // --data
	logPath  string // stderr and stdout of every daemon run, appended; a sibling of dir
	pass     string
	daemon   *e2eDaemon // nil while stopped
	device   string
	peerID   string
	started  int
	followed []*e2eFollower
}

func (c *e2eCluster) node(t *testing.T, label, name string) *e2eNode {
	t.Helper()
	lower := strings.ToLower(label)
	n := &e2eNode{
		c:       c,
		label:   label,
		name:    name,
		dir:     filepath.Join(c.root, lower),
		logPath: filepath.Join(c.root, lower+".log"),
		pass:    "pass-" + label + "-" + e2eRandHex(t, 8),
	}
	if err := os.Mkdir(n.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if sock := filepath.Join(n.dir, "api.sock"); len(sock) > 100 {
		t.Fatalf("socket path %s is too long for a unix socket", sock)
	}
	c.nodes = append(c.nodes, n)
	return n
}

// environ returns the environment of a process of this node. With -race, a race report fails the
// process at once (in a daemon, it lands in the log, which is checked after shutdown); short-lived
// commands skip the race runtime's default one-second sleep at exit, which would otherwise cost
// a second per `fieldmesh send`.
func (n *e2eNode) environ(pass string, daemon bool) []string {
	gorace := "GORACE=halt_on_error=1"
	if !daemon {
		gorace += " atexit_sleep_ms=0"
	}
	return append(slices.Clip(n.c.env), "FIELDMESH_PASSPHRASE="+pass, gorace)
}

// e2eResult is the outcome of one CLI command.
type e2eResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r e2eResult) String() string {
	return fmt.Sprintf("fieldmesh %s: exit %d, stderr %q", strings.Join(r.args, " "), r.code, r.stderr)
}

// run runs one CLI command against the node's data directory with the node's passphrase and
// returns its output. It fails the test if the command cannot be started or outlives its deadline;
// a non-zero exit is the caller's to judge.
func (n *e2eNode) run(t *testing.T, args ...string) e2eResult {
	t.Helper()
	return n.runWith(t, n.pass, n.c.timeout(30*time.Second), args...)
}

func (n *e2eNode) runWith(t *testing.T, pass string, timeout time.Duration, args ...string) e2eResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	full := append(slices.Clip(args), "--data="+n.dir)
	cmd := exec.CommandContext(ctx, n.c.bin, full...)
	cmd.Env = n.environ(pass, false)
	cmd.Stdin = nil // /dev/null: a prompt fails instead of hanging
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := e2eResult{args: full, stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s: fieldmesh %s did not finish within %v; stderr:\n%s",
			n.label, strings.Join(full, " "), timeout, res.stderr)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("%s: fieldmesh %s: %v", n.label, strings.Join(full, " "), err)
	}
	return res
}

// runJSON runs a command with --json, requires exit 0, and returns stdout.
func (n *e2eNode) runJSON(t *testing.T, args ...string) []byte {
	t.Helper()
	res := n.run(t, append(slices.Clip(args), "--json")...)
	if res.code != 0 {
		t.Fatalf("%s: %s", n.label, res)
	}
	return []byte(res.stdout)
}

// e2eFailsCleanly checks the CLI's error contract for a command expected to fail: a non-zero exit
// and exactly one line on stderr, "fieldmesh: <message>". It returns the message.
func e2eFailsCleanly(t *testing.T, what string, res e2eResult) string {
	t.Helper()
	if res.code == 0 {
		t.Errorf("%s: succeeded; want a failure (stdout %q)", what, res.stdout)
		return ""
	}
	if res.code != 1 {
		t.Errorf("%s: exit code %d; want 1 (the contract's error exit)", what, res.code)
	}
	msg := strings.TrimRight(res.stderr, "\n")
	if strings.Contains(msg, "\n") || msg == "" {
		t.Errorf("%s: stderr is %d lines; want exactly one:\n%s", what, strings.Count(msg, "\n")+1, res.stderr)
	}
	if !strings.HasPrefix(msg, "fieldmesh: ") {
		t.Errorf("%s: stderr %q does not start with \"fieldmesh: \"", what, msg)
	}
	return msg
}

// The CLI's JSON, as the contract describes it. Field presence is checked separately
// (e2eDecode), because a missing field decodes to a zero value silently.
type (
	e2eInitOut struct {
		Device string `json:"device"`
		Short  string `json:"short"`
		PeerID string `json:"peer_id"`
	}
	e2eSyncStats struct {
		Sessions          int64 `json:"sessions"`
		BytesSent         int64 `json:"bytes_sent"`
		BytesReceived     int64 `json:"bytes_received"`
		EnvelopesReceived int64 `json:"envelopes_received"`
	}
	e2eStatusOut struct {
		Device string       `json:"device"`
		Short  string       `json:"short"`
		Name   string       `json:"name"`
		PeerID string       `json:"peer_id"`
		Addrs  []string     `json:"addrs"`
		Teams  int          `json:"teams"`
		Peers  int          `json:"peers"`
		Sync   e2eSyncStats `json:"sync"`
		// LowData is the low-data mode: on, and how many ops wait in the outbox.
		LowData struct {
			On     bool `json:"on"`
			Queued int  `json:"queued"`
		} `json:"low_data"`
	}
	e2eTeamOut struct {
		ID   string `json:"id"`
		Name string `json:"name"`
		Kind string `json:"kind"`
	}
	e2eTeamListItem struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Kind     string `json:"kind"`
		Members  int    `json:"members"`
		Messages int    `json:"messages"`
	}
	e2eInviteOut struct {
		Code    string `json:"code"`
		Expires string `json:"expires"`
	}
	e2eSendOut struct {
		ID  string `json:"id"`
		HLC uint64 `json:"hlc"`
	}
	e2eMessage struct {
		ID         string  `json:"id"`
		Author     string  `json:"author"`
		AuthorName string  `json:"author_name"`
		Time       string  `json:"time"`
		HLC        uint64  `json:"hlc"`
		Text       string  `json:"text"`
		Priority   string  `json:"priority"`
		Patient    string  `json:"patient"`
		ReplyTo    *string `json:"reply_to"`
		// Queued: this device's own message, held in the outbox by low-data mode, not sent yet.
		Queued bool `json:"queued"`
	}
)

var (
	e2eKeysInit     = []string{"device", "short", "peer_id"}
	e2eKeysStatus   = []string{"device", "short", "name", "peer_id", "addrs", "teams", "peers", "sync", "relays", "low_data", "attachments"}
	e2eKeysSync     = []string{"sessions", "bytes_sent", "bytes_received", "envelopes_received"}
	e2eKeysTeam     = []string{"id", "name", "kind"}
	e2eKeysTeamList = []string{"id", "name", "kind", "members", "messages"}
	e2eKeysInvite   = []string{"code", "expires"}
	e2eKeysSend     = []string{"id", "hlc"}
	e2eKeysMessage  = []string{"id", "author", "author_name", "time", "hlc", "text", "priority", "patient", "reply_to", "queued"}
)

// decode decodes one JSON object into v and records a contract deviation for every key of keys
// that is missing. what names the command in messages.
func (c *e2eCluster) decode(what string, data []byte, v any, keys []string) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		c.deviation("%s: output is not one JSON object: %v: %q", what, err, e2eClip(data))
		return err
	}
	for _, k := range keys {
		if _, ok := raw[k]; !ok {
			c.deviation("%s: JSON has no %q field", what, k)
		}
	}
	return json.Unmarshal(data, v)
}

// e2eDecodeMessages decodes NDJSON, one message object per non-empty line, recording missing keys.
func e2eDecodeMessages(c *e2eCluster, what string, data []byte) ([]e2eMessage, error) {
	var msgs []e2eMessage
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m e2eMessage
		if err := c.decode(what, line, &m, e2eKeysMessage); err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// e2eDecodeList decodes a JSON array of objects into v, recording missing keys.
func e2eDecodeList(c *e2eCluster, what string, data []byte, v any, keys []string) error {
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		c.deviation("%s: output is not a JSON array of objects: %v: %q", what, err, e2eClip(data))
		return err
	}
	for _, o := range raw {
		for _, k := range keys {
			if _, ok := o[k]; !ok {
				c.deviation("%s: JSON has no %q field", what, k)
			}
		}
	}
	return json.Unmarshal(data, v)
}

func e2eClip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// e2eDaemon is one run of `fieldmesh up`.
type e2eDaemon struct {
	cmd     *exec.Cmd
	log     *e2eLogWriter
	ready   chan struct{} // closed at the first msg="node ready" line
	readyAt time.Time     // set before ready is closed
	// removed is closed at the first line saying the device learned it was removed from a team.
	removed chan struct{}
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // set before exited is closed
}

// e2eLogWriter appends a daemon's output to its log file and watches it line by line for the
// readiness line. Both stdout and stderr of the daemon write here, from exec's copying goroutines.
type e2eLogWriter struct {
	mu      sync.Mutex
	file    *os.File
	partial []byte
	onLine  func(line string)
}

func (w *e2eLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.file.Write(p); err != nil {
		return 0, err
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		w.onLine(line)
	}
	return len(p), nil
}

// start runs `fieldmesh up` with pass as the passphrase; it does not wait for readiness.
func (n *e2eNode) start(t *testing.T, pass string, extra ...string) *e2eDaemon {
	t.Helper()
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.started++
	fmt.Fprintf(f, "=== e2e: %s run %d of fieldmesh up %s\n", n.label, n.started, strings.Join(extra, " "))
	d := &e2eDaemon{ready: make(chan struct{}), exited: make(chan struct{}), removed: make(chan struct{})}
	var once, removedOnce sync.Once
	d.log = &e2eLogWriter{file: f, onLine: func(line string) {
		if strings.Contains(line, `msg="node ready"`) {
			once.Do(func() {
				d.readyAt = time.Now()
				close(d.ready)
			})
		}
		if strings.Contains(line, `msg="this device was removed from the team"`) {
			removedOnce.Do(func() { close(d.removed) })
		}
	}}
	args := append([]string{"up", "--data=" + n.dir, "--no-mdns", "--listen=/ip4/127.0.0.1/tcp/0"}, extra...)
	d.cmd = exec.Command(n.c.bin, args...)
	d.cmd.Env = n.environ(pass, true)
	d.cmd.Stdin = nil
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: starting fieldmesh up: %v", n.label, err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		f.Close()
		close(d.exited)
	}()
	t.Cleanup(func() { d.kill() })
	return d
}

// kill ends the daemon with SIGKILL if it still runs and waits (bounded) for it.
func (d *e2eDaemon) kill() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
	}
}

// up starts the node's daemon and waits, with a deadline, for its msg="node ready" line.
func (n *e2eNode) up(t *testing.T, extra ...string) *e2eDaemon {
	t.Helper()
	d := n.start(t, n.pass, extra...)
	timeout := n.c.timeout(30 * time.Second)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-d.ready:
	case <-d.exited:
		t.Fatalf("%s: fieldmesh up exited before it was ready (%v); log:\n%s", n.label, d.waitErr, e2eTail(n.logPath, 30))
	case <-timer.C:
		t.Fatalf("%s: no msg=\"node ready\" line within %v; log:\n%s", n.label, timeout, e2eTail(n.logPath, 30))
	}
	n.daemon = d
	return d
}

// stop sends sig to the running daemon and waits for it to exit, with a deadline. It returns the
// process's exit error (nil for exit status 0).
func (n *e2eNode) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	d := n.daemon
	if d == nil {
		t.Fatalf("%s: stop: no daemon running", n.label)
	}
	n.daemon = nil
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signalling daemon: %v", n.label, err)
	}
	timeout := n.c.timeout(20 * time.Second)
	select {
	case <-d.exited:
		return d.waitErr
	case <-time.After(timeout):
		d.kill()
		t.Fatalf("%s: daemon did not exit within %v of %v; log:\n%s", n.label, timeout, sig, e2eTail(n.logPath, 30))
		return nil
	}
}

// e2eTail returns the last n lines of a file, for failure messages.
func e2eTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// e2eFollower runs `fieldmesh messages TEAM --follow --json` and collects the messages it prints.
// Tests wait on it for a condition, with a deadline: each printed line wakes the waiter, so there
// is no polling and no sleep.
type e2eFollower struct {
	node   *e2eNode
	cmd    *exec.Cmd
	stderr bytes.Buffer // read only after the process has been waited for
	eof    chan struct{}
	once   sync.Once

	mu      sync.Mutex
	msgs    []e2eMessage
	bad     []string      // lines that did not decode
	changed chan struct{} // closed and replaced whenever msgs grows
}

func (n *e2eNode) follow(t *testing.T, team string) *e2eFollower {
	t.Helper()
	f := &e2eFollower{node: n, eof: make(chan struct{}), changed: make(chan struct{})}
	f.cmd = exec.Command(n.c.bin, "messages", team, "--follow", "--json", "--data="+n.dir)
	f.cmd.Env = n.environ(n.pass, false)
	f.cmd.Stdin = nil
	f.cmd.Stderr = &f.stderr
	f.cmd.WaitDelay = 5 * time.Second
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("%s: starting messages --follow: %v", n.label, err)
	}
	go f.read(stdout)
	t.Cleanup(f.stop)
	n.followed = append(n.followed, f)
	return f
}

func (f *e2eFollower) read(r io.Reader) {
	defer close(f.eof)
	br := bufio.NewReader(r)
	const what = "messages --follow --json"
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var m e2eMessage
			derr := f.node.c.decode(what, line, &m, e2eKeysMessage)
			f.mu.Lock()
			if derr != nil {
				f.bad = append(f.bad, string(line))
			} else {
				f.msgs = append(f.msgs, m)
				close(f.changed)
				f.changed = make(chan struct{})
			}
			f.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// waitFor blocks until cond holds for the messages printed so far, and returns when it did. It
// fails the test when timeout passes first or the follower exits.
func (f *e2eFollower) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]e2eMessage) bool) time.Time {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		ok, n, changed := cond(f.msgs), len(f.msgs), f.changed
		f.mu.Unlock()
		if ok {
			return time.Now()
		}
		select {
		case <-changed:
		case <-f.eof:
			f.mu.Lock()
			ok = cond(f.msgs)
			f.mu.Unlock()
			if ok {
				return time.Now()
			}
			f.stop()
			t.Fatalf("%s: messages --follow exited (%v) before %s; it printed %d messages; stderr: %s",
				f.node.label, f.cmd.ProcessState, what, n, f.stderr.String())
		case <-timer.C:
			t.Fatalf("%s: %s: not within %v; messages --follow printed %d messages", f.node.label, what, timeout, n)
		}
	}
}

// snapshot returns a copy of the messages printed so far.
func (f *e2eFollower) snapshot() []e2eMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.msgs)
}

// stop kills the follower and waits for it; it is idempotent.
func (f *e2eFollower) stop() {
	f.once.Do(func() {
		f.cmd.Process.Kill()
		select {
		case <-f.eof:
		case <-time.After(10 * time.Second):
		}
		f.cmd.Wait()
	})
}

// e2eHasIDs returns a condition that holds once every id in want has been printed.
func e2eHasIDs(want []string) func([]e2eMessage) bool {
	return func(msgs []e2eMessage) bool {
		seen := make(map[string]bool, len(msgs))
		for _, m := range msgs {
			seen[m.ID] = true
		}
		for _, id := range want {
			if !seen[id] {
				return false
			}
		}
		return true
	}
}

// e2eDuplicates returns the ids that occur more than once in msgs.
func e2eDuplicates(msgs []e2eMessage) []string {
	count := map[string]int{}
	var dups []string
	for _, m := range msgs {
		count[m.ID]++
		if count[m.ID] == 2 {
			dups = append(dups, m.ID)
		}
	}
	return dups
}

func e2eIDs(msgs []e2eMessage) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// e2eIsHex reports whether s is n lowercase hex characters.
func e2eIsHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// e2eDialAddr returns a loopback TCP address of a node with its /p2p/ part, for --bootstrap.
func e2eDialAddr(st e2eStatusOut) (string, error) {
	for _, a := range st.Addrs {
		if !strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			continue
		}
		if strings.Contains(a, "/p2p/") {
			return a, nil
		}
		return a + "/p2p/" + st.PeerID, nil
	}
	return "", fmt.Errorf("no /ip4/127.0.0.1/tcp address among %q", st.Addrs)
}

// e2eMemory returns VmRSS and VmHWM of a running process in KiB, from /proc/PID/status.
func e2eMemory(pid int) (rssKiB, hwmKiB int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &rssKiB
		case "VmHWM":
			dst = &hwmKiB
		default:
			continue
		}
		fields := strings.Fields(val) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("unexpected %s line %q", key, line)
		}
		if *dst, err = strconv.ParseInt(fields[0], 10, 64); err != nil {
			return 0, 0, err
		}
	}
	if rssKiB == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rssKiB, hwmKiB, nil
}

// e2eSignal is the signal a test sends to stop a daemon cleanly.
var e2eSignal os.Signal = syscall.SIGTERM

// e2eHit is one needle found in one file.
type e2eHit = chaos.FileHit

// e2eScanChunk is how much of a file e2eScan reads at a time.
const e2eScanChunk = 1 << 20

// e2eScan searches the raw bytes of every regular file under each root (recursively) for every
// needle and returns each (file, needle) pair found once, sorted: the chaos run's scanner
// (chaos.Scanner.Files), reading chunk bytes at a time. Consecutive chunks overlap, so a needle that
// straddles two chunks is found. Sockets, symlinks and other non-regular files are skipped.
func e2eScan(roots, needles []string, chunk int) ([]e2eHit, error) {
	s, err := chaos.NewScannerChunk(needles, chunk)
	if err != nil {
		return nil, err
	}
	hits, _, _, err := s.Files(roots...)
	return hits, err
}

// e2eFiles counts the regular files and bytes under root, so a report of "zero hits" says how
// much was looked at.
func e2eFiles(root string) (files int, size int64, err error) {
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files++
		size += info.Size()
		return nil
	})
	return files, size, err
}

// e2eInit runs `init --name` on each node and records its device id and peer id.
func e2eInit(t *testing.T, c *e2eCluster, nodes ...*e2eNode) {
	t.Helper()
	for _, n := range nodes {
		var in e2eInitOut
		if err := c.decode("init", n.runJSON(t, "init", "--name", n.name), &in, e2eKeysInit); err != nil {
			t.Fatalf("%s: init: %v", n.label, err)
		}
		n.device, n.peerID = in.Device, in.PeerID
	}
}

// e2eJoin has each joiner join the team with a fresh invite code of admin's, and fails the test on
// any error or a join into another team.
func e2eJoin(t *testing.T, c *e2eCluster, admin *e2eNode, team string, joiners ...*e2eNode) {
	t.Helper()
	for _, n := range joiners {
		var inv e2eInviteOut
		if err := c.decode("team invite", admin.runJSON(t, "team", "invite", team), &inv, e2eKeysInvite); err != nil {
			t.Fatal(err)
		}
		var joined e2eTeamOut
		if err := c.decode("team join", n.runJSON(t, "team", "join", inv.Code), &joined, e2eKeysTeam); err != nil || joined.ID != team {
			t.Fatalf("%s: team join: %+v, %v; want team %s", n.label, joined, err, team)
		}
	}
	// Wait until the admin and every joiner know all the members: a member that has not yet learned
	// of a join seals its next message to the epoch before it, which the joiner never reads
	// (docs/security.md, "A message sent as someone joins").
	if len(joiners) > 0 {
		e2eWaitMembers(t, c, team, e2eMembers(t, c, admin, team), append([]*e2eNode{admin}, joiners...)...)
	}
}

// e2eWaitMembers waits until each node's `team list` shows want members of team.
func e2eWaitMembers(t *testing.T, c *e2eCluster, team string, want int, nodes ...*e2eNode) {
	t.Helper()
	for _, n := range nodes {
		deadline := time.Now().Add(c.timeout(30 * time.Second))
		for got := e2eMembers(t, c, n, team); got < want; got = e2eMembers(t, c, n, team) {
			if time.Now().After(deadline) {
				t.Fatalf("%s knows %d members of the team after the joins; want %d", n.label, got, want)
			}
			time.Sleep(50 * time.Millisecond) // polls the daemon: no event reaches the test
		}
	}
}

// e2eMembers returns how many members n's `team list` shows for team (0 if it does not list it).
func e2eMembers(t *testing.T, c *e2eCluster, n *e2eNode, team string) int {
	t.Helper()
	var teams []e2eTeamListItem
	if err := e2eDecodeList(c, "team list", n.runJSON(t, "team", "list"), &teams, e2eKeysTeamList); err != nil {
		t.Fatalf("%s: team list: %v", n.label, err)
	}
	for _, tm := range teams {
		if tm.ID == team {
			return tm.Members
		}
	}
	return 0
}

// e2eTeamUp initialises each node and starts its daemon (on loopback, no mDNS, no relay); the first
// creates a team with `team create NAME CREATEARGS...`, and the others join it with invites of the
// first's. It returns the team.
func e2eTeamUp(t *testing.T, c *e2eCluster, name string, createArgs []string, nodes ...*e2eNode) e2eTeamOut {
	t.Helper()
	e2eInit(t, c, nodes...)
	for _, n := range nodes {
		n.up(t)
	}
	var team e2eTeamOut
	if err := c.decode("team create", nodes[0].runJSON(t, append([]string{"team", "create", name}, createArgs...)...), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	e2eJoin(t, c, nodes[0], team.ID, nodes[1:]...)
	return team
}

// e2eStartRelay runs `fieldmesh relay` for r on loopback (debug logs, then extra flags), waits for its
// readiness line, and returns its log lines, that line, its status and its loopback TCP address
// (ending in /p2p/ID), which devices give as --relay.
func e2eStartRelay(t *testing.T, c *e2eCluster, r *e2eNode, extra ...string) (lines *e2eLines, ready string, st e2eRelayStatus, addr string) {
	t.Helper()
	args := append([]string{"relay", "--listen=/ip4/127.0.0.1/tcp/0", "--log-level=debug"}, extra...)
	lines = e2eStartWatched(t, r, `msg="relay ready"`, args...)
	ready, _ = lines.waitLine(t, "R ready", 0, c.timeout(30*time.Second), r.daemon.exited, `msg="relay ready"`)
	if err := c.decode("relay status", r.runJSON(t, "relay", "status"), &st, e2eKeysRelayStatus); err != nil {
		t.Fatal(err)
	}
	for _, ad := range st.Addrs {
		if strings.HasPrefix(ad, "/ip4/127.0.0.1/tcp/") {
			addr = ad + "/p2p/" + st.PeerID
		}
	}
	if addr == "" {
		t.Fatalf("relay status: no loopback TCP address among %q", st.Addrs)
	}
	return lines, ready, st, addr
}

// e2eRelayTeam is a team carried by a clinic relay, as e2eTeamWithRelay started it.
type e2eRelayTeam struct {
	e2eTeamOut
	R       *e2eNode
	RLog    *e2eLines
	RStatus e2eRelayStatus // as the relay reported it when it started
	RAddr   string         // its loopback address, for --relay
	// Logs are each device's log lines, by the device.
	Logs map[*e2eNode]*e2eLines
}

// e2eTeamWithRelay starts a relay R, initialises the devices and starts each with --relay R; the
// first creates the team teamName and has R admit it (`team relay-code`, `relay admit`), and the
// others join with invites of the first's. It returns once every device logged that it enrolled at R.
func e2eTeamWithRelay(t *testing.T, c *e2eCluster, teamName string, devices ...*e2eNode) *e2eRelayTeam {
	t.Helper()
	wait := c.timeout(30 * time.Second)
	rt := &e2eRelayTeam{R: c.node(t, "R", ""), Logs: make(map[*e2eNode]*e2eLines)}
	e2eInit(t, c, devices...)
	rt.RLog, _, rt.RStatus, rt.RAddr = e2eStartRelay(t, c, rt.R)
	for _, n := range devices {
		rt.Logs[n] = e2eUpWatched(t, n, "--relay="+rt.RAddr)
	}
	admin := devices[0]
	if err := c.decode("team create", admin.runJSON(t, "team", "create", teamName), &rt.e2eTeamOut, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	var code struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(admin.runJSON(t, "team", "relay-code", rt.ID), &code); err != nil {
		t.Fatal(err)
	}
	rt.R.runJSON(t, "relay", "admit", code.Code)
	rt.Logs[admin].waitLine(t, admin.label+" enrols at R", 0, wait, admin.daemon.exited, `msg="enrolled at relay"`)
	for _, n := range devices[1:] {
		e2eJoin(t, c, admin, rt.ID, n)
		// The joiner may be refused once, if it enrols before the admin's roster naming it reaches R;
		// it retries.
		rt.Logs[n].waitLine(t, n.label+" enrols at R", 0, wait, n.daemon.exited, `msg="enrolled at relay"`)
	}
	e2eWaitMembers(t, c, rt.ID, len(devices), devices...)
	return rt
}
