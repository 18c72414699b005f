package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestOneLineDropsPackagePrefixes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`wire: invalid value: team kind "x" (want clinical or social)`, `invalid value: team kind "x" (want clinical or social)`},
		{"bad reply-to id: crdt: bad id: want 64 hex characters, got 2", "bad reply-to id: bad id: want 64 hex characters, got 2"},
		{"node: storage: open database: x", "open database: x"},
		{"relay api: bad answer from the relay", "bad answer from the relay"},
		{"localapi: bad answer\nfrom the node", "bad answer from the node"},
		// Text that merely contains a package name is kept: quoted input, and words inside a phrase.
		{`unknown team: "wire: x"`, `unknown team: "wire: x"`},
		{"remove device: no such device", "remove device: no such device"},
	} {
		if got := oneLine(tc.in); got != tc.want {
			t.Errorf("oneLine(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestErrorPrefixesCoverPackages keeps errorPrefixes in step with the module: a new package's
// "pkg: " prefix must not reach the user.
func TestErrorPrefixesCoverPackages(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-f", "{{.Name}}", "github.com/fieldmesh/fieldmesh/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for name := range strings.FieldsSeq(string(out)) {
		if name != "main" && !slices.Contains(errorPrefixes, name) {
			t.Errorf("package %s is not in errorPrefixes", name)
		}
	}
}
