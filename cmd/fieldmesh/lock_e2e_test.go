package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/storage"
)

// TestRemoteWipeE2E: a device that was offline when an admin ordered its wipe wipes itself when it
// next meets the team's relay, although it is no longer a member. Real processes on loopback: a relay
// R carries a team of A (admin), B and C. B is stopped (lost). A orders B's remote wipe: B leaves the
// team and the order goes to R. A and C stop. B starts again and meets only R: it fetches the order,
// checks A's signature, and destroys its store; its data directory is empty afterwards and no store
// opens there. C, started again, is not touched by B's order.
func TestRemoteWipeE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a relay and three devices; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Sister Banda")
	b := c.node(t, "B", "Lost Phone")
	cc := c.node(t, "C", "CHW Tembo")
	wait := c.timeout(30 * time.Second)
	team := e2eTeamWithRelay(t, c, "Wipe Test Ward", a, b, cc)
	r, rLog, rAddr := team.R, team.RLog, team.RAddr
	if res := a.run(t, "send", team.ID, "Bed 4: BP 160/110", "--patient", "MRN-448812"); res.code != 0 {
		t.Fatal(res)
	}

	// B is lost: it is off the network when A orders its wipe.
	if err := b.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("B: stop: %v", err)
	}
	from := rLog.count()
	var out struct {
		Target  string `json:"target"`
		Expires string `json:"expires"`
	}
	if err := json.Unmarshal(a.runJSON(t, "remote-wipe", team.ID, b.device[:12]), &out); err != nil || out.Target != b.device {
		t.Fatalf("A: remote-wipe: %+v, %v; want B's device as the target", out, err)
	}
	rLog.waitLine(t, "R carries the order", from, wait, r.daemon.exited, `msg="carrying a remote wipe order"`, "target="+b.device[:8])
	if msg := e2eFailsCleanly(t, "C (not an admin) orders A's wipe", cc.run(t, "remote-wipe", team.ID, a.device[:12])); !strings.Contains(msg, "admin") {
		t.Errorf("a member's remote wipe: %q; want it refused for not being an admin", msg)
	}
	for _, n := range []*e2eNode{a, cc} {
		if err := n.stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("%s: stop: %v", n.label, err)
		}
	}

	// B comes back and meets only R.
	bLog := e2eStartWatched(t, b, `msg="wipe order accepted: wiping this device"`, "up", "--no-mdns", "--listen=/ip4/127.0.0.1/tcp/0", "--log-level=debug")
	select {
	case <-b.daemon.exited:
	case <-time.After(wait):
		t.Fatalf("B: still running %v after accepting the order; log:\n%s", wait, e2eTail(b.logPath, 30))
	}
	b.daemon = nil
	if !bLog.anyFrom(0, `msg="device wiped"`) {
		t.Errorf("B: no device wiped line; log:\n%s", e2eTail(b.logPath, 30))
	}
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("B: the wiped data directory still holds %s", e.Name())
	}
	if _, err := storage.Open(b.dir, storage.Options{Passphrase: []byte(b.pass)}); !errors.Is(err, storage.ErrNotInitialized) {
		t.Errorf("B: opening the wiped store with its passphrase: %v; want no store", err)
	}

	// C, started again, meets R and keeps its store.
	cLog := e2eUpWatched(t, cc, "--relay="+rAddr)
	cLog.waitLine(t, "C enrols at R again", 0, wait, cc.daemon.exited, `msg="enrolled at relay"`)
	if _, err := os.Stat(filepath.Join(cc.dir, "keyring")); err != nil {
		t.Errorf("C: keyring after meeting R: %v", err)
	}
	if cLog.anyFrom(0, "wipe order accepted") || cLog.anyFrom(0, "wipe order refused") {
		t.Error("C: acted on or refused a wipe order naming another device: R handed it B's order")
	}
	var msgs []e2eMessage
	var ms []byte = cc.runJSON(t, "messages", team.ID)
	for _, line := range strings.Split(strings.TrimSpace(string(ms)), "\n") {
		var m e2eMessage
		if json.Unmarshal([]byte(line), &m) == nil {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) != 1 {
		t.Errorf("C: %d messages after meeting R; want the one A sent", len(msgs))
	}
}

// TestLockUnlockWipeE2E: the lock commands on a real daemon. After `lock`, every command that would
// show content fails with the lock's message and shows nothing; `unlock` with a wrong passphrase fails
// and the next try must wait; the right one brings the messages back; `wipe --yes` destroys the store,
// stops the daemon and leaves an empty directory.
func TestLockUnlockWipeE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a device; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Sister Banda")
	team := e2eTeamUp(t, c, "Lock Test Ward", nil, a)
	const text, patient = "Bed 9: glucose 2.1, giving dextrose", "MRN-775511"
	if res := a.run(t, "send", team.ID, text, "--patient", patient); res.code != 0 {
		t.Fatal(res)
	}
	if res := a.run(t, "lock"); res.code != 0 || !strings.Contains(res.stdout, "locked") {
		t.Fatalf("lock: %s", res)
	}
	for _, args := range [][]string{{"messages", team.ID}, {"status"}, {"team", "list"}, {"team", "members", team.ID}, {"send", team.ID, "x"}, {"peers"}} {
		res := a.run(t, args...)
		msg := e2eFailsCleanly(t, strings.Join(args, " ")+" while locked", res)
		if !strings.Contains(msg, "locked") {
			t.Errorf("%s while locked: %q; want it to say the device is locked", args[0], msg)
		}
		for _, secret := range []string{text, patient, "Lock Test Ward", a.name} {
			if strings.Contains(res.stdout+res.stderr, secret) {
				t.Errorf("%s while locked shows %q", args[0], secret)
			}
		}
	}
	if msg := e2eFailsCleanly(t, "unlock with a wrong passphrase", a.runWith(t, "not the passphrase", c.timeout(30*time.Second), "unlock")); !strings.Contains(msg, "wrong passphrase") {
		t.Errorf("unlock with a wrong passphrase: %q", msg)
	}
	// More wrong tries: after the second, each doubles the wait (1 s, 2 s, 4 s, ...), so within a few of
	// them one comes while the last wait still runs, however slow this machine starts a process.
	waited := false
	for i := 0; i < 5 && !waited; i++ {
		msg := e2eFailsCleanly(t, "another wrong passphrase", a.runWith(t, "still not it", c.timeout(30*time.Second), "unlock"))
		switch {
		case strings.Contains(msg, "try again in"):
			waited = true
		case !strings.Contains(msg, "wrong passphrase"):
			t.Fatalf("unlock with a wrong passphrase: %q", msg)
		}
	}
	if !waited {
		t.Error("five wrong passphrases in a row, and no try was told to wait")
	}
	// The right passphrase is taken once the wait (a few seconds of the daemon's clock) is over.
	deadline := time.Now().Add(c.timeout(30 * time.Second))
	for {
		res := a.run(t, "unlock")
		if res.code == 0 {
			break
		}
		if !strings.Contains(res.stderr, "try again in") || time.Now().After(deadline) {
			t.Fatalf("unlock: %s", res)
		}
		time.Sleep(200 * time.Millisecond) // the backoff itself is time: this waits it out, it synchronises nothing
	}
	msgs := a.runJSON(t, "messages", team.ID)
	if !strings.Contains(string(msgs), text) {
		t.Fatalf("messages after unlock: %s; want the message back", msgs)
	}
	if msg := e2eFailsCleanly(t, "wipe without --yes", a.run(t, "wipe")); !strings.Contains(msg, "--yes") {
		t.Errorf("wipe without --yes: %q", msg)
	}
	if res := a.run(t, "wipe", "--yes"); res.code != 0 {
		t.Fatalf("wipe: %s", res)
	}
	select {
	case <-a.daemon.exited:
	case <-time.After(c.timeout(30 * time.Second)):
		t.Fatal("the daemon still runs after the wipe")
	}
	a.daemon = nil
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("the wiped data directory still holds %s", e.Name())
	}
	if _, err := storage.Open(a.dir, storage.Options{Passphrase: []byte(a.pass)}); !errors.Is(err, storage.ErrNotInitialized) {
		t.Errorf("opening the wiped store with its passphrase: %v; want no store", err)
	}
}
