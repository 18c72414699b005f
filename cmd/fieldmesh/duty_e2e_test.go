package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDutyE2E drives the clinical-safety commands of real processes: B's daemon runs a --notify-cmd
// hook; A publishes a rota, B its duty hours; a send shows the team's kind and size; a text with a raw
// NHS number is refused unless allowed; a patient reference is refused in a social team; the hook of
// B receives a notification of A's urgent message with a patient reference, and none of its content;
// A reviews the membership and records it.
func TestDutyE2E(t *testing.T) {
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
	e2eInit(t, c, a, b)
	hookDir := filepath.Join(c.root, "hook")
	if err := os.MkdirAll(hookDir, 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(hookDir, "hook.sh")
	out := filepath.Join(hookDir, "captured")
	// One file per run (runs overlap), renamed into place once written.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s|' \"$@\" > \""+out+".tmp$$\" && mv \""+out+".tmp$$\" \""+out+"-$$\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	a.up(t)
	b.up(t, "--notify-cmd", script)

	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", "Ward "+run, "--kind", "clinical"), &team, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	e2eJoin(t, c, a, team.ID, b)

	// Duty hours and rota.
	if res := b.run(t, "duty", "set", team.ID, "--shift", "mon-sun@00:00-24:00", "--zone", "Mars/Base"); res.code == 0 {
		t.Error("duty set accepted an unknown time zone")
	}
	if res := b.run(t, "duty", "set", team.ID, "--shift", "mon-sun@00:00-24:00", "--utc-offset", "UTC"); res.code != 0 {
		t.Fatalf("duty set: %s", res)
	}
	if res := b.run(t, "rota", "set", team.ID, "--slot", "daily@00:00-24:00=Nurse Phiri", "--escalate", "10m"); res.code == 0 {
		t.Error("B, not an admin, published a rota")
	}
	if res := a.run(t, "rota", "set", team.ID, "--slot", "daily@00:00-24:00=Nurse Phiri,Dr Banda", "--escalate", "10m", "--repeat", "3m", "--zone", "Africa/Blantyre"); res.code != 0 {
		t.Fatalf("rota set: %s", res)
	}
	deadline := time.Now().Add(c.timeout(60 * time.Second))
	for {
		var rep struct {
			Persons []struct {
				Name      string `json:"name"`
				Published bool   `json:"published"`
			} `json:"persons"`
			Rota *struct {
				Zone      string   `json:"zone"`
				Offset    int      `json:"utc_offset_minutes"`
				OnCallNow []string `json:"on_call_now"`
			} `json:"rota"`
		}
		if err := json.Unmarshal(a.runJSON(t, "duty", "show", team.ID), &rep); err != nil {
			t.Fatal(err)
		}
		published := false
		for _, p := range rep.Persons {
			published = published || p.Name == "Nurse Phiri" && p.Published
		}
		if published && rep.Rota != nil && strings.Join(rep.Rota.OnCallNow, ",") == "Nurse Phiri,Dr Banda" &&
			rep.Rota.Zone == "Africa/Blantyre" && rep.Rota.Offset == 120 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's duty show never showed B's hours and the rota: %+v", rep)
		}
		time.Sleep(200 * time.Millisecond) // polling another process's state: no event to wait on
	}

	// Sending: the team's kind and size; raw identifiers refused unless allowed.
	res := a.run(t, "send", team.ID, "bed 4 obs stable "+run)
	if res.code != 0 || !strings.Contains(res.stdout, `to clinical team "Ward `+run+`" (2 members)`) {
		t.Errorf("send: %s, stdout %q; want the team's kind and member count", res, res.stdout)
	}
	msg := e2eFailsCleanly(t, "send with an NHS number", a.run(t, "send", team.ID, "NHS 943 476 5919 in bed 4"))
	if !strings.Contains(msg, "NHS number") || !strings.Contains(msg, "patient field") {
		t.Errorf("send with an NHS number: %q; want it named and a patient reference suggested", msg)
	}
	if res := a.run(t, "send", team.ID, "NHS 943 476 5919 in bed 4", "--allow-identifiers"); res.code != 0 {
		t.Errorf("send --allow-identifiers: %s", res)
	}
	var social e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", "Staff room "+run, "--kind", "social"), &social, e2eKeysTeam); err != nil {
		t.Fatal(err)
	}
	if msg := e2eFailsCleanly(t, "patient reference in a social team", a.run(t, "send", social.ID, "cake", "--patient", "PT-1")); !strings.Contains(msg, "social") {
		t.Errorf("patient reference in a social team: %q", msg)
	}

	// The hook: an urgent message with a patient reference reaches B's hook as a summary and a priority.
	secret := "sepsis bay 9 " + run
	patient := "PTREF-" + run
	if res := a.run(t, "send", team.ID, secret, "--priority", "urgent", "--patient", patient); res.code != 0 {
		t.Fatalf("urgent send: %s", res)
	}
	deadline = time.Now().Add(c.timeout(60 * time.Second))
	var captured []byte
	for {
		runs, _ := filepath.Glob(out + "-*")
		captured = nil
		urgent := false
		for _, r := range runs {
			b, err := os.ReadFile(r)
			if err != nil {
				t.Fatal(err)
			}
			captured = append(append(captured, b...), '\n')
			urgent = urgent || string(b) == "Urgent message in a clinical team|urgent|new|"
		}
		if urgent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's hook never received the urgent notification; it has %q", captured)
		}
		time.Sleep(200 * time.Millisecond) // the hook is another process writing a file
	}
	for _, s := range []string{secret, patient, run, "Banda", "Ward"} {
		if strings.Contains(string(captured), s) {
			t.Errorf("the hook received %q", s)
		}
	}

	// Membership review.
	var rep struct {
		Members []struct {
			Name    string `json:"name"`
			Devices []struct {
				LastSeen string `json:"last_seen"`
			} `json:"devices"`
		} `json:"members"`
		LastReview string `json:"last_review"`
		Due        string `json:"due"`
	}
	if err := json.Unmarshal(a.runJSON(t, "team", "review", team.ID, "--done"), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Members) != 2 || rep.LastReview == "" || rep.Due == "" {
		t.Errorf("team review --done: %+v; want two members, a last review and a due date", rep)
	}
	if res := b.run(t, "team", "review", team.ID, "--done"); res.code == 0 {
		t.Error("B, not an admin, recorded a review")
	}
}
