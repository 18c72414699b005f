package teamkeys

import "github.com/fieldmesh/fieldmesh/crypto/seal"

// Wipe overwrites every key the state holds in memory (each epoch's outer key and chains, each
// prekey's private half) and drops them, leaving an empty state that opens and seals nothing. The
// node calls it when the device locks, after the state was stored. It is best effort, as every
// erasure in Go: copies made earlier (marshalled states, garbage not yet reused) are not reached.
func (k *Keys) Wipe() {
	for tag, eps := range k.epochs {
		for _, ep := range eps {
			ep.wipe()
		}
		delete(k.epochs, tag)
	}
	for _, p := range k.prekeys {
		p.key.Wipe()
	}
	k.prekeys = nil
}

// Wiped reports whether every key of the epoch is overwritten (after Keys.Wipe, or Forget).
func (ep *Epoch) Wiped() bool {
	return ep.outer.Equal(seal.EpochKey{}) && (ep.send == nil || ep.send.Wiped()) && len(ep.recv) == 0
}
