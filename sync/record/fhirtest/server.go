package fhirtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a FHIR R4 server (testdata/fhirserver: Medplum's router and in-memory repository,
// with its validation and the R4 JSON schema) in a node process of its own, for one test.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:PORT).
	URL string
	cmd *exec.Cmd
}

// Start starts a server and stops it when the test ends. It fails the test if the server does not
// say it listens within two minutes (its start-up indexes the R4 definitions, and its first write
// compiles the schemas it checks: seconds on a quiet machine).
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

var shared struct {
	mu  sync.Mutex
	srv *Server
}

// Shared returns a server shared by the tests of a package, started on first use: tests that share
// it use identifiers of their own and do not count the server's resources of a type. The package's
// TestMain calls StopShared after m.Run.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil {
		s, err := start()
		if err != nil {
			t.Fatal(err)
		}
		shared.srv = s
	}
	return shared.srv
}

// StopShared stops the shared server, if one was started.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.stop()
		shared.srv = nil
	}
}

func (s *Server) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

func start() (*Server, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", filepath.Join(root, "testdata", "fhirserver", "server.mjs"), "--port", "0")
	dieWithParent(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr lockedBuilder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the FHIR test server (node): %w", err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				lines <- u
			}
		}
		close(lines)
	}()
	s := &Server{cmd: cmd}
	select {
	case u, ok := <-lines:
		if !ok {
			s.stop()
			return nil, fmt.Errorf("the FHIR test server exited (make deps installs its packages): %s", stderr.String())
		}
		s.URL = u
		return s, nil
	case <-time.After(2 * time.Minute):
		s.stop()
		return nil, fmt.Errorf("the FHIR test server did not start within two minutes: %s", stderr.String())
	}
}

// lockedBuilder is a strings.Builder safe for the process's stderr copier and a reader.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// control calls one of the server's test controls (see server.mjs).
func (s *Server) control(t testing.TB, method, path string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+"/$test/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("FHIR test server control %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("FHIR test server control %s: %s %s", path, resp.Status, b)
	}
	return b
}

// Reject makes the server answer 422 to writes of a resource with an identifier of that value.
func (s *Server) Reject(t testing.TB, value string) {
	s.control(t, http.MethodPost, "reject?identifier="+url.QueryEscape(value))
}

// RequireBearer makes the server answer 401 to requests without "Authorization: Bearer token".
func (s *Server) RequireBearer(t testing.TB, token string) {
	s.control(t, http.MethodPost, "auth?bearer="+url.QueryEscape(token))
}

// Count returns how many resources of the type the server holds.
func (s *Server) Count(t testing.TB, typ string) int {
	t.Helper()
	var c struct {
		Total int `json:"total"`
	}
	if err := json.Unmarshal(s.control(t, http.MethodGet, "count?type="+url.QueryEscape(typ)), &c); err != nil {
		t.Fatal(err)
	}
	return c.Total
}

// CreatePatient creates a patient with an identifier (system|value) and returns "Patient/id".
func (s *Server) CreatePatient(t testing.TB, system, value string) string {
	t.Helper()
	body := fmt.Sprintf(`{"resourceType":"Patient","identifier":[{"system":%q,"value":%q}]}`, system, value)
	resp, err := http.Post(s.URL+"/Patient", "application/fhir+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != 201 || p.ID == "" {
		t.Fatalf("create patient: %s %v", resp.Status, err)
	}
	return "Patient/" + p.ID
}

// Search returns the resources of a search (relative URL, e.g. "Communication?identifier=x"). It
// fails the test if the search fails.
func (s *Server) Search(t testing.TB, query string) []json.RawMessage {
	t.Helper()
	resp, err := http.Get(s.URL + "/" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("search %s: %s", query, resp.Status)
	}
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatalf("search %s: %v", query, err)
	}
	out := make([]json.RawMessage, len(b.Entry))
	for i, e := range b.Entry {
		out[i] = e.Resource
	}
	return out
}

// Proxy is a reverse proxy to a server that can go down (connections refused) and come back on the
// same address: the record unreachable for a while.
type Proxy struct {
	URL    string
	addr   string
	target *url.URL
	mu     sync.Mutex
	srv    *http.Server
}

// NewProxy starts a proxy to s, up, and stops it when the test ends.
func NewProxy(t testing.TB, s *Server) *Proxy {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{addr: l.Addr().String(), target: u}
	p.URL = "http://" + p.addr
	p.serve(l)
	t.Cleanup(p.Down)
	return p
}

func (p *Proxy) serve(l net.Listener) {
	srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(p.target), ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// Down closes the proxy's listener and connections: requests are refused.
func (p *Proxy) Down() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Up listens again on the same address.
func (p *Proxy) Up(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy up again on %s: %v", p.addr, err)
	}
	p.serve(l)
}
