package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Port is the TCP port every fieldmesh process in the lab listens on (each in its own namespace).
const Port = "4001"

// A fleet is the fieldmesh binary and the environment its processes share: a HOME, XDG
// directories and a TMPDIR inside the run's root, so anything a process writes outside its data
// directory is found by the plaintext scan too.
type fleet struct {
	bin  string
	root string
	env  []string
}

func newFleet(bin, root string) (*fleet, error) {
	f := &fleet{bin: bin, root: root}
	home, tmp := filepath.Join(root, "home"), filepath.Join(root, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "FIELDMESH_") || strings.HasPrefix(k, "XDG_") || k == "HOME" || k == "TMPDIR" {
			continue
		}
		f.env = append(f.env, kv)
	}
	f.env = append(f.env, "HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"TMPDIR="+tmp, "GORACE=halt_on_error=1")
	return f, nil
}

// A proc is one fieldmesh installation in the lab (a device, or the relay): a data directory, a
// log that every run of its daemon appends to, and while it runs, a daemon.
type proc struct {
	f     *fleet
	Label string // "d0", "relay"
	Name  string // display name (a needle: it must never leave the device in the clear)
	Dir   string
	Log   string
	Pass  string
	Host  *Host
	Peer  string // libp2p peer id

	mu     sync.Mutex
	d      *daemon // nil while stopped
	starts int
	kills  int
}

func (f *fleet) proc(label, name, pass string, h *Host) (*proc, error) {
	p := &proc{f: f, Label: label, Name: name, Pass: pass, Host: h,
		Dir: filepath.Join(f.root, label), Log: filepath.Join(f.root, label+".log")}
	if err := os.Mkdir(p.Dir, 0o700); err != nil {
		return nil, err
	}
	if len(filepath.Join(p.Dir, "api.sock")) > 100 {
		return nil, fmt.Errorf("chaos: socket path under %s is too long for a unix socket", p.Dir)
	}
	return p, nil
}

// Addr is the multiaddr other processes dial this one at.
func (p *proc) Addr() string { return "/ip4/" + p.Host.Addr + "/tcp/" + Port + "/p2p/" + p.Peer }

func (p *proc) environ() []string {
	return append(slices.Clip(p.f.env), "FIELDMESH_PASSPHRASE="+p.Pass)
}

// result is the outcome of one CLI command.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) err() error {
	if r.code == 0 {
		return nil
	}
	return fmt.Errorf("fieldmesh %s: exit %d: %s", strings.Join(r.args, " "), r.code, strings.TrimSpace(r.stderr))
}

// cli runs one command against the data directory, in the root network namespace (commands reach
// the daemon through its unix socket, which is a file). A non-zero exit is not an error; a
// command that outlives timeout is killed and is.
func (p *proc) cli(parent context.Context, timeout time.Duration, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	full := append(slices.Clip(args), "--data="+p.Dir)
	cmd := exec.CommandContext(ctx, p.f.bin, full...)
	cmd.Env = p.environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := result{args: full, stdout: stdout.String(), stderr: stderr.String()}
	if err := parent.Err(); err != nil {
		return res, fmt.Errorf("%s: fieldmesh %s: %w", p.Label, strings.Join(full, " "), err)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s: fieldmesh %s: no answer within %v", p.Label, strings.Join(full, " "), timeout)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		return res, fmt.Errorf("%s: fieldmesh %s: %w", p.Label, strings.Join(full, " "), err)
	}
	return res, nil
}

// cliJSON runs a command with --json, requires exit 0, and decodes stdout into v.
func (p *proc) cliJSON(ctx context.Context, v any, args ...string) error {
	res, err := p.cli(ctx, 60*time.Second, append(slices.Clip(args), "--json")...)
	if err != nil {
		return err
	}
	if err := res.err(); err != nil {
		return fmt.Errorf("%s: %w", p.Label, err)
	}
	if err := json.Unmarshal([]byte(res.stdout), v); err != nil {
		return fmt.Errorf("%s: fieldmesh %s: output is not the JSON expected: %v: %q", p.Label, strings.Join(res.args, " "), err, res.stdout)
	}
	return nil
}

// messages returns the device's `messages TEAM --json` listing.
func (p *proc) messages(ctx context.Context, team string) ([]Message, error) {
	res, err := p.cli(ctx, 60*time.Second, "messages", team, "--json")
	if err != nil {
		return nil, err
	}
	if err := res.err(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Label, err)
	}
	var msgs []Message
	for line := range strings.SplitSeq(res.stdout, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m Message
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, fmt.Errorf("%s: messages --json: a line is not a message: %v: %q", p.Label, err, line)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// daemon is one run of a long-lived fieldmesh process (up, or relay).
type daemon struct {
	cmd     *exec.Cmd
	ready   chan struct{} // closed at the first line containing the readiness marker
	line    string        // that line, set before ready is closed
	exited  chan struct{} // closed once the process has been waited for
	waitErr error         // set before exited is closed
	killed  atomic.Bool   // set by proc.kill before it sends SIGKILL
}

// errKilled is returned by proc.start when the daemon was killed (by proc.kill, from another
// goroutine) before it was ready: a crash during start-up, which the schedule may cause on purpose.
var errKilled = errors.New("killed while starting")

// logWriter appends a daemon's output to its log and calls onLine for every complete line.
type logWriter struct {
	mu      sync.Mutex
	file    *os.File
	partial []byte
	onLine  func(string)
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.file.Write(b); err != nil {
		return 0, err
	}
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.onLine(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
}

// start runs the daemon command args in the process's namespace and waits, up to timeout, for a
// line of its output that contains marker.
func (p *proc) start(ctx context.Context, timeout time.Duration, marker string, args ...string) (*daemon, error) {
	p.mu.Lock()
	if p.d != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("%s: already running", p.Label)
	}
	p.starts++
	n := p.starts
	p.mu.Unlock()
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "=== chaos: %s run %d: fieldmesh %s\n", p.Label, n, strings.Join(args, " "))
	d := &daemon{ready: make(chan struct{}), exited: make(chan struct{})}
	var once sync.Once
	lw := &logWriter{file: f, onLine: func(line string) {
		if strings.Contains(line, marker) {
			once.Do(func() { d.line = line; close(d.ready) })
		}
	}}
	full := append(slices.Clip(args), "--data="+p.Dir)
	d.cmd = p.Host.Command(p.f.bin, full...)
	d.cmd.Env = p.environ()
	d.cmd.Stdout, d.cmd.Stderr = lw, lw
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: starting fieldmesh %s: %w", p.Label, args[0], err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		f.Close()
		close(d.exited)
	}()
	p.mu.Lock()
	p.d = d
	p.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-d.ready:
		return d, nil
	case <-d.exited:
		p.forget(d)
		if d.killed.Load() {
			return nil, fmt.Errorf("%s: %w", p.Label, errKilled)
		}
		return nil, fmt.Errorf("%s: fieldmesh %s exited before it was ready (%v); last lines of its log:\n%s",
			p.Label, args[0], d.waitErr, tail(p.Log, 15))
	case <-timer.C:
	case <-ctx.Done():
	}
	p.kill()
	return nil, fmt.Errorf("%s: no %q line from fieldmesh %s within %v; last lines of its log:\n%s",
		p.Label, marker, args[0], timeout, tail(p.Log, 15))
}

func (p *proc) forget(d *daemon) {
	p.mu.Lock()
	if p.d == d {
		p.d = nil
	}
	p.mu.Unlock()
}

// running reports whether a daemon is up.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d != nil
}

// kill ends the daemon with SIGKILL, as a power loss would, and waits for it (bounded).
func (p *proc) kill() error {
	p.mu.Lock()
	d := p.d
	p.d = nil
	if d != nil {
		p.kills++
	}
	p.mu.Unlock()
	if d == nil {
		return nil
	}
	d.killed.Store(true)
	d.cmd.Process.Kill()
	select {
	case <-d.exited:
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s: still running 15s after SIGKILL", p.Label)
	}
}

// stop ends the daemon with SIGTERM and returns its exit error (nil for status 0); a daemon that
// does not exit within timeout is killed and that is an error.
func (p *proc) stop(timeout time.Duration) error {
	p.mu.Lock()
	d := p.d
	p.d = nil
	p.mu.Unlock()
	if d == nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if d.waitErr != nil {
			return fmt.Errorf("%s: exited with %v after SIGTERM; want status 0; last lines of its log:\n%s", p.Label, d.waitErr, tail(p.Log, 10))
		}
		return nil
	case <-time.After(timeout):
		d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("%s: did not exit within %v of SIGTERM", p.Label, timeout)
	}
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
