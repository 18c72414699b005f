package crdt

import "github.com/fieldmesh/fieldmesh/sync/wire"

// Errors of the decoders. Each decoding error wraps one of these. They are
// the errors of sync/wire, whose Reader every decoder of this package uses,
// so errors.Is(err, crdt.ErrTruncated) and errors.Is(err, wire.ErrTruncated)
// are the same test.
var (
	ErrTooLarge  = wire.ErrTooLarge
	ErrTruncated = wire.ErrTruncated
	ErrVersion   = wire.ErrVersion
	ErrTrailing  = wire.ErrTrailing
	ErrMalformed = wire.ErrMalformed
	ErrInvalid   = wire.ErrInvalid
)
