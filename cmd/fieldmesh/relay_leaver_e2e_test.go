package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRelayLeaverE2E: leavers are refused at the relay, and a relay reaches members through the team. A relay R carries a team of A (admin), B and C,
// all enrolled there. A removes C. C keeps running with all its old state, including the team's relay
// key, which every member ever had: R takes A's new roster at once, ends C's enrolment, and refuses C
// when it enrols again, so C can neither store nor fetch there nor learn from R's directory who is
// online, while B stays enrolled. D, who joins after R was admitted and is never given R's address,
// uses R through the team's relay op that A published, and can forget it.
func TestRelayLeaverE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a relay and three devices; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Sister Banda")
	b := c.node(t, "B", "Nurse Phiri")
	cc := c.node(t, "C", "CHW Leaver")
	d := c.node(t, "D", "CHW Newcomer")
	wait := c.timeout(30 * time.Second)
	team := e2eTeamWithRelay(t, c, "Leaver Test Ward", a, b, cc)
	r, rLog, rst := team.R, team.RLog, team.RStatus
	aLog, cLog := team.Logs[a], team.Logs[cc]
	rLog.waitLine(t, "R takes A's first roster", 0, wait, r.daemon.exited, `msg="topic roster updated"`, "seq=1")
	aLog.waitLine(t, "A tells the team about R", 0, wait, a.daemon.exited, `msg="told the team about its relay"`)
	e2eInit(t, c, d)
	dLog := e2eUpWatched(t, d) // never given R's address

	// D joins now, and finds R through the team: within a minute, with no address typed.
	var inv e2eInviteOut
	if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &inv, e2eKeysInvite); err != nil {
		t.Fatal(err)
	}
	if err := c.decode("team join", d.runJSON(t, "team", "join", inv.Code), new(e2eTeamOut), e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	dLog.waitLine(t, "D uses the team's relay", 0, c.timeout(time.Minute), d.daemon.exited, `msg="using the team's relay"`, "relay="+`"`+e2eShortPeer(rst.PeerID))
	dLog.waitLine(t, "D enrols at R", 0, c.timeout(time.Minute), d.daemon.exited, `msg="enrolled at relay"`)
	type relayOut struct {
		PeerID    string   `json:"peer_id"`
		From      string   `json:"from"`
		Connected bool     `json:"connected"`
		Enrolled  []string `json:"enrolled"`
	}
	var dRelays []relayOut
	if err := json.Unmarshal(d.runJSON(t, "relay", "list"), &dRelays); err != nil || len(dRelays) != 1 || dRelays[0].PeerID != rst.PeerID ||
		dRelays[0].From != "team" || !dRelays[0].Connected || len(dRelays[0].Enrolled) != 1 || dRelays[0].Enrolled[0] != team.ID {
		t.Errorf("D: relay list: %+v, %v; want R, from the team, connected, enrolled for the team", dRelays, err)
	}
	d.runJSON(t, "relay", "forget", rst.PeerID[:12])
	dRelays = nil
	if err := json.Unmarshal(d.runJSON(t, "relay", "list"), &dRelays); err != nil || len(dRelays) != 0 {
		t.Errorf("D: relay list after forgetting R: %+v, %v; want none", dRelays, err)
	}
	if msg := e2eFailsCleanly(t, "D: forgetting R again", d.run(t, "relay", "forget", rst.PeerID)); !strings.Contains(msg, "no such relay") {
		t.Errorf("D: forgetting a relay it does not use: %q; want it to say so", msg)
	}

	// A removes C, who stays up.
	from := rLog.count()
	fromC := cLog.count()
	if res := a.run(t, "team", "remove", team.ID, cc.name); res.code != 0 {
		t.Fatalf("A: team remove C: exit %d: %s", res.code, res.stderr)
	}
	rLog.waitLine(t, "R takes A's roster without C and ends C's enrolment", from, wait, r.daemon.exited,
		`msg="topic roster updated"`, "enrolments_ended=", e2eShortPeer(cc.peerID))
	rLog.waitLine(t, "R refuses C's next enrolment", from, wait, r.daemon.exited,
		`msg="enrolment refused"`, "peer="+`"`+e2eShortPeer(cc.peerID), "not on the topic's roster")
	cLog.waitLine(t, "C hears why", fromC, wait, cc.daemon.exited, `msg="relay refused enrolment"`, "not on topic")

	// R counts B (and A) enrolled for the team, not C, and shows the refusal and the roster.
	type status struct {
		Topics []struct {
			Topic         string `json:"topic"`
			Connected     int    `json:"connected"`
			RosterSeq     uint64 `json:"roster_seq"`
			RosterMembers int    `json:"roster_members"`
		} `json:"topics"`
		RefusedEnrolments map[string]int64 `json:"refused_enrolments"`
	}
	var st status
	if err := json.Unmarshal(r.runJSON(t, "relay", "status"), &st); err != nil || len(st.Topics) != 1 || st.Topics[0].Connected != 2 ||
		st.Topics[0].RosterMembers != 3 || st.RefusedEnrolments["not_member"] < 1 {
		t.Errorf("relay status after the removal: %+v, %v; want one topic with 2 devices enrolled (A, B; D forgot R), a roster of 3, a not_member refusal", st, err)
	}

	// The operator revokes the team: R carries nothing of it any more.
	if len(st.Topics) == 1 {
		topic := st.Topics[0].Topic
		r.runJSON(t, "relay", "revoke", topic)
		st = status{}
		if err := json.Unmarshal(r.runJSON(t, "relay", "status"), &st); err != nil || len(st.Topics) != 0 {
			t.Errorf("relay status after revoking the team: %+v, %v; want no topic", st, err)
		}
		if msg := e2eFailsCleanly(t, "revoking it again", r.run(t, "relay", "revoke", topic)); !strings.Contains(msg, "carries no topic") {
			t.Errorf("revoking a topic not carried: %q; want it to say so", msg)
		}
	}
	rLog.mu.Lock()
	all := strings.Join(rLog.lines, "\n")
	rLog.mu.Unlock()
	if strings.Contains(all, cc.peerID) {
		t.Error("R's log names C by its full peer id")
	}
}
