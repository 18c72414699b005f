//go:build unix

package relay

import (
	"io/fs"
	"syscall"
)

// allocated returns the bytes a file takes on disk: its allocated blocks.
func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return info.Size()
}
