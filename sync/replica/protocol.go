package replica

import (
	"github.com/fieldmesh/fieldmesh/sync/catchup"
)

// Item names one envelope of a topic: its timestamp (a crdt.HLC) and its id
// (a crdt.OpID). It has the shape of catchup.Item and recon.Item.
type Item struct {
	Time uint64
	ID   [32]byte
}

// Source is a read-only view of the envelopes of one topic, in the shape
// that reconciliation sessions (sync/catchup, sync/recon) consume. Replica
// implements it.
type Source interface {
	// Items returns the topic's items sorted by (Time, ID).
	Items() ([]Item, error)
	// Envelope returns the marshalled envelope with the given id.
	Envelope(id [32]byte) ([]byte, error)
}

// Session is one end of one reconciliation exchange: the shape of
// *catchup.Session and *recon.Session. Start returns the first frame (nil
// for a responder); Handle consumes one frame from the peer and returns the
// frames to send, the envelopes received (not validated) and whether this
// side is done. Any error is final.
type Session interface {
	Start() ([]byte, error)
	Handle(frame []byte) (out [][]byte, received [][]byte, done bool, err error)
}

// Protocol is a reconciliation protocol given by its two session
// constructors; maxFrame is the largest frame a session sends, in bytes
// (0 = the protocol's default).
type Protocol struct {
	Name         string
	NewInitiator func(src Source, maxFrame int) Session
	NewResponder func(src Source, maxFrame int) Session
}

// Catchup is the foundation's "send every id" protocol, sync/catchup.
var Catchup = Protocol{
	Name: "catchup",
	NewInitiator: func(src Source, maxFrame int) Session {
		return catchup.NewInitiator(catchupSource{src}, maxFrame)
	},
	NewResponder: func(src Source, maxFrame int) Session {
		return catchup.NewResponder(catchupSource{src}, maxFrame)
	},
}

// catchupSource adapts a Source to catchup.Source.
type catchupSource struct{ Source }

func (s catchupSource) Items() ([]catchup.Item, error) {
	items, err := s.Source.Items()
	if err != nil {
		return nil, err
	}
	out := make([]catchup.Item, len(items))
	for i, it := range items {
		out[i] = catchup.Item(it)
	}
	return out, nil
}

var _ Session = (*catchup.Session)(nil)
