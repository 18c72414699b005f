package relayproto

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

func TestWireRoundTrip(t *testing.T) {
	_, dp := goldenPeers(t)
	var nonce [NonceSize]byte
	nonce[3] = 7
	got, err := ParseChallenge(MarshalChallenge(nonce))
	if err != nil || got != nonce {
		t.Errorf("challenge: got %x, %v", got, err)
	}

	ps := []EnrolProof{{Topic: envelope.Topic{1}, Proof: [32]byte{2}}, {Topic: envelope.Topic{3}, Proof: [32]byte{4}, Roster: []byte{5, 6}}}
	gotPs, err := ParseEnrolRequest(MarshalEnrolRequest(ps))
	if err != nil || !reflect.DeepEqual(gotPs, ps) {
		t.Errorf("enrol request: got %v, %v", gotPs, err)
	}

	rs := []EnrolResult{
		{Topic: envelope.Topic{1}, Status: StatusOK, Horizon: 12345},
		{Topic: envelope.Topic{3}, Status: StatusBadProof, Message: "does not match ✓"},
	}
	gotRs, err := ParseEnrolAnswer(MarshalEnrolAnswer(rs), []envelope.Topic{{1}, {3}})
	if err != nil || len(gotRs) != 2 || gotRs[0] != rs[0] || gotRs[1] != rs[1] {
		t.Errorf("enrol answer: got %+v, %v", gotRs, err)
	}
	if _, err := ParseEnrolAnswer(MarshalEnrolAnswer(rs), []envelope.Topic{{1}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("enrol answer for fewer topics: %v; want ErrMalformed", err)
	}

	a1 := ma.StringCast("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWAVNbU9ihFMK23TvzdzzWxMqxZXmDsZEPGxTrGtvqDpFQ/p2p-circuit")
	a2 := ma.StringCast("/ip4/10.0.0.1/udp/4001/quic-v1")
	topic, addrs, err := ParseRegister(MarshalRegister(envelope.Topic{9}, []ma.Multiaddr{a1, a2}))
	if err != nil || topic != (envelope.Topic{9}) || len(addrs) != 2 || !addrs[0].Equal(a1) || !addrs[1].Equal(a2) {
		t.Errorf("register: got %v %v, %v", topic, addrs, err)
	}

	st, msg, peers, err := ParsePeers(MarshalPeers(StatusOK, "", []peer.AddrInfo{{ID: dp, Addrs: []ma.Multiaddr{a1}}}))
	if err != nil || st != StatusOK || msg != "" || len(peers) != 1 || peers[0].ID != dp || !peers[0].Addrs[0].Equal(a1) {
		t.Errorf("peers: got %d %q %v, %v", st, msg, peers, err)
	}
	st, msg, _, err = ParsePeers(MarshalPeers(StatusNotEnroled, "enrol first", nil))
	if err != nil || st != StatusNotEnroled || msg != "enrol first" {
		t.Errorf("refusal: got %d %q, %v", st, msg, err)
	}
}

func TestWireLimits(t *testing.T) {
	// Senders clip what the receivers would refuse.
	long := strings.Repeat("é", maxMessageLen)
	_, msg, _, err := ParsePeers(MarshalPeers(StatusRefused, long, nil))
	if err != nil || len(msg) > maxMessageLen {
		t.Errorf("a long message: %d bytes, %v", len(msg), err)
	}
	many := make([]ma.Multiaddr, MaxAddrs+5)
	for i := range many {
		many[i] = ma.StringCast("/ip4/127.0.0.1/tcp/1")
	}
	if _, addrs, err := ParseRegister(MarshalRegister(envelope.Topic{}, many)); err != nil || len(addrs) != MaxAddrs {
		t.Errorf("too many addresses: kept %d, %v; want %d", len(addrs), err, MaxAddrs)
	}

	var nonce [NonceSize]byte
	ch := MarshalChallenge(nonce)
	req := MarshalEnrolRequest([]EnrolProof{{}})
	bad := []struct {
		name  string
		parse func([]byte) error
		in    []byte
	}{
		{"challenge: empty", chErr, nil},
		{"challenge: short", chErr, ch[:10]},
		{"challenge: trailing", chErr, append(append([]byte(nil), ch...), 0)},
		{"challenge: version", chErr, append([]byte{2}, ch[1:]...)},
		{"request: no topics", reqErr, []byte{1, 0}},
		{"request: too many", reqErr, []byte{1, 0x81, 0x02}},
		{"request: truncated", reqErr, req[:len(req)-1]},
		{"request: count beyond input", reqErr, []byte{1, 5, 0, 0}},
		{"request: overlong uvarint", reqErr, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"register: bad address", regErr, append(append([]byte{1}, make([]byte, 16)...), 1, 3, 0xff, 0xff, 0xff)},
		{"register: address too long", regErr, append(append([]byte{1}, make([]byte, 16)...), 1, 0xff, 0x7f)},
		{"peers: bad id", peersErr, []byte{1, 0, 0, 1, 2, 0xff, 0xff, 0}},
		{"peers: message not UTF-8", peersErr, []byte{1, 4, 2, 0xff, 0xfe, 0}},
		{"peers: too many", peersErr, []byte{1, 0, 0, 0x41}},
	}
	for _, tc := range bad {
		if err := tc.parse(tc.in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v; want ErrMalformed", tc.name, err)
		}
	}
}

func chErr(b []byte) error    { _, err := ParseChallenge(b); return err }
func reqErr(b []byte) error   { _, err := ParseEnrolRequest(b); return err }
func regErr(b []byte) error   { _, _, err := ParseRegister(b); return err }
func peersErr(b []byte) error { _, _, _, err := ParsePeers(b); return err }

// FuzzEnrolWire feeds arbitrary bytes to the enrolment decoders: none may panic, and what decodes
// re-encodes to the same bytes.
func FuzzEnrolWire(f *testing.F) {
	var nonce [NonceSize]byte
	f.Add(MarshalChallenge(nonce))
	f.Add(MarshalEnrolRequest([]EnrolProof{{Topic: envelope.Topic{1}}, {Topic: envelope.Topic{2}}}))
	f.Add(MarshalEnrolAnswer([]EnrolResult{{Status: StatusOK, Horizon: 1}, {Status: StatusNotCarried, Message: "no"}}))
	f.Add([]byte{1, 0x81})
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := ParseChallenge(b); err == nil && !bytes.Equal(MarshalChallenge(n), b) {
			t.Fatalf("challenge does not round-trip")
		}
		if ps, err := ParseEnrolRequest(b); err == nil && !bytes.Equal(MarshalEnrolRequest(ps), b) {
			t.Fatalf("request does not round-trip")
		}
		for _, n := range []int{0, 1, 2} {
			rs, err := ParseEnrolAnswer(b, make([]envelope.Topic, n))
			if err == nil && !bytes.Equal(MarshalEnrolAnswer(rs), b) {
				t.Fatalf("answer does not round-trip")
			}
		}
	})
}

// FuzzDirectoryWire feeds arbitrary bytes to the directory decoders: none may panic.
func FuzzDirectoryWire(f *testing.F) {
	_, dp := func() (peer.ID, peer.ID) {
		r, _ := peer.Decode("12D3KooWAVNbU9ihFMK23TvzdzzWxMqxZXmDsZEPGxTrGtvqDpFQ")
		return r, r
	}()
	a := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	f.Add(MarshalRegister(envelope.Topic{1}, []ma.Multiaddr{a}))
	f.Add(MarshalPeers(StatusOK, "", []peer.AddrInfo{{ID: dp, Addrs: []ma.Multiaddr{a}}}))
	f.Add(MarshalPeers(StatusNotEnroled, "enrol first", nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if topic, addrs, err := ParseRegister(b); err == nil {
			if _, again, err := ParseRegister(MarshalRegister(topic, addrs)); err != nil || len(again) != len(addrs) {
				t.Fatalf("register does not round-trip: %v", err)
			}
		}
		if st, msg, peers, err := ParsePeers(b); err == nil {
			if st2, msg2, again, err := ParsePeers(MarshalPeers(st, msg, peers)); err != nil || st2 != st || msg2 != msg || len(again) != len(peers) {
				t.Fatalf("peers do not round-trip: %v", err)
			}
		}
	})
}
