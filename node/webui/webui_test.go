package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"rsc.io/qr"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// req makes a request to the UI with the given Host (empty: the UI's own), cookie value (empty:
// none), CSRF header (empty: none) and extra headers, and returns the status and body.
type reqOpts struct {
	host, cookie, csrf string
	header             map[string]string
	body               any
}

func (u *testUI) do(t *testing.T, method, path string, o reqOpts) (int, string, *http.Response) {
	t.Helper()
	var body io.Reader
	if o.body != nil {
		b, err := json.Marshal(o.body)
		if err != nil {
			t.Fatal(err)
		}
		body = strings.NewReader(string(b))
	}
	r, err := http.NewRequest(method, u.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if o.body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	if o.host != "" {
		r.Host = o.host
	}
	if o.cookie != "" {
		r.AddCookie(&http.Cookie{Name: u.cookie, Value: o.cookie})
	}
	if o.csrf != "" {
		r.Header.Set(CSRFHeader, o.csrf)
	}
	for k, v := range o.header {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

// login signs in with the token and returns the session cookie's value and the CSRF value.
func (u *testUI) login(t *testing.T) (cookie, csrf string) {
	t.Helper()
	code, body, resp := u.do(t, "POST", "/api/login", reqOpts{body: map[string]string{"token": u.token}})
	if code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == u.cookie {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Errorf("session cookie HttpOnly=%v SameSite=%v; want HttpOnly, SameSite=Strict", c.HttpOnly, c.SameSite)
			}
			cookie = c.Value
		}
	}
	if cookie == "" {
		t.Fatalf("login set no cookie %s", u.cookie)
	}
	var out struct{ CSRF string }
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.CSRF == "" {
		t.Fatalf("login answer %q: no csrf (%v)", body, err)
	}
	return cookie, out.CSRF
}

func TestLoginURLCarriesTokenInFragmentOnly(t *testing.T) {
	n := newNode(t, "Dr Banda", &syncBuffer{})
	u := startUI(t, n, &syncBuffer{}, 0)
	lu, err := url.Parse(u.LoginURL())
	if err != nil {
		t.Fatal(err)
	}
	if lu.Host != "127.0.0.1:"+strconv.Itoa(u.port) || lu.RawQuery != "" || lu.Path != "/" {
		t.Errorf("login URL %s: want http://127.0.0.1:%d/ with no query", lu.Redacted(), u.port)
	}
	if lu.Fragment != "token="+u.token || len(u.token) != 64 {
		t.Errorf("login URL fragment %q: want token=<64 hex>", lu.Fragment)
	}
	if u.token == u.session || u.token == u.csrf || u.session == u.csrf {
		t.Error("token, session and CSRF values are not distinct")
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		if l, err := Listen(addr); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded; want refused", addr)
		}
	}
	for _, addr := range []string{"", "127.0.0.1:0", "localhost:0"} {
		l, err := Listen(addr)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		l.Close()
	}
}

func TestSafetyRules(t *testing.T) {
	n := newNode(t, "Dr Banda", &syncBuffer{})
	u := startUI(t, n, &syncBuffer{}, 0)
	port := strconv.Itoa(u.port)

	t.Run("headers", func(t *testing.T) {
		for _, path := range []string{"/", "/app.js", "/style.css", "/api/session", "/api/nope"} {
			_, _, resp := u.do(t, "GET", path, reqOpts{})
			csp := resp.Header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("%s: CSP %q lacks %q", path, csp, want)
				}
			}
			if strings.Contains(csp, "unsafe") {
				t.Errorf("%s: CSP %q allows something unsafe", path, csp)
			}
			if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
				t.Errorf("%s: X-Frame-Options %q; want DENY", path, got)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s: X-Content-Type-Options %q; want nosniff", path, got)
			}
		}
		code, body, _ := u.do(t, "GET", "/", reqOpts{})
		if code != http.StatusOK || !strings.Contains(body, `<script src="/app.js"`) {
			t.Fatalf("GET /: %d, page without its script", code)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, "onclick=") {
			t.Error("the page has inline script or style, which the CSP refuses")
		}
	})

	cookie, csrf := u.login(t)

	t.Run("host", func(t *testing.T) {
		for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1", "localhost",
			"127.0.0.1:1", "127.0.0.2:" + port, "[::1]:" + port, "127.0.0.1:" + port + ".evil.example"} {
			for _, c := range []struct{ method, path string }{{"GET", "/"}, {"GET", "/api/v1/teams"}, {"POST", "/api/login"}} {
				code, body, _ := u.do(t, c.method, c.path, reqOpts{host: host, cookie: cookie, csrf: csrf,
					body: map[string]string{"token": u.token}})
				if code != http.StatusForbidden {
					t.Errorf("%s %s with Host %q: %d %s; want 403", c.method, c.path, host, code, body)
				}
			}
		}
		for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port} {
			if code, body, _ := u.do(t, "GET", "/api/v1/teams", reqOpts{host: host, cookie: cookie}); code != http.StatusOK {
				t.Errorf("Host %q: %d %s; want 200", host, code, body)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		for _, tok := range []string{"", "x", u.token[:63], u.token + "0", u.session, u.csrf} {
			code, body, resp := u.do(t, "POST", "/api/login", reqOpts{body: map[string]string{"token": tok}})
			if code != http.StatusUnauthorized {
				t.Errorf("login with token %.8q: %d %s; want 401", tok, code, body)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("login with a wrong token set a cookie")
			}
		}
		paths := []string{"/api/session", "/api/v1/teams", "/api/v1/status", "/api/messages?team=x", "/api/events", "/api/v1/usage"}
		for _, p := range paths {
			for _, c := range []string{"", "wrong", u.token, u.csrf} {
				if code, body, _ := u.do(t, "GET", p, reqOpts{cookie: c}); code != http.StatusUnauthorized {
					t.Errorf("GET %s with cookie %.8q: %d %s; want 401", p, c, code, body)
				}
			}
		}
		if code, _, _ := u.do(t, "POST", "/api/v1/teams", reqOpts{csrf: csrf, body: map[string]string{"name": "Ward 9"}}); code != http.StatusUnauthorized {
			t.Errorf("POST without a cookie: %d; want 401", code)
		}
	})

	t.Run("csrf", func(t *testing.T) {
		routes := []struct {
			path string
			body any
		}{
			{"/api/v1/teams", map[string]string{"name": "Ward 9"}},
			{"/api/v1/low-data", map[string]bool{"on": true}},
			{"/api/v1/send", map[string]string{"team": "Ward 9", "text": "hello"}},
			{"/api/qr", map[string]string{"text": "hello"}},
		}
		for _, r := range routes {
			for _, bad := range []string{"", "wrong", u.token, u.session} {
				code, body, _ := u.do(t, "POST", r.path, reqOpts{cookie: cookie, csrf: bad, body: r.body})
				if code != http.StatusForbidden {
					t.Errorf("POST %s with CSRF %.8q: %d %s; want 403", r.path, bad, code, body)
				}
			}
			// A cross-site request is refused even with the right values (a page that somehow had them).
			for _, h := range []map[string]string{{"Origin": "http://evil.example"}, {"Origin": "null"},
				{"Origin": "http://localhost:" + port}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}} {
				code, body, _ := u.do(t, "POST", r.path, reqOpts{cookie: cookie, csrf: csrf, body: r.body, header: h})
				if code != http.StatusForbidden {
					t.Errorf("POST %s with %v: %d %s; want 403", r.path, h, code, body)
				}
			}
		}
		// A page of another origin may not even read through the API (a page of messages marks them read).
		for _, h := range []map[string]string{{"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}} {
			if code, body, _ := u.do(t, "GET", "/api/v1/teams", reqOpts{cookie: cookie, header: h}); code != http.StatusForbidden {
				t.Errorf("GET /api/v1/teams with %v: %d %s; want 403", h, code, body)
			}
		}
		if code, body, _ := u.do(t, "GET", "/api/v1/teams", reqOpts{cookie: cookie, header: map[string]string{"Sec-Fetch-Site": "same-origin"}}); code != http.StatusOK {
			t.Errorf("GET /api/v1/teams from the same origin: %d %s; want 200", code, body)
		}
		if ts := n.Teams(); len(ts) != 0 {
			t.Fatalf("refused requests created %d teams", len(ts))
		}
		if st, _ := n.LowData(); st.On {
			t.Fatal("a refused request turned low-data mode on")
		}
		code, body, _ := u.do(t, "POST", "/api/v1/teams", reqOpts{cookie: cookie, csrf: csrf,
			body: map[string]string{"name": "Ward 9"}, header: map[string]string{"Origin": u.base, "Sec-Fetch-Site": "same-origin"}})
		if code != http.StatusOK || len(n.Teams()) != 1 {
			t.Fatalf("POST with cookie and CSRF: %d %s; want 200 and a team", code, body)
		}
	})
}

func TestMessagesPaging(t *testing.T) {
	n := newNode(t, "Dr Banda", &syncBuffer{})
	u := startUI(t, n, &syncBuffer{}, 0)
	team, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	const total = 230
	var ids []string
	for i := range total {
		id, _, err := n.Send(team.ID.String(), crdt.Message{Text: fmt.Sprintf("m%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.String())
	}
	cookie, _ := u.login(t)
	page := func(q string) Page {
		t.Helper()
		code, body, _ := u.do(t, "GET", "/api/messages?team="+team.ID.String()+q, reqOpts{cookie: cookie})
		if code != http.StatusOK {
			t.Fatalf("GET messages%s: %d %s", q, code, body)
		}
		var p Page
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(p Page, from, to int, more bool) {
		t.Helper()
		if len(p.Messages) != to-from || p.More != more {
			t.Fatalf("got %d messages, more=%v; want %d, more=%v", len(p.Messages), p.More, to-from, more)
		}
		for i, m := range p.Messages {
			if m.ID != ids[from+i] || m.Text != fmt.Sprintf("m%d", from+i) {
				t.Fatalf("message %d: got %s %q; want %s m%d", i, m.ID[:8], m.Text, ids[from+i][:8], from+i)
			}
		}
	}
	p := page("")
	check(p, total-DefaultPage, total, true)
	p = page("&before=" + p.Messages[0].ID)
	check(p, total-2*DefaultPage, total-DefaultPage, true)
	p = page("&before=" + p.Messages[0].ID)
	check(p, 0, total-2*DefaultPage, false)
	check(page("&limit=7"), total-7, total, true)
	check(page("&limit=100000"), 0, total, false) // capped at MaxPage, which is more than total

	for _, q := range []string{"&limit=0", "&limit=-1", "&limit=x"} {
		if code, _, _ := u.do(t, "GET", "/api/messages?team="+team.ID.String()+q, reqOpts{cookie: cookie}); code != http.StatusBadRequest {
			t.Errorf("%s: %d; want 400", q, code)
		}
	}
	if code, _, _ := u.do(t, "GET", "/api/messages?team="+team.ID.String()+"&before=00", reqOpts{cookie: cookie}); code != http.StatusNotFound {
		t.Errorf("unknown before: %d; want 404", code)
	}
	if code, _, _ := u.do(t, "GET", "/api/messages?team=nope", reqOpts{cookie: cookie}); code != http.StatusNotFound {
		t.Errorf("unknown team: %d; want 404", code)
	}
}

func TestEventsAnnounceTeamChanges(t *testing.T) {
	n := newNode(t, "Dr Banda", &syncBuffer{})
	u := startUI(t, n, &syncBuffer{}, time.Hour)
	team, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	cookie, _ := u.login(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, "GET", u.base+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.AddCookie(&http.Cookie{Name: u.cookie, Value: cookie})
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() (event, data string) {
		t.Helper()
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && event != "":
				return event, data
			}
		}
		t.Fatalf("event stream ended: %v", sc.Err())
		return "", ""
	}
	if ev, data := next(); ev != "ready" || data != `{"teams":1}` {
		t.Fatalf("first event %s %s; want ready with 1 team", ev, data)
	}
	const secret = "BP 160/110 bed 4"
	if _, _, err := n.Send(team.ID.String(), crdt.Message{Text: secret, Patient: "MRN-55"}); err != nil {
		t.Fatal(err)
	}
	ev, data := next()
	if ev != "team" || data != `{"team":"`+team.ID.String()+`"}` {
		t.Fatalf("got %s %s; want a team event naming %s", ev, data, team.ID.String()[:8])
	}
	if strings.Contains(data, secret) || strings.Contains(data, "MRN-55") || strings.Contains(data, "Ward 3") {
		t.Fatal("an event carries content")
	}
}

func TestQR(t *testing.T) {
	n := newNode(t, "Dr Banda", &syncBuffer{})
	u := startUI(t, n, &syncBuffer{}, 0)
	cookie, csrf := u.login(t)
	const text = "FM1-abcdefgh-ijklmnop"
	code, body, _ := u.do(t, "POST", "/api/qr", reqOpts{cookie: cookie, csrf: csrf, body: map[string]string{"text": text}})
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var got QR
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want, err := qr.Encode(text, qr.M)
	if err != nil {
		t.Fatal(err)
	}
	black := 0
	for y := range want.Size {
		for x := range want.Size {
			if want.Black(x, y) {
				black++
				if !strings.Contains(got.Path, fmt.Sprintf("M%d %dh", x, y)) {
					t.Fatalf("module (%d,%d) missing from the path", x, y)
				}
			}
		}
	}
	if got.Size != want.Size || strings.Count(got.Path, "M") != black {
		t.Fatalf("size %d with %d modules; want %d with %d", got.Size, strings.Count(got.Path, "M"), want.Size, black)
	}
	if code, _, _ := u.do(t, "POST", "/api/qr", reqOpts{cookie: cookie, csrf: csrf, body: map[string]string{"text": ""}}); code != http.StatusBadRequest {
		t.Errorf("empty text: %d; want 400", code)
	}
}

// TestAssetWeight keeps the page light for phones on paid data: the embedded assets total at most
// 200 KB, and the page loads nothing from elsewhere.
func TestAssetWeight(t *testing.T) {
	total := 0
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, path)
		if err != nil {
			return err
		}
		total += len(b)
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "") // a namespace name, not a fetch
		for _, ref := range []string{"http://", "https://", "//cdn"} {
			if strings.Contains(text, ref) {
				t.Errorf("%s refers to %q: the UI must load nothing from elsewhere", path, ref)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 || total > 200_000 {
		t.Errorf("the assets total %d bytes; want at most 200,000", total)
	}
	t.Logf("assets: %d bytes", total)
}
