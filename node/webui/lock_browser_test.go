package webui

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestBrowserLockAndUnlock drives the lock screen in headless chromium against a real node run by the
// daemon's lock (node/session): signed in, the page shows a conversation; the Lock button locks the
// device, and the page then shows only the passphrase form (no team name, no message, no navigation)
// and the node serves nothing. A wrong passphrase is refused and says so; after the wait it imposes,
// the right one unlocks, and the conversation is back.
func TestBrowserLockAndUnlock(t *testing.T) {
	chromium, slow := browserSetup(t)
	logs := &syncBuffer{}
	const pass = "a long passphrase for this device"
	dir := t.TempDir()
	st, err := storage.Create(dir, storage.Options{Passphrase: []byte(pass), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Init(st, "Dr Banda"); err != nil {
		t.Fatal(err)
	}
	clk := &testClock{t: time.Now()}
	ses, err := session.Start(session.Config{Dir: dir, IdleLock: -1, UnreachedLock: -1, Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Node:   node.Config{NoMDNS: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ses.Close() })
	n, _, err := ses.Current()
	if err != nil {
		t.Fatal(err)
	}
	const teamName, text = "Maternity Ward 3", "Bed 4: BP 160/110, starting magnesium"
	team, err := n.CreateTeam(teamName, crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Send(team.ID.String(), crdt.Message{Text: text, Patient: "MRN-448812"}); err != nil {
		t.Fatal(err)
	}
	ui := startUIConfig(t, Config{Lock: ses, StatusEvery: time.Second}, logs)

	_, cancel, tab := newBrowser(t, chromium, 90*slow*time.Second)
	defer cancel()
	var blog browserLog
	blog.listen(tab, "A")
	teamButton := `//button[@data-team="` + team.ID.String() + `"]`
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.WaitVisible(`//span[@id="conn"][.="live"]`),
		chromedp.Click(teamButton),
		chromedp.WaitVisible(`//p[@class="text"][.="`+text+`"]`),
	); err != nil {
		t.Fatalf("sign in and open the conversation: %v", err)
	}

	if err := chromedp.Do(tab,
		chromedp.Click(chromedp.CSS("#lock-btn")),
		chromedp.WaitVisible(chromedp.CSS("#unlock-pass")),
		chromedp.WaitVisible(`//span[@id="conn"][.="locked"]`),
	); err != nil {
		t.Fatalf("lock from the page: %v", err)
	}
	if !ses.Locked() {
		t.Fatal("the page shows the lock screen but the device is not locked")
	}
	body, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerHTML`))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{text, teamName, "MRN-448812"} {
		if strings.Contains(body, secret) {
			t.Errorf("the locked page still holds %q", secret)
		}
	}
	for _, sel := range []string{"#nav-teams", "#lowdata", "#lock-btn"} {
		if err := chromedp.Do(tab, chromedp.WaitNotVisible(chromedp.CSS(sel))); err != nil {
			t.Errorf("%s is visible on the lock screen: %v", sel, err)
		}
	}
	if v, err := chromedp.Run(tab, chromedp.Action[[]string](axeCheck)); err != nil || len(v) > 0 {
		t.Errorf("lock screen: axe-core: %v %q", err, v)
	}
	// The node serves nothing to the page while locked.
	status, err := chromedp.Run(tab, chromedp.Evaluate[float64](`fetch("/api/v1/teams", {headers: {"X-Fieldmesh-Background": "1"}}).then((r) => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != 423 {
		t.Errorf("GET /api/v1/teams while locked: %v, %v; want 423", status, err)
	}

	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS("#unlock-pass"), "a typo"),
		chromedp.Click(`//form[@id="unlock-form"]//button[@type="submit"]`),
		chromedp.WaitVisible(`//p[@id="error"][contains(., "wrong passphrase")]`),
	); err != nil {
		t.Fatalf("a first wrong passphrase: %v", err)
	}
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.getElementById("error").hidden = true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS("#unlock-pass"), "not the passphrase"),
		chromedp.Click(`//form[@id="unlock-form"]//button[@type="submit"]`),
		chromedp.WaitVisible(`//p[@id="error"][contains(., "wrong passphrase")]`),
	); err != nil {
		t.Fatalf("a wrong passphrase: %v", err)
	}
	if !ses.Locked() {
		t.Fatal("a wrong passphrase unlocked the device")
	}
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS("#unlock-pass"), pass),
		chromedp.Click(`//form[@id="unlock-form"]//button[@type="submit"]`),
		chromedp.WaitVisible(`//p[@id="error"][contains(., "try again in")]`),
	); err != nil {
		t.Fatalf("the right passphrase during the wait: %v", err)
	}
	clk.Add(time.Second) // the wait after two wrong passphrases
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS("#unlock-pass"), pass),
		chromedp.Click(`//form[@id="unlock-form"]//button[@type="submit"]`),
		chromedp.WaitVisible(teamButton),
		chromedp.Click(teamButton),
		chromedp.WaitVisible(`//p[@class="text"][.="`+text+`"]`),
	); err != nil {
		t.Fatalf("unlock with the passphrase: %v", err)
	}
	if ses.Locked() {
		t.Fatal("the page shows the conversation but the device is locked")
	}
	cancel()
	blog.wg.Wait()
	// The refusals this test asks for (a read while locked, a wrong passphrase, a try during the wait)
	// show in the console as failed loads; anything else is an error.
	blog.mu.Lock()
	for _, e := range blog.errors {
		if !strings.Contains(e, "status of 423 (Locked)") && !strings.Contains(e, "status of 403 (Forbidden)") {
			t.Errorf("browser: %s", e)
		}
	}
	blog.mu.Unlock()
	if strings.Contains(logs.String(), pass) {
		t.Error("the logs hold the passphrase")
	}
}
