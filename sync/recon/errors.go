package recon

import "errors"

// Errors returned by Session, ReadFrame and WriteFrame. They are wrapped with detail (use
// errors.Is). Every error from Start or Handle is final: the session keeps returning it and the
// caller drops the stream (and, for the protocol errors, may count it against the peer).
var (
	// ErrVersion: the frame's version byte is not 1.
	ErrVersion = errors.New("recon: unsupported frame version")
	// ErrMalformed: the frame (or a length prefix) does not decode: too short, unknown type,
	// reserved flag bits, a non-minimal uvarint or time code, a list or split over its limit, a
	// truncated field, trailing bytes, an empty envelope piece that continues.
	ErrMalformed = errors.New("recon: malformed frame")
	// ErrProtocol: a well-formed frame that does not fit the exchange: answers that do not
	// cover this side's open ranges exactly, split bounds outside the range they split, a NEED
	// for something that is not an id list, a FIN while something is still owed or open, a
	// flight that claimed to owe envelopes and carried none.
	ErrProtocol = errors.New("recon: protocol violation")
	// ErrFrameTooLarge: a frame longer than MaxFrameSize reached Handle, or a length prefix
	// larger than the limit given to ReadFrame.
	ErrFrameTooLarge = errors.New("recon: frame too large")
	// ErrUnexpectedFrame: a frame of a type the session does not expect in its state, including
	// any frame after the session is done.
	ErrUnexpectedFrame = errors.New("recon: unexpected frame")
	// ErrTooManyItems: the Source holds more than MaxItems items, or the peer sent more than
	// MaxItems envelopes.
	ErrTooManyItems = errors.New("recon: too many items")
	// ErrTooManyRounds: the peer kept the exchange going for more than MaxRounds flights.
	ErrTooManyRounds = errors.New("recon: too many rounds")
	// ErrEnvelopeTooLarge: an envelope (from the Source or from the peer) is longer than
	// MaxEnvelopeSize.
	ErrEnvelopeTooLarge = errors.New("recon: envelope too large")
	// ErrState: the caller used the session out of order (Start twice, Handle on an initiator
	// before Start, a nil Source).
	ErrState = errors.New("recon: session used out of order")
)
