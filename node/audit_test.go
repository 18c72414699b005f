package node

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/export"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

// withAudit gives every node an audit trail in its data directory.
func withAudit(t *testing.T, adjust func(i int, c *Config)) func(i int, c *Config) {
	return func(i int, c *Config) {
		c.AuditFile = filepath.Join(t.TempDir(), audit.FileName)
		if adjust != nil {
			adjust(i, c)
		}
	}
}

func auditKinds(t *testing.T, n *testNode) []audit.Kind {
	t.Helper()
	l, err := n.AuditTrail()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := l.Records()
	if err != nil {
		t.Fatalf("%s: audit trail: %v", n.id.Name, err)
	}
	var out []audit.Kind
	for _, r := range recs {
		out = append(out, r.Event.Kind)
	}
	return out
}

// TestAuditTrailHoldsNoContent plants distinctive strings (team name, member names, message text,
// patient reference) and runs a team's life — create, joins, messages, a removal, an export, an
// audit export — then requires the events in the trail and none of the strings in any byte of the
// trail files or the AuditEvent bundle. The control: the subject-access export holds them.
func TestAuditTrailHoldsNoContent(t *testing.T) {
	const (
		teamName = "ZEBRA-WARD-9931"
		text     = "MAGENTA-TEXT-5521 bed four"
		patient  = "PATIENT-ORCA-4410"
	)
	names := []string{"AMBER-BANDA-7702", "COBALT-PHIRI-3318", "UMBER-TEMBO-6604"}
	_, ns := newMockNodesCfg(t, withAudit(t, nil), names...)
	a, b, c := ns[0], ns[1], ns[2]
	ti, err := a.CreateTeam(teamName, crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	team := ti.ID.String()
	joinAll(t, a, team, b, c)
	if _, _, err := a.Send(team, crdt.Message{Text: text, Patient: patient, Priority: crdt.Urgent}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, team, 1)
	if err := a.RemoveMember(team, names[2]); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, team, func(s *crdt.State) bool { return len(s.Removed) > 0 })
	d, err := a.Export(context.Background(), ExportRequest{Patient: patient})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := a.AuditExport(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fhirtest.Validate(t, bundle)

	kinds := auditKinds(t, a)
	want := []audit.Kind{audit.Created, audit.Membership, audit.Membership, audit.Membership, audit.Exported, audit.AuditExported}
	if !slices.Equal(kinds, want) {
		t.Errorf("A's trail: %v; want %v", kinds, want)
	}
	if kb := auditKinds(t, b); !slices.Contains(kb, audit.Created) || slices.Index(kb, audit.Membership) < 0 {
		t.Errorf("B's trail: %v; want the genesis and the membership commits it learned", kb)
	}
	l, _ := a.AuditTrail()
	recs, _ := l.Records()
	var removal *audit.Event
	for i := range recs {
		for _, ch := range recs[i].Event.Changes {
			if ch.Action == audit.Remove {
				removal = &recs[i].Event
			}
		}
	}
	cid := c.id.Device.ID()
	if removal == nil || removal.Changes[0].Device != audit.Short(cid[:]) || removal.Team != audit.Short(ti.ID[:]) {
		t.Errorf("no removal of C's device in A's trail: %+v", removal)
	}

	secrets := append([]string{teamName, "MAGENTA-TEXT-5521", patient, ti.ID.String()}, names...)
	// The control: the export carries the planted strings, so a scan can find them.
	eb, err := export.Bundle(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{teamName, "MAGENTA-TEXT-5521", patient} {
		if !bytes.Contains(eb, []byte(s)) {
			t.Fatalf("control: the export lacks %q", s)
		}
	}
	scan := map[string][]byte{"audit bundle": bundle}
	for _, n := range ns {
		raw, err := os.ReadFile(n.cfg.AuditFile)
		if err != nil {
			t.Fatal(err)
		}
		scan[n.id.Name+"'s audit.log"] = raw
	}
	for what, b := range scan {
		for _, s := range secrets {
			if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(s))) {
				t.Errorf("%s holds %q", what, s)
			}
		}
	}
}

// TestAuditRetentionDeletions: message bodies deleted past retention are recorded, with a count.
func TestAuditRetentionDeletions(t *testing.T) {
	_, ns := newMockNodesCfg(t, withAudit(t, func(_ int, c *Config) {
		c.RotateEvery = 100 * time.Millisecond
		c.RetainKeys = time.Millisecond
		c.EpochCheck = 40 * time.Millisecond
	}), "Dr Banda")
	a := ns[0]
	ti, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := ti.ID.String()
	for _, s := range []string{"one", "two"} {
		if _, _, err := a.Send(ref, crdt.Message{Text: s}); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, a, ref, func(s *crdt.State) bool { return len(s.Messages) == 0 })
	l, _ := a.AuditTrail()
	recs, err := l.Records()
	if err != nil {
		t.Fatal(err)
	}
	deleted, rekeys := uint32(0), 0
	for _, r := range recs {
		switch r.Event.Kind {
		case audit.Deleted:
			deleted += r.Event.Count
		case audit.Rekey:
			rekeys++
		}
	}
	if deleted != 2 || rekeys == 0 {
		t.Fatalf("trail records %d deletions and %d re-keys; want 2 and at least 1", deleted, rekeys)
	}
}

// communications returns the op ids of a bundle's Communications.
func communications(t *testing.T, b []byte) []string {
	t.Helper()
	var bundle struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				Identifier   []struct{ Value string }
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range bundle.Entry {
		if e.Resource.ResourceType == "Communication" {
			out = append(out, e.Resource.Identifier[0].Value)
		}
	}
	slices.Sort(out)
	return out
}

// TestExportHoldsExactlyTheSubject: a patient's export holds that patient's messages, in every
// team, and none of another patient's (one whose reference starts with it included); a member's
// holds their messages and membership only. Both bundles are valid R4, and the report escapes.
func TestExportHoldsExactlyTheSubject(t *testing.T) {
	_, ns := newMockNodesCfg(t, withAudit(t, nil), "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	t1, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := a.CreateTeam("Clinic", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	joinAll(t, a, t1.ID.String(), b)
	send := func(n *testNode, team crdt.TeamID, text, patient string) string {
		t.Helper()
		id, _, err := n.Send(team.String(), crdt.Message{Text: text, Patient: patient})
		if err != nil {
			t.Fatal(err)
		}
		return id.String()
	}
	var wantP1, wantPhiri []string
	wantP1 = append(wantP1, send(a, t1.ID, "p1 in ward", "MRN-1"))
	send(a, t1.ID, "p2 in ward", "MRN-2")
	send(a, t1.ID, "a prefix of another", "MRN-10")
	send(a, t1.ID, "no patient", "")
	wantP1 = append(wantP1, send(a, t2.ID, "p1 in clinic <script>alert(1)</script>", "MRN-1"))
	wantPhiri = append(wantPhiri, send(b, t1.ID, "from phiri about p1", "MRN-1"))
	wantP1 = append(wantP1, wantPhiri[0])
	wantPhiri = append(wantPhiri, send(b, t1.ID, "from phiri", ""))
	waitMessages(t, a, t1.ID.String(), 6)
	slices.Sort(wantP1)
	slices.Sort(wantPhiri)

	d, err := a.Export(context.Background(), ExportRequest{Patient: " MRN-1 "})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := export.Bundle(d)
	if err != nil {
		t.Fatal(err)
	}
	fhirtest.Validate(t, pb)
	if got := communications(t, pb); !slices.Equal(got, wantP1) {
		t.Errorf("patient export holds %v; want %v", got, wantP1)
	}
	for _, other := range []string{"MRN-2", "MRN-10", "p2 in ward", "no patient"} {
		if bytes.Contains(pb, []byte(other)) {
			t.Errorf("patient export holds %q", other)
		}
	}
	html, err := export.HTML(d)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(html, []byte("<script>alert")) || !bytes.Contains(html, []byte("&lt;script&gt;alert(1)&lt;/script&gt;")) {
		t.Errorf("the report does not escape message text")
	}

	d, err = a.Export(context.Background(), ExportRequest{Member: "nurse phiri"})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := export.Bundle(d)
	if err != nil {
		t.Fatal(err)
	}
	fhirtest.Validate(t, mb)
	if got := communications(t, mb); !slices.Equal(got, wantPhiri) {
		t.Errorf("member export holds %v; want %v", got, wantPhiri)
	}
	bid := b.id.Device.ID()
	if len(d.Memberships) != 1 || d.Memberships[0].Name != "Nurse Phiri" || !strings.HasPrefix(d.Memberships[0].Devices[0].ID, audit.Short(bid[:]).String()) {
		t.Errorf("member export memberships: %+v", d.Memberships)
	}
	if len(d.Teams) != 1 || d.Teams[0].Name != "Ward" {
		t.Errorf("member export teams: %+v; want only Ward", d.Teams)
	}

	for _, bad := range []ExportRequest{{}, {Patient: "x", Member: "y"}, {Patient: "   "}} {
		if _, err := a.Export(context.Background(), bad); err == nil {
			t.Errorf("Export(%+v) succeeded", bad)
		}
	}
	var exports []audit.Subject
	l, _ := a.AuditTrail()
	recs, _ := l.Records()
	for _, r := range recs {
		if r.Event.Kind == audit.Exported {
			exports = append(exports, r.Event.Subject)
		}
	}
	if !slices.Equal(exports, []audit.Subject{audit.Patient, audit.Member}) {
		t.Errorf("exports in the trail: %v; want a patient's and a member's", exports)
	}
}

// TestExportRefusedWhenUnaudited: with a trail that fails verification, no export is made.
func TestExportRefusedWhenUnaudited(t *testing.T) {
	_, ns := newMockNodesCfg(t, withAudit(t, nil), "Dr Banda")
	a := ns[0]
	if _, err := a.CreateTeam("Ward", crdt.Clinical); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Export(context.Background(), ExportRequest{Patient: "MRN-1"}); err != nil {
		t.Fatalf("control: %v", err)
	}
	path := a.cfg.AuditFile
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Export(context.Background(), ExportRequest{Patient: "MRN-1"}); err == nil {
		t.Fatal("an export was made while the audit trail could not record it")
	}
}

// TestExportRemovedMember: a removed member is exported by the name their messages carry, shown as
// removed, with their messages and no one else's.
func TestExportRemovedMember(t *testing.T) {
	_, ns := newMockNodesCfg(t, withAudit(t, nil), "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	ti, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	team := ti.ID.String()
	joinAll(t, a, team, b)
	id, _, err := b.Send(team, crdt.Message{Text: "from phiri"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Send(team, crdt.Message{Text: "from banda"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, a, team, 2)
	if err := a.RemoveMember(team, "Nurse Phiri"); err != nil {
		t.Fatal(err)
	}
	d, err := a.Export(context.Background(), ExportRequest{Member: "Nurse Phiri"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Messages) != 1 || d.Messages[0].ID != id.String() {
		t.Fatalf("export of a removed member holds %+v; want only %s", d.Messages, id.Short())
	}
	if len(d.Memberships) != 1 || !d.Memberships[0].Removed {
		t.Fatalf("memberships %+v; want one, removed", d.Memberships)
	}
}

// TestAuditRemoteWipe: an admin's remote wipe order is recorded in the admin's trail as a wipe of
// that device (beside the removal it makes), naming the device by its short id only.
func TestAuditRemoteWipe(t *testing.T) {
	_, ns := newMockNodesCfg(t, withAudit(t, nil), "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	ti, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := ti.ID.String()
	joinAll(t, a, ref, b)
	bid := b.id.Device.ID()
	if _, err := a.RemoteWipe(ref, bid.String(), time.Hour); err != nil {
		t.Fatal(err)
	}
	l, err := a.AuditTrail()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := l.Records()
	if err != nil {
		t.Fatal(err)
	}
	var wiped, removals int
	for _, r := range recs {
		switch r.Event.Kind {
		case audit.Wiped:
			if r.Event.Actor != audit.Short(bid[:]) || r.Event.Team != audit.Short(ti.ID[:]) {
				t.Errorf("wipe event names device %v of team %v; want %v of %v", r.Event.Actor, r.Event.Team, audit.Short(bid[:]), audit.Short(ti.ID[:]))
			}
			wiped++
		case audit.Membership:
			removals++
		}
	}
	if wiped != 1 || removals == 0 {
		t.Fatalf("the admin's trail holds %d wipe events and %d membership events; want 1 and the removal", wiped, removals)
	}
}
