package webui

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// chromiumPath finds Debian's chromium (make deps installs it). A machine without it fails the test,
// so a missing browser never passes silently; -short skips it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("-short: the browser test needs chromium")
	}
	t.Fatal("chromium is not installed: run make deps (apt-get install chromium), or go test -short to skip the browser test")
	return ""
}

// browserSetup finds the browser (skipping the test without one) and the factor by which the
// browser tests stretch their deadlines: 3 under the race detector, else 1.
func browserSetup(t *testing.T) (chromium string, slow time.Duration) {
	t.Helper()
	chromium, slow = chromiumPath(t), 1
	if raceEnabled() {
		slow = 3
	}
	return chromium, slow
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// browserLog collects what the pages report: uncaught exceptions, console errors and browser log
// errors (a refused Content-Security-Policy among them).
type browserLog struct {
	mu     sync.Mutex
	errors []string
	wg     sync.WaitGroup
}

// listen reads tab's console until ctx ends. It subscribes before it returns.
func (b *browserLog) listen(ctx context.Context, tab string) {
	msgs := chromedp.Console(ctx)
	b.wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || strings.Contains(m.Text, "Content Security Policy") {
				b.mu.Lock()
				b.errors = append(b.errors, tab+": "+m.String())
				b.mu.Unlock()
			}
		}
	})
}

func (b *browserLog) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		t.Errorf("browser: %s", e)
	}
}

// newBrowser starts headless chromium and returns the context of the whole session (deadline d; a
// first Run's context lives as long as the browser), its cancel function and a first tab, started.
func newBrowser(t *testing.T, chromium string, d time.Duration) (context.Context, context.CancelFunc, context.Context) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := context.WithTimeout(allocCtx, d)
	tab, cancelTab := chromedp.NewContext(ctx)
	cancel := func() { cancelTab(); cancelCtx(); cancelAlloc() }
	if err := chromedp.Do(tab); err != nil {
		cancel()
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, cancel, tab
}

// axeSource is axe-core, vendored from npm under testdata with its licence.
//
//go:embed testdata/axe-core/axe.min.js
var axeSource string

// axeCheck runs axe-core on the tab's page as it is now (injecting it once per page; DevTools
// evaluation is not subject to the page's CSP) and returns its serious and critical violations.
func axeCheck(ctx context.Context, tg *chromedp.Target) ([]string, error) {
	if _, err := chromedp.Evaluate[bool](`window.axe !== undefined || (() => { `+axeSource+`; return true })()`)(ctx, tg); err != nil {
		return nil, fmt.Errorf("inject axe-core: %w", err)
	}
	return chromedp.Evaluate[[]string](`axe.run(document, {resultTypes: ["violations"]}).then((r) => r.violations
		.filter((v) => v.impact === "serious" || v.impact === "critical")
		.map((v) => v.impact + " " + v.id + ": " + v.help + " (" + v.nodes.map((n) => n.target.join(" ")).join(", ") + ")"))`,
		chromedp.EvalAwaitPromise)(ctx, tg)
}

// TestBrowser drives Debian's headless chromium against the web UIs of two real nodes on loopback,
// through the screens only: A signs in with its token, starts a team and makes an invite code; B
// signs in and joins with that code; both open the conversation; A sends an urgent message with a
// patient reference from the compose form, and it appears in B's open conversation, pushed by
// server-sent events (no reload), and A's page then shows it read by B. Every screen is then checked at 360 px wide (no horizontal
// overflow, no serious or critical axe-core violation), B marks A's safety number verified; A makes B
// an admin, then removes B from the team, and B's page shows it was removed; A's low-data switch turns the node's mode on. Last, no URL either UI was asked
// for, and no log line, may hold the message, the patient reference, the team name, the invite code
// or a token.
func TestBrowser(t *testing.T) {
	chromium, slow := browserSetup(t)
	logs := &syncBuffer{}
	// B's acknowledgements go out at once, so "read by" can be watched arriving on A's page.
	quickAcks := func(c *node.Config) { c.AckInterval = 50 * time.Millisecond }
	a, b := newNode(t, "Dr Banda", logs), newNode(t, "Nurse Phiri", logs, quickAcks)
	uiA, uiB := startUI(t, a, logs, time.Second), startUI(t, b, logs, time.Second)

	_, cancel, tabA := newBrowser(t, chromium, 120*slow*time.Second)
	defer cancel()
	tabB, cancelB := chromedp.NewContext(tabA) // a second tab of the same browser
	defer cancelB()
	if err := chromedp.Do(tabB); err != nil {
		t.Fatal(err)
	}
	var blog browserLog
	blog.listen(tabA, "A")
	blog.listen(tabB, "B")
	// A's confirmation dialogs (removing a member) are accepted.
	dialogs := chromedp.Events(tabA, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			if _, err := chromedp.Call(tabA, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()

	shots := os.Getenv("FIELDMESH_UI_SHOTS")
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if shots == "" {
				return nil
			}
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	live := chromedp.WaitVisible(`//span[@id="conn"][.="live"]`)
	signIn := func(tab context.Context, ui *testUI) {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Navigate(ui.LoginURL()), live); err != nil {
			t.Fatalf("sign in on %s: %v", ui.base, err)
		}
		loc, err := chromedp.Run(tab, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		if loc != ui.base+"/" {
			t.Errorf("after sign-in the address is %q; want %q (the token removed)", loc, ui.base+"/")
		}
	}

	// A starts the team and makes an invite code.
	const teamName = "Maternity Ward 3"
	signIn(tabA, uiA)
	if err := chromedp.Do(tabA,
		chromedp.Click(`//summary[.="Start a team"]`),
		chromedp.SendKeys(chromedp.CSS("#create-name"), teamName),
		chromedp.Click(`//form[@id="create-form"]//button[@type="submit"]`),
		chromedp.WaitVisible(`//h2[@id="team-h"][.="`+teamName+`"]`),
		live, // the page listens again, now to the new team too
		chromedp.Click(chromedp.CSS("#tab-invite")),
		chromedp.Click(chromedp.CSS("#invite-make")),
		chromedp.WaitVisible(chromedp.CSS(`#invite-qr svg`)),
	); err != nil {
		t.Fatalf("A starts a team and makes an invite code: %v", err)
	}
	teams := a.Teams()
	if len(teams) != 1 || teams[0].Name != teamName || !teams[0].Admin {
		t.Fatalf("A's node has teams %+v; want the one it started, as admin", teams)
	}
	team := teams[0]
	code, err := chromedp.Run(tabA, chromedp.Text(chromedp.CSS("#invite-code")))
	if err != nil || code == "" {
		t.Fatalf("no invite code shown (%v)", err)
	}

	// B joins with the code.
	signIn(tabB, uiB)
	if err := chromedp.Do(tabB,
		chromedp.Click(`//summary[.="Join a team"]`),
		chromedp.SendKeys(chromedp.CSS("#join-code"), code),
		chromedp.Click(`//form[@id="join-form"]//button[@type="submit"]`),
		chromedp.WaitVisible(`//h2[@id="team-h"][.="`+teamName+`"]`),
		chromedp.WaitVisible(chromedp.CSS("#compose-text")),
		live,
	); err != nil {
		t.Fatalf("B joins with the code: %v", err)
	}
	if ts := b.Teams(); len(ts) != 1 || ts[0].ID != team.ID {
		t.Fatalf("B's node has teams %+v; want A's team", ts)
	}

	text := "BP 160/110 two hours after delivery " + time.Now().Format("150405.000")
	const patient = "MRN-4471-QX"
	if _, err := chromedp.Run(tabB, chromedp.Evaluate[string](`window.__noReload = "still"`)); err != nil {
		t.Fatal(err)
	}
	mine := fmt.Sprintf(`//li[contains(@class,"msg")][.//p[@class="text"][.=%q]][.//span[@class="patient"][.="Patient: %s"]][.//span[@class="prio"][.="urgent"]]`, text, patient)
	if err := chromedp.Do(tabA,
		chromedp.Click(chromedp.CSS("#tab-chat")),
		chromedp.SendKeys(chromedp.CSS("#compose-text"), text),
		chromedp.SetValue(chromedp.CSS("#compose-priority"), "urgent"),
		chromedp.SendKeys(chromedp.CSS("#compose-patient"), patient),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(mine),
		shot("conversation-1280"),
	); err != nil {
		t.Fatalf("send from A's compose form: %v", err)
	}
	// Gossip on loopback takes well under a second; the deadline only bounds a failing run.
	liveCtx, liveCancel := context.WithTimeout(tabB, 20*slow*time.Second)
	err = chromedp.Do(liveCtx, chromedp.WaitVisible(mine))
	liveCancel()
	if err != nil {
		t.Fatalf("the message did not appear in B's open conversation: %v", err)
	}
	if err := chromedp.Do(tabB, chromedp.WaitReady(`//p[@id="announce"][.="New message from Dr Banda"]`)); err != nil {
		t.Errorf("B's page did not announce the new message to screen readers: %v", err)
	}
	marker, err := chromedp.Run(tabB, chromedp.Evaluate[string](`String(window.__noReload)`))
	if err != nil || marker != "still" {
		t.Errorf("B's page was reloaded (marker %q, %v); want the message pushed live", marker, err)
	}
	// B's page showed it, so B read it: A's page says so, live.
	readStart := time.Now()
	if err := chromedp.Do(tabA, chromedp.WaitVisible(mine+`//span[@class="status"][.="Read by Nurse Phiri"]`)); err != nil {
		t.Fatalf("A's page does not show the message read by B: %v", err)
	}
	t.Logf("read by B shown on A's page after %v", time.Since(readStart).Round(time.Millisecond))
	ms, err := b.Messages(team.ID.String())
	if err != nil || len(ms) != 1 || ms[0].Text != text || ms[0].Patient != patient || ms[0].Priority != crdt.Urgent {
		t.Fatalf("B's node has %+v (%v); want the one urgent message with its patient reference", ms, err)
	}

	// B answers with the Reply button (and Ctrl+Enter); A sees the reply under its message, live.
	const answer = "Seen, giving labetalol now"
	reply := fmt.Sprintf(`//li[contains(@class,"msg")][.//div[@class="re"][contains(., "reply to Dr Banda: BP 160/110")]][.//p[@class="text"][.=%q]]`, answer)
	if err := chromedp.Do(tabB,
		chromedp.Click(`//button[@aria-label="Reply to Dr Banda's message"]`),
		chromedp.WaitVisible(chromedp.CSS("#replying")),
		chromedp.SendKeys(chromedp.CSS("#compose-text"), answer),
		chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)),
		chromedp.WaitVisible(reply),
		chromedp.WaitNotVisible(chromedp.CSS("#replying")),
	); err != nil {
		t.Fatalf("B replies: %v", err)
	}
	if err := chromedp.Do(tabA, chromedp.WaitVisible(reply)); err != nil {
		t.Fatalf("the reply did not appear in A's open conversation: %v", err)
	}

	// Every screen at 360 px wide, on B: nothing may scroll sideways, and axe finds nothing serious.
	checkScreen := func(screen string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			r, err := chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`)(ctx, tg)
			if err != nil {
				return err
			}
			if len(r) != 2 || r[0] > r[1] || r[1] > 360 {
				t.Errorf("%s at 360 px: scrollWidth, clientWidth = %v; want no horizontal overflow", screen, r)
			}
			bad, err := axeCheck(ctx, tg)
			if err != nil {
				return fmt.Errorf("axe on %s: %w", screen, err)
			}
			for _, v := range bad {
				t.Errorf("accessibility of %s: %s", screen, v)
			}
			_, err = shot(screen+"-360")(ctx, tg)
			return err
		})
	}
	teamButton := chromedp.CSS(fmt.Sprintf(`button[data-team="%s"]`, team.ID))
	if err := chromedp.Do(tabB,
		chromedp.EmulateViewport(360, 740),
		chromedp.WaitVisible(mine),
		checkScreen("conversation"),
		chromedp.Click(chromedp.CSS("#tab-members")),
		chromedp.WaitVisible(`//ul[@id="member-list"]//strong[.="Dr Banda"]`),
		checkScreen("members"),
		chromedp.Click(`//button[.="Safety number"]`),
		chromedp.WaitVisible(chromedp.CSS(`#safety-list .number`)),
		chromedp.WaitVisible(chromedp.CSS(`#safety-list svg`)),
		checkScreen("safety-number"),
		chromedp.Click(chromedp.CSS("#safety-mark")),
		chromedp.WaitVisible(`//ul[@id="member-list"]/li[.//strong[.="Dr Banda"]]/span[.="verified"]`),
		chromedp.Click(chromedp.CSS("#tab-invite")),
		chromedp.Click(chromedp.CSS("#link-make")),
		chromedp.WaitVisible(chromedp.CSS(`#invite-qr svg`)),
		checkScreen("invite"),
		chromedp.Click(chromedp.CSS("#nav-sync")),
		chromedp.WaitVisible(`//p[@id="sync-summary"][contains(., "connected")]`),
		checkScreen("sync"),
		chromedp.Click(chromedp.CSS("#nav-usage")),
		chromedp.WaitVisible(chromedp.CSS(`#usage-chart svg`)),
		checkScreen("usage"),
		chromedp.Click(chromedp.CSS("#nav-teams")),
		chromedp.WaitVisible(teamButton),
		checkScreen("teams"),
	); err != nil {
		t.Fatalf("screens at 360 px: %v", err)
	}

	// A makes B an admin, then removes B; B's open page shows it was removed, without a reload.
	if err := chromedp.Do(tabA,
		chromedp.Click(chromedp.CSS("#tab-members")),
		chromedp.WaitVisible(`//ul[@id="member-list"]//strong[.="Nurse Phiri"]`),
		chromedp.Click(`//button[@aria-label="Make Nurse Phiri an admin"]`),
		chromedp.WaitVisible(`//ul[@id="member-list"]/li[.//strong[.="Nurse Phiri"]]/span[.="admin"]`),
		chromedp.Click(`//button[@aria-label="Remove Nurse Phiri from the team"]`),
		chromedp.WaitNotPresent(`//ul[@id="member-list"]//strong[.="Nurse Phiri"]`),
	); err != nil {
		t.Fatalf("A removes B: %v", err)
	}
	if err := chromedp.Do(tabB,
		chromedp.WaitVisible(fmt.Sprintf(`//button[@data-team="%s"][contains(., "you were removed")]`, team.ID)),
	); err != nil {
		t.Fatalf("B's page does not show the removal: %v", err)
	}

	// The low-data switch on A turns the node's mode on, through the page.
	if err := chromedp.Do(tabA,
		chromedp.Click(chromedp.CSS("#lowdata")),
		chromedp.Click(chromedp.CSS("#nav-sync")),
		chromedp.WaitVisible(`//p[@id="lowdata-summary"][contains(., "is on")]`),
	); err != nil {
		t.Fatalf("low-data switch: %v", err)
	}
	if st, err := a.LowData(); err != nil || !st.On {
		t.Errorf("after the switch A's low-data mode is %+v (%v); want on", st, err)
	}
	cancel()
	blog.wg.Wait()
	blog.check(t)

	needles := []string{text, patient, teamName, code, answer, uiA.token, uiB.token}
	urls := append(uiA.seen(), uiB.seen()...)
	if len(urls) < 20 {
		t.Errorf("the UIs saw %d requests; the recording is broken", len(urls))
	}
	for _, u := range urls {
		for _, n := range needles {
			if strings.Contains(u, n) || strings.Contains(u, strings.ReplaceAll(n, " ", "+")) || strings.Contains(u, strings.ReplaceAll(n, " ", "%20")) {
				t.Errorf("URL %q holds content (%.12q)", u, n)
			}
		}
	}
	for _, n := range needles {
		if strings.Contains(logs.String(), n) {
			t.Errorf("the logs hold %.12q", n)
		}
	}
}

// TestBrowserRefusesCrossSite signs in to the UI, then opens pages of another origin on the same host
// (127.0.0.1 on another port, which counts as the same site, so the SameSite cookie goes along): a
// form that posts a new team to the UI, and a page that puts the UI in a frame. The post must be
// refused and create nothing, and the framed UI must not load (its script is never fetched).
func TestBrowserRefusesCrossSite(t *testing.T) {
	chromium, slow := browserSetup(t)
	n := newNode(t, "Dr Banda", &syncBuffer{})
	ui := startUI(t, n, &syncBuffer{}, time.Second)
	evil := http.NewServeMux()
	evil.HandleFunc("GET /post", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>post</title><form id="f" method="POST" action="%s/api/v1/teams" enctype="text/plain">`+
			`<input name='{"name":"Evil ward ' value=' x"}'></form><script>document.getElementById("f").submit()</script>`, ui.base)
	})
	evil.HandleFunc("GET /frame", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>frame</title><iframe id="ui" src="%s/"></iframe>`+
			`<script>document.getElementById("ui").addEventListener("load", () => { document.title = "frame loaded" })</script>`, ui.base)
	})
	es := httptest.NewServer(evil)
	defer es.Close()

	_, cancel, tab := newBrowser(t, chromium, 60*slow*time.Second)
	defer cancel()
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.WaitVisible(`//span[@id="conn"][.="live"]`),
		chromedp.Navigate(es.URL+"/post"),
		// The form's answer replaces the page: wait for the UI's JSON, refusal or not.
		chromedp.WaitVisible(`//body[contains(., "{")]`),
	); err != nil {
		t.Fatalf("cross-site form post: %v", err)
	}
	answer, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	if ts := n.Teams(); len(ts) != 0 || !strings.Contains(answer, "refused") {
		t.Fatalf("a cross-site form post: answer %q, %d teams; want refused, none created", answer, len(ts))
	}
	scripts := func() int {
		c := 0
		for _, u := range ui.seen() {
			if u == "/app.js" {
				c++
			}
		}
		return c
	}
	before := scripts()
	if err := chromedp.Do(tab,
		chromedp.Navigate(es.URL+"/frame"),
		chromedp.WaitReady(`//title[.="frame loaded"]`),
	); err != nil {
		t.Fatalf("framing page: %v", err)
	}
	if got := scripts(); got != before {
		t.Errorf("the UI loaded in another origin's frame (its script was fetched %d more times); want refused", got-before)
	}
}

// TestBrowserPaging opens a conversation longer than a page: the page shows the newest
// DefaultPage messages, in order, and "Load older messages" brings the rest, after which the button
// goes away. The team's tabs then work from the keyboard.
func TestBrowserPaging(t *testing.T) {
	chromium, slow := browserSetup(t)
	n := newNode(t, "Dr Banda", &syncBuffer{})
	team, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	const total = DefaultPage + 30
	for i := range total {
		if _, _, err := n.Send(team.ID.String(), crdt.Message{Text: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	ui := startUI(t, n, &syncBuffer{}, time.Second)
	_, cancel, tab := newBrowser(t, chromium, 60*slow*time.Second)
	defer cancel()
	texts := func() []string {
		t.Helper()
		got, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#messages li .text")].map((e) => e.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := func(from int) []string {
		var out []string
		for i := from; i < total; i++ {
			out = append(out, fmt.Sprintf("m%d", i))
		}
		return out
	}
	last := fmt.Sprintf(`//li[contains(@class,"msg")]//p[.="m%d"]`, total-1)
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[data-team="%s"]`, team.ID))),
		chromedp.WaitVisible(last),
		chromedp.WaitVisible(chromedp.CSS("#older")),
	); err != nil {
		t.Fatalf("open the conversation: %v", err)
	}
	if got := texts(); !slices.Equal(got, want(total-DefaultPage)) {
		t.Fatalf("first page shows %d messages (%v … ); want m%d … m%d", len(got), got[:min(3, len(got))], total-DefaultPage, total-1)
	}
	if err := chromedp.Do(tab,
		chromedp.Click(chromedp.CSS("#older")),
		chromedp.WaitVisible(`//li[contains(@class,"msg")]//p[.="m0"]`),
		chromedp.WaitNotVisible(chromedp.CSS("#older")),
	); err != nil {
		t.Fatalf("load older: %v", err)
	}
	if got := texts(); !slices.Equal(got, want(0)) {
		t.Fatalf("after loading older the page shows %d messages; want all %d in order", len(got), total)
	}
	// The team's tabs work from the keyboard: arrow keys move between them.
	if err := chromedp.Do(tab,
		chromedp.Focus(chromedp.CSS("#tab-chat")),
		chromedp.KeyEvent(kb.ArrowRight),
		chromedp.WaitVisible(chromedp.CSS("#member-list li")),
		chromedp.KeyEvent(kb.ArrowRight),
		chromedp.WaitVisible(chromedp.CSS("#invite-make")),
		chromedp.KeyEvent(kb.ArrowRight),
		chromedp.WaitVisible(chromedp.CSS("#compose-text")),
	); err != nil {
		t.Fatalf("tabs from the keyboard: %v", err)
	}
	focused, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.activeElement.id`))
	if err != nil || focused != "tab-chat" {
		t.Errorf("after the arrows the focus is on %q (%v); want tab-chat", focused, err)
	}
}

// TestBrowserRelays shows a clinic relay the node was given (one that never answers: a peer id with
// nothing behind it) on the sync screen, as not connected and never contacted, and stops using it
// from there.
func TestBrowserRelays(t *testing.T) {
	chromium, slow := browserSetup(t)
	_, pub, err := lcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	rid, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, "Dr Banda", &syncBuffer{}, func(c *node.Config) {
		c.Relays = []string{"/ip4/127.0.0.1/tcp/9/p2p/" + rid.String()}
	})
	ui := startUI(t, n, &syncBuffer{}, time.Second)
	_, cancel, tab := newBrowser(t, chromium, 60*slow*time.Second)
	defer cancel()
	dialogs := chromedp.Events(tab, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			if _, err := chromedp.Call(tab, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	short := rid.String()[len(rid.String())-10:]
	row := fmt.Sprintf(`//tbody[@id="relay-rows"]/tr[td[1]/code[.=%q]][td[2][.="no"]][td[3][.="never"]]`, short)
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.WaitVisible(`//span[@id="conn"][.="live"]`),
		chromedp.Click(chromedp.CSS("#nav-sync")),
		chromedp.WaitVisible(row),
	); err != nil {
		t.Fatalf("relays screen: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.EmulateViewport(360, 740)); err != nil {
		t.Fatal(err)
	}
	r, err := chromedp.Run(tab, chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`))
	if err != nil || len(r) != 2 || r[0] > r[1] {
		t.Errorf("relays screen at 360 px: scrollWidth, clientWidth = %v (%v); want no horizontal overflow", r, err)
	}
	if bad, err := chromedp.Run(tab, chromedp.Action[[]string](axeCheck)); err != nil || len(bad) > 0 {
		t.Errorf("accessibility of the relays screen: %v (%v)", bad, err)
	}
	if err := chromedp.Do(tab,
		chromedp.Click(fmt.Sprintf(`//button[@aria-label="Stop using relay %s"]`, short)),
		chromedp.WaitVisible(chromedp.CSS("#no-relays")),
	); err != nil {
		t.Fatalf("relays screen: %v", err)
	}
	if rs := n.Relays(); len(rs) != 0 {
		t.Errorf("after Stop using, the node still uses %d relays", len(rs))
	}
}

// TestBrowserErrors: the page without the token says how to sign in; a wrong token says so; a bad
// invite code and a blank team name each give one line saying what went wrong, and the page goes on.
func TestBrowserErrors(t *testing.T) {
	chromium, slow := browserSetup(t)
	n := newNode(t, "Dr Banda", &syncBuffer{})
	if _, err := n.CreateTeam("Ward 3", crdt.Clinical); err != nil {
		t.Fatal(err)
	}
	ui := startUI(t, n, &syncBuffer{}, time.Second)
	_, cancel, tab := newBrowser(t, chromium, 60*slow*time.Second)
	defer cancel()
	oneLine := func(what, want string) {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.WaitVisible(fmt.Sprintf(`//p[@id="error"][starts-with(., %q)]`, want))); err != nil {
			t.Fatalf("%s: no error line starting %q: %v", what, want, err)
		}
		msg, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#error")))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", what, msg)
		if strings.Contains(msg, "\n") || len(msg) > 200 || regexp.MustCompile(`(^|: )(humancode|localapi|node|join|crdt): `).MatchString(msg) {
			t.Errorf("%s: error %q; want one short line without package names", what, msg)
		}
	}
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.base+"/"),
		chromedp.WaitVisible(`//section[@id="view-signin"]//code[.="fieldmesh open"]`),
		chromedp.Navigate(ui.base+"/#token="+strings.Repeat("0", 64)),
	); err != nil {
		t.Fatalf("signed out: %v", err)
	}
	oneLine("wrong token", "Not signed in: wrong or old sign-in link")
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.WaitVisible(`//span[@id="conn"][.="live"]`),
		chromedp.Click(`//summary[.="Join a team"]`),
		chromedp.SendKeys(chromedp.CSS("#join-code"), "not-a-code"),
		chromedp.Click(`//form[@id="join-form"]//button[@type="submit"]`),
	); err != nil {
		t.Fatal(err)
	}
	oneLine("bad invite code", "Not joined")
	if err := chromedp.Do(tab,
		chromedp.Click(`//summary[.="Start a team"]`),
		chromedp.SendKeys(chromedp.CSS("#create-name"), "   "),
		chromedp.Click(`//form[@id="create-form"]//button[@type="submit"]`),
	); err != nil {
		t.Fatal(err)
	}
	oneLine("blank team name", "No team created")
	if ts := n.Teams(); len(ts) != 1 {
		t.Errorf("the node has %d teams; want the one", len(ts))
	}
}
