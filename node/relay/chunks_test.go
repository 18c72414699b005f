package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

type chunkSet map[[32]byte][]byte

func (c chunkSet) get(a [32]byte) ([]byte, error) { return c[a], nil }
func (c chunkSet) PutChunk(a [32]byte, s []byte) error {
	c[a] = s
	return nil
}

func (d *device) push(t *testing.T, r *Relay, o attach.Offer, src chunkSet) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	s, err := d.h.NewStream(ctx, r.Host().ID(), protocol.ID(attach.PushProtocol))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return attach.Push(s, o, src.get)
}

func (d *device) pull(t *testing.T, r *Relay, wants []attach.Want, dst chunkSet) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	s, err := d.h.NewStream(ctx, r.Host().ID(), protocol.ID(attach.Protocol))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return attach.Pull(s, wants, dst)
}

// TestRelayCarriesChunks: a device leaves the sealed chunks of an envelope at the relay, another
// device of the topic pulls them; a device of another topic gets none; chunks for an envelope the
// relay does not hold, or that do not match their offer, are refused; the chunks count against the
// quota and go with their envelope.
func TestRelayCarriesChunks(t *testing.T) {
	r, logs := newTestRelay(t, Config{})
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	ca, cb := relayproto.CodeFor(teamA, testAdmin), relayproto.CodeFor(teamB, testAdmin)
	for _, c := range []relayproto.Code{ca, cb} {
		if _, err := r.Admit(c); err != nil {
			t.Fatal(err)
		}
	}
	a, b, x := newDevice(t), newDevice(t), newDevice(t)
	for _, d := range []*device{a, b} {
		d.connect(t, r)
		d.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key})
	}
	x.connect(t, r)
	x.enrol(t, r, map[envelope.Topic]relayproto.Key{cb.Topic: cb.Key})

	env := testEnvelope(t, ca.Topic, now(-time.Minute), 300)
	if err := a.sync(r, ca.Topic, newMemSource(env)); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 1)
	data := make([]byte, 3*crdt.ChunkSize+100)
	rand.Read(data)
	man, sealed, err := attach.Seal(nil, "image/jpeg", data)
	if err != nil {
		t.Fatal(err)
	}
	src := chunkSet{}
	for i, c := range sealed {
		src[man.Chunks[i]] = c
	}
	_, before, _ := r.st.totals()

	// An offer for an envelope the relay does not hold is refused.
	if _, err := a.push(t, r, attach.Offer{Topic: ca.Topic, Owner: crdt.OpID{9}, Chunks: man.Chunks}, src); err == nil {
		t.Error("chunks for an unknown envelope: taken")
	}
	// A device of another topic cannot leave chunks for this one.
	if _, err := x.push(t, r, attach.Offer{Topic: ca.Topic, Owner: env.ID, Chunks: man.Chunks}, src); err == nil {
		t.Error("chunks from a device not enrolled for the topic: taken")
	}
	// A chunk that is not the one offered: the stream is reset after the good one.
	bad := chunkSet{man.Chunks[0]: sealed[0], man.Chunks[1]: sealed[2]}
	if _, err := a.push(t, r, attach.Offer{Topic: ca.Topic, Owner: env.ID, Chunks: man.Chunks[:2]}, bad); err != nil {
		t.Logf("push with a wrong chunk: %v", err)
	}
	if ok, _ := r.st.hasChunkFor(env.ID, man.Chunks[1]); ok {
		t.Error("the relay took a chunk that does not match its address")
	}
	n, err := a.push(t, r, attach.Offer{Topic: ca.Topic, Owner: env.ID, Chunks: man.Chunks}, src)
	if err != nil || n < len(sealed)-1 {
		t.Fatalf("push: sent %d, %v", n, err)
	}
	if n, _ := a.push(t, r, attach.Offer{Topic: ca.Topic, Owner: env.ID, Chunks: man.Chunks}, src); n != 0 {
		t.Errorf("a second push sent %d chunks; want 0", n)
	}
	_, after, _ := r.st.totals()
	if grew := after - before; grew < int64(len(data)) {
		t.Errorf("the quota counts %d bytes more; want at least the %d of the chunks", grew, len(data))
	}

	got := chunkSet{}
	if n, err := b.pull(t, r, attach.Wants(man), got); err != nil || n != len(sealed) {
		t.Fatalf("B pulled %d, %v", n, err)
	}
	plain, err := attach.Open(man, func(i int) ([]byte, error) { return got[man.Chunks[i]], nil })
	if err != nil || !bytes.Equal(plain, data) {
		t.Fatalf("B opened: %v", err)
	}
	other := chunkSet{}
	if n, _ := x.pull(t, r, attach.Wants(man), other); n != 0 {
		t.Errorf("a device of another topic pulled %d chunks", n)
	}
	// The relay holds no plaintext.
	for _, c := range sealed {
		if bytes.Contains(c, data[100:164]) {
			t.Fatal("plaintext in a sealed chunk")
		}
	}

	// The envelope goes (topic revoked): its chunks go with it, and the counters return.
	if _, err := r.st.evictTopic(ca.Topic, func(uint64, int64) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.st.chunk(man.Chunks[0]); err == nil {
		t.Error("a chunk outlived its envelope")
	}
	if _, left, _ := r.st.totals(); left != 0 {
		t.Errorf("%d bytes counted after everything went", left)
	}
}

// TestRelayChunkOverLimit: one envelope cannot hold more than a message's attachments.
func TestRelayChunkOverLimit(t *testing.T) {
	r, _ := newTestRelay(t, Config{})
	ca := relayproto.CodeFor(teamA, testAdmin)
	if _, err := r.Admit(ca); err != nil {
		t.Fatal(err)
	}
	a := newDevice(t)
	a.connect(t, r)
	a.enrol(t, r, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key})
	env := testEnvelope(t, ca.Topic, now(-time.Minute), 300)
	if err := a.sync(r, ca.Topic, newMemSource(env)); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r, 1)
	r.st.addChunkBytes(ca.Topic, env.ID, maxEnvelopeChunkBytes-10) // as if it held nearly all it may
	c := make([]byte, 1000)
	var addr [32]byte
	copy(addr[:], c)
	if _, err := r.st.putChunk(ca.Topic, env.ID, addr, c); !errors.Is(err, errChunkRefused) {
		t.Fatalf("over the envelope's limit: %v; want errChunkRefused", err)
	}
}
