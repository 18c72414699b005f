package catchup

import (
	"fmt"
	"testing"
)

// BenchmarkCatchup measures the "send every id" baseline that range-based reconciliation is
// compared against: two nodes share n envelopes of 512 bytes and one of them lacks d more. It
// reports the frame bytes exchanged both ways per missing envelope (B/missing), the total
// (wire-B), frames and the initiator's round trips, at the default frame size.
func BenchmarkCatchup(b *testing.B) {
	const n, size = 10_000, 512
	for _, d := range []int{1, 100} {
		for _, lacks := range []string{"initiator", "responder"} {
			b.Run(fmt.Sprintf("n=%d/d=%d/lacking=%s", n, d, lacks), func(b *testing.B) {
				full, part := sourceOf(size, keys(0, n+d)...), sourceOf(size, keys(0, n)...)
				ini, res := part, full
				if lacks == "responder" {
					ini, res = full, part
				}
				var r runResult
				for b.Loop() {
					r = run(b, NewInitiator(ini, 0), NewResponder(res, 0))
				}
				if got := len(r.toInitiator) + len(r.toResponder); got != d {
					b.Fatalf("transferred %d envelopes; want %d", got, d)
				}
				wire := float64(r.initiator.BytesSent + r.initiator.BytesReceived)
				b.ReportMetric(wire/float64(d), "B/missing")
				b.ReportMetric(wire, "wire-B")
				b.ReportMetric(float64(r.initiator.FramesSent+r.initiator.FramesReceived), "frames")
				b.ReportMetric(float64(r.initiator.RoundTrips), "round-trips")
			})
		}
	}
}
