// Package unixapi holds the plumbing that the node's and the relay's local APIs share: JSON over HTTP on
// a unix socket inside the data directory, mode 0600, so only the device's user can reach it. The
// routes, the error texts shown to users and the clients' methods stay with each API.
package unixapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// ErrInUse is returned by Listen when a server already answers on the socket.
var ErrInUse = errors.New("unixapi: a server is already listening on the socket")

// Listen opens the socket at path with mode 0600. A stale socket left by a crashed server is replaced;
// a live one is ErrInUse.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, ErrInUse
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

// Serve serves h on l until ctx ends, then shuts down gracefully (for at most 5 s) and returns nil. It
// removes nothing: the caller owns l. Requests' contexts end with ctx, so a streaming answer (messages
// --follow) ends, cleanly, as the server stops, rather than holding the shutdown to its limit.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

// WriteJSON writes v as a JSON answer with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Decode reads r's JSON body into v, refusing unknown fields and bodies over limit bytes. w, when not
// nil, is told to close the connection after an oversized body.
func Decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// NewClient returns an HTTP client that sends every request, whatever its URL's host, to the socket at
// path.
func NewClient(path string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &http.Client{Transport: tr}
}

// NewRequest builds a request for url, with in (if not nil) as its JSON body.
func NewRequest(ctx context.Context, method, url string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// Do sends req with hc, a client from NewClient. When nothing answers on the socket (no socket file, or
// no server behind it) it returns notRunning; any other failure is wrapped in prefix ("localapi: ...").
func Do(hc *http.Client, req *http.Request, notRunning error, prefix string) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, notRunning
		}
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	return resp, nil
}
