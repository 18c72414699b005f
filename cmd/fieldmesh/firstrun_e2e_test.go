package main

// The first run and the errors a new user meets, through the binary (issue "the command line gets
// the same care"). Every wait is on an event (a log line, a process exit) with a deadline.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFirstRunE2E drives `fieldmesh up` as a new user without a terminal does: no
// FIELDMESH_PASSPHRASE, the passphrase as one line on standard input. How it can fail, in the order
// it checks:
//   - a first run with an empty standard input, an empty passphrase line, or no --name is not
//     refused with one line "fieldmesh: ..." saying what is missing, or leaves anything on disk
//     (a data directory that did not exist must still not exist);
//   - a first run with the passphrase on standard input does not reach msg="node ready", or prints
//     no next-steps hint naming the commands (team create, team invite, team join, send) with its
//     --data;
//   - a restart with a wrong passphrase line is not refused as "wrong passphrase", or one with the
//     right line does not start; a node that is in a team prints the next-steps hint again.
func TestFirstRunE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs daemons; skipped with -short")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Dr Banda")
	loopback := "--listen=/ip4/127.0.0.1/tcp/0"

	// --- Refused first runs change nothing.
	fresh := filepath.Join(c.root, "fresh") // does not exist
	refusals := []struct {
		what, dir, stdin string
		args             []string
		want             string
	}{
		{"empty standard input", a.dir, "", []string{"--name", a.name}, "standard input"},
		{"empty passphrase line", a.dir, "\n", []string{"--name", a.name}, "empty passphrase"},
		{"no --name", a.dir, a.pass + "\n", nil, "--name"},
		{"empty standard input, new directory", fresh, "", []string{"--name", a.name}, "standard input"},
		{"empty passphrase line, new directory", fresh, "\n", []string{"--name", a.name}, "empty passphrase"},
	}
	for _, r := range refusals {
		args := append([]string{"up", "--no-mdns", loopback}, r.args...)
		res := e2eRunStdin(t, c, r.dir, r.stdin, args...)
		msg := e2eFailsCleanly(t, "first run, "+r.what, res)
		if !strings.Contains(msg, r.want) {
			t.Errorf("first run, %s: %q does not mention %q", r.what, msg, r.want)
		}
		if r.dir == fresh {
			if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("first run, %s: %s exists afterwards (stat: %v); want nothing created", r.what, fresh, err)
			}
			continue
		}
		if ents, err := os.ReadDir(r.dir); err != nil || len(ents) != 0 {
			t.Errorf("first run, %s: %s holds %d entries afterwards (%v); want none", r.what, r.dir, len(ents), err)
		}
	}

	// --- A first run with the passphrase on standard input.
	pa := e2eSpawn(t, a, "", a.pass+"\n", "up", "--no-mdns", loopback, "--name", a.name)
	pa.waitReady(t)
	hint := []string{"team create", "team invite", "team join", "send TEAM", "--data " + a.dir}
	_, hintAt := pa.lines.waitLine(t, "next-steps hint", 0, c.timeout(10*time.Second), pa.exited, hint[0])
	pa.lines.waitLine(t, "next-steps hint", hintAt, c.timeout(10*time.Second), pa.exited, hint[3])
	for _, want := range hint {
		if !pa.lines.anyFrom(hintAt, want) {
			t.Errorf("next-steps hint: no line with %q", want)
		}
	}
	var st e2eStatusOut
	if err := c.decode("status", a.runJSON(t, "status"), &st, e2eKeysStatus); err != nil {
		t.Fatal(err)
	}
	if st.Name != a.name {
		t.Errorf("status after the first run: name %q; want %q", st.Name, a.name)
	}

	if res := a.run(t, "team", "create", "Outreach"); res.code != 0 {
		t.Fatalf("A: %s", res)
	}

	// --- Restarts read the passphrase line too.
	if err := pa.stop(t); err != nil {
		t.Fatalf("A: exit after SIGTERM: %v", err)
	}
	if msg := e2eFailsCleanly(t, "restart with a wrong passphrase line", e2eRunStdin(t, c, a.dir, "not it\n", "up", "--no-mdns", loopback)); !strings.Contains(msg, "wrong passphrase") {
		t.Errorf("restart with a wrong passphrase line: %q; want wrong passphrase", msg)
	}
	pa = e2eSpawn(t, a, "", a.pass+"\n", "up", "--no-mdns", loopback)
	pa.waitReady(t)
	if res := a.run(t, "status"); res.code != 0 {
		t.Errorf("A: %s", res)
	}
	if err := pa.stop(t); err != nil {
		t.Fatalf("A: exit after SIGTERM: %v", err)
	}
	if pa.lines.anyFrom(0, "team create") {
		t.Errorf("A is in a team, yet its node printed the next-steps hint again")
	}
}

// TestCLIErrorsE2E checks the errors a new user met on main, each as one line "fieldmesh: ..."
// that says what is wrong. How it can fail, in the order it checks:
//   - a second `up` on the running node's data directory does not fail in one line saying a node is
//     already running there (Badger's lock message must not show);
//   - a second node told to listen on the first one's TCP address starts (libp2p binds with
//     SO_REUSEPORT, so it could), or does not fail in one line naming that address;
//   - a client command given a --data that does not exist, or an empty directory, suggests
//     `fieldmesh up` (which would create a second identity) instead of saying the directory holds no
//     store, or creates the directory; on a directory with a store and no node it no longer
//     suggests `fieldmesh up`;
//   - `team invite` or `device link` with --ttl 0 or a negative --ttl succeeds;
//   - an error shows a Go package prefix ("wire: ", "humancode: ") or loses its meaning.
func TestCLIErrorsE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs daemons; skipped with -short")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Dr Banda")
	b := c.node(t, "B", "Nurse Phiri")
	fresh := filepath.Join(c.root, "fresh") // does not exist
	loopback := "--listen=/ip4/127.0.0.1/tcp/0"
	for _, n := range []*e2eNode{a, b} {
		if res := n.run(t, "init", "--name", n.name); res.code != 0 {
			t.Fatalf("%s: %s", n.label, res)
		}
	}
	a.up(t)
	var st e2eStatusOut
	if err := c.decode("status", a.runJSON(t, "status"), &st, e2eKeysStatus); err != nil {
		t.Fatal(err)
	}

	// --- A second up on the same data directory.
	msg := e2eFailsCleanly(t, "second up on a running node's directory", a.run(t, "up", "--no-mdns", loopback))
	if !strings.Contains(msg, "already running") || !strings.Contains(msg, a.dir) || strings.Contains(msg, "Badger") {
		t.Errorf("second up: %q; want one line saying a node is already running on %s", msg, a.dir)
	}

	// --- A second node on a taken port.
	taken, err := e2eDialAddr(st)
	if err != nil {
		t.Fatal(err)
	}
	taken, _, _ = strings.Cut(taken, "/p2p/")
	pb := e2eSpawn(t, b, b.pass, "", "up", "--no-mdns", "--listen="+taken)
	if err := pb.waitExit(t); err == nil {
		t.Errorf("B on A's port %s: exited 0", taken)
	} else if pb.ready() {
		t.Errorf("B started on A's port %s; want a refusal", taken)
	} else if msg := pb.errorLine(t); !strings.Contains(msg, taken) || !strings.Contains(msg, "in use") {
		t.Errorf("B on A's port: %q; want one line naming %s as in use", msg, taken)
	}

	// --- Client commands on a mistyped --data.
	empty := filepath.Join(c.root, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{fresh, empty} {
		msg := e2eFailsCleanly(t, "status on "+dir, e2eRunStdin(t, c, dir, "", "status"))
		if !strings.Contains(msg, "check --data") || strings.Contains(msg, "fieldmesh up") {
			t.Errorf("status on %s: %q; want it to say the directory has no store (check --data), not to start a node", dir, msg)
		}
		if !strings.Contains(msg, dir) {
			t.Errorf("status on %s: %q does not name the directory", dir, msg)
		}
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status created %s (stat: %v)", fresh, err)
	}
	e2eCheckNoDaemon(t, e2eRunStdin(t, c, b.dir, "", "status")) // a store, no node: the old hint stays
	if msg := e2eFailsCleanly(t, "B status", e2eRunStdin(t, c, b.dir, "", "status")); !strings.Contains(msg, "fieldmesh up") {
		t.Errorf("status on a store with no node: %q; want the hint to start one with fieldmesh up", msg)
	}

	// --- Code lifetimes.
	const team = "Outreach"
	if res := a.run(t, "team", "create", team); res.code != 0 {
		t.Fatalf("A: %s", res)
	}
	for _, args := range [][]string{
		{"team", "invite", team, "--ttl", "0"},
		{"team", "invite", team, "--ttl=-1h"},
		{"device", "link", team, "--ttl", "0"},
		{"device", "link", team, "--ttl=-5m"},
	} {
		what := strings.Join(args, " ")
		if msg := e2eFailsCleanly(t, what, a.run(t, args...)); !strings.Contains(msg, "--ttl") {
			t.Errorf("%s: %q does not name --ttl", what, msg)
		}
	}

	// --- No Go package prefixes.
	for _, tc := range []struct {
		args         []string
		keep, prefix string
	}{
		{[]string{"team", "create", "Other", "--kind", "family"}, "clinical or social", "wire: "},
		{[]string{"team", "join", "fmi9-notacode"}, "malformed", "humancode: "},
	} {
		what := strings.Join(tc.args, " ")
		msg := e2eFailsCleanly(t, what, a.run(t, tc.args...))
		if strings.Contains(msg, tc.prefix) || !strings.Contains(msg, tc.keep) {
			t.Errorf("%s: %q; want the message (%q) without the package prefix %q", what, msg, tc.keep, tc.prefix)
		}
	}

}

// e2eRunStdin runs one CLI command on dir with no passphrase in the environment and stdin as its
// standard input (not a terminal).
func e2eRunStdin(t *testing.T, c *e2eCluster, dir, stdin string, args ...string) e2eResult {
	t.Helper()
	timeout := c.timeout(30 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	full := append(slices.Clip(args), "--data="+dir)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	cmd.Env = append(slices.Clip(c.env), "GORACE=halt_on_error=1 atexit_sleep_ms=0")
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := e2eResult{args: full, stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("fieldmesh %s did not finish within %v; stderr:\n%s", strings.Join(full, " "), timeout, res.stderr)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("fieldmesh %s: %v", strings.Join(full, " "), err)
	}
	return res
}

// e2eProc is a long-running fieldmesh process of a node; its output goes to the node's log and is
// kept line by line.
type e2eProc struct {
	n       *e2eNode
	cmd     *exec.Cmd
	lines   *e2eLines
	readyCh chan struct{}
	exited  chan struct{}
	waitErr error // set before exited is closed
}

// e2eSpawn starts fieldmesh ARGS on n's data directory with pass in FIELDMESH_PASSPHRASE (none when
// empty) and stdin as its standard input; it does not wait for anything.
func e2eSpawn(t *testing.T, n *e2eNode, pass, stdin string, args ...string) *e2eProc {
	t.Helper()
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.started++
	p := &e2eProc{n: n, lines: newE2ELines(), readyCh: make(chan struct{}), exited: make(chan struct{})}
	var once sync.Once
	w := &e2eLogWriter{file: f, onLine: func(line string) {
		p.lines.add(line)
		if strings.Contains(line, `msg="node ready"`) {
			once.Do(func() { close(p.readyCh) })
		}
	}}
	p.cmd = exec.Command(n.c.bin, append(slices.Clip(args), "--data="+n.dir)...)
	p.cmd.Env = append(slices.Clip(n.c.env), "GORACE=halt_on_error=1")
	if pass != "" {
		p.cmd.Env = append(p.cmd.Env, "FIELDMESH_PASSPHRASE="+pass)
	}
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: starting fieldmesh %s: %v", n.label, args[0], err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func (p *e2eProc) ready() bool {
	select {
	case <-p.readyCh:
		return true
	default:
		return false
	}
}

// waitReady waits for the msg="node ready" line, with a deadline.
func (p *e2eProc) waitReady(t *testing.T) {
	t.Helper()
	timeout := p.n.c.timeout(30 * time.Second)
	select {
	case <-p.readyCh:
	case <-p.exited:
		t.Fatalf("%s: exited before it was ready (%v); output:\n%s", p.n.label, p.waitErr, p.lines.all())
	case <-time.After(timeout):
		t.Fatalf("%s: no msg=\"node ready\" line within %v; output:\n%s", p.n.label, timeout, p.lines.all())
	}
}

// waitExit waits for the process to exit by itself, with a deadline; a process that is ready
// first is killed (its readiness is what the caller then reports).
func (p *e2eProc) waitExit(t *testing.T) error {
	t.Helper()
	timeout := p.n.c.timeout(30 * time.Second)
	select {
	case <-p.exited:
	case <-p.readyCh:
		p.cmd.Process.Kill()
		<-p.exited
	case <-time.After(timeout):
		t.Fatalf("%s: neither exited nor became ready within %v; output:\n%s", p.n.label, timeout, p.lines.all())
	}
	return p.waitErr
}

// stop sends SIGTERM and waits for the exit, with a deadline.
func (p *e2eProc) stop(t *testing.T) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: SIGTERM: %v", p.n.label, err)
	}
	timeout := p.n.c.timeout(20 * time.Second)
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(timeout):
		t.Fatalf("%s: no exit within %v of SIGTERM", p.n.label, timeout)
		return nil
	}
}

// errorLine checks that an exited process printed exactly one line, "fieldmesh: ...", and
// returns it.
func (p *e2eProc) errorLine(t *testing.T) string {
	t.Helper()
	var code int
	var exitErr *exec.ExitError
	if errors.As(p.waitErr, &exitErr) {
		code = exitErr.ExitCode()
	}
	return e2eFailsCleanly(t, p.n.label+": fieldmesh "+strings.Join(p.cmd.Args[1:], " "),
		e2eResult{args: p.cmd.Args[1:], stderr: p.lines.all(), code: code})
}

// anyFrom reports whether a line from index from on contains s.
func (l *e2eLines) anyFrom(from int, s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines[max(from, 0):] {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// all returns the lines so far, newline-terminated.
func (l *e2eLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines {
		b.WriteString(line + "\n")
	}
	return b.String()
}
