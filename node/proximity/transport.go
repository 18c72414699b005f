package proximity

import (
	"context"
	"errors"
	"fmt"
	"net"
	stdsync "sync"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Option installs the Adapter as a transport of a libp2p host. The host listens on it when given
// Multiaddr as a listen address. One Adapter serves one host.
func (a *Adapter) Option() libp2p.Option {
	return libp2p.Transport(func(u transport.Upgrader, rcmgr network.ResourceManager) *Transport {
		if rcmgr == nil {
			rcmgr = &network.NullResourceManager{}
		}
		return &Transport{a: a, upgrader: u, rcmgr: rcmgr}
	})
}

// Transport is the libp2p transport over an Adapter's radio.
type Transport struct {
	a        *Adapter
	upgrader transport.Upgrader
	rcmgr    network.ResourceManager
}

var _ transport.Transport = (*Transport)(nil)

// CanDial reports whether addr is a proximity address.
func (t *Transport) CanDial(addr ma.Multiaddr) bool {
	_, err := nameOf(addr)
	return err == nil
}

// Protocols returns the proximity protocol code.
func (t *Transport) Protocols() []int { return []int{Code} }

// Proxy is false: a link is direct.
func (t *Transport) Proxy() bool { return false }

// Dial opens a link to the endpoint raddr names (an endpoint id, or a name one advertises) and
// upgrades it as an outbound connection to p.
func (t *Transport) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	name, err := nameOf(raddr)
	if err != nil {
		return nil, err
	}
	endpoint, ok := t.a.resolve(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not in range", ErrNoLink, name)
	}
	scope, err := t.rcmgr.OpenConnection(network.DirOutbound, true, raddr)
	if err != nil {
		return nil, err
	}
	if err := scope.SetPeer(p); err != nil {
		scope.Done()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	type res struct {
		l   *link
		err error
	}
	for {
		ch := make(chan res, 1)
		go func() {
			l, err := t.a.dial(endpoint)
			ch <- res{l, err}
		}()
		var r res
		select {
		case r = <-ch:
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.l != nil && r.err == nil {
					r.l.close(true)
				}
			}()
			scope.Done()
			return nil, ctx.Err()
		}
		if errors.Is(r.err, errLinkOpen) {
			// The other device dialled this one over the only link the radio has. Once the host
			// has that connection, this dial fails and the host's dialler takes the connection
			// that landed; if that link fails instead, dial again.
			select {
			case <-r.l.up:
				scope.Done()
				return nil, r.err
			case <-r.l.done:
				continue
			case <-ctx.Done():
				scope.Done()
				return nil, ctx.Err()
			}
		}
		if r.err != nil {
			scope.Done()
			return nil, r.err
		}
		c := r.l.conn(t.a.Multiaddr())
		cc, err := t.upgrader.Upgrade(ctx, t, c, network.DirOutbound, p, scope)
		if err != nil {
			c.Close()
			return nil, err
		}
		return cc, nil
	}
}

// Listen listens on the Adapter's own address (Adapter.Multiaddr). The radio starts with
// Adapter.Start.
func (t *Transport) Listen(laddr ma.Multiaddr) (transport.Listener, error) {
	name, err := nameOf(laddr)
	if err != nil {
		return nil, err
	}
	if name != t.a.name {
		return nil, fmt.Errorf("proximity: can listen only on %s, not %s", t.a.Multiaddr(), laddr)
	}
	l := &listener{addr: t.a.Multiaddr(), conns: make(chan manet.Conn), done: make(chan struct{})}
	t.a.mu.Lock()
	if t.a.listener != nil {
		t.a.mu.Unlock()
		return nil, fmt.Errorf("proximity: already listening on %s", laddr)
	}
	t.a.listener = l
	t.a.mu.Unlock()
	l.stop = func() {
		t.a.mu.Lock()
		if t.a.listener == l {
			t.a.listener = nil
		}
		t.a.mu.Unlock()
	}
	return t.upgrader.UpgradeListener(t, l), nil
}

// listener hands incoming links to libp2p's upgrading listener.
type listener struct {
	addr  ma.Multiaddr
	conns chan manet.Conn
	done  chan struct{}
	once  stdsync.Once
	stop  func()
}

// push hands c to Accept; false if the listener is closed.
func (l *listener) push(c manet.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *listener) Accept() (manet.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		if l.stop != nil {
			l.stop()
		}
	})
	return nil
}

func (l *listener) Multiaddr() ma.Multiaddr { return l.addr }
func (l *listener) Addr() net.Addr          { return addr(l.addr.String()) }

// addr is a proximity address as a net.Addr.
type addr string

func (a addr) Network() string { return ProtocolName }
func (a addr) String() string  { return string(a) }
