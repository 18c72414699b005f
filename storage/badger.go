package storage

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Phone-sized Badger tuning; the package doc explains each number.
const (
	memTableSize     = 8 << 20  // bytes; Badger default 64 MiB
	numMemtables     = 2        // default 5
	blockCacheSize   = 4 << 20  // bytes; default 256 MiB
	indexCacheSize   = 4 << 20  // bytes; default 0 (required with encryption)
	valueLogFileSize = 16 << 20 // bytes; default 1 GiB
	valueThreshold   = 1 << 20  // Badger's maximum: every value stays inline in the LSM tree (delete.go)
	numCompactors    = 2        // default 4; Badger refuses 1
	numL0Tables      = 2        // default 5
	numL0TablesStall = 6        // default 15
	numGoroutines    = 2        // Stream framework workers; default 8
)

// backgroundCompactors is numCompactors, except in the deletion test's
// control, which turns background compaction off so that no compaction can
// make a deletion final behind its back (delete_test.go).
var backgroundCompactors = numCompactors

// BadgerOptions returns the store's Badger options for a database in path
// encrypted under dataKey (32 bytes): the phone-sized tuning above, synced
// writes, no compression, and Badger's warnings and errors sent to logger
// (nil discards them). Other encrypted Badger databases of fieldmesh (the
// clinic relay's) start from these and adjust what they need.
func BadgerOptions(path string, dataKey []byte, logger *slog.Logger) badger.Options {
	return badgerOptions(path, dataKey, logger)
}

func badgerOptions(path string, dataKey []byte, logger *slog.Logger) badger.Options {
	return badger.DefaultOptions(path).
		WithSyncWrites(true).
		WithEncryptionKey(dataKey).
		WithIndexCacheSize(indexCacheSize).
		WithBlockCacheSize(blockCacheSize).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(backgroundCompactors).
		WithNumLevelZeroTables(numL0Tables).
		WithNumLevelZeroTablesStall(numL0TablesStall).
		WithNumGoroutines(numGoroutines).
		WithCompression(options.None).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{logger})
}

// badgerLogger routes Badger's warnings and errors to slog; its info and
// debug chatter is dropped. A nil logger drops everything.
type badgerLogger struct{ l *slog.Logger }

var _ badger.Logger = badgerLogger{}

func (b badgerLogger) Errorf(format string, args ...any) {
	b.log(slog.LevelError, format, args)
}

func (b badgerLogger) Warningf(format string, args ...any) {
	b.log(slog.LevelWarn, format, args)
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

func (b badgerLogger) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if b.l == nil || !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}
