package sim

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func loadScenario(t testing.TB, name string) *Scenario {
	t.Helper()
	s, err := LoadScenario(filepath.Join("..", "scenarios", name))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runOutputs runs a scenario and returns every output file it writes.
func runOutputs(t testing.TB, s *Scenario, seed uint64, strategy string) map[string][]byte {
	t.Helper()
	cfg, err := s.Build(seed, strategy)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteOutputs(dir, res, false); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// smallDistrict is the district scenario cut to one district of two teams
// for 30 hours.
func smallDistrict(t testing.TB) *Scenario {
	s := loadScenario(t, "district.toml")
	s.Field.Districts = 1
	s.Field.TeamsPerDistrict = 2
	s.Field.CHWsPerTeam = 4
	s.Duration = Duration(30 * time.Hour)
	s.Workload.StopBefore = Duration(6 * time.Hour)
	return s
}

// TestDeterministic: the same scenario and seed give byte-identical
// output files; another seed gives other output.
func TestDeterministic(t *testing.T) {
	s := smallDistrict(t)
	a := runOutputs(t, s, 5, "fieldmesh")
	b := runOutputs(t, s, 5, "fieldmesh")
	c := runOutputs(t, s, 6, "fieldmesh")
	if len(a) < 4 {
		t.Fatalf("only %d output files", len(a))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Errorf("%s differs between two runs of the same seed", name)
		}
	}
	if bytes.Equal(a["result.json"], c["result.json"]) {
		t.Error("seeds 5 and 6 gave the same result")
	}
}
