package recordgw

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

var benchMessages = flag.Int("recordgw.messages", 1000, "messages BenchmarkFile queues and files (make record-bench: 10,000)")

// benchTeamSize is how many of them go to one team.
const benchTeamSize = 500

// countingTransport counts the bytes of requests and answers.
type countingTransport struct {
	sent, received atomic.Int64
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.ContentLength > 0 {
		c.sent.Add(r.ContentLength)
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = countingBody{resp.Body, &c.received}
	}
	return resp, err
}

// BenchmarkFile: -recordgw.messages (10,000) messages marked for the record, queued on a real node,
// filed to the local FHIR server in one pass; reports messages per second and the bytes of the
// requests and answers per message. The sends, and a warm-up message filed first, are not timed.
func BenchmarkFile(b *testing.B) {
	srv := fhirtest.Shared(b)
	for b.Loop() {
		b.StopTimer()
		g := newClinic(b, nil)
		// One message first, so the server's first-write schema compilation is not timed.
		g.send(b, crdt.Message{Text: "warm-up", ForRecord: true})
		if rep := pass(b, gateway(b, g, nil, Config{FHIR: srv.URL})); rep.Filed != 1 {
			b.Fatalf("warm-up pass: %+v", rep)
		}
		start := time.Now()
		// Spread over teams of benchTeamSize messages: the node recomputes a team's state on each
		// send, so one team of 10,000 would take the setup minutes; the gateway files all teams.
		var teams []string
		for i := range *benchMessages {
			if i%benchTeamSize == 0 {
				ti, err := g.CreateTeam(fmt.Sprintf("Ward %d", i/benchTeamSize), crdt.Clinical)
				if err != nil {
					b.Fatal(err)
				}
				teams = append(teams, ti.ID.String())
			}
			m := crdt.Message{Text: fmt.Sprintf("obs %d: BP 120/80, pulse 72, for the record", i), ForRecord: true, Priority: crdt.Priority(i % 3)}
			if _, _, err := g.Send(teams[len(teams)-1], m); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("queued %d messages in %v", *benchMessages, time.Since(start))
		ct := &countingTransport{}
		gw := gateway(b, g, nil, Config{FHIR: srv.URL, Client: &http.Client{Transport: ct}})
		b.StartTimer()
		t0 := time.Now()
		rep, err := gw.Pass(context.Background())
		el := time.Since(t0)
		b.StopTimer()
		if err != nil || rep.Filed != *benchMessages || rep.Queued != 0 {
			b.Fatalf("pass: %+v, %v; want all %d filed", rep, err, *benchMessages)
		}
		n := float64(*benchMessages)
		b.ReportMetric(n/el.Seconds(), "msgs/s")
		b.ReportMetric(float64(ct.sent.Load())/n, "req-bytes/msg")
		b.ReportMetric(float64(ct.received.Load())/n, "resp-bytes/msg")
		g.stop()
		b.StartTimer()
	}
}
