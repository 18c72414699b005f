package meshconf

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
)

// AddrInUseError is returned by CheckListenFree when another process (or socket) holds a listen address.
type AddrInUseError struct {
	Addr string // the multiaddr, as given
}

func (e *AddrInUseError) Error() string {
	return fmt.Sprintf("meshconf: listen address %s is already in use by another node or program", e.Addr)
}

// CheckListenFree returns an *AddrInUseError if one of addrs with an
// IP and a fixed TCP or UDP port is already bound. libp2p binds its sockets with SO_REUSEPORT, so a
// second host on a taken port would otherwise start and share the port's connections with the first
// (the kernel spreads them between the two): this plain bind, without SO_REUSEPORT, is refused
// instead. Port 0, names (/dns) and addresses that do not parse are left to libp2p. A port freed
// between this check and libp2p's bind is harmless; one taken in between is not caught.
func CheckListenFree(addrs []string) error {
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		ip, err := m.ValueForProtocol(ma.P_IP4)
		if err != nil {
			if ip, err = m.ValueForProtocol(ma.P_IP6); err != nil {
				continue
			}
		}
		network, port := "tcp", ""
		if port, err = m.ValueForProtocol(ma.P_TCP); err != nil {
			network = "udp"
			if port, err = m.ValueForProtocol(ma.P_UDP); err != nil {
				continue
			}
		}
		if port == "0" {
			continue
		}
		hostPort := net.JoinHostPort(ip, port)
		if _, err := strconv.Atoi(port); err != nil {
			continue
		}
		var closer interface{ Close() error }
		if network == "tcp" {
			closer, err = net.Listen("tcp", hostPort)
		} else {
			closer, err = net.ListenPacket("udp", hostPort)
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return &AddrInUseError{Addr: s}
		}
		if err == nil {
			closer.Close()
		}
	}
	return nil
}
