package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestCLICareE2E: items of the command line's list (issue "the command line gets the same care"),
// through the binary. How it fails:
//   - a second team whose name differs from one of the device's teams only in case is created;
//   - a message over 16 KiB is refused with different words as an argument, from --file and from
//     standard input, or not refused; a stream much longer is read to its end before the refusal
//     (it must stop at the limit); a message of exactly the limit, or one from standard input, is
//     not sent as given;
//   - Ctrl-C does not end `messages --follow` with exit 0 and nothing on stderr;
//   - stopping the node (SIGTERM) with a follower attached takes longer than the 4 s bound (its
//     local API waited out a 5 s shutdown grace for the follower), or the follower ends with an
//     error (`unexpected EOF`) instead of exit 0 and "the node stopped".
func TestCLICareE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a daemon; skipped with -short")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Dr Banda")
	if res := a.run(t, "init", "--name", a.name); res.code != 0 {
		t.Fatalf("init: %s", res)
	}
	a.up(t, "--ui=off")

	// --- Duplicate team names, per device, whatever the case.
	if res := a.run(t, "team", "create", "Ward 3"); res.code != 0 {
		t.Fatalf("%s", res)
	}
	for _, dup := range []string{"Ward 3", "ward 3", " WARD 3 "} {
		msg := e2eFailsCleanly(t, "team create "+dup, a.run(t, "team", "create", dup))
		if !strings.Contains(msg, "already has a team called") {
			t.Errorf("team create %q: %q; want it refused as a duplicate", dup, msg)
		}
	}
	if out := a.run(t, "team", "list"); strings.Count(strings.ToLower(out.stdout), "ward 3") != 1 {
		t.Errorf("team list after the duplicates:\n%s", out.stdout)
	}

	// --- Message length: one limit, one message, from every source.
	long := strings.Repeat("a", crdt.MaxTextLen+1)
	file := filepath.Join(c.root, "long.txt")
	if err := os.WriteFile(file, []byte(long), 0o600); err != nil {
		t.Fatal(err)
	}
	refusals := map[string]e2eResult{
		"argument":       a.run(t, "send", "Ward 3", long),
		"--file":         a.run(t, "send", "Ward 3", "--file", file),
		"standard input": e2eRunStdin(t, c, a.dir, long, "send", "Ward 3", "--file", "-"),
	}
	var first string
	for how, res := range refusals {
		msg := e2eFailsCleanly(t, "send too long, "+how, res)
		if !strings.Contains(msg, "16384 bytes") {
			t.Errorf("send too long, %s: %q does not state the limit", how, msg)
		}
		if first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("send too long: %q and %q: want one message", first, msg)
		}
	}
	// A stream far over the limit is refused once the limit is passed: the command ends although
	// the stream never does (a pipe that stays open).
	huge := exec.Command(c.bin, "send", "Ward 3", "--file", "-", "--data="+a.dir)
	huge.Env = c.env
	w, err := huge.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := huge.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		chunk := []byte(strings.Repeat("b", 4096))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	hugeDone := make(chan error, 1)
	go func() { hugeDone <- huge.Wait() }()
	select {
	case err := <-hugeDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("send of an endless stream: %v; want a refusal", err)
		}
	case <-time.After(c.timeout(30 * time.Second)):
		huge.Process.Kill()
		<-hugeDone
		t.Error("send --file - kept reading an endless stream")
	}
	w.Close()

	exact := strings.Repeat("c", crdt.MaxTextLen)
	if err := os.WriteFile(file, []byte(exact+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := a.run(t, "send", "Ward 3", "--file", file); res.code != 0 {
		t.Fatalf("send of exactly the limit from a file: %s", res)
	}
	if res := e2eRunStdin(t, c, a.dir, "Bed 4: from standard input\n", "send", "Ward 3", "--file", "-"); res.code != 0 {
		t.Fatalf("send from standard input: %s", res)
	}
	msgs, err := e2eDecodeMessages(c, "messages", a.runJSON(t, "messages", "Ward 3"))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Text != exact || msgs[1].Text != "Bed 4: from standard input" {
		t.Fatalf("messages: %d; want the file's text and the standard input's, without their newline", len(msgs))
	}

	// --- Ctrl-C ends a follower cleanly.
	hasAll := func(ms []e2eMessage) bool { return len(ms) >= 2 }
	f1 := a.follow(t, "Ward 3")
	f1.waitFor(t, c.timeout(20*time.Second), "the history", hasAll)
	if err := f1.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, f1, c.timeout(10*time.Second)); err != nil || f1.stderr.Len() != 0 {
		t.Errorf("messages --follow after Ctrl-C: %v, stderr %q; want exit 0 and nothing", err, f1.stderr.String())
	}

	// --- The node stops promptly with a follower attached, and the follower ends cleanly.
	f2 := a.follow(t, "Ward 3")
	f2.waitFor(t, c.timeout(20*time.Second), "the history", hasAll)
	d := a.daemon
	a.daemon = nil
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
		t.Logf("the node stopped %v after SIGTERM, with a follower attached", time.Since(start).Round(time.Millisecond))
	case <-time.After(4 * time.Second):
		t.Errorf("the node still runs 4 s after SIGTERM, with a follower attached")
		<-d.exited
	}
	err = waitExit(t, f2, c.timeout(10*time.Second))
	if stderr := f2.stderr.String(); err != nil || strings.Contains(stderr, "EOF") || !strings.Contains(stderr, "the node stopped") {
		t.Errorf("messages --follow when the node stopped: %v, stderr %q; want exit 0 and \"the node stopped\"", err, stderr)
	}
}

// waitExit waits, with a deadline, for a follower to exit by itself, and returns its exit error.
func waitExit(t *testing.T, f *e2eFollower, timeout time.Duration) error {
	t.Helper()
	select {
	case <-f.eof:
	case <-time.After(timeout):
		t.Fatalf("%s: messages --follow did not exit within %v", f.node.label, timeout)
	}
	done := make(chan error, 1)
	go func() { done <- f.cmd.Wait() }()
	select {
	case err := <-done:
		f.once.Do(func() {}) // waited: stop has nothing left to do
		return err
	case <-time.After(timeout):
		t.Fatalf("%s: messages --follow closed its output but did not exit within %v", f.node.label, timeout)
		return nil
	}
}
