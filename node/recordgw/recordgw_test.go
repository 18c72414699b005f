package recordgw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

var testKDF = storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// TestMain stops the FHIR server the tests share (fhirtest.Shared): it takes seconds to start and
// to compile its schemas, so the package starts it once.
func TestMain(m *testing.M) {
	code := m.Run()
	fhirtest.StopShared()
	os.Exit(code)
}

const testPass = "pw"

// clock is a settable clock for the gateway's backoff.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// gwNode is a real node on loopback, with its own store: the clinic box.
type gwNode struct {
	*node.Node
	st   *storage.Store
	dir  string
	team string
}

func startNode(t testing.TB, dir string, create bool, adjust func(*node.Config)) *gwNode {
	t.Helper()
	return startNamed(t, dir, create, "Clinic box", adjust)
}

// startNamed is startNode for a device of another name (a created store's).
func startNamed(t testing.TB, dir string, create bool, name string, adjust func(*node.Config)) *gwNode {
	t.Helper()
	var st *storage.Store
	var err error
	if create {
		st, err = storage.Create(dir, storage.Options{Passphrase: []byte(testPass), KDF: testKDF})
		if err == nil {
			_, err = node.Init(st, name)
		}
	} else {
		st, err = storage.Open(dir, storage.Options{Passphrase: []byte(testPass)})
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{Store: st, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour, AckInterval: -1}
	if adjust != nil {
		adjust(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	g := &gwNode{Node: n, st: st, dir: dir}
	t.Cleanup(g.stop)
	return g
}

func (g *gwNode) stop() {
	if g.Node != nil {
		g.Node.Close()
		g.st.Close()
		g.Node = nil
	}
}

// newClinic starts a node with a clinical team whose admin it is.
func newClinic(t testing.TB, adjust func(*node.Config)) *gwNode {
	t.Helper()
	g := startNode(t, t.TempDir(), true, adjust)
	ti, err := g.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	g.team = ti.ID.String()
	return g
}

func (g *gwNode) send(t testing.TB, m crdt.Message) crdt.OpID {
	t.Helper()
	id, _, err := g.Send(g.team, m)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// filedRef returns where the node shows message id filed, "" if not filed.
func (g *gwNode) filedRef(t testing.TB, id crdt.OpID) string {
	t.Helper()
	ms, err := g.Messages(g.team)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id && m.Filed != nil {
			return m.Filed.Ref
		}
	}
	return ""
}

func gateway(t testing.TB, g *gwNode, src Source, cfg Config) *Gateway {
	t.Helper()
	if src == nil {
		src = g.Node
	}
	gw, err := New(cfg, src, g.st)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

func pass(t testing.TB, gw *Gateway) Report {
	t.Helper()
	rep, err := gw.Pass(context.Background())
	if err != nil {
		t.Fatalf("pass: %v", err)
	}
	return rep
}

func opValue(id crdt.OpID) string { return id.String() }

// communications returns the Communications the server holds for a message.
func communications(t testing.TB, s *fhirtest.Server, id crdt.OpID) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, raw := range s.Search(t, "Communication?identifier="+record.OpSystem+"|"+opValue(id)) {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// flakyPublish is the node, except that its first filed ops fail (a crash after the server's
// success and before the filed op is durable, as the gateway sees it).
type flakyPublish struct {
	*node.Node
	fail int
}

func (f *flakyPublish) PublishFiled(team crdt.TeamID, fl crdt.Filed) error {
	if f.fail > 0 {
		f.fail--
		return errors.New("disk full")
	}
	return f.Node.PublishFiled(team, fl)
}

// TestFileAndRetryIsIdempotent: the gateway files every due message (a patient's, one marked for
// the record), not the others, to a real FHIR server; the Communication carries the mapped fields
// and the Provenance exists. When the filed op cannot be published after the server's success, the
// next pass posts the same Bundles again and the server still holds one Communication per message.
func TestFileAndRetryIsIdempotent(t *testing.T) {
	srv := fhirtest.Shared(t)
	g := newClinic(t, nil)
	patient := srv.CreatePatient(t, "urn:clinic", "K-17")
	m1 := g.send(t, crdt.Message{Text: "Bed 4 BP 160/110", Priority: crdt.Emergency, Patient: "urn:clinic|K-17"})
	m2 := g.send(t, crdt.Message{Text: "Ward round moved to 10:00", ForRecord: true})
	chat := g.send(t, crdt.Message{Text: "tea at four"})
	src := &flakyPublish{Node: g.Node, fail: 1}
	gw := gateway(t, g, src, Config{FHIR: srv.URL})
	if _, err := gw.Pass(context.Background()); err == nil {
		t.Fatalf("a pass whose filed op failed reported no error")
	}
	if g.filedRef(t, m1) != "" {
		t.Fatalf("shown filed although the filed op failed")
	}
	rep := pass(t, gw)
	if rep.Filed != 2 || rep.Queued != 0 || len(rep.Waiting) != 0 {
		t.Fatalf("second pass %+v; want 2 filed, nothing waiting", rep)
	}
	for _, id := range []crdt.OpID{m1, m2} {
		cs := communications(t, srv, id)
		if len(cs) != 1 {
			t.Fatalf("message %s: %d Communications after a retried filing; want 1", id.Short(), len(cs))
		}
		if ref := g.filedRef(t, id); ref != "Communication/"+cs[0]["id"].(string) {
			t.Errorf("message %s shown filed at %q; the server holds Communication/%s", id.Short(), ref, cs[0]["id"])
		}
	}
	c := communications(t, srv, m1)[0]
	if c["priority"] != "stat" || c["subject"].(map[string]any)["reference"] != patient || c["payload"].([]any)[0].(map[string]any)["contentString"] != "Bed 4 BP 160/110" {
		t.Errorf("Communication %v: want priority stat, the patient, the text", c)
	}
	if n := len(communications(t, srv, chat)); n != 0 {
		t.Errorf("%d Communications of the chat message; want none", n)
	}
	for _, id := range []crdt.OpID{m1, m2} {
		ref := g.filedRef(t, id)
		if ps := srv.Search(t, "Provenance?target="+ref); len(ps) != 1 {
			t.Errorf("%d Provenances of %s after a retry; want 1", len(ps), ref)
		}
	}
	if g.filedRef(t, chat) != "" {
		t.Errorf("a message with no patient, not for the record, was filed")
	}
	if rep := pass(t, gw); rep.Filed != 0 {
		t.Errorf("a third pass filed %d again", rep.Filed)
	}
}

// TestServerDownThenUp: with the record unreachable the pass stops and reports it, nothing is
// filed, and the queue survives a restart of the node; once the server is back and the backoff
// passed, everything is filed once.
func TestServerDownThenUp(t *testing.T) {
	srv := fhirtest.Shared(t)
	proxy := fhirtest.NewProxy(t, srv)
	g := newClinic(t, nil)
	var ids []crdt.OpID
	for i := range 5 {
		ids = append(ids, g.send(t, crdt.Message{Text: "obs " + string(rune('a'+i)), ForRecord: true}))
	}
	proxy.Down()
	clk := &clock{now: time.Now()}
	gw := gateway(t, g, nil, Config{FHIR: proxy.URL, Now: clk.Now, Timeout: 5 * time.Second})
	rep := pass(t, gw)
	if rep.Filed != 0 || rep.Stopped != record.Unreachable.String() || rep.Queued != 5 || len(rep.Waiting) != 1 {
		t.Fatalf("pass with the server down: %+v; want stopped, 5 queued, 1 tried", rep)
	}
	// Passes before the backoff ends do not hammer a server that is down, one message at a time.
	if rep := pass(t, gw); len(rep.Waiting) != 1 || rep.Waiting[0].Attempts != 1 || !rep.Next.Equal(time.UnixMilli(clk.Now().Add(record.DefaultBackoffMin).UnixMilli())) {
		t.Fatalf("a second pass within the backoff: %+v; want nothing tried, next try after the backoff", rep)
	}
	// The gateway restarts: a new node on the same store, a new gateway.
	dir := g.dir
	team := g.team
	g.stop()
	g = startNode(t, dir, false, nil)
	g.team = team
	proxy.Up(t)
	gw = gateway(t, g, nil, Config{FHIR: proxy.URL, Now: clk.Now})
	if rep := pass(t, gw); rep.Filed != 4 || len(rep.Waiting) != 1 || rep.Waiting[0].Code != record.Unreachable {
		t.Fatalf("after the restart, before the backoff: %+v; want the 4 untried filed, the failed one waiting", rep)
	}
	clk.add(record.DefaultBackoffMin)
	if rep := pass(t, gw); rep.Filed != 1 || rep.Queued != 0 {
		t.Fatalf("after the backoff: %+v; want the last one filed", rep)
	}
	for _, id := range ids {
		if n := len(communications(t, srv, id)); n != 1 || g.filedRef(t, id) == "" {
			t.Errorf("message %s: %d Communications, shown filed %q; want exactly one", id.Short(), n, g.filedRef(t, id))
		}
	}
}

// TestRejectedEntry: the server refuses one message's Bundle with 422: the others are filed, that
// one is held and reported with its status, not shown filed, and tried again a day later.
func TestRejectedEntry(t *testing.T) {
	srv := fhirtest.Shared(t)
	g := newClinic(t, nil)
	a := g.send(t, crdt.Message{Text: "one", ForRecord: true})
	bad := g.send(t, crdt.Message{Text: "two", ForRecord: true})
	c := g.send(t, crdt.Message{Text: "three", ForRecord: true})
	srv.Reject(t, opValue(bad))
	clk := &clock{now: time.Now()}
	gw := gateway(t, g, nil, Config{FHIR: srv.URL, Now: clk.Now})
	rep := pass(t, gw)
	if rep.Filed != 2 || len(rep.Waiting) != 1 || rep.Waiting[0].ID != bad || rep.Waiting[0].Code != record.Rejected || rep.Waiting[0].Status != 422 {
		t.Fatalf("pass: %+v; want 2 filed and the refused one held with 422", rep)
	}
	if g.filedRef(t, bad) != "" || g.filedRef(t, a) == "" || g.filedRef(t, c) == "" {
		t.Errorf("filed: a %q, bad %q, c %q", g.filedRef(t, a), g.filedRef(t, bad), g.filedRef(t, c))
	}
	if n := len(communications(t, srv, bad)); n != 0 {
		t.Errorf("the refused message has %d Communications", n)
	}
	clk.add(time.Hour)
	if rep := pass(t, gw); rep.Filed != 0 || rep.Waiting[0].Attempts != 1 {
		t.Errorf("a held message was tried again within the hour: %+v", rep)
	}
	clk.add(record.DefaultBackoffHeld)
	if rep := pass(t, gw); rep.Waiting[0].Attempts != 2 {
		t.Errorf("a held message was not tried again after a day: %+v", rep)
	}
}

// TestUnknownPatient: a token that matches no patient is held and reported, never filed against
// another patient or none; the deployment's mapping table then resolves it.
func TestUnknownPatient(t *testing.T) {
	srv := fhirtest.Shared(t)
	g := newClinic(t, nil)
	other := srv.CreatePatient(t, "urn:clinic", "K-1")
	id := g.send(t, crdt.Message{Text: "Bed 7 new admission", Patient: "K-99"})
	clk := &clock{now: time.Now()}
	gw := gateway(t, g, nil, Config{FHIR: srv.URL, Now: clk.Now})
	rep := pass(t, gw)
	if rep.Filed != 0 || len(rep.Waiting) != 1 || rep.Waiting[0].Code != record.NoPatient {
		t.Fatalf("pass: %+v; want the message held for an unknown patient", rep)
	}
	if n := len(communications(t, srv, id)); n != 0 {
		t.Fatalf("%d Communications for an unknown patient", n)
	}
	if n := len(srv.Search(t, "Communication?subject="+other)); n != 0 {
		t.Fatalf("%d Communications filed against another patient", n)
	}
	target := srv.CreatePatient(t, "urn:other-clinic", "X-5")
	tab, err := record.ParsePatientTable([]byte("K-99\t" + target + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	gw = gateway(t, g, nil, Config{FHIR: srv.URL, Now: clk.Now, Patients: tab})
	clk.add(record.DefaultBackoffHeld)
	if rep := pass(t, gw); rep.Filed != 1 {
		t.Fatalf("with the mapping table: %+v; want it filed", rep)
	}
	cs := communications(t, srv, id)
	if len(cs) != 1 || cs[0]["subject"].(map[string]any)["reference"] != target {
		t.Errorf("filed %v; want one Communication about %s", cs, target)
	}
}

// TestObservationProfile: the second profile files an Observation note the server validates; a
// message with no patient cannot be an Observation and is held as unmappable.
func TestObservationProfile(t *testing.T) {
	srv := fhirtest.Shared(t)
	g := newClinic(t, nil)
	patient := srv.CreatePatient(t, "urn:clinic", "K-3")
	id := g.send(t, crdt.Message{Text: "Fundal height 32 cm", Patient: "urn:clinic|K-3", Priority: crdt.Urgent})
	g.send(t, crdt.Message{Text: "no patient here", ForRecord: true})
	p, _ := record.ProfileByName("observation")
	gw := gateway(t, g, nil, Config{FHIR: srv.URL, Profile: p})
	rep := pass(t, gw)
	if rep.Filed != 1 || len(rep.Waiting) != 1 || rep.Waiting[0].Code != record.Unmappable {
		t.Fatalf("pass: %+v; want one filed, one unmappable", rep)
	}
	obs := srv.Search(t, "Observation?identifier="+record.OpSystem+"|"+opValue(id))
	if len(obs) != 1 || !bytes.Contains(obs[0], []byte(patient)) || !bytes.Contains(obs[0], []byte("Fundal height 32 cm")) {
		t.Fatalf("Observations %s", obs)
	}
	if ref := g.filedRef(t, id); !strings.HasPrefix(ref, "Observation/") {
		t.Errorf("shown filed at %q; want an Observation", ref)
	}
	if n := len(communications(t, srv, id)); n != 0 {
		t.Errorf("%d Communications under the observation profile", n)
	}
}

// TestUnauthorized: a server that refuses the credentials stops the pass and files nothing; with
// the right bearer token it files.
func TestUnauthorized(t *testing.T) {
	srv := fhirtest.Shared(t)
	srv.RequireBearer(t, "s3cret")
	defer srv.RequireBearer(t, "")
	g := newClinic(t, nil)
	g.send(t, crdt.Message{Text: "x", ForRecord: true})
	clk := &clock{now: time.Now()}
	rep := pass(t, gateway(t, g, nil, Config{FHIR: srv.URL, Now: clk.Now, Authorization: "Bearer wrong"}))
	if rep.Filed != 0 || rep.Stopped != record.Unauthorized.String() {
		t.Fatalf("wrong token: %+v", rep)
	}
	clk.add(time.Hour)
	if rep := pass(t, gateway(t, g, nil, Config{FHIR: srv.URL, Now: clk.Now, Authorization: "Bearer s3cret"})); rep.Filed != 1 {
		t.Fatalf("right token: %+v", rep)
	}
}

// TestFiledThenDeletedOnDisk: after filing and the grace period, the message's text and patient
// token are gone from every version of every key in the store's files (read with the passphrase,
// as a thief would), while a message not filed is still there (so the scan can find what it looks
// for).
func TestFiledThenDeletedOnDisk(t *testing.T) {
	srv := fhirtest.Shared(t)
	srv.CreatePatient(t, "urn:clinic", "TOKEN-7f3a")
	g := newClinic(t, func(c *node.Config) {
		c.FiledGrace = time.Millisecond
		c.EpochCheck = 20 * time.Millisecond
		c.CollectEvery = 20 * time.Millisecond
	})
	filed := g.send(t, crdt.Message{Text: "FILED-TEXT-c0ffee oxytocin 10 IU", Patient: "urn:clinic|TOKEN-7f3a"})
	g.send(t, crdt.Message{Text: "KEPT-TEXT-beef not for the record"})
	if rep := pass(t, gateway(t, g, nil, Config{FHIR: srv.URL})); rep.Filed != 1 {
		t.Fatalf("pass: %+v", rep)
	}
	ch, cancel, err := g.Watch(g.team)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.After(30 * time.Second)
	for {
		ms, err := g.Messages(g.team)
		if err != nil {
			t.Fatal(err)
		}
		gone := true
		for _, m := range ms {
			gone = gone && m.ID != filed
		}
		if gone {
			break
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the filed message is still shown 30 s after a 1 ms grace period")
		}
	}
	// The deletion is final once the node collected it.
	for g.st.Pending() != 0 {
		select {
		case <-time.After(20 * time.Millisecond): // the store has no event for its collection
		case <-deadline:
			t.Fatalf("%d deletions still pending", g.st.Pending())
		}
	}
	dir := g.dir
	g.stop()
	found := map[string]bool{}
	err = storage.ScanVersions(dir, []byte(testPass), func(k, v []byte, _ bool) error {
		for _, m := range []string{"FILED-TEXT-c0ffee", "TOKEN-7f3a", "KEPT-TEXT-beef"} {
			if bytes.Contains(k, []byte(m)) || bytes.Contains(v, []byte(m)) {
				found[m] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found["FILED-TEXT-c0ffee"] || found["TOKEN-7f3a"] {
		t.Errorf("the store's files still hold the filed message: %v", found)
	}
	if !found["KEPT-TEXT-beef"] {
		t.Errorf("the scan did not find the message that was not filed: it cannot fail")
	}
}

func TestConfigRefused(t *testing.T) {
	for _, u := range []string{"", "ftp://x/fhir", "http://user:pw@x/fhir", "record.example/fhir"} {
		if _, err := New(Config{FHIR: u}, nil, nil); err == nil {
			t.Errorf("URL %q accepted", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// TestRedirectNotFollowed: a record server (or whoever answers at its address) that redirects the
// gateway elsewhere gets nothing more: the credentials are not sent to the redirect's target, and
// the message is not filed.
func TestRedirectNotFollowed(t *testing.T) {
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	g := newClinic(t, nil)
	g.send(t, crdt.Message{Text: "x", ForRecord: true})
	rep := pass(t, gateway(t, g, nil, Config{FHIR: redirect.URL, Authorization: "Bearer s3cret"}))
	if rep.Filed != 0 || len(rep.Waiting) != 1 || rep.Waiting[0].Code != record.Partial || rep.Waiting[0].Status != http.StatusTemporaryRedirect {
		t.Errorf("pass: %+v; want the message held after a 307", rep)
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("the redirect's target got %d requests", n)
	}
}
