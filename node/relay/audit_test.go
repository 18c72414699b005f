package relay

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

// TestRelayAuditTrail: admitting a topic (once, however often the code is used) and revoking it are
// recorded in the relay's trail, which verifies, exports as R4 AuditEvents, holds no team id, and
// reports an altered file through the API.
func TestRelayAuditTrail(t *testing.T) {
	dir := t.TempDir()
	r, _ := newTestRelay(t, Config{Dir: dir})
	ca := relayproto.CodeFor(teamA, testAdmin)
	for range 2 {
		if _, err := r.Admit(ca); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Revoke(ca.Topic.Short()); err != nil {
		t.Fatal(err)
	}
	recs, err := r.audit.Records()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []audit.Kind
	for _, rec := range recs {
		kinds = append(kinds, rec.Event.Kind)
		if rec.Event.Team != audit.Short(ca.Topic[:]) {
			t.Errorf("event %v names %s; want the topic's short form", rec.Event.Kind, rec.Event.Team)
		}
	}
	if want := []audit.Kind{audit.RelayAdmitted, audit.RelayRevoked}; !slices.Equal(kinds, want) {
		t.Fatalf("relay trail: %v; want %v", kinds, want)
	}
	if recs[0].Event.Actor != audit.Short(testAdmin[:]) {
		t.Errorf("admission names %s; want the code's admin", recs[0].Event.Actor)
	}

	h := r.APIHandler()
	get := func(route string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, route, nil))
		return w
	}
	w := get("/v1/audit/export")
	if w.Code != http.StatusOK {
		t.Fatalf("audit export: %d %s", w.Code, w.Body)
	}
	fhirtest.Validate(t, w.Body.Bytes())
	raw, err := os.ReadFile(filepath.Join(dir, audit.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{raw, w.Body.Bytes()} {
		if bytes.Contains(b, teamA[:]) || bytes.Contains(b, []byte(hex.EncodeToString(teamA[:]))) {
			t.Error("the trail holds the team id")
		}
	}
	var v struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(get("/v1/audit/verify").Body.Bytes(), &v); err != nil || !v.OK {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	raw[len(raw)-3] ^= 1
	if err := os.WriteFile(filepath.Join(dir, audit.FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(get("/v1/audit/verify").Body.Bytes(), &v); err != nil || v.OK || v.Error == "" {
		t.Fatalf("verify of an altered trail: %+v, %v; want not ok, with the reason", v, err)
	}
}
