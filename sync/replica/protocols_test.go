package replica

import (
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// protocols is the table of reconciliation protocols the property tests run
// against: every protocol must converge under the same schedules.
var protocols = []Protocol{Catchup, reconProtocol}

// reconProtocol is sync/recon's range-based reconciliation
// (/fieldmesh/sync/2.0.0). It lives in a test file while sync/recon's API
// settles; it moves next to Catchup in protocol.go for the simulator.
var reconProtocol = Protocol{
	Name: "recon",
	NewInitiator: func(src Source, maxFrame int) Session {
		return recon.NewInitiator(reconSource{src}, maxFrame)
	},
	NewResponder: func(src Source, maxFrame int) Session {
		return recon.NewResponder(reconSource{src}, maxFrame)
	},
}

// reconSource adapts a Source to recon.Source.
type reconSource struct{ Source }

func (s reconSource) Items() ([]recon.Item, error) {
	items, err := s.Source.Items()
	if err != nil {
		return nil, err
	}
	out := make([]recon.Item, len(items))
	for i, it := range items {
		out[i] = recon.Item(it)
	}
	return out, nil
}

var _ Session = (*recon.Session)(nil)
