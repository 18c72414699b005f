package webui

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: an event stream's watchers, a
// server, a browser reader.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide background goroutines started by libp2p and badger dependencies (as in node's tests).
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	)
}
