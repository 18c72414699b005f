package attach

import (
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// countConn counts the bytes written through a connection.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// BenchmarkWireBytes measures what moving one photo costs on the wire, over the attachment's own
// size: the chunks pulled (requests and answers, with their framing) and the manifest the message
// body carries. 337,602 bytes is the size of the 2 MB camera photo of TestAttachmentE2E after
// re-encoding (1600 × 1200, quality 75). libp2p's Noise and yamux framing add about 0.1% more
// (16 bytes per 16 KiB Noise frame, 12 per yamux frame) and are not counted here.
func BenchmarkWireBytes(b *testing.B) {
	const size = 337602
	data := payload(size, 9)
	a, chunks := sealT(b, data)
	manifest := len(crdt.Message{Attachments: []crdt.Attachment{a}}.Marshal()) - len(crdt.Message{}.Marshal())
	src := newMemStore()
	for i, c := range chunks {
		src.chunks[a.Chunks[i]] = c
	}
	var wire atomic.Int64
	b.ResetTimer()
	for range b.N {
		wire.Store(0)
		c1, c2 := net.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- Answer(countConn{c2, &wire}, src.get)
			c2.Close()
		}()
		dst := newMemStore()
		if _, err := Pull(countConn{c1, &wire}, Wants(a), dst); err != nil {
			b.Fatal(err)
		}
		c1.Close()
		if err := <-done; err != nil && err != io.EOF {
			b.Fatal(err)
		}
	}
	total := wire.Load() + int64(manifest)
	b.ReportMetric(float64(total)/float64(size), "wire/attachment")
	b.ReportMetric(float64(total), "wire-bytes")
	b.ReportMetric(float64(manifest), "manifest-bytes")
}
