package proximity_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node/proximity"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"ep1", true},
		{"12D3KooWQ7fH9oF1H1G5vVqDqGxVnYVJbNjyuZ8d8D1uHGJ2hS1x", true},
		{strings.Repeat("a", proximity.MaxName), true},
		{"", false},
		{strings.Repeat("a", proximity.MaxName+1), false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
	} {
		if err := proximity.CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v; want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestMultiaddrRoundTrip(t *testing.T) {
	m, err := proximity.Multiaddr("ep1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.String(), "/fmprox/ep1"; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
	back, err := ma.NewMultiaddrBytes(m.Bytes())
	if err != nil || !back.Equal(m) {
		t.Errorf("bytes round trip: %v, %v", back, err)
	}
	if _, err := ma.NewMultiaddr("/fmprox/a%2Fb"); err == nil {
		t.Error("a name with an escaped slash parsed")
	}
}

// FuzzMultiaddrBytes: a proximity address arrives from any peer (identify, invite codes); decoding it
// never panics, and what decodes re-encodes to the same bytes.
func FuzzMultiaddrBytes(f *testing.F) {
	m, _ := proximity.Multiaddr("ep1")
	f.Add(m.Bytes())
	f.Add(append(m.Bytes(), m.Bytes()...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return
		}
		if !bytes.Equal(a.Bytes(), b) {
			t.Fatalf("re-encoded %x; decoded from %x", a.Bytes(), b)
		}
		if _, err := ma.NewMultiaddr(a.String()); err != nil {
			t.Fatalf("%s does not parse back: %v", a, err)
		}
	})
}

// fakeRadio records what the Adapter asks of it.
type fakeRadio struct {
	disconnected chan string
	connectErr   error
}

func (r *fakeRadio) Start(string) error         { return nil }
func (r *fakeRadio) Connect(string) error       { return r.connectErr }
func (r *fakeRadio) Send(string, []byte) error  { return nil }
func (r *fakeRadio) Stop() error                { return nil }
func (r *fakeRadio) Disconnect(ep string) error { r.disconnected <- ep; return nil }

// TestIncomingWithoutListener: a device in range that opens a link to a phone whose node is not
// listening is disconnected, and what it sends is dropped.
func TestIncomingWithoutListener(t *testing.T) {
	r := &fakeRadio{disconnected: make(chan string, 1)}
	a, err := proximity.New(r, "self", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Incoming("ep9")
	if got := <-r.disconnected; got != "ep9" {
		t.Errorf("disconnected %q; want ep9", got)
	}
	a.Received("ep9", []byte("junk")) // no link: dropped, does not block
}

// TestFound: a nearby device advertising a name that is not a peer id, or one with bad characters,
// is not handed to the node to dial; one advertising a peer id is, at its endpoint, when this device
// is the one of the two that dials.
func TestFound(t *testing.T) {
	a, err := proximity.New(&fakeRadio{disconnected: make(chan string, 1)}, "0self", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var got []peer.AddrInfo
	a.OnFound(func(ai peer.AddrInfo) { got = append(got, ai) })
	a.Found("ep1", "not-a-peer-id")
	a.Found("ep/2", "x")
	a.Found("ep3", "a b")
	if len(got) != 0 {
		t.Fatalf("bad names handed to the node: %v", got)
	}
	sk, _, err := lcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	a.Found("ep4", p.String())
	if len(got) != 1 || got[0].ID != p || len(got[0].Addrs) != 1 || got[0].Addrs[0].String() != "/fmprox/ep4" {
		t.Fatalf("found %v; want %s at /fmprox/ep4", got, p)
	}
	// The other device (whose name sorts first) dials this one, not the reverse.
	b, err := proximity.New(&fakeRadio{}, "zzz", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	called := false
	b.OnFound(func(peer.AddrInfo) { called = true })
	b.Found("ep4", p.String())
	if called {
		t.Error("both devices dial each other")
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := proximity.New(nil, "x", nil); err == nil {
		t.Error("New with no radio succeeded")
	}
	if _, err := proximity.New(&fakeRadio{}, "a/b", nil); !errors.Is(err, proximity.ErrBadName) {
		t.Errorf("New with a bad name: %v; want ErrBadName", err)
	}
}
