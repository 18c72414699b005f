package main

import (
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestRelayTwoClinicsE2E: relays that reach each other. Two clinics each run a relay, R1 and R2, whose
// operators link them (--peer-relay, each naming the other). A meets only R1 and B meets only R2 (B
// forgets R1, which it learned through the team). A leaves a message at R1 and goes offline; R1 hands
// it to R2; B comes back meeting only R2 and shows it.
func TestRelayTwoClinicsE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs two relays and two devices; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	r1 := c.node(t, "R1", "")
	r2 := c.node(t, "R2", "")
	a := c.node(t, "A", "Clinic One Nurse")
	b := c.node(t, "B", "Clinic Two Nurse")
	for _, n := range []*e2eNode{a, b} {
		var in e2eInitOut
		if err := c.decode("init", n.runJSON(t, "init", "--name", n.name), &in, e2eKeysInit); err != nil {
			t.Fatal(err)
		}
		n.device, n.peerID = in.Device, in.PeerID
	}
	wait := c.timeout(30 * time.Second)
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	p1, p2 := port(), port()
	listen := func(p int) string { return fmt.Sprintf("--listen=/ip4/127.0.0.1/tcp/%d", p) }
	peerID := func(r *e2eNode) string {
		var st e2eRelayStatus
		if err := c.decode("relay status", r.runJSON(t, "relay", "status"), &st, e2eKeysRelayStatus); err != nil {
			t.Fatal(err)
		}
		return st.PeerID
	}
	// A relay's peer id is made on its first start: R1 starts alone once, then each is started
	// naming the other.
	e2eStartWatched(t, r1, `msg="relay ready"`, "relay", listen(p1), "--log-level=debug")
	id1 := peerID(r1)
	if err := r1.stop(t, e2eSignal); err != nil {
		t.Fatal(err)
	}
	addr1 := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", p1, id1)
	r2Log := e2eStartWatched(t, r2, `msg="relay ready"`, "relay", listen(p2), "--log-level=debug", "--peer-relay="+addr1)
	id2 := peerID(r2)
	addr2 := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", p2, id2)
	r1Log := e2eStartWatched(t, r1, `msg="relay ready"`, "relay", listen(p1), "--log-level=debug", "--peer-relay="+addr2)

	aLog := e2eUpWatched(t, a, "--relay="+addr1)
	bLog := e2eUpWatched(t, b, "--relay="+addr2)
	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", "District Referrals"), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	var code struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(a.runJSON(t, "team", "relay-code", team.ID), &code); err != nil {
		t.Fatal(err)
	}
	r1.runJSON(t, "relay", "admit", code.Code)
	r2.runJSON(t, "relay", "admit", code.Code)
	aLog.waitLine(t, "A enrols at R1", 0, wait, a.daemon.exited, `msg="enrolled at relay"`)
	r1Log.waitLine(t, "R1 and R2 find the team in common", 0, wait, r1.daemon.exited, `msg="linked relay carries topics in common"`, "topics=1")

	var inv e2eInviteOut
	if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &inv, e2eKeysInvite); err != nil {
		t.Fatal(err)
	}
	if err := c.decode("team join", b.runJSON(t, "team", "join", inv.Code), new(e2eTeamOut), e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	bLog.waitLine(t, "B enrols at R2", 0, wait, b.daemon.exited, `msg="enrolled at relay"`, "relay="+`"`+e2eShortPeer(id2))
	// B learns R1 through the team; it is to meet R2 only.
	bLog.waitLine(t, "B learns R1 through the team", 0, wait, b.daemon.exited, `msg="using the team's relay"`, "relay="+`"`+e2eShortPeer(id1))
	b.runJSON(t, "relay", "forget", id1)
	if err := b.stop(t, e2eSignal); err != nil {
		t.Errorf("B: exit: %v", err)
	}

	// A leaves a message at R1 and goes offline; R1 hands it to R2.
	text := "Referral: child, 3 y, severe dehydration, arriving by motorbike " + e2eRunTag(t)
	var sent e2eSendOut
	from1, from2 := r1Log.count(), r2Log.count()
	if err := c.decode("send", a.runJSON(t, "send", team.ID, text, "--priority", "urgent"), &sent, e2eKeysSend); err != nil {
		t.Fatal(err)
	}
	r1Log.waitLine(t, "R1 stores A's message", from1, wait, r1.daemon.exited, `msg="relay stored envelope"`, "id="+sent.ID[:8])
	r2Log.waitLine(t, "R2 gets A's message from R1", from2, wait, r2.daemon.exited, `msg="relay stored envelope"`, "id="+sent.ID[:8])
	if err := a.stop(t, e2eSignal); err != nil {
		t.Errorf("A: exit: %v", err)
	}

	// B comes back, meets only R2, and shows A's message.
	e2eUpWatched(t, b)
	fb := b.follow(t, team.ID)
	fb.waitFor(t, wait, "B shows A's message, through R1 and R2", e2eHasIDs([]string{sent.ID}))
	fb.stop()
	var peers []struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal(b.runJSON(t, "peers"), &peers); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.PeerID != id2 {
			t.Errorf("B is connected to %s; want R2 (%s) only", p.PeerID, id2)
		}
	}
	for _, n := range []*e2eNode{r1, r2} {
		if err := n.stop(t, e2eSignal); err != nil {
			t.Errorf("%s: exit: %v", n.label, err)
		}
	}
	if err := b.stop(t, e2eSignal); err != nil {
		t.Errorf("B: exit: %v", err)
	}
}
