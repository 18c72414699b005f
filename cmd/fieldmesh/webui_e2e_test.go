package main

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestWebUIE2E: `fieldmesh up` serves the web UI on 127.0.0.1 and says where, without the token;
// `fieldmesh open --print` prints the sign-in address, whose token signs in (and only that token);
// `up --ui off` serves none, and `open` then says so in one line; a non-loopback --ui is refused.
// The browser side is node/webui's TestBrowser.
func TestWebUIE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs two daemons; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Sister Banda")
	b := c.node(t, "B", "Nurse Phiri")
	for _, n := range []*e2eNode{a, b} {
		if res := n.run(t, "init", "--name", n.name); res.code != 0 {
			t.Fatalf("%s: %s", n.label, res)
		}
	}

	bad := b.run(t, "up", "--no-mdns", "--listen=/ip4/127.0.0.1/tcp/0", "--ui=0.0.0.0:0")
	if msg := e2eFailsCleanly(t, "up --ui=0.0.0.0:0", bad); !strings.Contains(msg, "loopback") {
		t.Errorf("up --ui=0.0.0.0:0: %q; want a refusal naming loopback", msg)
	}

	a.up(t)
	res := a.run(t, "open", "--print")
	if res.code != 0 {
		t.Fatalf("open --print: %s", res)
	}
	m := regexp.MustCompile(`^(http://127\.0\.0\.1:[0-9]+/)#token=([0-9a-f]{64})\n$`).FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("open --print: stdout %q; want http://127.0.0.1:PORT/#token=<64 hex>", res.stdout)
	}
	base, token := m[1], m[2]
	log, err := os.ReadFile(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "Web UI on "+base) {
		t.Errorf("up's output does not say \"Web UI on %s\"", base)
	}
	if strings.Contains(string(log), token) {
		t.Error("up's output holds the web UI's token")
	}

	resp, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("GET %s: %s, CSP %q; want 200 with the CSP", base, resp.Status, resp.Header.Get("Content-Security-Policy"))
	}
	login := func(tok string) int {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"token": tok})
		resp, err := http.Post(base+"api/login", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := login(token); code != http.StatusOK {
		t.Errorf("login with the printed token: %d; want 200", code)
	}
	if code := login(strings.Repeat("0", 64)); code != http.StatusUnauthorized {
		t.Errorf("login with another token: %d; want 401", code)
	}

	var ui struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(a.runJSON(t, "open"), &ui); err != nil || ui.URL != base+"#token="+token {
		t.Errorf("open --json: %+v (%v); want {\"url\": %q}", ui, err, base+"#token=…")
	}

	b.up(t, "--ui=off")
	if msg := e2eFailsCleanly(t, "open on a node without UI", b.run(t, "open", "--print")); !strings.Contains(msg, "no web UI") {
		t.Errorf("open on a node without UI: %q; want it to say the node serves no web UI", msg)
	}
}
