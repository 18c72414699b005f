package catchup

import "errors"

// Errors returned by Session, ReadFrame and WriteFrame. They are wrapped with detail (use
// errors.Is). Every error from Handle is final: the session keeps returning it and the caller
// drops the stream (and, for the protocol errors below, may count it against the peer).
var (
	// ErrVersion: the frame's version byte is not 1.
	ErrVersion = errors.New("catchup: unsupported frame version")
	// ErrMalformed: the frame (or a length prefix) does not decode: too short, unknown type,
	// reserved flag bits set, non-minimal uvarint, a count larger than the bytes that follow,
	// trailing bytes, an empty frame with the "more" flag set, or ids not strictly ascending.
	ErrMalformed = errors.New("catchup: malformed frame")
	// ErrFrameTooLarge: a frame longer than MaxFrameSize reached Handle, or a length prefix
	// larger than the limit given to ReadFrame.
	ErrFrameTooLarge = errors.New("catchup: frame too large")
	// ErrUnexpectedFrame: a well-formed frame of a type the session does not expect in its
	// current state (including any frame after the session is done).
	ErrUnexpectedFrame = errors.New("catchup: unexpected frame")
	// ErrUnsolicited: the peer sent an envelope this side announced it has or did not ask for,
	// or asked for an id this side never announced.
	ErrUnsolicited = errors.New("catchup: unsolicited item")
	// ErrTooManyItems: a HAVE list or the envelopes given would exceed MaxItems.
	ErrTooManyItems = errors.New("catchup: too many items")
	// ErrEnvelopeTooLarge: an envelope from the Source is longer than
	// maxFrame-EnvelopeOverhead bytes, so it cannot be sent in one frame.
	ErrEnvelopeTooLarge = errors.New("catchup: envelope too large for frame")
	// ErrState: the caller used the session out of order (Start twice, Handle on an initiator
	// before Start, a nil Source).
	ErrState = errors.New("catchup: session used out of order")
)
