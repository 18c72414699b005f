package relayproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Wire formats of the relay's two stream protocols. Every message is one frame of sync/framing (a
// uvarint length, then the bytes). Every decoder reads with sync/wire's Reader: it refuses trailing
// bytes, non-minimal uvarints, counts above the limits below and lengths beyond the input, and never
// panics (fuzzed).
//
// /fieldmesh/relay/enrol/1.0.0, opened by a device:
//
//	relay  -> device  challenge  version 1 | nonce 32
//	device -> relay   request    version 1 | uvarint n (1..MaxEnrolTopics) |
//	                             n × (topic 16 | proof 32 | uvarint len (0..MaxRosterSize) | roster)
//	relay  -> device  answer     version 1 | uvarint n | n × (status u8 | horizon u64 BE | uvarint len | message)
//
// One answer per requested topic, in order. Status 0 is enrolled; any other status is a refusal and
// message says why, in words for the device's log. An admin device puts the team's signed roster
// (roster.go) beside its proof; other devices send none (len 0). Horizon is the earliest envelope time (an HLC) the
// relay keeps for the topic: it drops envelopes older than that, so a device need not offer them.
//
// /fieldmesh/relay/directory/1.0.0, opened by an enrolled device:
//
//	device -> relay   register   version 1 | topic 16 | uvarint n (0..MaxAddrs) | n × (uvarint len | multiaddr)
//	relay  -> device  peers      version 1 | status u8 | uvarint len | message |
//	                             uvarint m (0..MaxDirectoryPeers) | m × (uvarint len | peer id | uvarint n | n × (uvarint len | multiaddr))
//
// The register message records the device's addresses (normally its circuit addresses through this
// relay) for the topic; the answer lists the other devices enrolled for the topic and connected to the
// relay now, with the addresses they registered.
const (
	// EnrolProtocol proves a device holds a topic's relay key.
	EnrolProtocol = "/fieldmesh/relay/enrol/2.0.0"
	// DirectoryProtocol registers a device's addresses and lists the other devices of a topic.
	DirectoryProtocol = "/fieldmesh/relay/directory/1.0.0"
	// StreamTimeout bounds one enrolment or directory exchange, at both ends.
	StreamTimeout = 30 * time.Second
)

// Limits of the wire formats.
const (
	wireVersion = 1
	// NonceSize is the size of an enrolment challenge, in bytes.
	NonceSize = 32
	// MaxEnrolTopics is the most topics one enrolment request carries.
	MaxEnrolTopics = 256
	// MaxAddrs is the most addresses a device registers in the directory.
	MaxAddrs = 8
	// MaxDirectoryPeers is the most peers one directory answer lists.
	MaxDirectoryPeers = 64
	maxAddrLen        = 256
	maxPeerIDLen      = 128
	maxMessageLen     = 256
	// MaxFrame caps every frame of both protocols but the enrolment request: a directory answer of
	// MaxDirectoryPeers × MaxAddrs addresses.
	MaxFrame = 160 << 10
	// MaxEnrolFrame caps an enrolment request: MaxEnrolTopics topics, a few of them with rosters.
	MaxEnrolFrame = 1 << 20
)

// Enrolment statuses.
const (
	StatusOK         byte = 0
	StatusNotCarried byte = 1 // the relay does not carry the topic
	StatusBadProof   byte = 2 // the proof does not match the relay key of the topic
	StatusNotEnroled byte = 3 // directory: the device is not enrolled for the topic on this connection
	StatusRefused    byte = 4 // anything else
	StatusNotMember  byte = 5 // the device is not on the topic's roster the relay holds
	StatusBadRoster  byte = 6 // the roster sent is malformed, or not signed by an admin the relay trusts
)

// ErrMalformed wraps every decoding error.
var ErrMalformed = errors.New("relay: malformed message")

// rd reads a message with a wire.Reader (sticky errors, minimal uvarints, counts checked against
// their limit and the input before anything is allocated); end wraps whatever went wrong in ErrMalformed.
type rd struct{ *wire.Reader }

func newRd(b []byte) rd { return rd{wire.NewReader(b)} }

// fail records a check of this package (the first error sticks).
func (r rd) fail(format string, args ...any) {
	r.Fail(fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...))
}

func (r rd) version() { r.Version("relay message", wireVersion) }

func (r rd) end() error {
	if err := r.Finish(); err != nil {
		if errors.Is(err, ErrMalformed) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// addrs reads a uvarint count (at most MaxAddrs) of length-prefixed multiaddrs.
func (r rd) addrs() []ma.Multiaddr {
	n := r.Count(MaxAddrs, 1)
	var out []ma.Multiaddr
	for i := 0; i < n && r.Err() == nil; i++ {
		b := r.Bytes(maxAddrLen)
		if r.Err() != nil {
			break
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			r.fail("address %d: %v", i, err)
			break
		}
		out = append(out, a)
	}
	return out
}

func appendAddrs(b []byte, addrs []ma.Multiaddr) []byte {
	var keep [][]byte
	for _, a := range addrs {
		if ab := a.Bytes(); len(ab) <= maxAddrLen && len(keep) < MaxAddrs {
			keep = append(keep, ab)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(keep)))
	for _, ab := range keep {
		b = binary.AppendUvarint(b, uint64(len(ab)))
		b = append(b, ab...)
	}
	return b
}

func appendMessage(b []byte, msg string) []byte {
	if len(msg) > maxMessageLen {
		msg = msg[:maxMessageLen]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	b = binary.AppendUvarint(b, uint64(len(msg)))
	return append(b, msg...)
}

func (r rd) message() string { return r.String("message", maxMessageLen) }

// challenge

// MarshalChallenge encodes the relay's enrolment challenge.
func MarshalChallenge(nonce [NonceSize]byte) []byte {
	return append([]byte{wireVersion}, nonce[:]...)
}

// ParseChallenge decodes an enrolment challenge.
func ParseChallenge(b []byte) ([NonceSize]byte, error) {
	var nonce [NonceSize]byte
	r := newRd(b)
	r.version()
	copy(nonce[:], r.Fixed(NonceSize))
	return nonce, r.end()
}

// EnrolProof is one topic of an enrolment request: the topic, the device's Key.Proof for it, and
// the team's signed roster (Roster.Marshal) if the device is an admin, else nil.
type EnrolProof struct {
	Topic  envelope.Topic
	Proof  [32]byte
	Roster []byte
}

// MarshalEnrolRequest encodes a device's enrolment request.
func MarshalEnrolRequest(ps []EnrolProof) []byte {
	b := make([]byte, 0, 1+3+len(ps)*48)
	b = append(b, wireVersion)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = append(b, p.Topic[:]...)
		b = append(b, p.Proof[:]...)
		b = binary.AppendUvarint(b, uint64(len(p.Roster)))
		b = append(b, p.Roster...)
	}
	return b
}

// ParseEnrolRequest decodes an enrolment request (1..MaxEnrolTopics topics).
func ParseEnrolRequest(b []byte) ([]EnrolProof, error) {
	r := newRd(b)
	r.version()
	n := r.Count(MaxEnrolTopics, 16+32+1)
	if r.Err() == nil && n == 0 {
		r.fail("no topics")
	}
	var ps []EnrolProof
	for i := 0; i < n && r.Err() == nil; i++ {
		var p EnrolProof
		copy(p.Topic[:], r.Fixed(16))
		copy(p.Proof[:], r.Fixed(32))
		if ro := r.Bytes(MaxRosterSize); len(ro) > 0 {
			p.Roster = append([]byte(nil), ro...)
		}
		ps = append(ps, p)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return ps, nil
}

// EnrolResult is the relay's answer for one topic of an enrolment.
type EnrolResult struct {
	Topic  envelope.Topic
	Status byte
	// Horizon is the earliest envelope time (an HLC) the relay keeps for the topic; 0 when refused.
	Horizon uint64
	// Message says why the relay refused (empty when enrolled).
	Message string
}

// OK reports whether the topic was enrolled.
func (r EnrolResult) OK() bool { return r.Status == StatusOK }

// MarshalEnrolAnswer encodes the relay's answer to an enrolment request, one result per topic in
// the request's order (their Topic fields are not sent).
func MarshalEnrolAnswer(rs []EnrolResult) []byte {
	b := []byte{wireVersion}
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		b = append(b, r.Status)
		b = binary.BigEndian.AppendUint64(b, r.Horizon)
		b = appendMessage(b, r.Message)
	}
	return b
}

// ParseEnrolAnswer decodes an answer to a request for topics (in that order); it fills in each
// result's Topic.
func ParseEnrolAnswer(b []byte, topics []envelope.Topic) ([]EnrolResult, error) {
	r := newRd(b)
	r.version()
	n := r.Count(MaxEnrolTopics, 1+8+1)
	if r.Err() == nil && n != len(topics) {
		r.fail("%d answers for %d topics", n, len(topics))
	}
	var out []EnrolResult
	for i := 0; i < n && r.Err() == nil; i++ {
		res := EnrolResult{Topic: topics[i], Status: r.Byte()}
		res.Horizon = r.Uint64()
		res.Message = r.message()
		out = append(out, res)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return out, nil
}

// directory

// MarshalRegister encodes a device's directory registration: its addresses for topic (at most
// MaxAddrs of at most 256 bytes each are sent; the rest are dropped).
func MarshalRegister(topic envelope.Topic, addrs []ma.Multiaddr) []byte {
	b := append([]byte{wireVersion}, topic[:]...)
	return appendAddrs(b, addrs)
}

// ParseRegister decodes a directory registration.
func ParseRegister(b []byte) (envelope.Topic, []ma.Multiaddr, error) {
	var topic envelope.Topic
	r := newRd(b)
	r.version()
	copy(topic[:], r.Fixed(16))
	addrs := r.addrs()
	if err := r.end(); err != nil {
		return topic, nil, err
	}
	return topic, addrs, nil
}

// MarshalPeers encodes the relay's directory answer: a status, a message (clipped to 256 bytes) and
// at most MaxDirectoryPeers peers with their addresses.
func MarshalPeers(status byte, msg string, peers []peer.AddrInfo) []byte {
	b := []byte{wireVersion, status}
	b = appendMessage(b, msg)
	if len(peers) > MaxDirectoryPeers {
		peers = peers[:MaxDirectoryPeers]
	}
	b = binary.AppendUvarint(b, uint64(len(peers)))
	for _, p := range peers {
		id := []byte(p.ID)
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
		b = appendAddrs(b, p.Addrs)
	}
	return b
}

// ParsePeers decodes a directory answer.
func ParsePeers(b []byte) (status byte, msg string, peers []peer.AddrInfo, err error) {
	r := newRd(b)
	r.version()
	status = r.Byte()
	msg = r.message()
	n := r.Count(MaxDirectoryPeers, 1+1)
	for i := 0; i < n && r.Err() == nil; i++ {
		idb := r.Bytes(maxPeerIDLen)
		if r.Err() != nil {
			break
		}
		id, err := peer.IDFromBytes(idb)
		if err != nil {
			r.fail("peer %d: %v", i, err)
			break
		}
		peers = append(peers, peer.AddrInfo{ID: id, Addrs: r.addrs()})
	}
	if err := r.end(); err != nil {
		return 0, "", nil, err
	}
	return status, msg, peers, nil
}
