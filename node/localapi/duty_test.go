package localapi

import (
	"context"
	"strings"
	"testing"
)

// TestSendRefusesRawIdentifiers: the API every client uses (the CLI and the web UI) refuses text that
// looks like it holds a raw NHS number, date of birth or phone number, sends nothing, and says to use a
// patient reference; with allow_identifiers it sends.
func TestSendRefusesRawIdentifiers(t *testing.T) {
	c := newTestAPI(t)
	ctx := context.Background()
	team, err := c.CreateTeam(ctx, "Ward 3", "clinical")
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"NHS 943 476 5919 in bed 4", "DOB 12/03/1984, bed 2", "call her on 07700 900123"} {
		_, err := c.Send(ctx, SendRequest{Team: team.ID, Text: text})
		if err == nil || !strings.Contains(err.Error(), "patient field") {
			t.Errorf("send %q: %v; want a refusal that suggests a patient reference", text, err)
		}
	}
	if n := len(rawMessages(t, c, team.ID)); n != 0 {
		t.Fatalf("%d messages sent; want none", n)
	}
	if _, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "bed 4 BP 142/88, review 14:30", Patient: "PT-7"}); err != nil {
		t.Errorf("ordinary text: %v", err)
	}
	if _, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "NHS 943 476 5919 in bed 4", AllowIdentifiers: true}); err != nil {
		t.Errorf("allowed: %v", err)
	}
	if n := len(rawMessages(t, c, team.ID)); n != 2 {
		t.Errorf("%d messages; want 2", n)
	}
}

// TestBadDurationsRefused: every handler that takes a duration refuses one that does not parse or is
// not positive, names the field, and changes nothing.
func TestBadDurationsRefused(t *testing.T) {
	c := newTestAPI(t)
	ctx := context.Background()
	team, err := c.CreateTeam(ctx, "Ward 3", "clinical")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"soon", "-5m", "0"} {
		err := c.SetPolicy(ctx, Policy{Team: team.ID, LockAfter: bad})
		if err == nil || !strings.Contains(err.Error(), "lock_after") {
			t.Errorf("policy lock_after %q: %v; want a refusal naming lock_after", bad, err)
		}
		err = c.SetRota(ctx, RotaRequest{Team: team.ID, EscalateAfter: "10m", RenotifyEvery: bad})
		if err == nil || !strings.Contains(err.Error(), "renotify_every") {
			t.Errorf("rota renotify_every %q: %v; want a refusal naming renotify_every", bad, err)
		}
		_, err = c.RemoteWipe(ctx, team.ID, "0123456789abcdef", bad)
		if err == nil || !strings.Contains(err.Error(), "ttl") {
			t.Errorf("remote wipe ttl %q: %v; want a refusal naming ttl", bad, err)
		}
	}
	if err := c.SetRota(ctx, RotaRequest{Team: team.ID, RenotifyEvery: "10m"}); err == nil || !strings.Contains(err.Error(), "escalate_after") {
		t.Errorf("rota without escalate_after: %v; want a refusal naming it", err)
	}
	p, err := c.Policy(ctx, team.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p.LockAfter != "" || p.OfflineLockDays != 0 {
		t.Errorf("policy after refusals: %+v; want none set", p)
	}
}
