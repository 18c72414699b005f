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

// Secrets calls fn with each key the state holds in memory now: every epoch's outer key, its
// sender chain key and its receivers' chain keys (not skipped message keys). It exists for tests of
// erasure (node's TestLockLeavesNoKeyInHeap looks for these bytes in a heap dump). fn is given a
// copy, overwritten when fn returns; fn must not keep it.
func (k *Keys) Secrets(fn func(key []byte)) {
	const chainAt = 38 // version, kind, sender 32, next 4: crypto/senderkey's MarshalBinary
	give := func(b []byte, from int) {
		fn(b[from : from+seal.KeySize])
		clear(b)
	}
	for _, tag := range k.Tags() {
		for _, ep := range k.epochs[tag] {
			give(ep.outer.Bytes(), 0)
			if ep.send != nil {
				b, _ := ep.send.MarshalBinary()
				give(b, chainAt)
			}
			for _, r := range ep.recv {
				b, _ := r.MarshalBinary()
				give(b, chainAt)
			}
		}
	}
}
