// TestRelayClinicOrder: the clinic order of issue #7 (clinic relays), as real processes on loopback driven through the
// CLI only, in exactly this order:
//
//  1. R runs (`fieldmesh relay`); A and B come up with --relay R.
//  2. A creates the team, invites B, B joins (directly from A: no mDNS, no bootstrap). Both are
//     members and connected to R before R carries the team, so R refuses both (each logs it).
//  3. A prints the relay code (`team relay-code`); R's operator admits it (`relay admit`).
//  4. B goes offline, so that what it shows later can only have come through R (up, B would get A's
//     message straight from A).
//  5. A sends at once, waiting for nothing. A, still on the connection R refused it on, enrols there
//     (no restart) and R stores the message; only then does A go offline.
//  6. B comes back with no --relay (the relay is remembered), no bootstrap and no mDNS, meets only R
//     (its connected peers are R alone) and shows A's message.
//
// Every wait is on a log line or a printed message, with a deadline; nothing sleeps. Skipped with
// -short. Helpers from e2e_helpers_test.go and relay_e2e_test.go.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRelayClinicOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a relay and two devices, twice; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	defer c.reportContract(t)
	t.Run("admitted at once", func(t *testing.T) { e2eClinicOrder(t, c, "1", 0) })
	// R admits the team only after it has refused A four times: A's retry backoff (5s, doubling) is then
	// 40s, so A's message reaches R promptly only if the send itself gets A enrolled.
	t.Run("admitted late", func(t *testing.T) { e2eClinicOrder(t, c, "2", 4) })
}

// e2eClinicOrder runs the clinic order with nodes R, A and B suffixed with run. With refusals > 0, R's
// operator admits the team only once R has refused A that many times, and A's message must then reach
// R within 10s of the send (less than A's retry backoff by then).
func e2eClinicOrder(t *testing.T, c *e2eCluster, run string, refusals int) {
	const teamName = "Maternity Clinic Day Shift"
	r := c.node(t, "R"+run, "")
	a := c.node(t, "A"+run, "Midwife Banda")
	b := c.node(t, "B"+run, "Nurse Phiri")
	for _, n := range []*e2eNode{a, b} {
		var in e2eInitOut
		if err := c.decode("init", n.runJSON(t, "init", "--name", n.name), &in, e2eKeysInit); err != nil {
			t.Fatal(err)
		}
		n.device, n.peerID = in.Device, in.PeerID
	}
	wait := c.timeout(30 * time.Second)
	start := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }

	// --- 1. R; A and B up with --relay R.
	rLog := e2eStartWatched(t, r, `msg="relay ready"`, "relay", "--listen=/ip4/127.0.0.1/tcp/0", "--log-level=debug")
	var rst e2eRelayStatus
	if err := c.decode("relay status", r.runJSON(t, "relay", "status"), &rst, e2eKeysRelayStatus); err != nil {
		t.Fatal(err)
	}
	rAddr := ""
	for _, ad := range rst.Addrs {
		if strings.HasPrefix(ad, "/ip4/127.0.0.1/tcp/") {
			rAddr = ad + "/p2p/" + rst.PeerID
		}
	}
	if rAddr == "" {
		t.Fatalf("relay status: no loopback TCP address among %q", rst.Addrs)
	}
	aLog := e2eUpWatched(t, a, "--relay="+rAddr)
	bLog := e2eUpWatched(t, b, "--relay="+rAddr)
	aLog.waitLine(t, "A connects to R", 0, wait, a.daemon.exited, `msg="connected to relay"`)
	bLog.waitLine(t, "B connects to R", 0, wait, b.daemon.exited, `msg="connected to relay"`)
	step("R, A and B up; A and B connected to R")

	// --- 2. The team, with both members, before R carries it: R refuses both.
	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", teamName), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	var inv e2eInviteOut
	if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &inv, e2eKeysInvite); err != nil {
		t.Fatal(err)
	}
	var joined e2eTeamOut
	if err := c.decode("team join", b.runJSON(t, "team", "join", inv.Code), &joined, e2eKeysTeam); err != nil || joined.ID != team.ID {
		t.Fatalf("B: team join: %+v, %v", joined, err)
	}
	aLog.waitLine(t, "R refuses A (team not carried yet)", 0, wait, a.daemon.exited, `msg="relay refused enrolment"`, "team="+team.ID[:8])
	bLog.waitLine(t, "R refuses B (team not carried yet)", 0, wait, b.daemon.exited, `msg="relay refused enrolment"`, "team="+team.ID[:8])
	rLog.waitLine(t, "R logs B's refusal", 0, wait, r.daemon.exited, `msg="enrolment refused"`, e2eShortPeer(b.peerID))
	step("team created, B joined; R refused both")
	// A's status says what is waiting for R: everything A stored for the team, not yet reconciled there.
	if w := e2eRelayWaiting(t, a, rst.PeerID, team.ID); w.refused == "" || w.reconciled || w.waiting == 0 {
		t.Errorf("A's relay list before the admit: %+v; want the team refused, not reconciled, envelopes waiting", w)
	}
	if refusals > 0 {
		at := 0
		for i := 1; i <= refusals; i++ {
			_, at = rLog.waitLine(t, fmt.Sprintf("R refuses A (refusal %d)", i), at, wait, r.daemon.exited, `msg="enrolment refused"`, e2eShortPeer(a.peerID))
			at++
		}
		step(fmt.Sprintf("R refused A %d times", refusals))
	}

	// --- 3. Relay code at A, admitted at R.
	var code struct {
		Code  string `json:"code"`
		Topic string `json:"topic"`
	}
	if err := json.Unmarshal(a.runJSON(t, "team", "relay-code", team.ID), &code); err != nil || code.Code == "" {
		t.Fatalf("team relay-code: %+v, %v", code, err)
	}
	aAdmit := aLog.count()
	var admitted struct {
		Topic string `json:"topic"`
		Added bool   `json:"added"`
	}
	if err := json.Unmarshal(r.runJSON(t, "relay", "admit", code.Code), &admitted); err != nil || !admitted.Added || admitted.Topic != code.Topic {
		t.Fatalf("relay admit: %+v, %v; want topic %s added", admitted, err, code.Topic)
	}
	step("R admitted the team")

	// --- 4. B goes offline (it was up, connected to R and refused, when R admitted the team), so that
	// what it shows later can only have come through R.
	if err := b.stop(t, e2eSignal); err != nil {
		t.Errorf("B: exit: %v", err)
	}
	step("B offline")

	// --- 5. A sends at once, not waiting for anything; A, refused on its current connection to R,
	// enrols on it and R stores the message; then A goes offline.
	_, aEnrolledBefore := aLog.find(aAdmit, `msg="enrolled at relay"`)
	text := "Bed 4 needs a second unit of oxytocin before 14:00 " + e2eRunTag(t)
	from := rLog.count()
	var sent e2eSendOut
	if err := c.decode("send", a.runJSON(t, "send", team.ID, text), &sent, e2eKeysSend); err != nil {
		t.Fatal(err)
	}
	step(fmt.Sprintf("A sent (A enrolled at R before the send: %v)", aEnrolledBefore))
	stored := wait
	if refusals > 0 {
		stored = c.timeout(10 * time.Second)
	}
	aLog.waitLine(t, "A (connected and refused before the admit) enrols at R", aAdmit, stored, a.daemon.exited, `msg="enrolled at relay"`, "team="+team.ID[:8])
	step("A enrolled at R")
	rLog.waitLine(t, "R stores A's message", from, stored, r.daemon.exited, `msg="relay stored envelope"`, "id="+sent.ID[:8])
	step("R stored A's message")
	// Once A has reconciled with R, nothing is waiting.
	deadline := time.Now().Add(wait)
	for w := e2eRelayWaiting(t, a, rst.PeerID, team.ID); !w.reconciled || w.waiting != 0; w = e2eRelayWaiting(t, a, rst.PeerID, team.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("A's relay list %v after R stored its message: %+v; want the team reconciled, nothing waiting", wait, w)
		}
		select {
		case <-a.daemon.exited:
			t.Fatalf("A exited")
		case <-time.After(200 * time.Millisecond): // polling A's status, which has no event to wait on
		}
	}
	step("A's relay list: reconciled with R, nothing waiting")
	if err := a.stop(t, e2eSignal); err != nil {
		t.Errorf("A: exit: %v", err)
	}
	step("A offline")

	// --- 6. B comes back meeting only R, and shows A's message.
	e2eUpWatched(t, b)
	for _, p := range []string{"--bootstrap", "--relay"} {
		if strings.Contains(strings.Join(b.daemon.cmd.Args, " "), p) {
			t.Fatalf("B's second run was given %s", p)
		}
	}
	fb := b.follow(t, team.ID)
	fb.waitFor(t, wait, "B shows A's message, through R", e2eHasIDs([]string{sent.ID}))
	step("B shows A's message")
	for _, m := range fb.snapshot() {
		if m.ID == sent.ID && (m.Text != text || m.Author != a.device || m.AuthorName != a.name) {
			t.Errorf("B shows A's message as %+v", m)
		}
	}
	fb.stop()
	var peers []struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal(b.runJSON(t, "peers"), &peers); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.PeerID != rst.PeerID {
			t.Errorf("B's second run is connected to %s; want R (%s) only", p.PeerID, rst.PeerID)
		}
	}

	// --- Clean exits and clean logs.
	if err := b.stop(t, e2eSignal); err != nil {
		t.Errorf("B: exit: %v", err)
	}
	if err := r.stop(t, e2eSignal); err != nil {
		t.Errorf("R: exit: %v", err)
	}
	for _, n := range []*e2eNode{r, a, b} {
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
}

// find returns the first line from index from on that contains every part, without waiting.
func (l *e2eLines) find(from int, parts ...string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := from; i < len(l.lines); i++ {
		ok := true
		for _, p := range parts {
			if !strings.Contains(l.lines[i], p) {
				ok = false
				break
			}
		}
		if ok {
			return l.lines[i], true
		}
	}
	return "", false
}

// e2eRelayWait is what a device's `relay list` says of one relay and one team.
type e2eRelayWait struct {
	found      bool
	refused    string
	reconciled bool
	waiting    uint64
}

// e2eRelayWaiting runs `relay list` on n and reads relay's entry for team.
func e2eRelayWaiting(t *testing.T, n *e2eNode, relay, team string) e2eRelayWait {
	t.Helper()
	var list []struct {
		PeerID     string            `json:"peer_id"`
		Refused    map[string]string `json:"refused"`
		Waiting    map[string]uint64 `json:"waiting"`
		Reconciled []string          `json:"reconciled"`
	}
	if err := json.Unmarshal(n.runJSON(t, "relay", "list"), &list); err != nil {
		t.Fatalf("%s: relay list: %v", n.label, err)
	}
	for _, r := range list {
		if r.PeerID == relay {
			return e2eRelayWait{found: true, refused: r.Refused[team], reconciled: slices.Contains(r.Reconciled, team), waiting: r.Waiting[team]}
		}
	}
	return e2eRelayWait{}
}
