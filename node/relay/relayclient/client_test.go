package relayclient

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestCircuitAddrs(t *testing.T) {
	id, err := peer.Decode("12D3KooWAVNbU9ihFMK23TvzdzzWxMqxZXmDsZEPGxTrGtvqDpFQ")
	if err != nil {
		t.Fatal(err)
	}
	ai := peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{
		ma.StringCast("/ip4/10.0.0.1/tcp/4001"),
		ma.StringCast("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/" + id.String()),
		ma.StringCast("/ip4/10.0.0.2/tcp/4001/p2p/" + id.String() + "/p2p-circuit"), // already a circuit: skipped
	}}
	want := []string{
		"/ip4/10.0.0.1/tcp/4001/p2p/" + id.String() + "/p2p-circuit",
		"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/" + id.String() + "/p2p-circuit",
	}
	got := CircuitAddrs(ai)
	if len(got) != len(want) {
		t.Fatalf("CircuitAddrs = %v; want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("CircuitAddrs[%d] = %s; want %s", i, got[i], want[i])
		}
	}
}
