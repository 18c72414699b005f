package webui

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestBrowserShowsOverrideVisibly: a message whose text holds a right-to-left override is shown in the
// order it was written, with the override as a visible mark, so "dose 5<RLO>01 mg" cannot read as
// "dose 510 mg"; a patient reference with an isolate is shown the same way.
func TestBrowserShowsOverrideVisibly(t *testing.T) {
	chromium, slow := browserSetup(t)
	n := newNode(t, "Dr Banda", &syncBuffer{})
	team, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Send(team.ID.String(), crdt.Message{Text: "dose 5\u202e01 mg", Patient: "bay\u20674"}); err != nil {
		t.Fatal(err)
	}
	ui := startUI(t, n, &syncBuffer{}, time.Second)
	_, cancel, tab := newBrowser(t, chromium, 60*slow*time.Second)
	defer cancel()
	if err := chromedp.Do(tab,
		chromedp.Navigate(ui.LoginURL()),
		chromedp.Click(chromedp.CSS(`button[data-team="`+team.ID.String()+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#messages li .text")),
	); err != nil {
		t.Fatalf("open the conversation: %v", err)
	}
	got, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("#messages li .text").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "dose 5<U+202E>01 mg"; got != want {
		t.Errorf("message shown as %q; want %q", got, want)
	}
	all, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("#messages").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if r == '\u202e' || r == '\u2067' {
			t.Errorf("the page shows a bidi control %U", r)
		}
	}
}
