package sim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const oneSample = `# a ONE StandardEventsReader trace
0 CONN n0 n1 up
1.5 C M1 n0 n2 500
10 CONN n0 n1 down
12.25 CONN 1 2 up
13 DE n1 n2
20 CONN 1 2 down
`

func TestReadONE(t *testing.T) {
	tr, err := ReadONE(strings.NewReader(oneSample))
	if err != nil {
		t.Fatal(err)
	}
	if tr.N != 3 || len(tr.Contacts) != 4 || len(tr.Messages) != 1 {
		t.Fatalf("got %d hosts, %d contact events, %d messages", tr.N, len(tr.Contacts), len(tr.Messages))
	}
	if c := tr.Contacts[2]; c.At != 12250*time.Millisecond || c.A != 1 || c.B != 2 || !c.Up {
		t.Fatalf("third event %+v", c)
	}
	if m := tr.Messages[0]; m.ID != "M1" || m.From != 0 || m.To != 2 || m.Size != 500 || m.At != 1500*time.Millisecond {
		t.Fatalf("message %+v", m)
	}
	var b bytes.Buffer
	if err := WriteONE(&b, tr); err != nil {
		t.Fatal(err)
	}
	back, err := ReadONE(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Contacts) != len(tr.Contacts) || back.Contacts[3] != tr.Contacts[3] || back.Messages[0] != tr.Messages[0] {
		t.Fatalf("round trip changed the trace")
	}
}

func TestReadONERefuses(t *testing.T) {
	for _, bad := range []string{
		"x CONN 1 2 up",
		"-1 CONN 1 2 up",
		"NaN CONN 1 2 up",
		"1 CONN 1 1 up",
		"1 CONN 1 2 sideways",
		"1 CONN a b up",
		"1 CONN 1 99999999999 up",
		"1 C M1 1 2 -5",
		"1 ZZ 1 2",
		"1",
		"1 CONN 1 " + strings.Repeat("9", 5000) + " up",
	} {
		if _, err := ReadONE(strings.NewReader(bad)); !errors.Is(err, ErrTrace) {
			t.Errorf("%.40q: got %v, want ErrTrace", bad, err)
		}
	}
}

func FuzzReadONE(f *testing.F) {
	f.Add(oneSample)
	f.Add("0 CONN 0 1 up\n1 CONN 0 1 down\n")
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ReadONE(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, c := range tr.Contacts {
			if c.A < 0 || c.B < 0 || c.A >= tr.N || c.B >= tr.N || c.A == c.B || c.At < 0 {
				t.Fatalf("bad contact %+v of %d hosts", c, tr.N)
			}
		}
	})
}

func FuzzParseScenario(f *testing.F) {
	f.Add([]byte("duration = \"1d\"\n[contacts]\nmodel = \"exponential\"\ndevices = 3\nrate_per_hour = 1\n"))
	f.Add([]byte("duration = \"7d\"\n[contacts]\nmodel = \"field\"\n[field]\ndistricts = 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseScenario(b)
		if err != nil {
			return
		}
		if s.Duration.D() <= 0 {
			t.Fatalf("accepted duration %v", s.Duration.D())
		}
	})
}

func TestParseScenarioRefuses(t *testing.T) {
	base := "duration = \"1d\"\n[contacts]\nmodel = \"exponential\"\ndevices = 3\nrate_per_hour = 1\n"
	if _, err := ParseScenario([]byte(base)); err != nil {
		t.Fatalf("base scenario: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown setting":  base + "typo = 1\n",
		"unknown strategy": "strategies = [\"teleport\"]\n" + base,
		"no duration":      "[contacts]\nmodel = \"exponential\"\ndevices = 3\nrate_per_hour = 1\n",
		"bad model":        "duration = \"1d\"\n[contacts]\nmodel = \"magic\"\n",
		"bad duration":     "duration = \"-3d\"\n[contacts]\nmodel = \"exponential\"\ndevices = 3\nrate_per_hour = 1\n",
		"huge text":        base + "[workload]\nsize_max = 100000\n",
		"pairs, no trace":  base + "[workload]\ntrace_pairs = true\n",
		"step, shared":     base + "[link]\nstep = \"1s\"\n",
		"negative step":    base + "[link]\nexclusive = true\nstep = \"-1s\"\n",
		"huge copies":      "copies = 4294967297\n" + base,
		"pairs and one team": "duration = \"1d\"\n[contacts]\nmodel = \"one\"\ntrace = \"t.txt\"\n" +
			"[workload]\ntrace_pairs = true\ntrace_messages = true\n",
	} {
		if _, err := ParseScenario([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestScenariosLoad: every shipped scenario parses and builds.
func TestScenariosLoad(t *testing.T) {
	names, _ := filepath.Glob(filepath.Join("..", "scenarios", "*.toml"))
	if len(names) == 0 {
		t.Fatal("no scenarios in simulations/scenarios")
	}
	for _, name := range names {
		name = filepath.Base(name)
		s := loadScenario(t, name)
		if s.Description == "" || len(s.Strategies) == 0 {
			t.Errorf("%s: no description or strategies", name)
		}
	}
	s := loadScenario(t, "national-1k.toml")
	cfg, err := s.Build(1, "fieldmesh")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Devices) != 1000 {
		t.Errorf("national-1k has %d devices", len(cfg.Devices))
	}
	s = loadScenario(t, "national-10k.toml")
	if cfg, err = s.Build(1, "fieldmesh"); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Devices) != 10000 || cfg.Duration != 30*24*time.Hour {
		t.Errorf("national-10k has %d devices for %v", len(cfg.Devices), cfg.Duration)
	}
}

// TestTracePairsBounded: a trace whose messages name more distinct pairs
// than a run makes teams for (each a device core per member, with its
// keys) is refused when the run is built, before any team is made.
func TestTracePairsBounded(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	pairs := 0
	for a := 0; pairs <= maxPairTeams; a++ {
		for c := a + 1; c < a+400 && pairs <= maxPairTeams; c++ {
			fmt.Fprintf(&b, "1 C M%d n%d n%d 1000\n", pairs, a, c)
			pairs++
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "trace.txt"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	toml := "duration = \"1h\"\n[contacts]\nmodel = \"one\"\ntrace = \"trace.txt\"\n[workload]\ntrace_pairs = true\n"
	if err := os.WriteFile(filepath.Join(dir, "s.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadScenario(filepath.Join(dir, "s.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Build(1, "epidemic"); err == nil {
		t.Fatalf("a trace of %d pairs built a run", pairs)
	}
}
