package main

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestLinkedDeviceHistoryE2E: real processes on loopback, driven through the CLI. A and B talk in a
// team; A then links a second device, A2, which shows A's and B's earlier messages (sealed in epochs
// A2 is no recipient of, so handed over by A), without anyone asking. B, another person, asks A for
// the history with `device history` and is refused by A, with a one-line error, and A logs the
// refusal.
func TestLinkedDeviceHistoryE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs three devices; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Sister Banda")
	a2 := c.node(t, "A2", "Banda laptop")
	b := c.node(t, "B", "Nurse Phiri")
	for _, n := range []*e2eNode{a, a2, b} {
		var in e2eInitOut
		if err := c.decode("init", n.runJSON(t, "init", "--name", n.name), &in, e2eKeysInit); err != nil {
			t.Fatal(err)
		}
		n.device, n.peerID = in.Device, in.PeerID
	}
	wait := c.timeout(30 * time.Second)
	aLog := e2eUpWatched(t, a)
	e2eUpWatched(t, a2)
	e2eUpWatched(t, b)

	run := e2eRunTag(t)
	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", "History Ward "+run), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	var inv e2eInviteOut
	if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &inv, e2eKeysInvite); err != nil {
		t.Fatal(err)
	}
	if err := c.decode("team join", b.runJSON(t, "team", "join", inv.Code), new(e2eTeamOut), e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	first := "Bed 4 needs fluids " + run
	reply := "Fluids started " + run
	var sent []string
	for _, s := range []struct {
		node *e2eNode
		text string
	}{{a, first}, {b, reply}} {
		var out e2eSendOut
		if err := c.decode("send", s.node.runJSON(t, "send", team.ID, s.text), &out, e2eKeysSend); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, out.ID)
	}
	fa := a.follow(t, team.ID)
	fa.waitFor(t, wait, "A shows both messages", e2eHasIDs(sent))
	fa.stop()

	// A links its laptop; the laptop joins with the code and shows what was said before.
	var link e2eInviteOut
	if err := c.decode("device link", a.runJSON(t, "device", "link", team.ID, "--device-name", "Banda laptop"), &link, e2eKeysInvite); err != nil {
		t.Fatal(err)
	}
	if err := c.decode("team join", a2.runJSON(t, "team", "join", link.Code), new(e2eTeamOut), e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	f2 := a2.follow(t, team.ID)
	f2.waitFor(t, c.timeout(time.Minute), "A2 shows A's and B's earlier messages", e2eHasIDs(sent))
	for _, m := range f2.snapshot() {
		if m.ID == sent[0] && (m.Text != first || m.AuthorName != a.name) || m.ID == sent[1] && (m.Text != reply || m.AuthorName != b.name) {
			t.Errorf("A2 shows %+v; want the text and author A and B wrote", m)
		}
	}
	f2.stop()

	// B is another person: A refuses it the history.
	from := aLog.count()
	msg := e2eFailsCleanly(t, "B asks A for the history", b.run(t, "device", "history", team.ID, a.device[:12]))
	if !strings.Contains(msg, "refused") || !strings.Contains(msg, "own person") {
		t.Errorf("B asks A for the history: %q; want it refused, saying why", msg)
	}
	aLog.waitLine(t, "A logs the refusal", from, wait, a.daemon.exited, `msg="history refused"`, "peer="+`"`+e2eShortPeer(b.peerID))
}
