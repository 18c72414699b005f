package recon

import "fmt"

// Protocol is the libp2p protocol id of a sync stream: a hello naming the topic and what the
// opener asks for, the responder's answer, then recon frames (or a membership exchange).
const Protocol = "/fieldmesh/sync/9.0.0"

// Mode is what the opener of a sync stream asks for.
type Mode byte

// Modes.
const (
	// ModeSync: reconcile the topic (the opener believes the responder may sync).
	ModeSync Mode = 0
	// ModeMembership: exchange membership ops (the opener believes the responder was removed, or
	// that the responder believes so): see sync/device's MembershipFor.
	ModeMembership Mode = 1
	// ModeGive: the opener hands over a few envelopes it just published, one per frame, then an
	// empty frame: for a peer of the topic that gossip does not reach first-hand (outside the
	// opener's mesh).
	ModeGive Mode = 2
)

// Answer is the responder's first byte: what the stream carries next. A responder that will do
// neither resets the stream without a word.
type Answer byte

// Answers.
const (
	// AnswerSync: recon frames follow.
	AnswerSync Answer = 0
	// AnswerMembership: each side sends its membership ops, one per frame, then an empty frame.
	AnswerMembership Answer = 1
	// AnswerTake: the responder takes the envelopes of a ModeGive stream.
	AnswerTake Answer = 2
)

// Hello is the first frame of a sync stream.
//
//	topic 16 | mode 1
type Hello struct {
	Topic [16]byte
	Mode  Mode
}

// HelloSize is the length of a marshalled Hello.
const HelloSize = 17

// Marshal returns the hello's frame.
func (h Hello) Marshal() []byte {
	return append(h.Topic[:], byte(h.Mode))
}

// ParseHello decodes a hello frame. It refuses any other length and unknown modes.
func ParseHello(b []byte) (Hello, error) {
	var h Hello
	if len(b) != HelloSize {
		return h, fmt.Errorf("%w: hello of %d bytes, want %d", ErrMalformed, len(b), HelloSize)
	}
	copy(h.Topic[:], b)
	h.Mode = Mode(b[16])
	if h.Mode > ModeGive {
		return h, fmt.Errorf("%w: unknown mode %d", ErrMalformed, b[16])
	}
	return h, nil
}

// ParseAnswer decodes the responder's answer frame (one byte).
func ParseAnswer(b []byte) (Answer, error) {
	if len(b) != 1 || Answer(b[0]) > AnswerTake {
		return 0, fmt.Errorf("%w: bad answer", ErrMalformed)
	}
	return Answer(b[0]), nil
}
