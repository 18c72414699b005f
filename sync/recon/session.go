package recon

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// Item names one envelope of a topic: its timestamp (a crdt.HLC) and its id (a crdt.OpID).
type Item struct {
	Time uint64
	ID   [IDSize]byte
}

// IDSize is the length of an item's id in bytes: that of a crdt.OpID.
const IDSize = 16

// Source is a read-only view of the envelopes of one topic; the node backs it with storage.
// A session calls Items once (the initiator in Start, the responder on the peer's first frame)
// and works on that snapshot; it calls Envelope only for ids of the snapshot, and does not retain
// the returned slice beyond copying it into a frame. Envelopes stored while the session runs are
// not seen by it.
type Source interface {
	// Items returns the topic's items sorted by (Time, ID). The session sorts and drops exact
	// duplicates itself when they are not, at a cost: a sorted, duplicate-free slice is used as
	// is (and not modified).
	Items() ([]Item, error)
	// Envelope returns the marshalled envelope with the given id.
	Envelope(id [IDSize]byte) ([]byte, error)
}

// Stats counts what a session did. Bytes are frame bytes, without any transport framing (such as
// WriteFrame's length prefix).
type Stats struct {
	FramesSent, FramesReceived       uint64
	BytesSent, BytesReceived         uint64
	EnvelopesSent, EnvelopesReceived uint64
	// EnvelopeBytesSent and EnvelopeBytesReceived are the envelope bodies inside BytesSent and
	// BytesReceived: the rest is the protocol's overhead.
	EnvelopeBytesSent, EnvelopeBytesReceived uint64
	// RoundTrips counts the times this side sent frames and then received the peer's answer:
	// the round-trip latencies it waited for.
	RoundTrips uint64
}

// Limits. Every limit that protects a session from its peer is here; doc.go explains them.
const (
	// MinFrameSize, MaxFrameSize and DefaultFrameSize bound the frames a session sends, in
	// bytes: maxFrame 0 means DefaultFrameSize, and other values are clamped to [MinFrameSize,
	// MaxFrameSize]. A session accepts frames of up to MaxFrameSize whatever its own maxFrame,
	// so differently configured ends interoperate: read with ReadFrame(r, MaxFrameSize).
	MinFrameSize     = 4 << 10
	MaxFrameSize     = 4 << 20
	DefaultFrameSize = 64 << 10

	// MaxItems is the most items a session loads from its Source (Start, or the peer's first
	// frame, fails with ErrTooManyItems beyond it) and the most envelopes it accepts from its
	// peer. 2^20 items are about 28 years of a team sending 100 messages a day.
	MaxItems = 1 << 20
	// MaxEnvelopeSize is the longest envelope a session sends or accepts, in bytes. An envelope
	// longer than a frame is carried in pieces over several frames.
	MaxEnvelopeSize = 1 << 20
	// FlightSize is the envelope bytes a session sends per flight (the frames it returns from
	// one Handle call): at least one envelope, then no more than FlightSize bytes. The rest
	// waits for the next flight.
	FlightSize = 4 << 20
	// MaxRounds is the most flights a session accepts from its peer. An honest exchange of
	// MaxItems items each way needs a few thousand; the limit exists so that a peer that keeps
	// answering without progress cannot keep a session alive forever.
	MaxRounds = 1 << 17
)

// Config configures a session. The zero value works.
type Config struct {
	// MaxFrame is the largest frame the session sends, in bytes: 0 means DefaultFrameSize
	// (64 KiB), and other values are clamped to [MinFrameSize, MaxFrameSize].
	MaxFrame int
	// Rand is where an initiator gets its 16-byte session salt; nil means crypto/rand. A
	// deterministic Rand makes a whole exchange deterministic (tests, the simulator).
	Rand io.Reader
}

type state uint8

const (
	stateNew   state = iota // initiator before Start
	stateFirst              // responder before the peer's first frame
	stateWait               // waiting for (the rest of) the peer's flight
	stateDone
)

// open is one of this side's open ranges: a piece of its last message, waiting for the peer's
// answer.
type open struct {
	lo, hi  bound
	i, j    int     // the items of [lo, hi): indices into the item set
	list    bool    // an id list (else a fingerprint)
	listed  []int32 // list: the indices of the items listed, in order
	virtual bool    // the responder's initial range, the whole space: it has no fingerprint
}

// Session is one end of one reconciliation of one topic over one stream. It owns no goroutine,
// socket, timer or disk: the caller feeds it the peer's frames and sends the frames it returns,
// in order. A Session is not safe for concurrent use.
type Session struct {
	src       Source
	initiator bool
	maxFrame  int
	rand      io.Reader
	state     state
	err       error // sticky: once set, every call returns it

	set   *itemSet // nil until loaded
	opens []open   // this side's open ranges

	owed     []int32 // indices of items this side owes the peer, in the order they became owed
	nextOwed int     // owed[:nextOwed] are sent

	peerOwes   bool   // the peer's last flight said it still owes envelopes
	flightEnvs int    // envelopes received in the peer's current flight
	partial    []byte // an envelope arriving in pieces
	inPartial  bool
	rounds     int // RECON frames received

	maxRounds, maxItems, flightSize int // MaxRounds, MaxItems, FlightSize; lowered by tests

	awaiting bool // sent frames since the last one received
	stats    Stats
}

// NewInitiator returns the session of the side that opened the stream. maxFrame is the largest
// frame it sends, in bytes: 0 means DefaultFrameSize, and values are clamped to [MinFrameSize,
// MaxFrameSize]. src must not be nil.
func NewInitiator(src Source, maxFrame int) *Session {
	return NewInitiatorConfig(src, Config{MaxFrame: maxFrame})
}

// NewResponder returns the session of the side that accepted the stream. maxFrame is as for
// NewInitiator.
func NewResponder(src Source, maxFrame int) *Session {
	return NewResponderConfig(src, Config{MaxFrame: maxFrame})
}

// NewInitiatorConfig is NewInitiator with a Config.
func NewInitiatorConfig(src Source, cfg Config) *Session { return newSession(src, cfg, true) }

// NewResponderConfig is NewResponder with a Config.
func NewResponderConfig(src Source, cfg Config) *Session { return newSession(src, cfg, false) }

func newSession(src Source, cfg Config, initiator bool) *Session {
	m := cfg.MaxFrame
	switch {
	case m <= 0:
		m = DefaultFrameSize
	case m < MinFrameSize:
		m = MinFrameSize
	case m > MaxFrameSize:
		m = MaxFrameSize
	}
	s := &Session{src: src, initiator: initiator, maxFrame: m, rand: cfg.Rand, maxRounds: MaxRounds, maxItems: MaxItems, flightSize: FlightSize}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if !initiator {
		s.state = stateFirst
	}
	return s
}

// Start returns the first frame of the exchange: for the initiator its answer to the whole
// space (fingerprints of 16 ranges, or the list of its ids when it has few), for a responder nil
// (it speaks only when spoken to). An initiator calls Items here. Start may be called once.
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
	f, err := s.start()
	if err != nil {
		s.err = err
		return nil, err
	}
	s.state = stateWait
	s.sent([][]byte{f})
	return f, nil
}

func (s *Session) start() ([]byte, error) {
	var salt [saltLen]byte
	if _, err := io.ReadFull(s.rand, salt[:]); err != nil {
		return nil, fmt.Errorf("recon: reading salt: %w", err)
	}
	if err := s.load(salt); err != nil {
		return nil, err
	}
	b := s.newBuilder(1, append(header(typeRecon), 0))
	b.b = append(b.b, salt[:]...)
	whole := piece{lo: minBound, hi: infBound}
	b.answer([]piece{whole}, true)
	f, opens := b.finish()
	s.opens = opens
	s.set.flush()
	return f, nil
}

// Handle consumes one frame from the peer, of at most MaxFrameSize bytes. It returns the frames
// to send, in order, each at most maxFrame bytes (possibly none: the peer's flight continues);
// the envelopes received, as raw bytes that are not validated or stored (the caller validates
// and stores them; the session does not assume it did); and done=true once this side has
// nothing more to send or to expect. When done is true, out may still hold the last flight:
// send it, then close the stream. Handle does not retain frame; received and out are newly
// allocated and owned by the caller.
//
// Any error is final (the session keeps returning it) and means the caller drops the stream: a
// frame that does not decode (ErrVersion, ErrMalformed, ErrFrameTooLarge), a frame the state
// does not allow (ErrUnexpectedFrame), answers that do not fit the exchange (ErrProtocol), too
// many envelopes, rounds or too large an envelope (ErrTooManyItems, ErrTooManyRounds,
// ErrEnvelopeTooLarge), or an error of the Source (wrapped). Calling Handle on an initiator
// before Start fails with ErrState.
func (s *Session) Handle(frame []byte) (out [][]byte, received [][]byte, done bool, err error) {
	if s.err != nil {
		return nil, nil, false, s.err
	}
	switch s.state {
	case stateNew:
		return nil, nil, false, fmt.Errorf("%w: Handle called before Start", ErrState)
	case stateDone:
		s.err = fmt.Errorf("%w: frame after the exchange is done", ErrUnexpectedFrame)
		return nil, nil, false, s.err
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

func header(t byte) []byte { return []byte{version, t} }

func (s *Session) handle(f []byte) (out, received [][]byte, err error) {
	if len(f) > MaxFrameSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(f), MaxFrameSize)
	}
	if len(f) < 2 {
		return nil, nil, fmt.Errorf("%w: %d bytes, need at least 2", ErrMalformed, len(f))
	}
	if f[0] != version {
		return nil, nil, fmt.Errorf("%w: %d", ErrVersion, f[0])
	}
	switch f[1] {
	case typeGive:
		if s.state == stateFirst {
			return nil, nil, fmt.Errorf("%w: GIVE before the first RECON", ErrUnexpectedFrame)
		}
		received, err = s.onGive(f[2:])
		return nil, received, err
	case typeRecon:
		out, err = s.onRecon(f[2:])
		return out, nil, err
	}
	return nil, nil, fmt.Errorf("%w: unknown frame type %d", ErrMalformed, f[1])
}

// load reads the Source's items once and salts the set.
func (s *Session) load(salt [saltLen]byte) error {
	if s.src == nil {
		return fmt.Errorf("%w: nil Source", ErrState)
	}
	items, err := s.src.Items()
	if err != nil {
		return fmt.Errorf("recon: listing items: %w", err)
	}
	if len(items) > s.maxItems {
		return fmt.Errorf("%w: %d items, limit %d", ErrTooManyItems, len(items), s.maxItems)
	}
	for i := 1; i < len(items); i++ {
		if compareItems(items[i-1], items[i]) >= 0 {
			items = slices.Clone(items) // unsorted or duplicated: sort a copy, not the Source's
			break
		}
	}
	s.set = newItemSet(items)
	s.set.salt = salt
	return nil
}

// onGive accepts a GIVE frame: envelope pieces, uvarint(len<<1 | more) then len bytes each.
func (s *Session) onGive(body []byte) ([][]byte, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty GIVE", ErrMalformed)
	}
	r := &reader{b: body}
	var received [][]byte
	for r.more() {
		h, err := r.uvarint("envelope piece")
		if err != nil {
			return nil, err
		}
		n, more := h>>1, h&1 == 1
		if more && n == 0 {
			return nil, fmt.Errorf("%w: empty envelope piece", ErrMalformed)
		}
		if n > uint64(MaxEnvelopeSize-len(s.partial)) {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrEnvelopeTooLarge, MaxEnvelopeSize)
		}
		p, err := r.bytes(int(n), "envelope")
		if err != nil {
			return nil, err
		}
		if !more && !s.inPartial {
			received = append(received, bytes.Clone(p))
		} else {
			s.partial = append(s.partial, p...)
			s.inPartial = true
			if !more {
				received = append(received, s.partial)
				s.partial, s.inPartial = nil, false
			}
		}
	}
	for _, env := range received {
		s.stats.EnvelopeBytesReceived += uint64(len(env))
	}
	s.stats.EnvelopesReceived += uint64(len(received))
	s.flightEnvs += len(received)
	if s.stats.EnvelopesReceived > uint64(s.maxItems) {
		return nil, fmt.Errorf("%w: more than %d envelopes", ErrTooManyItems, s.maxItems)
	}
	return received, nil
}

// collector is the first pass over the peer's answers: it applies what they settle and owe and
// counts the peer's new pieces.
type collector struct {
	s     *Session
	count int // the peer's new pieces
	needs int
}

func (c *collector) done(first, n int) error {
	for _, o := range c.s.opens[first : first+n] {
		c.s.set.settle(o.i, o.j)
	}
	return nil
}

func (c *collector) need(k int, bm []byte) error {
	o := &c.s.opens[k]
	for t, x := range o.listed {
		if bm[t/8]>>(t%8)&1 == 1 {
			c.s.owed = append(c.s.owed, x)
		}
	}
	c.s.set.settle(o.i, o.j)
	c.needs++
	return nil
}

func (c *collector) pieces(_, _ int, ps []piece) error {
	c.count += len(ps)
	return nil
}

// onRecon handles the RECON frame that ends the peer's flight and returns this side's flight.
func (s *Session) onRecon(body []byte) ([][]byte, error) {
	if s.inPartial {
		return nil, fmt.Errorf("%w: RECON inside an envelope", ErrProtocol)
	}
	s.rounds++
	if s.rounds > s.maxRounds {
		return nil, fmt.Errorf("%w: limit %d", ErrTooManyRounds, s.maxRounds)
	}
	r := &reader{b: body}
	fb, err := r.bytes(1, "flags")
	if err != nil {
		return nil, err
	}
	flags := fb[0]
	if flags&reservedMask != 0 {
		return nil, fmt.Errorf("%w: reserved flags %#x", ErrMalformed, flags)
	}
	owe, fin := flags&flagOwe != 0, flags&flagFin != 0
	if owe && fin {
		return nil, fmt.Errorf("%w: FIN while owing envelopes", ErrProtocol)
	}
	if s.peerOwes && s.flightEnvs == 0 {
		return nil, fmt.Errorf("%w: a flight owed envelopes and carried none", ErrProtocol)
	}
	if s.state == stateFirst {
		salt, err := r.bytes(saltLen, "salt")
		if err != nil {
			return nil, err
		}
		if err := s.load([saltLen]byte(salt)); err != nil {
			return nil, err
		}
		s.opens = []open{{lo: minBound, hi: infBound, i: 0, j: s.set.len(), virtual: true}}
		s.state = stateWait
	}

	start := r.off
	c := &collector{s: s}
	if err := walkAnswers(r, s.opens, c); err != nil {
		return nil, err
	}
	s.set.flush()
	if fin {
		switch {
		case c.count > 0:
			return nil, fmt.Errorf("%w: FIN with open ranges", ErrProtocol)
		case c.needs > 0:
			return nil, fmt.Errorf("%w: FIN asking for envelopes", ErrProtocol)
		case s.nextOwed < len(s.owed):
			return nil, fmt.Errorf("%w: FIN while this side still owes envelopes", ErrProtocol)
		}
		s.opens = nil
		s.state = stateDone
		return nil, nil
	}
	s.peerOwes, s.flightEnvs = owe, 0

	// Second pass: answer the peer's pieces.
	b := s.newBuilder(c.count, append(header(typeRecon), 0))
	r.off = start
	if err := walkAnswers(r, s.opens, b); err != nil {
		return nil, err // unreachable: the first pass accepted the same bytes
	}
	msg, opens := b.finish()
	s.opens = opens
	s.set.flush()

	out, err := s.giveFrames()
	if err != nil {
		return nil, err
	}
	oweMore := s.nextOwed < len(s.owed)
	switch {
	case oweMore:
		msg[2] = flagOwe
	case len(opens) == 0 && !s.peerOwes && b.needs == 0:
		msg[2] = flagFin
		s.state = stateDone
	}
	return append(out, msg), nil
}

// giveFrames packs the owed envelopes into GIVE frames: at least one envelope when any is owed,
// then up to FlightSize bytes.
func (s *Session) giveFrames() ([][]byte, error) {
	var frames [][]byte
	var cur []byte
	flush := func() {
		frames = append(frames, cur)
		cur = nil
	}
	total := 0
	for s.nextOwed < len(s.owed) {
		id := s.set.items[s.owed[s.nextOwed]].ID
		env, err := s.src.Envelope(id)
		if err != nil {
			return nil, fmt.Errorf("recon: loading envelope %x: %w", id[:4], err)
		}
		if len(env) > MaxEnvelopeSize {
			return nil, fmt.Errorf("%w: envelope %x is %d bytes, limit %d", ErrEnvelopeTooLarge, id[:4], len(env), MaxEnvelopeSize)
		}
		if total > 0 && total+len(env) > s.flightSize {
			break
		}
		total += len(env)
		s.nextOwed++
		s.stats.EnvelopesSent++
		s.stats.EnvelopeBytesSent += uint64(len(env))
		for first := true; first || len(env) > 0; first = false {
			if cur != nil && s.maxFrame-len(cur) < pieceRoom {
				flush()
			}
			if cur == nil {
				cur = make([]byte, 0, min(s.maxFrame, 2+pieceHeader+len(env)))
				cur = append(cur, header(typeGive)...)
			}
			n := min(len(env), s.maxFrame-len(cur)-pieceHeader)
			more := n < len(env)
			cur = binary.AppendUvarint(cur, uint64(n)<<1|uint64(boolInt(more)))
			cur = append(cur, env[:n]...)
			env = env[n:]
			if more {
				flush()
			}
		}
	}
	if cur != nil {
		flush()
	}
	return frames, nil
}

const (
	// pieceHeader is the longest header of an envelope piece: uvarint(len<<1|more) for a piece
	// of up to MaxFrameSize bytes.
	pieceHeader = 4
	// pieceRoom is the least room worth starting a piece in; below it a new frame starts.
	pieceRoom = 64
)
