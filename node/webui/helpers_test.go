package webui

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/storage"
)

// testKDF keeps Argon2id cheap in tests.
var testKDF = storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// syncBuffer is a log sink tests read after the nodes stop.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newNode starts a real node (a libp2p host on loopback TCP) with its own store; its logs, at debug
// level, go to logs.
func newNode(t testing.TB, name string, logs *syncBuffer, adjust ...func(*node.Config)) *node.Node {
	t.Helper()
	st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := node.Init(st, name); err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{
		Store: st, NoMDNS: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range adjust {
		f(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// testUI is a node's web UI served on loopback, recording the URL of every request it gets.
type testUI struct {
	*Server
	base string // http://127.0.0.1:PORT

	mu   sync.Mutex
	urls []string
}

func (u *testUI) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.urls...)
}

// startUI serves n's web UI until the test ends.
func startUI(t *testing.T, n *node.Node, logs *syncBuffer, statusEvery time.Duration) *testUI {
	t.Helper()
	return startUIConfig(t, Config{Node: n, StatusEvery: statusEvery}, logs)
}

// startUIConfig serves the web UI of cfg until the test ends; its logs go to logs.
func startUIConfig(t *testing.T, cfg Config, logs *syncBuffer) *testUI {
	t.Helper()
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	u := &testUI{Server: s, base: strings.TrimSuffix(s.URL(), "/")}
	h := s.Handler()
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.mu.Lock()
			u.urls = append(u.urls, r.URL.String())
			u.mu.Unlock()
			h.ServeHTTP(w, r)
		}),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("web UI shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("web UI serve: %v", err)
		}
	})
	return u
}
