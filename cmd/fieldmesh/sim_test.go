package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSimRun: `fieldmesh sim run` writes the results and prints the
// table; a scenario with an unknown setting is refused with a plain error.
func TestSimRun(t *testing.T) {
	out := t.TempDir()
	c := simCmd()
	var stdout bytes.Buffer
	c.SetOut(&stdout)
	c.SetErr(&bytes.Buffer{})
	c.SetArgs([]string{"run", filepath.Join("..", "..", "simulations", "scenarios", "exponential.toml"), "--seed", "2", "--out", out, "--no-plots"})
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"result.json", "messages.csv", "devices.csv", "MessageStatsReport.txt"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(stdout.String(), "delivery") || !strings.Contains(stdout.String(), "events/s") {
		t.Errorf("output:\n%s", stdout.String())
	}

	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("duration = \"1d\"\nteleport = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c = simCmd()
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	c.SetArgs([]string{"run", bad})
	err := c.Execute()
	if err == nil || !strings.Contains(err.Error(), "teleport") {
		t.Fatalf("bad scenario: %v", err)
	}
}
