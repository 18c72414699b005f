package senderkey

// Wipe overwrites the chain key and marks the state exhausted, so that it
// seals nothing more ([ErrExhausted]). Call it when the epoch is destroyed;
// it is best effort, like every erasure in Go (see the package caveats).
func (s *SenderState) Wipe() {
	clear(s.chain[:])
	s.next = MaxIndex + 1
}

// Wipe overwrites the chain key and every skipped key and drops them, and
// marks the state exhausted, so that it opens nothing more. Call it when
// the epoch is destroyed; it is best effort (see the package caveats).
func (r *ReceiverState) Wipe() {
	clear(r.chain[:])
	for i, k := range r.skipped {
		clear(k[:])
		r.skipped[i] = messageKey{}
		delete(r.skipped, i)
	}
	r.next = MaxIndex + 1
}

// Wiped reports whether the state's chain key is overwritten and the state exhausted.
func (s *SenderState) Wiped() bool { return s.chain == chainKey{} && s.next == MaxIndex+1 }
