//go:build !fieldmesh_slowchunks

package node

import "time"

// chunkPace is how long the node waits before serving each chunk: none. A build with the test-only
// tag fieldmesh_slowchunks (attach_pace_slow.go) paces chunks, so that an end-to-end test can kill a
// sender halfway through a transfer on loopback, where it would otherwise take milliseconds.
const chunkPace time.Duration = 0
