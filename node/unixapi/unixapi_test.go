package unixapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sockPath returns a socket path short enough for the unix socket limit (t.TempDir's can be too long).
func sockPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fmuapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "api.sock")
}

func TestListenModeLiveAndStale(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, path)
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Errorf("second Listen on a live socket: %v; want ErrInUse", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // leaves a stale socket file behind, as a crashed server does
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l2.Close()
	checkMode(t, path)
}

func checkMode(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v; want a socket of mode 0600", fi.Mode())
	}
}

func TestListenBadDirectory(t *testing.T) {
	_, err := Listen(filepath.Join(sockPath(t), "no", "api.sock"))
	if err == nil || errors.Is(err, ErrInUse) || !strings.HasPrefix(err.Error(), "listen: ") {
		t.Errorf("Listen in a missing directory: %v; want a listen error", err)
	}
}

func TestServeRoundTripAndStopsOnContext(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			N int `json:"n"`
		}
		if err := Decode(w, r, 64, &in); err != nil {
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]int{"n": in.N + 1})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, l, h) }()

	hc := NewClient(path)
	call := func(in any) (int, map[string]any) {
		t.Helper()
		req, err := NewRequest(context.Background(), http.MethodPost, "http://any/x", in)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := Do(hc, req, errors.New("not running"), "test")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, out
	}
	if code, out := call(map[string]int{"n": 41}); code != http.StatusOK || out["n"] != 42.0 {
		t.Errorf("answer = %d %v; want 200 n=42", code, out)
	}
	if code, out := call(map[string]int{"m": 1}); code != http.StatusBadRequest || !strings.Contains(out["error"].(string), "unknown field") {
		t.Errorf("unknown field: %d %v; want 400 unknown field", code, out)
	}
	if code, out := call(map[string]string{"n": strings.Repeat("9", 100)}); code != http.StatusBadRequest || !strings.Contains(out["error"].(string), "too large") {
		t.Errorf("oversized body: %d %v; want 400 too large", code, out)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after ctx ended: %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
}

func TestServeReturnsListenerError(t *testing.T) {
	l, err := Listen(sockPath(t))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := Serve(context.Background(), l, http.NotFoundHandler()); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}

func TestDoNotRunning(t *testing.T) {
	notRunning := errors.New("not running")
	stale := sockPath(t)
	l, err := Listen(stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	for name, path := range map[string]string{"no socket file": sockPath(t), "stale socket": stale} {
		req, err := NewRequest(context.Background(), http.MethodGet, "http://any/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Do(NewClient(path), req, notRunning, "test"); err != notRunning {
			t.Errorf("%s: %v; want the not-running error", name, err)
		}
	}
}
