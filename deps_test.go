package fieldmesh_test

// These tests hold the repository's layering rules (DESIGN.md, "Layers and the direction of
// dependencies"): arrows point down only. They ask the go tool, not a hand-kept list, so a new
// package is covered the day it is added.
//
//	cmd/fieldmesh -> node -> sync -> crypto, storage
//
//   - crypto/... imports nothing of ours except other crypto/... packages
//     (crypto/seal importing crypto/identity is the case that exists today);
//   - storage/... imports nothing of ours except storage/... (storage/storagetest imports storage);
//   - sync/... never imports node/... or cmd/...;
//   - nothing outside cmd/ imports cmd/...;
//   - only cmd/ and simulations/ import simulations/...;
//   - only cmd/ and simulations/ import node/relay, the relay server (its store, metrics and
//     Prometheus): devices use node/relay/relayproto and node/relay/relayclient.
//
// Only the packages' own (non-test) imports are checked, transitively (go list -deps): that is
// what ends up in the binary. Tests may reach across layers to build fixtures.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/fieldmesh/fieldmesh"

// listedPackage is the subset of `go list -json` output these tests read.
type listedPackage struct {
	ImportPath string
	Name       string
	Dir        string
	Imports    []string // direct, non-test
	Deps       []string // transitive, non-test
}

// listModule runs `go list -e -json ./...` in the repository root and returns the module's own
// packages. -e keeps packages that do not compile yet in the list: their imports are still parsed,
// and a compile error is another test's business.
func listModule(t *testing.T) []listedPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not on PATH: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-e", "-json=ImportPath,Name,Dir,Imports,Deps", "./...")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list ./...: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(&stdout)
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.ImportPath == modulePath || strings.HasPrefix(p.ImportPath, modulePath+"/") {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list ./... found no packages of %s; is the test running in the repository root?", modulePath)
	}
	return pkgs
}

// rel returns an import path relative to the module root ("" for the root itself) and whether it
// belongs to the module at all.
func rel(importPath string) (string, bool) {
	if importPath == modulePath {
		return "", true
	}
	r, ok := strings.CutPrefix(importPath, modulePath+"/")
	return r, ok
}

// under reports whether the module-relative path p is the folder dir or inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// layerViolation returns why package from (module-relative) may not depend on package to
// (module-relative), or "" when the dependency is allowed.
func layerViolation(from, to string) string {
	switch {
	case from == "sync/wire":
		return "sync/wire imports nothing of ours: every layer reads untrusted bytes through it"
	case to == "sync/wire":
		return ""
	case under(from, "crypto") && !under(to, "crypto"):
		return "crypto/ imports nothing of ours outside crypto/"
	case under(from, "storage") && !under(to, "storage"):
		return "storage/ imports nothing of ours outside storage/"
	case under(from, "sync") && under(to, "node"):
		return "sync/ never imports node/"
	case under(to, "cmd") && !under(from, "cmd"):
		return "nothing outside cmd/ imports cmd/"
	case under(to, "simulations") && !under(from, "simulations") && !under(from, "cmd"):
		return "only cmd/ and simulations/ import simulations/"
	case to == "node/relay" && !under(from, "simulations") && !under(from, "cmd"):
		return "only cmd/ and simulations/ import the relay server node/relay; devices use node/relay/relayproto and node/relay/relayclient"
	}
	return ""
}

func TestLayerViolation(t *testing.T) {
	// The rule table itself, so a typo in it cannot quietly allow everything.
	tests := []struct {
		from, to string
		allowed  bool
	}{
		{"crypto/seal", "crypto/identity", true},
		{"crypto/identity", "crypto/seal", true},
		{"crypto/seal", "storage", false},
		{"crypto/seal", "sync/crdt", false},
		{"crypto/identity", "node", false},
		{"storage/storagetest", "storage", true},
		{"storage", "crypto/identity", false},
		{"storage", "sync/crdt", false},
		{"storage", "sync/wire", true},
		{"crypto/seal", "sync/wire", true},
		{"sync/wire", "crypto/identity", false},
		{"sync/crdt", "crypto/identity", true},
		{"sync/envelope", "crypto/seal", true},
		{"sync/recon", "storage", true},
		{"sync/device", "node", false},
		{"sync/recon", "node/nodetest", false},
		{"sync/crdt", "cmd/fieldmesh", false},
		{"node", "sync/crdt", true},
		{"node", "storage", true},
		{"node", "cmd/fieldmesh", false},
		{"", "cmd/fieldmesh", false},
		{"cmd/fieldmesh", "node", true},
		{"cmd/fieldmesh", "simulations", true},
		{"simulations/emulate", "node", true},
		{"node", "simulations", false},
		{"node", "node/relay", false},
		{"node/relay/relayclient", "node/relay", false},
		{"node", "node/relay/relayproto", true},
		{"node", "node/relay/relayclient", true},
		{"node/relay", "node/relay/relayproto", true},
		{"cmd/fieldmesh", "node/relay", true},
		{"cryptography", "storage", true}, // not the crypto folder: no rule applies
		{"syncthing", "node", true},       // not the sync folder
	}
	for _, tt := range tests {
		got := layerViolation(tt.from, tt.to) == ""
		if got != tt.allowed {
			t.Errorf("layerViolation(%q, %q) allowed = %v; want %v", tt.from, tt.to, got, tt.allowed)
		}
	}
}

func TestDependencyDirection(t *testing.T) {
	for _, p := range listModule(t) {
		from, _ := rel(p.ImportPath)
		for _, dep := range p.Deps {
			to, ours := rel(dep)
			if !ours {
				continue
			}
			if why := layerViolation(from, to); why != "" {
				how := "transitively"
				if slices.Contains(p.Imports, dep) {
					how = "directly"
				}
				t.Errorf("%s depends %s on %s: %s", p.ImportPath, how, dep, why)
			}
		}
	}
}

// TestPackageNames holds STYLE.md's naming rules: packages inside the sync/ and crypto/ folders
// get their own names (the standard library owns "sync" and "crypto"), no grab-bag names, and
// nothing called synctest (it would shadow testing/synctest).
func TestPackageNames(t *testing.T) {
	banned := map[string]string{
		"sync":     "the standard library owns this name",
		"crypto":   "the standard library owns this name",
		"synctest": "it would shadow testing/synctest",
		"util":     "name a package for what it provides",
		"utils":    "name a package for what it provides",
		"common":   "name a package for what it provides",
		"helpers":  "name a package for what it provides",
		"types":    "name a package for what it provides",
	}
	for _, p := range listModule(t) {
		if why, ok := banned[p.Name]; ok {
			t.Errorf("%s is package %q: %s", p.ImportPath, p.Name, why)
		}
	}
}
