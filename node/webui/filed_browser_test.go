package webui

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestBrowserShowsFiled: once the team's record gateway files a message (an admin's filed op, kind 8),
// the conversation shows "Filed to record" with the record's reference on that message, live, and not
// on a message that was not filed.
func TestBrowserShowsFiled(t *testing.T) {
	chromium, slow := browserSetup(t)
	n := newNode(t, "Dr Banda", &syncBuffer{})
	team, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	filed, _, err := n.Send(team.ID.String(), crdt.Message{Text: "fever settled", ForRecord: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Send(team.ID.String(), crdt.Message{Text: "not for the record"}); err != nil {
		t.Fatal(err)
	}
	ui := startUI(t, n, &syncBuffer{}, time.Second)
	_, cancel, tab := newBrowser(t, chromium, 60*slow*time.Second)
	defer cancel()
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.Click(chromedp.CSS(`button[data-team="`+team.ID.String()+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#messages li[data-id="`+filed.String()+`"] .status`)),
	); err != nil {
		t.Fatalf("open the conversation: %v", err)
	}
	status := func(id string) string {
		t.Helper()
		got, err := chromedp.Run(tab, chromedp.Evaluate[string](`(document.querySelector('#messages li[data-id="`+id+`"] .status') || {}).textContent || ""`))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := status(filed.String()); strings.Contains(got, "Filed") {
		t.Fatalf("before any filing the message shows %q", got)
	}
	const ref = "Communication/8f1c"
	if err := n.PublishFiled(team.ID, crdt.Filed{At: uint64(time.Now().UnixMilli()), Entries: []crdt.FiledEntry{{Message: filed, Ref: ref}}}); err != nil {
		t.Fatal(err)
	}
	// Live: the page is not reloaded; the filed status arrives with the next update.
	if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](`(document.querySelector('#messages li[data-id="`+filed.String()+`"] .status') || {}).textContent.startsWith("Filed to record")`, chromedp.WithPollingTimeout(20*slow*time.Second))); err != nil {
		t.Fatalf("the filed status did not appear: %v (shown: %q)", err, status(filed.String()))
	}
	if got := status(filed.String()); !strings.Contains(got, "Filed to record "+ref) {
		t.Errorf("filed message shows %q; want it to name %s", got, ref)
	}
	all, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#messages li")).filter(li => li.dataset.id !== "`+filed.String()+`").map(li => li.querySelector(".status").textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatal("the other message is not shown")
	}
	for _, s := range all {
		if strings.Contains(s, "Filed") {
			t.Errorf("a message that was not filed shows %q", s)
		}
	}
}
