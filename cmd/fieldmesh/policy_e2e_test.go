package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTeamPolicyE2E: an admin sets the team's lock policy with `team policy`; it reaches a member's
// daemon, whose `team policy` and `status` show it; the member's own attempt to set one is refused.
func TestTeamPolicyE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs two daemons; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux")
	}
	c := e2eNewCluster(t)
	run := e2eRunTag(t)
	a := c.node(t, "A", "Dr Banda")
	b := c.node(t, "B", "Nurse Phiri")
	team := e2eTeamUp(t, c, "Ward "+run, []string{"--kind", "clinical"}, a, b)

	if res := a.run(t, "team", "policy", team.ID, "--lock-after", "2m", "--offline-lock-days", "3"); res.code != 0 {
		t.Fatalf("team policy (admin): %s", res)
	}
	if res := b.run(t, "team", "policy", team.ID, "--lock-after", "1h"); res.code == 0 {
		t.Error("B, not an admin, set the team's policy")
	}
	type policy struct {
		LockAfter string `json:"lock_after"`
		Days      uint16 `json:"offline_lock_days"`
		Set       bool   `json:"set"`
	}
	deadline := time.Now().Add(c.timeout(60 * time.Second))
	for {
		var p policy
		if err := json.Unmarshal(b.runJSON(t, "team", "policy", team.ID), &p); err != nil {
			t.Fatal(err)
		}
		if p.Set && p.LockAfter == "2m0s" && p.Days == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's team policy = %+v; want A's 2m and 3 days", p)
		}
		time.Sleep(200 * time.Millisecond) // polling the CLI, bounded by the deadline
	}
	var st struct {
		TeamLock policy `json:"team_lock"`
	}
	if err := json.Unmarshal(b.runJSON(t, "status"), &st); err != nil {
		t.Fatal(err)
	}
	if st.TeamLock.LockAfter != "2m0s" || st.TeamLock.Days != 3 {
		t.Errorf("B's status team_lock = %+v; want 2m0s and 3 days", st.TeamLock)
	}
	if res := b.run(t, "team", "policy", team.ID); res.code != 0 || !strings.Contains(res.stdout, "2m0s") || !strings.Contains(res.stdout, "3 days") {
		t.Errorf("B's team policy text: %s", res)
	}
}
