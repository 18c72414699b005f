// Package proximity carries the node's libp2p connections over a short-range radio that the phone's
// native code drives: Bluetooth LE and peer-to-peer Wi-Fi through Android's Nearby Connections or
// iOS's Multipeer Connectivity. Those frameworks are native, so this package only states what it needs
// of them, the Radio interface (in gomobile's subset of Go: strings, []byte, errors), and adapts a
// Radio to a libp2p transport. Connections over it are upgraded like any TCP connection (Noise, then
// yamux), so a radio sees only Noise ciphertext and a device nearby that is not a member gets no more
// than a peer on the same Wi-Fi does.
//
// Main types:
//
//   - Radio, implemented natively (and in memory by proximitytest.Air for tests): advertise, discover,
//     connect to an endpoint, send payloads on a link, disconnect.
//   - Adapter wraps one Radio. The native code reports what the radio sees by calling the Adapter's
//     methods (Found, Lost, Incoming, Received, Disconnected); Option installs the Adapter as a libp2p
//     transport; OnFound hands discovered devices to the node, which dials them.
//
// Addresses: a proximity multiaddr is /fmprox/NAME, where NAME is a radio endpoint id or the name a
// device advertises (its libp2p peer id, as mDNS announces it on a LAN). A device listens on
// /fmprox/ITS-PEER-ID; dialling /fmprox/X works while an endpoint whose id or advertised name is X is
// in range. So the addresses in an invite code made on a phone work for a phone next to it.
//
// Each link is a reliable, ordered byte stream cut into payloads of at most MaxPayload bytes (Nearby
// Connections' BYTES payloads hold 32 KiB). Received blocks until the connection has taken the payload:
// that is the link's back-pressure, so native code must call it from a thread that may wait (a queue per
// endpoint), never from the UI thread.
//
// Caveats: the advertised name is the device's peer id, so a listener in radio range can tell that the
// same device passes by again, as mDNS lets anyone on a LAN do (docs/security.md, "Phone binding").
// Only one link per endpoint: a second Connect to an endpoint that has one is refused, and of two
// devices that find each other, only the one whose peer id sorts first dials.
//
// Concurrency: an Adapter's methods are safe for concurrent use; each link has one goroutine that
// moves bytes from the connection to the radio, ended when the link closes.
package proximity
