package meshconf

import (
	"strings"

	"github.com/libp2p/go-libp2p"
	lnoise "github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Transports are the host's security and transports: Noise over TCP, and QUIC. In a build with
// the test-only tag fieldmesh_noseal (envelope.NoSeal, used only by the chaos run's control, which must
// find plaintext on the wire to prove its scan works) connections are unencrypted TCP. No normal build
// can do that.
func Transports() []libp2p.Option {
	if envelope.NoSeal {
		return []libp2p.Option{libp2p.NoSecurity, libp2p.Transport(tcp.NewTCPTransport)}
	}
	return []libp2p.Option{
		libp2p.Security(lnoise.ID, lnoise.New),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
	}
}

// Listenable drops the QUIC listen addresses a noseal build cannot serve.
func Listenable(addrs []string) []string {
	if !envelope.NoSeal {
		return addrs
	}
	var out []string
	for _, a := range addrs {
		if !strings.Contains(a, "/quic") {
			out = append(out, a)
		}
	}
	return out
}
