package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/record"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

// recordWatcher runs `fieldmesh record sync --watch --json` and collects its reports.
type recordWatcher struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	filed   int
	reports int
	stderr  strings.Builder
	changed chan struct{}
	exited  chan struct{}
}

func (w *recordWatcher) read(sc *bufio.Scanner) {
	for sc.Scan() {
		var rep struct {
			Filed int `json:"filed"`
		}
		if json.Unmarshal(sc.Bytes(), &rep) != nil {
			continue
		}
		w.mu.Lock()
		w.filed += rep.Filed
		w.reports++
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}

// waitFiled waits, with a deadline, until the watcher's reports add up to at least n filed.
func (w *recordWatcher) waitFiled(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		got := w.filed
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-w.changed:
		case <-w.exited:
			t.Fatalf("record sync --watch exited; %d filed, want %d; stderr:\n%s", got, n, w.stderr.String())
		case <-deadline.C:
			t.Fatalf("record sync --watch: %d filed after %v, want %d", got, within, n)
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestRecordSyncWatchAcrossRestart: the clinic box runs `record sync --watch`; what is marked for
// the record is filed to a real FHIR server, shown "filed to record", and what is sent after the node
// was killed and started again is filed too, by the same watching command, with no message filed
// twice. Real processes: the daemon, the CLI, the FHIR server.
func TestRecordSyncWatchAcrossRestart(t *testing.T) {
	srv := fhirtest.Start(t)
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Clinic box")
	a.runJSON(t, "init", "--name", a.name)
	a.up(t)
	var team struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(a.runJSON(t, "team", "create", "Ward 3", "--kind", "clinical"), &team); err != nil {
		t.Fatal(err)
	}
	send := func(text string) string {
		t.Helper()
		var s struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(a.runJSON(t, "send", team.ID, text, "--for-record"), &s); err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	ids := []string{send("Bed 4 BP 160/110"), send("Bed 5 discharged"), send("Bed 2 review at noon")}

	tokenFile := filepath.Join(c.root, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.RequireBearer(t, "s3cret")
	w := &recordWatcher{changed: make(chan struct{}, 1), exited: make(chan struct{})}
	w.cmd = exec.Command(c.bin, "record", "sync", "--fhir", srv.URL, "--token-file", tokenFile, "--watch", "--json", "--data="+a.dir)
	w.cmd.Env = a.environ(a.pass, false)
	w.cmd.Stderr = &lockedWriter{b: &w.stderr}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		w.read(bufio.NewScanner(out))
		_ = w.cmd.Wait()
		close(w.exited)
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(10 * time.Second):
			_ = w.cmd.Process.Kill()
		}
	})
	w.waitFiled(t, 3, c.timeout(2*time.Minute))

	// The gateway restarts: the daemon is killed and started again; the watching command waits.
	if err := a.stop(t, syscall.SIGKILL); err == nil {
		t.Fatalf("a killed daemon exited cleanly")
	}
	a.up(t)
	late := send("Bed 6 sent home")
	w.waitFiled(t, 4, c.timeout(2*time.Minute))
	srv.RequireBearer(t, "") // the test's own searches carry no token

	for _, id := range append(ids, late) {
		cs := srv.Search(t, "Communication?identifier="+record.OpSystem+"|"+id)
		if len(cs) != 1 {
			t.Errorf("message %s: %d Communications; want 1", id[:8], len(cs))
		}
	}
	res := a.run(t, "messages", team.ID)
	if n := strings.Count(res.stdout, "(filed to record Communication/"); n != 4 {
		t.Errorf("messages shows %d filed; want 4:\n%s", n, res.stdout)
	}
}
