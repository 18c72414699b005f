package localapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func TestClientNoNode(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "api.sock"))
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("err = %v; want ErrNotRunning", err)
	}
}

func TestListenRefusesLiveSocketAndReplacesStale(t *testing.T) {
	dir, err := os.MkdirTemp("", "fmapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Listen(path); err == nil {
		t.Error("a second Listen on a live socket succeeded")
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // leaves a stale socket file behind, as a crashed node does
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()
}

func TestErrorsCrossTheSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "fmapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "unknown team: \"X\""})
	})}
	go srv.Serve(l)
	defer srv.Close()
	_, err = NewClient(path).Teams(context.Background())
	if err == nil || err.Error() != `unknown team: "X"` {
		t.Errorf("err = %v; want the server's message", err)
	}
}
