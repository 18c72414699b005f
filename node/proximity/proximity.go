package proximity

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	stdsync "sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// MaxPayload is the most bytes the Adapter hands Radio.Send at once, and the most it accepts in one
// Received call (a larger payload closes the link).
const MaxPayload = 32 << 10

// Radio is what the native code provides: one short-range radio (Nearby Connections, Multipeer
// Connectivity). Its methods may block; they are never called with the Adapter's lock held. It reports
// what it sees by calling the Adapter's methods. Every method uses only types gomobile can bind, so a
// Java or Swift class can implement it.
type Radio interface {
	// Start advertises name and starts discovering other devices. Found reports each one.
	Start(name string) error
	// Connect opens a link to a found endpoint and returns once it is up (or failed). The other side
	// reports it with Incoming.
	Connect(endpoint string) error
	// Send sends payload on the link to endpoint, reliably and in order after the payloads sent before.
	// It must not keep payload after it returns.
	Send(endpoint string, payload []byte) error
	// Disconnect closes the link to endpoint. The radio need not call Disconnected for it.
	Disconnect(endpoint string) error
	// Stop ends advertising, discovery and every link.
	Stop() error
}

// ErrNoLink is returned by Dial and Send for an endpoint with no link, and by Connect for one that
// already has a link.
var ErrNoLink = errors.New("proximity: no link to that endpoint")

// Adapter adapts a Radio to a libp2p transport (Option) and turns what the radio finds into peers to
// dial (OnFound). The zero value is not usable: use New.
type Adapter struct {
	radio Radio
	name  string
	log   *slog.Logger

	mu       stdsync.Mutex     // guards the fields below
	found    map[string]string // endpoint id -> advertised name
	links    map[string]*link
	listener *listener
	onFound  func(peer.AddrInfo)
	started  bool
	closed   bool
}

// New returns an Adapter for radio that advertises name (the node's peer id; see the package doc).
// Logger may be nil.
func New(radio Radio, name string, logger *slog.Logger) (*Adapter, error) {
	if radio == nil {
		return nil, errors.New("proximity: no radio")
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Adapter{radio: radio, name: name, log: logger, found: make(map[string]string), links: make(map[string]*link)}, nil
}

// Multiaddr is the address the Adapter listens on: /fmprox/NAME.
func (a *Adapter) Multiaddr() ma.Multiaddr {
	m, _ := Multiaddr(a.name) // checked by New
	return m
}

// OnFound sets the function told of each device the radio finds, as the peer to dial at its endpoint.
// The node sets it before Start; f must not block.
func (a *Adapter) OnFound(f func(peer.AddrInfo)) {
	a.mu.Lock()
	a.onFound = f
	a.mu.Unlock()
}

// Start starts the radio (Radio.Start with the Adapter's name). Idempotent.
func (a *Adapter) Start() error {
	a.mu.Lock()
	if a.started || a.closed {
		a.mu.Unlock()
		return nil
	}
	a.started = true
	a.mu.Unlock()
	if err := a.radio.Start(a.name); err != nil {
		return fmt.Errorf("proximity: start the radio: %w", err)
	}
	return nil
}

// Close stops the radio and closes every link. Idempotent.
func (a *Adapter) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	started := a.started
	links := make([]*link, 0, len(a.links))
	for _, l := range a.links {
		links = append(links, l)
	}
	a.mu.Unlock()
	for _, l := range links {
		l.close(false)
	}
	if started {
		return a.radio.Stop()
	}
	return nil
}

// Found is called by the radio for each device it discovers: its endpoint id and the name it
// advertises. A name that is a peer id (other than this device's) is handed to OnFound when this
// device is the one of the two that dials. Bad names are ignored.
func (a *Adapter) Found(endpoint, name string) {
	if CheckName(endpoint) != nil || CheckName(name) != nil {
		return
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.found[endpoint] = name
	f := a.onFound
	a.mu.Unlock()
	p, err := peer.Decode(name)
	if err != nil || name == a.name || f == nil {
		return
	}
	// Of two devices that find each other, the one whose name sorts first dials: one link, not two.
	if sort.StringsAreSorted([]string{name, a.name}) {
		return
	}
	addr, err := Multiaddr(endpoint)
	if err != nil {
		return
	}
	f(peer.AddrInfo{ID: p, Addrs: []ma.Multiaddr{addr}})
}

// Lost is called by the radio when a found endpoint is out of range. Its link, if any, is left to
// Disconnected.
func (a *Adapter) Lost(endpoint string) {
	a.mu.Lock()
	delete(a.found, endpoint)
	a.mu.Unlock()
}

// Incoming is called by the radio when another device opened a link to this one. The link is handed
// to the libp2p listener, which runs the Noise handshake on it. With no listener (or a link there
// already) the radio is told to disconnect.
func (a *Adapter) Incoming(endpoint string) {
	if CheckName(endpoint) != nil {
		return
	}
	a.mu.Lock()
	lst := a.listener
	if a.closed || lst == nil || a.links[endpoint] != nil {
		a.mu.Unlock()
		go a.radio.Disconnect(endpoint)
		return
	}
	l := a.newLinkLocked(endpoint)
	a.mu.Unlock()
	if !lst.push(l.conn(a.Multiaddr())) {
		l.close(true)
	}
}

// Received is called by the radio with a payload that arrived on the link to endpoint. It returns once
// the connection has taken the payload, or the link is closed (see the package doc on back-pressure).
// A payload for no link is dropped; one larger than MaxPayload closes the link.
func (a *Adapter) Received(endpoint string, payload []byte) {
	a.mu.Lock()
	l := a.links[endpoint]
	a.mu.Unlock()
	if l == nil || len(payload) == 0 {
		return
	}
	if len(payload) > MaxPayload {
		a.log.Info("proximity link closed: payload too large", "bytes", len(payload))
		l.close(true)
		return
	}
	if _, err := l.radioEnd.Write(payload); err != nil {
		l.close(true)
	}
}

// Disconnected is called by the radio when the link to endpoint ended.
func (a *Adapter) Disconnected(endpoint string) {
	a.mu.Lock()
	l := a.links[endpoint]
	a.mu.Unlock()
	if l != nil {
		l.close(false)
	}
}

// resolve returns the endpoint id that name stands for: itself if it is a found endpoint or has a
// link, else the endpoint that advertises it.
func (a *Adapter) resolve(name string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.found[name]; ok {
		return name, true
	}
	if _, ok := a.links[name]; ok {
		return name, true
	}
	for ep, n := range a.found {
		if n == name {
			return ep, true
		}
	}
	return "", false
}

// errLinkOpen is returned by dial, with the link, when endpoint has a link already.
var errLinkOpen = fmt.Errorf("%w: one is open already", ErrNoLink)

// dial opens a link to endpoint. If it has one (the other device dialled this one meanwhile), it
// returns that link and errLinkOpen.
func (a *Adapter) dial(endpoint string) (*link, error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, net.ErrClosed
	}
	if l := a.links[endpoint]; l != nil {
		a.mu.Unlock()
		return l, errLinkOpen
	}
	a.mu.Unlock()
	cerr := a.radio.Connect(endpoint)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, net.ErrClosed
	}
	if l := a.links[endpoint]; l != nil {
		// The radio keeps one connection per endpoint, now the other device's: leave it be.
		return l, errLinkOpen
	}
	if cerr != nil {
		return nil, fmt.Errorf("proximity: connect: %w", cerr)
	}
	return a.newLinkLocked(endpoint), nil
}

// Notifiee returns what the host's network tells of each new connection (Network().Notify): a
// link whose connection the host has added is marked up, which a dial waiting on it needs.
func (a *Adapter) Notifiee() network.Notifiee {
	return &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		name, err := nameOf(c.RemoteMultiaddr())
		if err != nil {
			return
		}
		a.mu.Lock()
		l := a.links[name]
		a.mu.Unlock()
		if l != nil {
			l.upOnce.Do(func() { close(l.up) })
		}
	}}
}

// link is one radio link: a net.Pipe whose one end is the connection libp2p uses and whose other end
// the Adapter feeds with Received payloads and drains into Radio.Send.
type link struct {
	a        *Adapter
	endpoint string
	connEnd  net.Conn
	radioEnd net.Conn
	once     stdsync.Once
	done     chan struct{} // closed when the link closes
	up       chan struct{} // closed when the host has a connection over it (Notifiee)
	upOnce   stdsync.Once
}

func (a *Adapter) newLinkLocked(endpoint string) *link {
	c, r := net.Pipe()
	l := &link{a: a, endpoint: endpoint, connEnd: c, radioEnd: r, done: make(chan struct{}), up: make(chan struct{})}
	a.links[endpoint] = l
	go l.pump()
	return l
}

// pump sends what the connection writes to the radio, in payloads of at most MaxPayload bytes.
func (l *link) pump() {
	buf := make([]byte, MaxPayload)
	for {
		n, err := l.radioEnd.Read(buf)
		if n > 0 {
			if serr := l.a.radio.Send(l.endpoint, buf[:n]); serr != nil {
				l.close(true)
				return
			}
		}
		if err != nil {
			l.close(true)
			return
		}
	}
}

// close ends the link; tell says whether the radio is to be told to disconnect.
func (l *link) close(tell bool) {
	l.once.Do(func() {
		close(l.done)
		l.connEnd.Close()
		l.radioEnd.Close()
		l.a.mu.Lock()
		if l.a.links[l.endpoint] == l {
			delete(l.a.links, l.endpoint)
		}
		l.a.mu.Unlock()
		if tell {
			go l.a.radio.Disconnect(l.endpoint)
		}
	})
}

// conn returns the link's connection end as a multiaddr connection.
func (l *link) conn(local ma.Multiaddr) *maConn {
	remote, _ := Multiaddr(l.endpoint) // checked before the link was made
	return &maConn{Conn: l.connEnd, l: l, local: local, remote: remote}
}

// maConn is a link's connection end with its multiaddrs.
type maConn struct {
	net.Conn
	l             *link
	local, remote ma.Multiaddr
}

func (c *maConn) LocalMultiaddr() ma.Multiaddr  { return c.local }
func (c *maConn) RemoteMultiaddr() ma.Multiaddr { return c.remote }

// Close closes the link (and tells the radio).
func (c *maConn) Close() error {
	c.l.close(true)
	return nil
}

// connectTimeout bounds Radio.Connect and the handshake after it.
const connectTimeout = 30 * time.Second
