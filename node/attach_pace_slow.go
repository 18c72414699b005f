//go:build fieldmesh_slowchunks

package node

import "time"

// chunkPace: this file exists only in builds with the test-only tag fieldmesh_slowchunks, which no
// normal build has. Each chunk is served this long after it is asked for: a photo of a dozen chunks
// takes a few seconds on loopback, long enough to kill its sender halfway (TestAttachmentE2E).
const chunkPace = 250 * time.Millisecond
