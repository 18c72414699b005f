package catchup

import (
	"bytes"
	"fmt"
	"iter"
	"slices"
)

// Item names one envelope of a topic: its timestamp (a crdt.HLC) and its id (a crdt.OpID).
type Item struct {
	Time uint64
	ID   [32]byte
}

// Source is a read-only view of the envelopes of one topic; the node backs it with storage.
// A session calls Items once (the initiator in Start, the responder on the first HAVE frame) and
// works on that snapshot; it calls Envelope only for ids of the snapshot, and does not retain
// the returned slice beyond copying it into a frame. Envelopes stored while the session runs are
// not seen by it.
type Source interface {
	// Items returns the topic's items sorted by (Time, ID). The session only relies on the ids;
	// it tolerates any order and duplicates.
	Items() ([]Item, error)
	// Envelope returns the marshalled envelope with the given id.
	Envelope(id [32]byte) ([]byte, error)
}

// Stats counts what a session did. Bytes are frame bytes, without any transport framing (such as
// WriteFrame's length prefix).
type Stats struct {
	FramesSent, FramesReceived       uint64
	BytesSent, BytesReceived         uint64
	EnvelopesSent, EnvelopesReceived uint64
	// RoundTrips counts the times this side sent frames and then received the peer's answer:
	// the round-trip latencies it waited for. In a full run the initiator's count is the
	// number of HAVE frames; the responder's is one less, plus 1 when it asked for envelopes.
	RoundTrips uint64
}

type state uint8

const (
	stateNew       state = iota // initiator before Start
	stateAwaitHave              // responder: waiting for (more) HAVE frames
	stateAwaitNext              // initiator: sent a HAVE frame with the more flag
	stateAwaitGive              // initiator: sent all HAVE frames; responder: sent WANT, waiting for envelopes
	stateAwaitWant              // initiator: received all GIVE frames
	stateDone
)

func (s state) String() string {
	switch s {
	case stateNew:
		return "not started"
	case stateAwaitHave:
		return "awaiting HAVE"
	case stateAwaitNext:
		return "awaiting NEXT"
	case stateAwaitGive:
		return "awaiting GIVE"
	case stateAwaitWant:
		return "awaiting WANT"
	case stateDone:
		return "done"
	}
	return fmt.Sprintf("state %d", uint8(s))
}

// expects returns the frame type the state waits for; false when it waits for none.
func (s state) expects() (frameType, bool) {
	switch s {
	case stateAwaitHave:
		return typeHave, true
	case stateAwaitNext:
		return typeNext, true
	case stateAwaitGive:
		return typeGive, true
	case stateAwaitWant:
		return typeWant, true
	}
	return 0, false
}

// Session is one end of one catch-up exchange for one topic over one stream. It owns no
// goroutine, socket, timer or disk: the caller feeds it the peer's frames and sends the frames
// it returns, in order. A Session is not safe for concurrent use.
type Session struct {
	src       Source
	initiator bool
	maxFrame  int
	maxItems  int // MaxItems; lowered by tests
	state     state
	err       error // sticky: once set, every Handle returns it

	loaded bool
	own    [][32]byte // the Source's ids, sorted ascending, unique
	next   int        // initiator: index in own of the next id to announce

	// The peer's current stream of ids (HAVE, GIVE or WANT) must be strictly ascending. cur is a
	// merge cursor: into own (HAVE and WANT received, GIVE received by the initiator) or into
	// wants (GIVE received by the responder).
	prev    [32]byte
	hasPrev bool
	cur     int

	peerHas   []bool     // responder: peerHas[i] when the peer announced own[i]
	haveCount int        // responder: ids received in HAVE frames
	wants     [][32]byte // ids to transfer to the wanting side, ascending

	awaiting bool // sent frames since the last one received
	stats    Stats
}

// NewInitiator returns the session of the side that opened the stream. maxFrame is the largest
// frame it sends, in bytes: 0 means DefaultFrameSize, and values are clamped to
// [MinFrameSize, MaxFrameSize]. src must not be nil.
func NewInitiator(src Source, maxFrame int) *Session {
	return newSession(src, maxFrame, true)
}

// NewResponder returns the session of the side that accepted the stream. maxFrame is as for
// NewInitiator.
func NewResponder(src Source, maxFrame int) *Session {
	return newSession(src, maxFrame, false)
}

func newSession(src Source, maxFrame int, initiator bool) *Session {
	switch {
	case maxFrame <= 0:
		maxFrame = DefaultFrameSize
	case maxFrame < MinFrameSize:
		maxFrame = MinFrameSize
	case maxFrame > MaxFrameSize:
		maxFrame = MaxFrameSize
	}
	s := &Session{src: src, initiator: initiator, maxFrame: maxFrame, maxItems: MaxItems}
	if !initiator {
		s.state = stateAwaitHave
	}
	return s
}

// Start returns the first frame of the exchange: for the initiator the first HAVE frame, for a
// responder nil (it speaks only when spoken to). An initiator calls Items here, and fails with
// ErrTooManyItems when it has more than MaxItems ids. Start may be called once.
func (s *Session) Start() ([]byte, error) {
	if !s.initiator {
		return nil, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	if s.state != stateNew {
		return nil, fmt.Errorf("%w: Start called twice", ErrState)
	}
	if err := s.load(); err != nil {
		s.err = err
		return nil, err
	}
	if len(s.own) > s.maxItems {
		s.err = fmt.Errorf("%w: %d items to announce, limit %d", ErrTooManyItems, len(s.own), s.maxItems)
		return nil, s.err
	}
	f := s.haveFrame()
	s.sent([][]byte{f})
	return f, nil
}

// Handle consumes one frame from the peer, of at most MaxFrameSize bytes. It returns the frames
// to send, in order, each at most maxFrame bytes (possibly none); the envelopes received, as
// raw bytes that are not validated or stored (the caller validates and stores them; the
// session does not assume it did); and done=true once this side has nothing more to send or to
// expect. When done is true, out may still hold the last frames: send them, then close the
// stream. Handle does not retain frame; received and out are newly allocated and owned by the
// caller.
//
// Any error is final (the session keeps returning it) and means the caller drops the stream: a
// frame that does not decode (ErrVersion, ErrMalformed, ErrFrameTooLarge), a frame of the wrong
// type for the state (ErrUnexpectedFrame), an unsolicited or out-of-order item (ErrUnsolicited,
// ErrMalformed), too many items (ErrTooManyItems), an envelope this side cannot fit in a frame
// (ErrEnvelopeTooLarge), or an error of the Source (wrapped). Calling Handle on an initiator
// before Start fails with ErrState.
func (s *Session) Handle(frame []byte) (out [][]byte, received [][]byte, done bool, err error) {
	if s.err != nil {
		return nil, nil, false, s.err
	}
	if s.state == stateNew {
		return nil, nil, false, fmt.Errorf("%w: Handle called before Start", ErrState)
	}
	s.stats.FramesReceived++
	s.stats.BytesReceived += uint64(len(frame))
	if s.awaiting {
		s.stats.RoundTrips++
		s.awaiting = false
	}
	out, received, err = s.handle(frame)
	if err != nil {
		s.err = err
		return nil, nil, false, err
	}
	s.stats.EnvelopesReceived += uint64(len(received))
	s.sent(out)
	return out, received, s.state == stateDone, nil
}

// Stats returns the session's counters so far.
func (s *Session) Stats() Stats { return s.stats }

func (s *Session) sent(frames [][]byte) {
	for _, f := range frames {
		s.stats.FramesSent++
		s.stats.BytesSent += uint64(len(f))
	}
	if len(frames) > 0 {
		s.awaiting = true
	}
}

func (s *Session) handle(b []byte) (out, received [][]byte, err error) {
	f, err := parseFrame(b)
	if err != nil {
		return nil, nil, err
	}
	if t, ok := s.state.expects(); !ok || t != f.typ {
		return nil, nil, fmt.Errorf("%w: %v while %v", ErrUnexpectedFrame, f.typ, s.state)
	}
	switch {
	case f.typ == typeHave:
		out, err = s.onHave(&f)
	case f.typ == typeNext:
		out = [][]byte{s.haveFrame()}
	case f.typ == typeGive && s.initiator:
		received, err = s.onGiveToInitiator(&f)
	case f.typ == typeGive:
		received, err = s.onGiveToResponder(&f)
	case f.typ == typeWant:
		out, err = s.onWant(&f)
	}
	if err != nil {
		return nil, nil, err
	}
	return out, received, nil
}

// load reads the Source's ids once, sorted and deduplicated.
func (s *Session) load() error {
	if s.loaded {
		return nil
	}
	if s.src == nil {
		return fmt.Errorf("%w: nil Source", ErrState)
	}
	items, err := s.src.Items()
	if err != nil {
		return fmt.Errorf("catchup: listing items: %w", err)
	}
	ids := make([][32]byte, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	slices.SortFunc(ids, compareID)
	s.own = slices.Compact(ids)
	if !s.initiator {
		s.peerHas = make([]bool, len(s.own))
	}
	s.loaded = true
	return nil
}

func compareID(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) }

// ascending checks that id follows the previous id of the peer's current stream.
func (s *Session) ascending(t frameType, id [32]byte) error {
	if s.hasPrev && compareID(id, s.prev) <= 0 {
		return fmt.Errorf("%w: %v ids not strictly ascending", ErrMalformed, t)
	}
	s.prev, s.hasPrev = id, true
	return nil
}

// seek advances the merge cursor over sorted to the first id >= id and reports whether it is id.
func seek(sorted [][32]byte, cur *int, id [32]byte) bool {
	for *cur < len(sorted) && compareID(sorted[*cur], id) < 0 {
		*cur++
	}
	return *cur < len(sorted) && sorted[*cur] == id
}

// resetStream prepares for the peer's next stream of ids.
func (s *Session) resetStream() {
	s.prev, s.hasPrev, s.cur = [32]byte{}, false, 0
}

// haveFrame returns the initiator's next HAVE frame and moves to the matching state.
func (s *Session) haveFrame() []byte {
	end := min(s.next+idsPerFrame(s.maxFrame), len(s.own))
	more := end < len(s.own)
	f := idFrame(typeHave, more, s.own[s.next:end])
	s.next = end
	if more {
		s.state = stateAwaitNext
	} else {
		s.state = stateAwaitGive
		s.resetStream()
	}
	return f
}

// onHave (responder) notes which of its ids the peer has and which of the peer's it lacks. After
// the last HAVE frame it gives what the peer lacks and asks for what it lacks.
func (s *Session) onHave(f *frame) ([][]byte, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	if f.n > s.maxItems-s.haveCount {
		return nil, fmt.Errorf("%w: more than %d ids in HAVE", ErrTooManyItems, s.maxItems)
	}
	s.haveCount += f.n
	for i := range f.n {
		id := f.id(i)
		if err := s.ascending(typeHave, id); err != nil {
			return nil, err
		}
		if seek(s.own, &s.cur, id) {
			s.peerHas[s.cur] = true
		} else {
			s.wants = append(s.wants, id)
		}
	}
	if f.more {
		return [][]byte{nextFrame()}, nil
	}
	out, err := s.giveFrames(func(yield func([32]byte) bool) {
		for i, id := range s.own {
			if !s.peerHas[i] && !yield(id) {
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	out = append(out, idFrames(typeWant, s.wants, s.maxFrame)...)
	s.own, s.peerHas = nil, nil // the rest is checked against wants
	s.resetStream()
	if len(s.wants) == 0 {
		s.state = stateDone
	} else {
		s.state = stateAwaitGive
	}
	return out, nil
}

// onGiveToInitiator accepts envelopes the initiator did not announce, in ascending id order.
func (s *Session) onGiveToInitiator(f *frame) ([][]byte, error) {
	if uint64(f.n) > uint64(s.maxItems)-s.stats.EnvelopesReceived {
		return nil, fmt.Errorf("%w: more than %d envelopes in GIVE", ErrTooManyItems, s.maxItems)
	}
	received := make([][]byte, 0, f.n)
	for _, e := range f.give {
		if err := s.ascending(typeGive, e.id); err != nil {
			return nil, err
		}
		if seek(s.own, &s.cur, e.id) {
			return nil, fmt.Errorf("%w: GIVE of %x, which this side announced", ErrUnsolicited, e.id[:4])
		}
		received = append(received, bytes.Clone(e.env))
	}
	if !f.more {
		s.state = stateAwaitWant
		s.resetStream()
	}
	return received, nil
}

// onWant (initiator) collects the ids the responder asks for, a subset of those announced, in
// ascending order. After the last WANT frame it gives them and is done.
func (s *Session) onWant(f *frame) ([][]byte, error) {
	for i := range f.n {
		id := f.id(i)
		if !seek(s.own, &s.cur, id) {
			return nil, fmt.Errorf("%w: WANT of %x, not announced or out of order", ErrUnsolicited, id[:4])
		}
		s.cur++ // strictly ascending: the next id must be past this one
		s.wants = append(s.wants, id)
	}
	if f.more {
		return nil, nil
	}
	s.state = stateDone
	s.own = nil
	if len(s.wants) == 0 {
		return nil, nil
	}
	out, err := s.giveFrames(slices.Values(s.wants))
	s.wants = nil
	return out, err
}

// onGiveToResponder accepts envelopes the responder asked for, in ascending id order.
func (s *Session) onGiveToResponder(f *frame) ([][]byte, error) {
	received := make([][]byte, 0, f.n)
	for _, e := range f.give {
		if !seek(s.wants, &s.cur, e.id) {
			return nil, fmt.Errorf("%w: GIVE of %x, not asked for or out of order", ErrUnsolicited, e.id[:4])
		}
		s.cur++
		received = append(received, bytes.Clone(e.env))
	}
	if !f.more {
		s.state = stateDone
		s.wants = nil
	}
	return received, nil
}

// giveFrames loads the envelopes of ids from the Source and packs them into GIVE frames.
func (s *Session) giveFrames(ids iter.Seq[[32]byte]) ([][]byte, error) {
	w := newGiveWriter(s.maxFrame)
	var n uint64
	for id := range ids {
		env, err := s.src.Envelope(id)
		if err != nil {
			return nil, fmt.Errorf("catchup: loading envelope %x: %w", id[:4], err)
		}
		if len(env) > s.maxFrame-EnvelopeOverhead {
			return nil, fmt.Errorf("%w: envelope %x is %d bytes, limit %d for %d-byte frames",
				ErrEnvelopeTooLarge, id[:4], len(env), s.maxFrame-EnvelopeOverhead, s.maxFrame)
		}
		w.add(id, env)
		n++
	}
	s.stats.EnvelopesSent += n
	return w.finish(), nil
}
