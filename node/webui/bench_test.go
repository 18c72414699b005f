package webui

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// The fill costs more per message as the conversation grows (about 4 minutes for 10,000 here), so
// make bench runs a smaller conversation; -webui.messages=10000 gives the full-size figure.
var benchMessages = flag.Int("webui.messages", 1000, "messages in BenchmarkMessagesPage's conversation")

// BenchmarkMessagesPage serves the newest page of a conversation of -webui.messages messages (1,000
// by default) through the UI's handler, as the page asks for it on each live update, and reports it
// as a ratio over the node's own Messages call on the same team (the list every page is cut from),
// measured in the same run. The fill (one fsync per message) is not timed.
func BenchmarkMessagesPage(b *testing.B) {
	n := newNode(b, "Dr Banda", &syncBuffer{})
	team, err := n.CreateTeam("Ward 3", crdt.Clinical)
	if err != nil {
		b.Fatal(err)
	}
	for i := range *benchMessages {
		if _, _, err := n.Send(team.ID.String(), crdt.Message{Text: fmt.Sprintf("message %d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	l, err := Listen("")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	s, err := New(Config{Node: n}, l)
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	host := l.Addr().String()
	page := func() {
		r := httptest.NewRequest("GET", "/api/messages?team="+team.ID.String(), nil)
		r.Host = host
		r.AddCookie(&http.Cookie{Name: s.cookie, Value: s.session})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("page: %d %s", w.Code, w.Body)
		}
	}
	const rounds = 20
	start := time.Now()
	for range rounds {
		if _, err := n.Messages(team.ID.String()); err != nil {
			b.Fatal(err)
		}
	}
	base := time.Since(start) / rounds
	b.ResetTimer()
	for b.Loop() {
		page()
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(base), "x_messages_call")
	b.ReportMetric(float64(per.Microseconds()), "µs/page")
	b.Logf("%d messages: a page takes %v, the node's Messages call %v (%.1fx)", *benchMessages, per, base, float64(per)/float64(base))
}
