// Package relayproto is what a clinic relay and the devices it serves share: the wire formats of the
// relay's two stream protocols (EnrolProtocol, DirectoryProtocol; wire.go), the relay key a device
// proves it holds (Key, TeamKey, Key.Proof) and the relay codes an admin hands to a relay's operator
// (Code, CodeFor, ParseCode; code.go).
//
// It holds definitions and pure encoders and decoders only: no host, no streams, no storage. The
// server is node/relay, the device side node/relay/relayclient; both import this package, neither
// imports the other. Every decoder is fuzzed (testdata/fuzz) and the derivations and messages are
// pinned byte for byte by testdata/relay.golden.
package relayproto
