// The end-to-end test of issue #2 (TestE2E) builds the fieldmesh binary and drives three
// separate daemons (A "Dr Banda", B "Nurse Phiri", C "CHW Tembo") on loopback, each with its own
// data directory, through the CLI only: init, up, team create, invite, join, send, messages.
//
// How it can fail, in the order it checks:
//   - the binary does not build, or a daemon exits or logs no msg="node ready" line within its
//     deadline;
//   - a command exits non-zero, hangs past its deadline, or prints JSON that lacks a field of the
//     CLI contract (reported as "CLI contract: ...") or disagrees with what was asked (names,
//     kinds, authors, patient reference, reply-to);
//   - an error path misbehaves: reusing a spent invite code, talking to a data directory whose
//     daemon is not running (never started, and killed with a stale socket), or starting with a
//     wrong passphrase must each exit 1 with one line "fieldmesh: ..." on stderr, and the last
//     must say "wrong passphrase" and leave the store usable with the right one;
//   - a message does not reach every node within the deadline, as seen by `messages --follow`
//     (an event per printed line; nothing sleeps);
//   - after C is killed with SIGKILL (a power loss) and A sends 200 messages, restarted C does
//     not show all 200 within 60 s of its "node ready" line, shows one twice, or the three nodes'
//     `messages --json` differ in ids, order (by hlc, id), text or count;
//   - a daemon does not exit within its deadline on SIGTERM, exits non-zero, or its log holds a
//     race report or a panic;
//   - any message text, the team name, the patient reference, a member's name or a passphrase
//     occurs in the raw bytes of any file under the test's root directory: the three data
//     directories, the daemons' logs, and the HOME and TMPDIR the processes were given. A
//     sub-check first plants a needle in a scratch file and requires the scanner to find it, so a
//     broken scanner cannot pass silently.
//
// It logs the figures that go into the closing note: C's catch-up time and sync bytes, and A's
// idle resident memory. It is skipped with -short. With -race, the daemons are built with -race
// too and the deadlines are tripled.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// e2eOpIDHex is the length of a message id as the CLI prints it: op ids are 16 bytes (sync/crdt).
const e2eOpIDHex = 32

func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs three daemons; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets, SIGKILL, /proc)")
	}
	c := e2eNewCluster(t)
	defer c.reportContract(t)

	const (
		teamName = "Maternity Ward 3"
		patient  = "MRN-448812"
		catchups = 200
	)
	run := e2eRunTag(t) // makes every text of this run distinctive
	a := c.node(t, "A", "Dr Banda")
	b := c.node(t, "B", "Nurse Phiri")
	cc := c.node(t, "C", "CHW Tembo")
	nodes := []*e2eNode{a, b, cc}

	// --- Identities.
	for _, n := range nodes {
		out := n.runJSON(t, "init", "--name", n.name)
		var in e2eInitOut
		if err := c.decode("init", out, &in, e2eKeysInit); err != nil {
			t.Fatalf("%s: init: %v", n.label, err)
		}
		if !e2eIsHex(in.Device, 64) || in.Short != in.Device[:min(8, len(in.Device))] {
			c.deviation("init: device %q / short %q: want 64 hex chars and its first 8", in.Device, in.Short)
		}
		if !strings.HasPrefix(in.PeerID, "12D3Koo") {
			c.deviation("init: peer_id %q: want an Ed25519 libp2p peer id (12D3Koo...)", in.PeerID)
		}
		n.device, n.peerID = in.Device, in.PeerID
	}

	t.Run("no daemon, never started", func(t *testing.T) {
		e2eCheckNoDaemon(t, a.run(t, "peers"))
	})

	// --- Daemons.
	for _, n := range nodes {
		n.up(t)
	}
	statusOf := func(n *e2eNode) e2eStatusOut {
		t.Helper()
		out := n.runJSON(t, "status")
		var st e2eStatusOut
		if err := c.decode("status", out, &st, e2eKeysStatus); err != nil {
			t.Fatalf("%s: status: %v", n.label, err)
		}
		var raw struct{ Sync map[string]any }
		if err := c.decode("status", out, &raw, nil); err == nil && raw.Sync != nil {
			for _, k := range e2eKeysSync {
				if _, ok := raw.Sync[k]; !ok {
					c.deviation("status: sync has no %q field", k)
				}
			}
		}
		return st
	}
	for _, n := range nodes {
		st := statusOf(n)
		if st.Device != n.device || st.PeerID != n.peerID || st.Name != n.name {
			t.Errorf("%s: status says device %s, peer %s, name %q; init said %s, %s, %q",
				n.label, st.Device, st.PeerID, st.Name, n.device, n.peerID, n.name)
		}
	}

	// --- Team, invites, joins.
	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", teamName, "--kind", "clinical"), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	if !e2eIsHex(team.ID, 64) || team.Name != teamName || team.Kind != "clinical" {
		t.Fatalf("team create: got %+v; want a 64-hex id, name %q, kind clinical", team, teamName)
	}
	var invites [2]e2eInviteOut
	for i := range invites {
		if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &invites[i], e2eKeysInvite); err != nil {
			t.Fatal(err)
		}
		exp, err := time.Parse(time.RFC3339, invites[i].Expires)
		if err != nil || !exp.After(time.Now()) {
			c.deviation("team invite: expires %q: want an RFC3339 time in the future", invites[i].Expires)
		}
	}
	if invites[0].Code == "" || invites[0].Code == invites[1].Code {
		t.Fatalf("team invite: codes %q and %q: want two different codes", invites[0].Code, invites[1].Code)
	}
	join := func(n *e2eNode, code string) {
		t.Helper()
		var got e2eTeamOut
		if err := c.decode("team join", n.runJSON(t, "team", "join", code), &got, e2eKeysTeam); err != nil {
			t.Fatal(err)
		}
		if got != team {
			t.Fatalf("%s: team join: got %+v; want %+v", n.label, got, team)
		}
	}
	join(b, invites[0].Code)
	t.Run("spent invite", func(t *testing.T) {
		msg := e2eFailsCleanly(t, "C: team join with B's spent code", cc.run(t, "team", "join", invites[0].Code))
		t.Logf("C: team join with a spent code: %s", msg)
	})
	join(cc, invites[1].Code)

	// --- A conversation; every node must show every message.
	follow := map[*e2eNode]*e2eFollower{}
	for _, n := range nodes {
		follow[n] = n.follow(t, team.ID)
	}
	texts := map[string]string{} // op id -> text, for every message sent
	var order []string           // op ids in the order they were sent
	send := func(n *e2eNode, teamRef, text string, flags ...string) string {
		t.Helper()
		var out e2eSendOut
		args := append([]string{"send", teamRef, text}, flags...)
		if err := c.decode("send", n.runJSON(t, args...), &out, e2eKeysSend); err != nil {
			t.Fatal(err)
		}
		if !e2eIsHex(out.ID, e2eOpIDHex) || out.HLC == 0 {
			t.Fatalf("%s: send: got %+v; want a %d-hex id and a non-zero hlc", n.label, out, e2eOpIDHex)
		}
		if _, dup := texts[out.ID]; dup {
			t.Fatalf("%s: send %q returned the id of an earlier message, %s", n.label, text, out.ID)
		}
		texts[out.ID] = text
		order = append(order, out.ID)
		return out.ID
	}
	urgent := send(a, teamName, "Bed 4 BP 160/110 two hours after delivery, starting magnesium "+run,
		"--patient", patient, "--priority", "urgent")
	// A reply names its parent by the short id `send` printed.
	reply := send(b, team.ID, "On my way with the MgSO4 kit "+run, "--reply-to", urgent[:8])
	send(cc, team.ID, "Home visit done in the village, baby feeding well "+run)
	send(a, team.ID, "Thanks both, handing over to the night shift at 19:00 "+run, "--priority", "routine")
	early := slices.Clone(order)
	for _, n := range nodes {
		follow[n].waitFor(t, c.timeout(30*time.Second), "all 4 early messages shown", e2eHasIDs(early))
	}
	for _, n := range nodes {
		for _, m := range follow[n].snapshot() {
			var want e2eMessage
			switch m.ID {
			case urgent:
				want = e2eMessage{Author: a.device, AuthorName: a.name, Priority: "urgent", Patient: patient}
			case reply:
				want = e2eMessage{Author: b.device, AuthorName: b.name, Priority: "routine", ReplyTo: &urgent}
			default:
				continue
			}
			if m.Text != texts[m.ID] || m.Author != want.Author || m.AuthorName != want.AuthorName ||
				m.Priority != want.Priority || m.Patient != want.Patient ||
				(want.ReplyTo != nil && (m.ReplyTo == nil || *m.ReplyTo != *want.ReplyTo)) {
				t.Errorf("%s: message %s shown as %+v; want text %q, author %s (%q), priority %s, patient %q, reply_to %v",
					n.label, m.ID, m, texts[m.ID], want.Author, want.AuthorName, want.Priority, want.Patient, e2eDeref(want.ReplyTo))
			}
			if _, err := time.Parse(time.RFC3339Nano, m.Time); err != nil {
				c.deviation("messages: time %q is not RFC3339Nano", m.Time)
			}
		}
	}

	// --- B's human `messages`: every message with its short id, the reply shown as one.
	t.Run("messages shows ids and replies", func(t *testing.T) {
		e2eCheckHumanMessages(t, b.run(t, "messages", team.ID), urgent, reply)
	})

	// --- Replies to what is not there are refused, and nothing is sent.
	t.Run("bad reply-to", func(t *testing.T) {
		before, err := e2eDecodeMessages(c, "messages --json", b.runJSON(t, "messages", team.ID))
		if err != nil {
			t.Fatal(err)
		}
		missing := e2eAbsentPrefix(t, order)
		for _, tc := range []struct{ what, ref, says string }{
			{"an unknown short id", missing, "no message"},
			{"an unknown full id", missing + strings.Repeat("0", e2eOpIDHex-len(missing)), "no message"},
			{"not an id", "tomorrow", "hex"},
			{"too short an id", urgent[:6], "8"},
		} {
			msg := e2eFailsCleanly(t, "B: send --reply-to "+tc.what, b.run(t, "send", team.ID, "reply to nothing "+run, "--reply-to", tc.ref))
			if !strings.Contains(msg, tc.says) || strings.Contains(msg, "crdt:") || strings.Contains(msg, "node:") || strings.Contains(msg, "localapi:") {
				t.Errorf("B: send --reply-to %s: %q; want a plain error that says %q", tc.what, msg, tc.says)
			}
		}
		after, err := e2eDecodeMessages(c, "messages --json", b.runJSON(t, "messages", team.ID))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(e2eIDs(after), e2eIDs(before)) {
			t.Errorf("B: refused replies changed its messages from %d to %d", len(before), len(after))
		}
	})

	// --- Low-data mode on B: a routine message waits in B's outbox; B shows it, marked queued,
	// and its status says so, until the mode goes off and the message reaches A.
	if res := b.run(t, "low-data", "on"); res.code != 0 {
		t.Fatalf("B: low-data on: %s", res)
	}
	stock := send(b, team.ID, "Stock count: 12 vials of oxytocin left "+run)
	if st := statusOf(b); !st.LowData.On || st.LowData.Queued < 1 {
		t.Errorf("B: status in low-data mode with a message queued says low_data %+v; want on, at least 1 queued", st.LowData)
	}
	if res := b.run(t, "status"); !strings.Contains(res.stdout, "low-data on") || !strings.Contains(res.stdout, "queued") {
		t.Errorf("B: status in low-data mode prints %q; want a line saying low-data is on and what is queued", res.stdout)
	}
	queuedOnB := func() (shown, queued bool) {
		t.Helper()
		msgs, err := e2eDecodeMessages(c, "messages --json", b.runJSON(t, "messages", team.ID))
		if err != nil {
			t.Fatalf("B: messages: %v", err)
		}
		for _, m := range msgs {
			if m.ID == stock {
				return true, m.Queued
			}
		}
		return false, false
	}
	if shown, queued := queuedOnB(); !shown || !queued {
		t.Errorf("B: its own message queued in low-data mode: shown %v, queued %v in messages --json; want shown and queued", shown, queued)
	}
	if res := b.run(t, "messages", team.ID); !e2eLineHas(res.stdout, stock[:8], "queued") {
		t.Errorf("B: messages does not mark its queued message %s as queued:\n%s", stock[:8], res.stdout)
	}
	if res := b.run(t, "low-data", "off"); res.code != 0 {
		t.Fatalf("B: low-data off: %s", res)
	}
	follow[a].waitFor(t, c.timeout(30*time.Second), "B's message queued in low-data mode shown after the mode went off", e2eHasIDs([]string{stock}))
	if shown, queued := queuedOnB(); !shown || queued {
		t.Errorf("B: its message after low-data mode went off: shown %v, queued %v; want shown, not queued", shown, queued)
	}
	if st := statusOf(b); st.LowData.On || st.LowData.Queued != 0 {
		t.Errorf("B: status after low-data off says low_data %+v; want off, nothing queued", st.LowData)
	}

	// --- Power loss on C; A goes on talking.
	follow[cc].stop()
	if err := cc.stop(t, syscall.SIGKILL); err == nil {
		t.Fatalf("C: SIGKILL: process exited cleanly; want killed")
	}
	t.Run("no daemon, killed", func(t *testing.T) {
		e2eCheckNoDaemon(t, cc.run(t, "team", "list"))
	})

	var catchup []string
	sendStart := time.Now()
	for i := range catchups {
		catchup = append(catchup, send(a, team.ID, fmt.Sprintf("catchup-msg-%03d-%s", i, run)))
	}
	sendTime := time.Since(sendStart)
	t.Logf("A: sent %d messages in %v (%v per `fieldmesh send`, process start included)",
		catchups, sendTime.Round(time.Millisecond), (sendTime / catchups).Round(time.Microsecond))
	for _, n := range []*e2eNode{a, b} {
		follow[n].waitFor(t, c.timeout(60*time.Second), "all 200 catch-up messages shown", e2eHasIDs(catchup))
	}

	// --- C comes back, told where A is, and catches up.
	addrA, err := e2eDialAddr(statusOf(a))
	if err != nil {
		t.Fatalf("A: status: %v", err)
	}
	d := cc.up(t, "--bootstrap="+addrA)
	follow[cc] = cc.follow(t, team.ID)
	doneAt := follow[cc].waitFor(t, c.timeout(60*time.Second), "all 200 catch-up messages shown after restart", e2eHasIDs(catchup))
	stC := statusOf(cc)
	t.Logf("catch-up: restarted C showed all %d missed messages %v after its \"node ready\" line",
		catchups, doneAt.Sub(d.readyAt).Round(time.Millisecond))
	t.Logf("catch-up: C sync: bytes_received=%d bytes_sent=%d envelopes_received=%d sessions=%d (%.0f bytes received per missed message)",
		stC.Sync.BytesReceived, stC.Sync.BytesSent, stC.Sync.EnvelopesReceived, stC.Sync.Sessions,
		float64(stC.Sync.BytesReceived)/catchups)
	if stC.Sync.EnvelopesReceived < catchups {
		t.Errorf("C: status sync.envelopes_received = %d after catching up on %d messages; want at least %d",
			stC.Sync.EnvelopesReceived, catchups, catchups)
	}
	for _, n := range nodes {
		if dups := e2eDuplicates(follow[n].snapshot()); len(dups) > 0 {
			t.Errorf("%s: messages --follow printed %d messages more than once: %s", n.label, len(dups), e2eShort(dups))
		}
	}

	// --- Every node shows every message exactly once, in the same order.
	listed := map[*e2eNode][]e2eMessage{}
	for _, n := range nodes {
		msgs, err := e2eDecodeMessages(c, "messages --json", n.runJSON(t, "messages", team.ID))
		if err != nil {
			t.Fatalf("%s: messages: %v", n.label, err)
		}
		listed[n] = msgs
	}
	e2eCompare(t, nodes, listed, texts)
	for _, n := range nodes {
		var teams []e2eTeamListItem
		out := n.runJSON(t, "team", "list")
		if err := e2eDecodeList(c, "team list", out, &teams, e2eKeysTeamList); err != nil {
			t.Fatalf("%s: team list: %v", n.label, err)
		}
		want := e2eTeamListItem{ID: team.ID, Name: teamName, Kind: "clinical", Members: 3, Messages: len(texts)}
		if !slices.Contains(teams, want) {
			t.Errorf("%s: team list = %+v; want it to contain %+v", n.label, teams, want)
		}
	}

	// --- Removal: A removes C with everyone connected. C is not told by a key (it cannot open the
	// commit that removes it): it learns when its next sync with A or B turns into a membership
	// exchange. A message C sends right after the removal shows on neither A nor B; C's `team members`
	// then says it was removed, and C can no longer send.
	removalRes := a.run(t, "team", "remove", team.ID, cc.name)
	if removalRes.code != 0 {
		t.Fatalf("A: team remove C: exit %d: %s", removalRes.code, removalRes.stderr)
	}
	removedAt := time.Now()
	var lateC string
	if res := cc.run(t, "send", team.ID, "C right after its removal "+run, "--json"); res.code == 0 {
		var out e2eSendOut
		if err := c.decode("send", []byte(res.stdout), &out, e2eKeysSend); err != nil {
			t.Fatal(err)
		}
		lateC = out.ID
	} else if msg := e2eFailsCleanly(t, "C: send after removal", res); !strings.Contains(msg, "removed") {
		t.Errorf("C: send right after its removal refused with %q; want it to say C was removed", msg)
	}
	if lateC != "" {
		t.Logf("removal: C's send right after its removal went through (id %s); A and B must not show it", lateC[:8])
	} else {
		t.Logf("removal: C's send right after its removal was refused: it had already learned of it")
	}
	afterRemoval := send(a, team.ID, "Moved the clinic meeting, C no longer on this team "+run)
	afterRemovalB := send(b, team.ID, "Noted, see you at 8 "+run)
	follow[a].waitFor(t, c.timeout(30*time.Second), "B's message after the removal shown", e2eHasIDs([]string{afterRemovalB}))
	follow[b].waitFor(t, c.timeout(30*time.Second), "A's message after the removal shown", e2eHasIDs([]string{afterRemoval}))
	// C learns of its removal when its next sync with A or B turns into a membership exchange (the
	// removal commit's arrival asks for one): its daemon says so, then its `team members` does.
	select {
	case <-cc.daemon.removed:
	case <-time.After(c.timeout(60 * time.Second)):
		t.Fatalf("C: no \"removed\" line in its daemon log %v after its removal", time.Since(removedAt).Round(time.Second))
	}
	t.Logf("removal: C learned it was removed %v after A's `team remove` returned", time.Since(removedAt).Round(time.Millisecond))
	membersMsg := e2eFailsCleanly(t, "C: team members after removal", cc.run(t, "team", "members", team.ID))
	if !strings.Contains(membersMsg, "removed") {
		t.Errorf("C: team members after removal says %q; want it to say C was removed", membersMsg)
	}
	if msg := e2eFailsCleanly(t, "C: send after learning of its removal", cc.run(t, "send", team.ID, "still here? "+run)); !strings.Contains(msg, "removed") {
		t.Errorf("C: send after learning of its removal refused with %q; want it to say C was removed", msg)
	}
	var teamsC []map[string]any
	if err := json.Unmarshal([]byte(cc.runJSON(t, "team", "list")), &teamsC); err != nil {
		t.Fatalf("C: team list: %v", err)
	}
	if len(teamsC) != 1 || teamsC[0]["removed"] != true {
		t.Errorf("C: team list = %v; want the team marked removed", teamsC)
	}
	// A and B reconcile with each other; C's late message is on neither, nor are A's and B's on C.
	for _, n := range []*e2eNode{a, b} {
		if res := n.run(t, "sync"); res.code != 0 {
			t.Errorf("%s: sync: %s", n.label, res)
		}
	}
	late := map[string]bool{afterRemoval: true, afterRemovalB: true}
	for _, n := range nodes {
		msgs, err := e2eDecodeMessages(c, "messages --json", n.runJSON(t, "messages", team.ID))
		if err != nil {
			t.Fatalf("%s: messages: %v", n.label, err)
		}
		for _, msg := range msgs {
			if lateC != "" && msg.ID == lateC && n != cc {
				t.Errorf("%s: shows the message C sent after its removal", n.label)
			}
			if n == cc && late[msg.ID] {
				t.Errorf("C: removed from the team, still shows message %s sent after its removal", msg.ID)
			}
		}
	}
	for _, msg := range follow[cc].snapshot() {
		if late[msg.ID] {
			t.Errorf("C: messages --follow printed message %s sent after C's removal", msg.ID)
		}
	}

	// --- Idle memory of A.
	if rss, hwm, err := e2eMemory(a.daemon.cmd.Process.Pid); err != nil {
		t.Errorf("A: reading memory: %v", err)
	} else {
		t.Logf("memory: A idle VmRSS=%.1f MiB (peak VmHWM=%.1f MiB), race=%v", float64(rss)/1024, float64(hwm)/1024, c.slow > 1)
	}

	// --- Clean shutdown. C's follower must still not have printed anything sent after its removal,
	// nor A's and B's followers C's late message.
	for _, msg := range follow[cc].snapshot() {
		if late[msg.ID] {
			t.Errorf("C: messages --follow printed message %s sent after C's removal", msg.ID)
		}
	}
	for _, n := range []*e2eNode{a, b} {
		for _, msg := range follow[n].snapshot() {
			if lateC != "" && msg.ID == lateC {
				t.Errorf("%s: messages --follow printed the message C sent after its removal", n.label)
			}
		}
	}
	for _, n := range nodes {
		follow[n].stop()
	}
	for _, n := range nodes {
		if err := n.stop(t, e2eSignal); err != nil {
			t.Errorf("%s: daemon exited with %v after SIGTERM; want exit status 0", n.label, err)
		}
	}

	// --- Wrong passphrase: refused, and the store still opens with the right one.
	t.Run("wrong passphrase", func(t *testing.T) {
		wrong := a.start(t, "not-the-passphrase-"+run)
		timeout := c.timeout(30 * time.Second)
		select {
		case <-wrong.exited:
		case <-time.After(timeout):
			wrong.kill()
			t.Fatalf("A: up with a wrong passphrase still running after %v", timeout)
		}
		select {
		case <-wrong.ready:
			t.Errorf("A: up with a wrong passphrase logged node ready")
		default:
		}
		if wrong.waitErr == nil {
			t.Errorf("A: up with a wrong passphrase exited 0; want exit 1")
		}
		last := e2eTail(a.logPath, 1)
		if !strings.HasPrefix(last, "fieldmesh: ") || !strings.Contains(last, "wrong passphrase") {
			t.Errorf("A: up with a wrong passphrase: last stderr line %q; want \"fieldmesh: ...wrong passphrase...\"", last)
		} else {
			t.Logf("A: up with a wrong passphrase: %s", last)
		}

		a.up(t)
		again, err := e2eDecodeMessages(c, "messages --json", a.runJSON(t, "messages", team.ID))
		if err != nil {
			t.Fatal(err)
		}
		wantIDs := append(e2eIDs(listed[a]), afterRemoval, afterRemovalB) // and the two sent after the removal
		if !slices.Equal(e2eIDs(again), wantIDs) {
			t.Errorf("A: after a wrong-passphrase attempt and a restart, messages shows %d messages; want the same %d as before",
				len(again), len(wantIDs))
		}
		if err := a.stop(t, e2eSignal); err != nil {
			t.Errorf("A: daemon exited with %v after SIGTERM; want exit status 0", err)
		}
	})

	// --- Logs: no race report, no panic.
	for _, n := range nodes {
		logb, err := os.ReadFile(n.logPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
			if strings.Contains(string(logb), bad) {
				t.Errorf("%s: %s contains %q", n.label, n.logPath, bad)
			}
		}
	}

	// --- No plaintext anywhere on disk.
	needles := []string{teamName, patient}
	for _, id := range order {
		needles = append(needles, texts[id])
	}
	for _, n := range nodes {
		needles = append(needles, n.name, n.pass)
	}
	t.Run("scanner finds a planted needle", func(t *testing.T) {
		e2eCheckScanner(t, needles)
	})
	if t.Failed() {
		return // a broken scanner proves nothing
	}
	files, size, err := e2eFiles(c.root)
	if err != nil {
		t.Fatal(err)
	}
	hits, err := e2eScan([]string{c.root}, needles, e2eScanChunk)
	if err != nil {
		t.Fatal(err)
	}
	byFile := map[string][]string{}
	var fileOrder []string
	for _, h := range hits {
		if byFile[h.File] == nil {
			fileOrder = append(fileOrder, h.File)
		}
		byFile[h.File] = append(byFile[h.File], h.Needle)
	}
	for _, f := range fileOrder {
		rel, _ := filepath.Rel(c.root, f)
		t.Errorf("plaintext on disk: %s contains %d of the needles: %s", rel, len(byFile[f]), e2eShort(byFile[f]))
	}
	t.Logf("plaintext scan: %d needles, %d files, %d bytes (data directories, logs, HOME, TMPDIR): %d hits",
		len(needles), files, size, len(hits))
}

// e2eCheckHumanMessages checks the human output of `messages` (res) for a conversation in which
// reply answers parent: each message's line starts with its short id, and the reply's line is
// followed by one that names the parent's short id.
func e2eCheckHumanMessages(t *testing.T, res e2eResult, parent, reply string) {
	t.Helper()
	if res.code != 0 {
		t.Fatalf("messages: %s", res)
	}
	lines := strings.Split(strings.TrimRight(res.stdout, "\n"), "\n")
	at := func(id string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, id[:8]+" ") {
				return i
			}
		}
		return -1
	}
	p, r := at(parent), at(reply)
	if p < 0 || r < 0 {
		t.Fatalf("messages: no line starts with the short id of the parent (%s) or of the reply (%s):\n%s", parent[:8], reply[:8], res.stdout)
	}
	if r+1 >= len(lines) || !strings.Contains(lines[r+1], "re "+parent[:8]) {
		t.Errorf("messages: the reply %s is not shown as a reply to %s (want the line after it to say \"re %s\"):\n%s",
			reply[:8], parent[:8], parent[:8], res.stdout)
	}
	if strings.Contains(lines[p], "re ") && strings.Contains(lines[p], "↳") {
		t.Errorf("messages: the parent %s is shown as a reply: %q", parent[:8], lines[p])
	}
}

// e2eLineHas reports whether a line of out starts with prefix and contains word.
func e2eLineHas(out, prefix, word string) bool {
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, word) {
			return true
		}
	}
	return false
}

// e2eAbsentPrefix returns 8 hex characters that begin none of ids.
func e2eAbsentPrefix(t *testing.T, ids []string) string {
	t.Helper()
	for {
		p := e2eRandHex(t, 4)
		if !slices.ContainsFunc(ids, func(id string) bool { return strings.HasPrefix(id, p) }) {
			return p
		}
	}
}

// e2eCheckNoDaemon checks the error of a command run against a data directory whose daemon is not
// running: exit 1, one line, and a message that says what is wrong rather than a bare dial error.
func e2eCheckNoDaemon(t *testing.T, res e2eResult) {
	t.Helper()
	msg := e2eFailsCleanly(t, "command with no daemon running", res)
	t.Logf("no daemon: %s", msg)
	lower := strings.ToLower(msg)
	if !strings.Contains(lower, "running") && !strings.Contains(lower, "daemon") && !strings.Contains(lower, "fieldmesh up") {
		t.Errorf("no daemon: %q does not say the daemon is not running (or to start it with fieldmesh up)", msg)
	}
}

// e2eCompare checks that the nodes list the same messages: the same ids in the same order, each
// once, sorted by (hlc, id), with the texts that were sent, and nothing that was not sent.
func e2eCompare(t *testing.T, nodes []*e2eNode, listed map[*e2eNode][]e2eMessage, texts map[string]string) {
	t.Helper()
	for _, n := range nodes {
		msgs := listed[n]
		if dups := e2eDuplicates(msgs); len(dups) > 0 {
			t.Errorf("%s: messages lists %d messages more than once: %s", n.label, len(dups), e2eShort(dups))
		}
		if len(msgs) != len(texts) {
			t.Errorf("%s: messages lists %d messages; want %d", n.label, len(msgs), len(texts))
		}
		for i, m := range msgs {
			want, ok := texts[m.ID]
			switch {
			case !ok:
				t.Errorf("%s: messages lists %s, which nobody sent", n.label, m.ID)
			case m.Text != want:
				t.Errorf("%s: message %s has text %q; want %q", n.label, m.ID, m.Text, want)
			}
			if i > 0 {
				p := msgs[i-1]
				if p.HLC > m.HLC || p.HLC == m.HLC && p.ID >= m.ID {
					t.Errorf("%s: messages not sorted by (hlc, id): #%d (%d, %s) before #%d (%d, %s)",
						n.label, i-1, p.HLC, p.ID, i, m.HLC, m.ID)
				}
			}
		}
	}
	first := e2eIDs(listed[nodes[0]])
	for _, n := range nodes[1:] {
		got := e2eIDs(listed[n])
		if !slices.Equal(got, first) {
			i := 0
			for i < len(got) && i < len(first) && got[i] == first[i] {
				i++
			}
			t.Errorf("%s lists %d messages, %s lists %d; the sequences of ids differ first at position %d",
				n.label, len(got), nodes[0].label, len(first), i)
		}
	}
}

// e2eCheckScanner proves e2eScan finds what it is looking for: a needle in a nested file, one that
// straddles two chunks, one at the very end of a file, and nothing in a clean file.
func e2eCheckScanner(t *testing.T, needles []string) {
	dir := t.TempDir()
	nested := filepath.Join(dir, "db", "000001.vlog")
	if err := os.MkdirAll(filepath.Dir(nested), 0o700); err != nil {
		t.Fatal(err)
	}
	chunk := 64 // e2eScan needs chunks at least as long as the longest needle
	for _, n := range needles {
		chunk = max(chunk, len(n))
	}
	first, last := needles[0], needles[len(needles)-1]
	planted := make([]byte, 0, 4*chunk+len(first)+len(last))
	planted = append(planted, make([]byte, chunk-3)...) // first straddles the first chunk boundary
	planted = append(planted, first...)
	planted = append(planted, make([]byte, 3*chunk)...)
	planted = append(planted, last...) // and last ends the file
	if err := os.WriteFile(nested, planted, 0o600); err != nil {
		t.Fatal(err)
	}
	clean := filepath.Join(dir, "clean.log")
	if err := os.WriteFile(clean, []byte(strings.Repeat("nothing to see here\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(nested, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	want := []e2eHit{{File: nested, Needle: first}, {File: nested, Needle: last}}
	slices.SortFunc(want, func(x, y e2eHit) int { return strings.Compare(x.Needle, y.Needle) })
	for _, size := range []int{chunk, e2eScanChunk} {
		got, err := e2eScan([]string{dir}, needles, size)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("e2eScan with %d-byte chunks: got %v; want %v", size, got, want)
		}
	}
}

func e2eShort(s []string) string {
	if len(s) > 5 {
		return fmt.Sprintf("%q and %d more", s[:5], len(s)-5)
	}
	return fmt.Sprintf("%q", s)
}

func e2eDeref(p *string) string {
	if p == nil {
		return "null"
	}
	return *p
}
