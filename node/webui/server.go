package webui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/localapi"
)

//go:embed assets
var assets embed.FS

// CSP is the Content-Security-Policy of every answer: only this origin's scripts, styles, images
// and connections; no inline script or style, no plugins, no framing, forms only to this origin.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// CSRFHeader is the request header that must carry the CSRF value on state-changing requests.
const CSRFHeader = "X-Fieldmesh-CSRF"

// DefaultStatusEvery is how often an event stream sends a "status" event by default.
const DefaultStatusEvery = 5 * time.Second

// Config configures a Server. Node is required; the zero value of every other field works.
type Config struct {
	// Node is the running node the UI drives, when the daemon has no lock. One of Node and Lock is
	// required.
	Node *node.Node
	// Lock is the daemon's lock (node/session): the UI drives whichever node is unlocked, shows a
	// lock screen while the device is locked, and its API answers 423 Locked then (lock.go).
	Lock localapi.Locker
	// Logger receives the UI's logs (never content: no text, patient reference or team name).
	// Nil discards them.
	Logger *slog.Logger
	// Rand is the source of the token, session and CSRF values. Nil is crypto/rand.
	Rand io.Reader
	// StatusEvery is how often an event stream sends a "status" event (relays, peers and low-data
	// mode change without a team's log growing) and looks for teams joined since it opened.
	// Default DefaultStatusEvery.
	StatusEvery time.Duration
}

// Server is the web UI of one node on one loopback listener.
type Server struct {
	lock        localapi.Locker
	gate        *localapi.Gate
	name        string
	device      string
	log         *slog.Logger
	statusEvery time.Duration
	port        int
	token       string // signs in (LoginURL's fragment)
	session     string // the session cookie's value
	csrf        string // the CSRF header's value
	cookie      string // the session cookie's name
	api         http.Handler
}

// Listen opens a TCP listener for the UI. addr must name a loopback IP (127.0.0.1 or ::1) or
// localhost, with a port or port 0 for a free one; "" is 127.0.0.1:0.
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("webui: bad address %q: %w", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("webui: the web UI listens on loopback only (127.0.0.1), not %q", host)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		return nil, fmt.Errorf("webui: listen on %s: %w", addr, err)
	}
	return l, nil
}

// New returns the UI of cfg.Node for the listener l (whose port the Host check and the cookie's
// name use). It makes this start's token, session and CSRF values.
func New(cfg Config, l net.Listener) (*Server, error) {
	if cfg.Node == nil && cfg.Lock == nil {
		return nil, errors.New("webui: no node")
	}
	if cfg.Lock == nil {
		cfg.Lock = fixed{cfg.Node}
	}
	n, _, err := cfg.Lock.Current()
	if err != nil {
		return nil, fmt.Errorf("webui: start unlocked: %w", err)
	}
	ta, ok := l.Addr().(*net.TCPAddr)
	if !ok || !ta.IP.IsLoopback() {
		return nil, fmt.Errorf("webui: listener %s is not on loopback TCP", l.Addr())
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	secret := func() (string, error) {
		b := make([]byte, 32)
		if _, err := io.ReadFull(rnd, b); err != nil {
			return "", fmt.Errorf("webui: make a secret: %w", err)
		}
		return hex.EncodeToString(b), nil
	}
	st := n.Status()
	s := &Server{lock: cfg.Lock, name: st.Name, device: st.Device.String(), log: cfg.Logger, statusEvery: cfg.StatusEvery, port: ta.Port}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.statusEvery <= 0 {
		s.statusEvery = DefaultStatusEvery
	}
	for _, p := range []*string{&s.token, &s.session, &s.csrf} {
		if *p, err = secret(); err != nil {
			return nil, err
		}
	}
	s.cookie = "fieldmesh_session_" + strconv.Itoa(s.port)
	s.gate = &localapi.Gate{Locker: cfg.Lock, Logger: cfg.Logger}
	s.api = http.StripPrefix("/api", s.gate.Handler())
	return s, nil
}

// URL is the UI's address, without the token.
func (s *Server) URL() string { return "http://127.0.0.1:" + strconv.Itoa(s.port) + "/" }

// LoginURL is the UI's address with this start's token in the fragment, which the page sends once to
// /api/login and then removes from the address bar.
func (s *Server) LoginURL() string { return s.URL() + "#token=" + s.token }

// Serve serves the UI on l until ctx ends; then it stops the event streams (their contexts derive
// from ctx) and waits up to 5 s for requests in flight. The caller owns l; Serve closes it.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("webui: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	return err
}

// Handler returns the UI's routes behind the Host check and the security headers.
func (s *Server) Handler() http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(static)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /app.js", files)
	mux.Handle("GET /style.css", files)
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /api/login", s.login)

	api := http.NewServeMux()
	api.HandleFunc("GET /api/session", s.sessionInfo)
	api.HandleFunc("GET /api/messages", s.messages)
	api.HandleFunc("GET /api/events", s.events)
	api.HandleFunc("POST /api/qr", s.qr)
	// The localapi's follow stream holds a connection open for ever and pages nothing: the page
	// uses /api/messages and /api/events instead.
	api.HandleFunc("GET /api/v1/messages", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "not served to the web UI: use /api/messages")
	})
	api.Handle("/api/v1/", s.api)
	mux.Handle("/api/", s.authed(api))
	return s.guard(mux)
}

// guard checks the Host header and the request's origin, and sets the security headers.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !s.goodHost(r.Host) {
			writeErr(w, http.StatusForbidden, "refused: open the web UI at "+s.URL())
			return
		}
		// State-changing requests anywhere, and every API request (a page of messages marks them
		// read), must come from the UI's own origin when the browser says where they come from.
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) || strings.HasPrefix(r.URL.Path, "/api/") {
			if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
				writeErr(w, http.StatusForbidden, "refused: a request from another site")
				return
			}
			if sf := r.Header.Get("Sec-Fetch-Site"); sf != "" && sf != "same-origin" && sf != "none" {
				writeErr(w, http.StatusForbidden, "refused: a request from another site")
				return
			}
		}
		if strings.HasPrefix(r.URL.Path, "/api/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// goodHost reports whether host is this UI's loopback address: a page on another name that resolves
// to 127.0.0.1 (DNS rebinding) sends its own name.
func (s *Server) goodHost(host string) bool {
	p := ":" + strconv.Itoa(s.port)
	return host == "127.0.0.1"+p || host == "localhost"+p
}

// authed lets through requests carrying the session cookie, and state-changing ones only with the
// CSRF header.
func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(s.cookie)
		if err != nil || !equal(c.Value, s.session) {
			writeErr(w, http.StatusUnauthorized, "not signed in: run \"fieldmesh open\" to open the web UI")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !equal(r.Header.Get(CSRFHeader), s.csrf) {
			writeErr(w, http.StatusForbidden, "refused: the request lacks the page's CSRF value; reload the page")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if !equal(req.Token, s.token) {
		s.log.Warn("web UI sign-in refused: wrong token")
		writeErr(w, http.StatusUnauthorized, "wrong or old sign-in link: run \"fieldmesh open\" again")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookie, Value: s.session, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, map[string]string{"csrf": s.csrf})
}

// Session is the answer of GET /api/session.
type Session struct {
	CSRF   string `json:"csrf"`
	Name   string `json:"name"`
	Device string `json:"device"`
}

func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Session{CSRF: s.csrf, Name: s.name, Device: s.device})
}

// maxRequest bounds the bodies of this package's routes.
const maxRequest = 64 << 10

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
