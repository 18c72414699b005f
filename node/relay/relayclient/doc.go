// Package relayclient is the device side of a clinic relay's protocols (node/relay/relayproto):
// enrolling a device's topics with a relay (Enrol), registering its addresses and learning the other
// devices of a topic (Directory), and the circuit addresses a device is reached at through a relay
// (CircuitAddrs). A device calls these on its own libp2p host; the node's relay client
// (node/relayclient.go) keeps the connection, the circuit reservation and the schedule.
//
// It does not import the relay server (node/relay), so a device does not link the server's store
// and metrics.
package relayclient
