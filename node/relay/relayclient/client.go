package relayclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// ErrRefused wraps a relay's refusal of a directory request.
var ErrRefused = errors.New("relay: refused")

// Enrol proves to the relay rp, over h's connection to it, that this device holds the relay keys of the
// given topics, and returns the relay's answer for each topic, sorted by topic. An admin device also
// sends the signed roster of its topics (rosters, by topic; nil for none). A refused topic is not an
// error: its result says why. The relay admits the device for the enrolled topics until it has no
// connection left, or a newer roster leaves it out.
func Enrol(ctx context.Context, h host.Host, rp peer.ID, keys map[envelope.Topic]relayproto.Key, rosters map[envelope.Topic][]byte) ([]relayproto.EnrolResult, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if len(keys) > relayproto.MaxEnrolTopics {
		return nil, fmt.Errorf("relay: %d topics to enrol, limit %d", len(keys), relayproto.MaxEnrolTopics)
	}
	topics := make([]envelope.Topic, 0, len(keys))
	for t := range keys {
		topics = append(topics, t)
	}
	sort.Slice(topics, func(i, j int) bool { return string(topics[i][:]) < string(topics[j][:]) })
	ctx, cancel := context.WithTimeout(ctx, relayproto.StreamTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, rp, relayproto.EnrolProtocol)
	if err != nil {
		return nil, fmt.Errorf("relay: open enrolment stream: %w", err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	br := bufio.NewReader(s)
	b, err := framing.Read(br, relayproto.MaxFrame)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("relay: read challenge: %w", err)
	}
	nonce, err := relayproto.ParseChallenge(b)
	if err != nil {
		s.Reset()
		return nil, err
	}
	proofs := make([]relayproto.EnrolProof, len(topics))
	for i, t := range topics {
		proofs[i] = relayproto.EnrolProof{Topic: t, Proof: keys[t].Proof(rp, h.ID(), nonce), Roster: rosters[t]}
	}
	if err := framing.Write(s, relayproto.MarshalEnrolRequest(proofs)); err != nil {
		s.Reset()
		return nil, fmt.Errorf("relay: send proofs: %w", err)
	}
	b, err = framing.Read(br, relayproto.MaxFrame)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("relay: read answer: %w", err)
	}
	return relayproto.ParseEnrolAnswer(b, topics)
}

// Directory registers addrs as this device's addresses for topic at the relay rp, and returns the other
// devices enrolled for the topic and connected to the relay now, with their registered addresses. The
// device must have enrolled the topic on its current connection (ErrRefused otherwise).
func Directory(ctx context.Context, h host.Host, rp peer.ID, topic envelope.Topic, addrs []ma.Multiaddr) ([]peer.AddrInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, relayproto.StreamTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, rp, relayproto.DirectoryProtocol)
	if err != nil {
		return nil, fmt.Errorf("relay: open directory stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(relayproto.StreamTimeout))
	if err := framing.Write(s, relayproto.MarshalRegister(topic, addrs)); err != nil {
		s.Reset()
		return nil, fmt.Errorf("relay: send registration: %w", err)
	}
	b, err := framing.Read(bufio.NewReader(s), relayproto.MaxFrame)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("relay: read directory answer: %w", err)
	}
	status, msg, peers, err := relayproto.ParsePeers(b)
	if err != nil {
		return nil, err
	}
	if status != relayproto.StatusOK {
		return nil, fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	return peers, nil
}

// CircuitAddrs returns the circuit relay addresses of a device through relay ai: each of the relay's
// addresses followed by /p2p/RELAY/p2p-circuit. Other devices dial them with the device's peer id.
func CircuitAddrs(ai peer.AddrInfo) []ma.Multiaddr {
	var out []ma.Multiaddr
	suffix, err := ma.NewMultiaddr("/p2p/" + ai.ID.String() + "/p2p-circuit")
	if err != nil {
		return nil
	}
	for _, a := range ai.Addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		base, last := ma.SplitLast(a)
		if last != nil && last.Protocol().Code == ma.P_P2P {
			a = base
		}
		out = append(out, a.Encapsulate(suffix))
	}
	return out
}
