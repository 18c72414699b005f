package historyproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// source hands over fixed pages to one device, sealed to the key given.
type source struct {
	asker identity.DeviceID
	noise identity.NoisePublic
	pages []Page
}

func (s *source) History(team crdt.TeamID, asker identity.DeviceID, after device.HistoryCursor, _ int) (Page, identity.NoisePublic, error) {
	if asker != s.asker {
		return Page{}, identity.NoisePublic{}, errors.New("not a device of your person in that team")
	}
	i := int(after.Time)
	return s.pages[i], s.noise, nil
}

func gen(t *testing.T) *identity.Device {
	t.Helper()
	d, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// serve runs Serve on one end of a pipe and returns the other.
func serve(t *testing.T, server *identity.Device, asker identity.DeviceID, src Source) net.Conn {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(a, server, asker, src); a.Close() }()
	t.Cleanup(func() {
		b.Close()
		if err := <-done; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
			t.Logf("serve: %v", err)
		}
	})
	return b
}

func pages() []Page {
	return []Page{
		{Ops: [][]byte{[]byte("op one"), []byte("op two")}, Next: device.HistoryCursor{Time: 1}, More: true},
		{Ops: [][]byte{bytes.Repeat([]byte{7}, 5000)}, Next: device.HistoryCursor{Time: 2}},
	}
}

// TestPages: the asker gets each page, opened and checked, in turn on one stream.
func TestPages(t *testing.T) {
	server, asker := gen(t), gen(t)
	src := &source{asker: asker.ID(), noise: asker.NoisePublic(), pages: pages()}
	c := serve(t, server, asker.ID(), src)
	var cur device.HistoryCursor
	for i, want := range src.pages {
		p, err := Fetch(c, asker, server.ID(), server.NoisePublic(), Ask{After: cur})
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		if !slices.EqualFunc(p.Ops, want.Ops, bytes.Equal) || p.More != want.More || p.Next != want.Next {
			t.Fatalf("page %d: got %d ops more=%v next=%v; want %d ops more=%v next=%v", i, len(p.Ops), p.More, p.Next, len(want.Ops), want.More, want.Next)
		}
		cur = p.Next
	}
}

// TestSealedToTheLinkedKey: a page sealed to the key the membership lists for the asker does not
// open for a device that holds another key (one that took over the libp2p identity, or a relay), and
// a page from a server whose key is not the one the membership lists for it is refused.
func TestSealedToTheLinkedKey(t *testing.T) {
	server, asker, other := gen(t), gen(t), gen(t)
	src := &source{asker: asker.ID(), noise: other.NoisePublic(), pages: pages()}
	c := serve(t, server, asker.ID(), src)
	if _, err := Fetch(c, asker, server.ID(), server.NoisePublic(), Ask{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("page sealed to another key: err %v; want ErrMalformed", err)
	}
	src2 := &source{asker: asker.ID(), noise: asker.NoisePublic(), pages: pages()}
	c2 := serve(t, server, asker.ID(), src2)
	if _, err := Fetch(c2, asker, server.ID(), other.NoisePublic(), Ask{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("page from an unexpected key: err %v; want ErrMalformed", err)
	}
}

// TestRefusal: a refused ask reaches the asker as ErrRefused with the server's reason.
func TestRefusal(t *testing.T) {
	server, asker, stranger := gen(t), gen(t), gen(t)
	src := &source{asker: asker.ID(), noise: asker.NoisePublic(), pages: pages()}
	c := serve(t, server, stranger.ID(), src)
	_, err := Fetch(c, stranger, server.ID(), server.NoisePublic(), Ask{})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("stranger: err %v; want ErrRefused", err)
	}
}

func FuzzUnmarshalAsk(f *testing.F) {
	f.Add(Ask{Team: crdt.TeamID{1}, After: device.HistoryCursor{Time: 5}}.Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := UnmarshalAsk(b)
		if err == nil && !bytes.Equal(a.Marshal(), b) {
			t.Fatalf("ask does not round-trip")
		}
	})
}

func FuzzUnmarshalPage(f *testing.F) {
	for _, p := range pages() {
		f.Add(p.marshal())
	}
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := unmarshalPage(b)
		if err == nil && !bytes.Equal(p.marshal(), b) {
			t.Fatalf("page does not round-trip")
		}
	})
}
