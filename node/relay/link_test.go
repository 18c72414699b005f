package relay

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRelayLink: two clinics' relays, linked by their operators, reconcile the topics both carry. A
// device leaves envelopes of team A at R1 only; a device that meets only R2 gets them. R1 also carries
// team B, which R2 does not: R2 stores nothing of it.
func TestRelayLink(t *testing.T) {
	dir1, dir2 := t.TempDir(), t.TempDir()
	port1, port2 := freePort(t), freePort(t)
	addr := func(port int) string { return "/ip4/127.0.0.1/tcp/" + itoa(port) }
	// The relays' peer ids come from their stores: start each once to learn it.
	idOf := func(dir string) peer.ID {
		r, err := New(Config{Dir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
		if err != nil {
			t.Fatal(err)
		}
		id := r.Host().ID()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	id1, id2 := idOf(dir1), idOf(dir2)
	info := func(id peer.ID, port int) peer.AddrInfo {
		return peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{ma.StringCast(addr(port))}}
	}
	logs2 := &logBuffer{}
	r1, err := New(Config{Dir: dir1, ListenAddrs: []string{addr(port1)}, PeerRelays: []peer.AddrInfo{info(id2, port2)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r1.Close() })
	r2, err := New(Config{Dir: dir2, ListenAddrs: []string{addr(port2)}, PeerRelays: []peer.AddrInfo{info(id1, port1)},
		Logger: slog.New(slog.NewTextHandler(logs2, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })

	ca, cb := relayproto.CodeFor(teamA, testAdmin), relayproto.CodeFor(teamB, testAdmin)
	for _, c := range []relayproto.Code{ca, cb} {
		if _, err := r1.Admit(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r2.Admit(ca); err != nil {
		t.Fatal(err)
	}

	a := newDevice(t)
	a.connect(t, r1)
	a.enrol(t, r1, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key, cb.Topic: cb.Key})
	srcA := newMemSource()
	for i := range 3 {
		srcA.add(testEnvelope(t, ca.Topic, now(time.Duration(i-10)*time.Minute), 300+i))
	}
	if err := a.sync(r1, ca.Topic, srcA); err != nil {
		t.Fatal(err)
	}
	if err := a.sync(r1, cb.Topic, newMemSource(testEnvelope(t, cb.Topic, now(-time.Minute), 400), testEnvelope(t, cb.Topic, now(-2*time.Minute), 401))); err != nil {
		t.Fatal(err)
	}
	waitStored(t, r1, 5)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("R2 log:\n%s", logs2.String())
		}
	})
	waitStored(t, r2, 3) // team A's, through the link

	b := newDevice(t)
	b.connect(t, r2)
	b.enrol(t, r2, map[envelope.Topic]relayproto.Key{ca.Topic: ca.Key})
	srcB := newMemSource()
	if err := b.sync(r2, ca.Topic, srcB); err != nil {
		t.Fatal(err)
	}
	if srcB.len() != 3 {
		t.Errorf("B, meeting only R2, holds %d envelopes; want team A's 3 left at R1", srcB.len())
	}
	if st := r2.Status(); len(st.Topics) != 1 || st.Envelopes != 3 {
		t.Errorf("R2: %+v; want team A's topic only, 3 envelopes (nothing of team B)", st)
	}
	if !strings.Contains(logs2.String(), `msg="linked relay carries topics in common"`) {
		t.Errorf("R2's log does not report the link:\n%s", logs2.String())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
