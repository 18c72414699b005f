package meshconf_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"google.golang.org/protobuf/proto"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// The size table: what one team message costs on the wire, as an envelope (what a relay stores
// and reconciliation sends) and as one gossip copy (the GossipSub RPC that carries one publish to
// one peer: the envelope and the topic name in pubsub's protobuf framing, as pubsub marshals it;
// the stream's length prefix is not counted). It lives here, beside TopicName, because the gossip
// figure needs the real topic name.

// sizeCase is one message of the table: a text of textLen bytes with parents parents; the 37-byte
// text carries a patient reference.
type sizeCase struct {
	textLen, parents int
	patient          string
}

func (c sizeCase) String() string {
	p := ""
	if c.patient != "" {
		p = "+patient"
	}
	return fmt.Sprintf("text=%d%s/parents=%d", c.textLen, p, c.parents)
}

// sizes are the cells of the table, each with its bounds: the most envelope and gossip bytes it may
// cost (the figures of the format in this tree, so a change that adds bytes fails).
var sizes = []struct {
	sizeCase
	maxEnvelope, maxGossip int
}{
	{sizeCase{2, 0, ""}, 97, 119},
	{sizeCase{2, 1, ""}, 113, 136},
	{sizeCase{2, 2, ""}, 129, 153},
	{sizeCase{37, 0, "MRN 0042117"}, 144, 168},
	{sizeCase{37, 1, "MRN 0042117"}, 160, 184},
	{sizeCase{37, 2, "MRN 0042117"}, 176, 200},
	{sizeCase{200, 0, ""}, 295, 319},
	{sizeCase{200, 1, ""}, 311, 335},
	{sizeCase{200, 2, ""}, 327, 351},
}

// The goal of issue 12 for the 37-byte text with a patient reference and one parent.
const (
	goalEnvelope = 160
	goalGossip   = 200
)

func detRand(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// measure seals c's message in chain form, as a device sends it, and returns the envelope's size
// and the size of one gossip copy of it.
func measure(tb testing.TB, c sizeCase) (env, gossip int) {
	tb.Helper()
	dev, err := identity.Generate(detRand(1))
	if err != nil {
		tb.Fatal(err)
	}
	team, err := crdt.NewTeamID(detRand(2))
	if err != nil {
		tb.Fatal(err)
	}
	k, err := seal.NewEpochKey(detRand(3))
	if err != nil {
		tb.Fatal(err)
	}
	r := detRand(4)
	parents := make([]crdt.OpID, c.parents)
	for i := range parents {
		if _, err := io.ReadFull(r, parents[i][:]); err != nil {
			tb.Fatal(err)
		}
	}
	text := strings.Repeat("BP 150/95 at 34 weeks, review today. ", 6)[:c.textLen]
	m := crdt.Message{Text: text, Patient: c.patient}
	if err := m.Validate(); err != nil {
		tb.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	op := crdt.NewOp(dev, team, crdt.MakeHLC(at, 0), parents, crdt.KindMessage, m.Marshal())
	s := senderkey.NewSender(k, dev.ID())
	e, _, err := envelope.SealChain(op, dev, 0x01020304, envelope.OuterKey(k), s, 0) // slot 0: one byte, as for any sender of an epoch of up to 128 devices
	if err != nil {
		tb.Fatal(err)
	}
	data := e.Marshal()
	name := meshconf.TopicName(envelope.TopicOf(team))
	rpc, err := proto.Marshal(&pb.RPC{Publish: []*pb.Message{{Data: data, Topic: &name}}})
	if err != nil {
		tb.Fatal(err)
	}
	return len(data), len(rpc)
}

// TestSizeTable holds every cell of the table to its bound, and reports the cell of the goal.
func TestSizeTable(t *testing.T) {
	for _, s := range sizes {
		env, gossip := measure(t, s.sizeCase)
		t.Logf("%-28v envelope %4d B, gossip %4d B a hop", s.sizeCase, env, gossip)
		if env > s.maxEnvelope {
			t.Errorf("%v: envelope of %d bytes; want at most %d", s.sizeCase, env, s.maxEnvelope)
		}
		if gossip > s.maxGossip {
			t.Errorf("%v: gossip copy of %d bytes; want at most %d", s.sizeCase, gossip, s.maxGossip)
		}
		if s.textLen == 37 && s.parents == 1 {
			// Both goals are met (format 9) and held.
			if gossip > goalGossip {
				t.Errorf("%v: gossip copy of %d bytes; the goal is at most %d", s.sizeCase, gossip, goalGossip)
			}
			if env > goalEnvelope {
				t.Errorf("%v: envelope of %d bytes; the goal is at most %d", s.sizeCase, env, goalEnvelope)
			}
		}
	}
}

// BenchmarkSizeTable prints the table: one sub-benchmark a cell, with its envelope and gossip bytes
// (run with -benchtime=1x; the time it reports is that of sealing a message).
func BenchmarkSizeTable(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.String(), func(b *testing.B) {
			var env, gossip int
			for b.Loop() {
				env, gossip = measure(b, s.sizeCase)
			}
			b.ReportMetric(float64(env), "envelope-B")
			b.ReportMetric(float64(gossip), "gossip-B/hop")
		})
	}
}
