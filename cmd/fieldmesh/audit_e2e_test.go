package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

// TestAuditAndExportE2E runs the real binary: `record export --patient` writes an R4 Bundle with
// exactly that patient's messages and an escaped report; `audit verify` passes, `audit export`
// writes valid AuditEvents that name the export but hold no content; after the trail's file is
// altered with the daemon stopped, `audit verify` exits 1 with one line, and no export is made.
func TestAuditAndExportE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a daemon; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Sister Banda")
	run := e2eRunTag(t)
	teamName := "Ward-" + run
	team := e2eTeamUp(t, c, teamName, []string{"--kind", "clinical"}, a)
	p1, p2 := "MRN-A-"+run, "MRN-B-"+run
	texts := map[string]string{"one " + run: p1, "two <b>" + run + "</b>": p1, "other " + run: p2}
	for text, p := range texts {
		if res := a.run(t, "send", team.ID, text, "--patient", p); res.code != 0 {
			t.Fatalf("send: %s", res)
		}
	}

	out := filepath.Join(c.root, "sar")
	res := a.run(t, "record", "export", "--patient", p1, "--out", out)
	if res.code != 0 {
		t.Fatalf("record export: %s", res)
	}
	bundle, err := os.ReadFile(filepath.Join(out, "bundle.json"))
	if err != nil {
		t.Fatal(err)
	}
	fhirtest.Validate(t, bundle)
	if n := bytes.Count(bundle, []byte(`"resourceType": "Communication"`)); n != 2 {
		t.Errorf("bundle holds %d Communications; want 2", n)
	}
	if bytes.Contains(bundle, []byte(p2)) || bytes.Contains(bundle, []byte("other "+run)) {
		t.Error("the export of one patient holds another's message")
	}
	report, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(report, []byte("two &lt;b&gt;"+run)) {
		t.Errorf("report.html does not hold the escaped message text")
	}
	if fi, err := os.Stat(filepath.Join(out, "bundle.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bundle.json: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	again := a.run(t, "record", "export", "--patient", p1, "--out", out)
	if msg := e2eFailsCleanly(t, "record export into a used directory", again); !strings.Contains(msg, "exists") {
		t.Errorf("record export into a used directory: %q", msg)
	}

	if res := a.run(t, "audit", "verify"); res.code != 0 || !strings.Contains(res.stdout, "audit trail intact") {
		t.Fatalf("audit verify: %s, stdout %q", res, res.stdout)
	}
	auditOut := filepath.Join(c.root, "audit.json")
	if res := a.run(t, "audit", "export", "--out", auditOut); res.code != 0 {
		t.Fatalf("audit export: %s", res)
	}
	events, err := os.ReadFile(auditOut)
	if err != nil {
		t.Fatal(err)
	}
	fhirtest.Validate(t, events)
	for _, want := range []string{`"code": "created"`, `"code": "exported"`, `"code": "audit-exported"`} {
		if !bytes.Contains(events, []byte(want)) {
			t.Errorf("audit export lacks %s", want)
		}
	}
	trail, err := os.ReadFile(filepath.Join(a.dir, audit.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{teamName, p1, p2, run, a.name, team.ID} {
		if bytes.Contains(events, []byte(secret)) || bytes.Contains(trail, []byte(secret)) {
			t.Errorf("the audit trail or its export holds %q", secret)
		}
	}

	// Alter the trail while the daemon is stopped: its newest record's last byte.
	if err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v", err)
	}
	trail, _ = os.ReadFile(filepath.Join(a.dir, audit.FileName))
	trail[len(trail)-1] ^= 0x20
	if err := os.WriteFile(filepath.Join(a.dir, audit.FileName), trail, 0o600); err != nil {
		t.Fatal(err)
	}
	a.up(t)
	msg := e2eFailsCleanly(t, "audit verify of an altered trail", a.run(t, "audit", "verify"))
	if !strings.Contains(msg, "audit trail fails verification") {
		t.Errorf("audit verify: %q; want the reason", msg)
	}
	refused := a.run(t, "record", "export", "--patient", p1, "--out", filepath.Join(c.root, "sar2"))
	if msg := e2eFailsCleanly(t, "record export with an altered trail", refused); !strings.Contains(msg, "audit trail") {
		t.Errorf("record export with an altered trail: %q", msg)
	}
	if _, err := os.Stat(filepath.Join(c.root, "sar2")); err == nil {
		t.Error("record export made a directory although it was refused")
	}

	// Restarting keeps the altered file and records again.
	if res := a.run(t, "audit", "restart"); res.code != 0 || !strings.Contains(res.stdout, "kept at") {
		t.Fatalf("audit restart: %s, stdout %q", res, res.stdout)
	}
	if res := a.run(t, "audit", "verify"); res.code != 0 {
		t.Fatalf("audit verify after restart: %s", res)
	}
	if msg := e2eFailsCleanly(t, "audit restart of an intact trail", a.run(t, "audit", "restart")); !strings.Contains(msg, "intact") {
		t.Errorf("audit restart of an intact trail: %q", msg)
	}
	events, err = os.ReadFile(filepath.Join(a.dir, audit.FileName))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Decode(events)
	if err != nil || len(recs) != 1 || recs[0].Event.Kind != audit.Restarted {
		t.Fatalf("the new trail: %v, %+v; want one Restarted record", err, recs)
	}
	kept, _ := filepath.Glob(filepath.Join(a.dir, audit.FileName+".broken-*"))
	if len(kept) != 1 {
		t.Fatalf("kept files %v; want one", kept)
	}
}
