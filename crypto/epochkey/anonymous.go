package epochkey

import (
	"fmt"
	"io"
	"sync/atomic"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/flynn/noise"
)

// SealToEach seals payload to each recipient, in the given order, as
// [SealTo] would (one Noise X message each, under one prologue), but keeps
// the sender's static key ready across the boxes, as [NewHandover] does:
// three scalar multiplications a box instead of four. The result has one
// message a recipient, in the recipients' order, each len(payload)+Overhead
// bytes. Unlike a [Handover], the messages do not name their recipients:
// a device finds its own with [OpenAny]. rand supplies one ephemeral key a
// message (nil = crypto/rand).
func SealToEach(sender *identity.Device, recipients []identity.NoisePublic, prologue, payload []byte, rand io.Reader) ([][]byte, error) {
	static := sender.NoiseKey()
	defer clear(static.Private)
	cs, done, err := defaultSuite(static)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSeal, err)
	}
	defer done()
	out := make([][]byte, len(recipients))
	for i, r := range recipients {
		if out[i], err = sealTo(cs, static, r, prologue, payload, rand); err != nil {
			return nil, fmt.Errorf("epochkey: seal to %v: %w", r.Short(), err)
		}
	}
	return out, nil
}

// OpenAny trial-opens msgs with recipient's static key under prologue, in
// order, and returns the index of the first one that opens, its sender's
// static key and its payload. It returns [ErrNotRecipient] if none opens.
//
// Cost: one scalar multiplication to load the static key, then one (the es
// DH) for each message that is not for this device, and two (es, ss) for
// the one that is: a device that is one of n recipients pays about n/2+2
// multiplications, a device that is none pays n+1. The messages must be
// what SealTo or SealToEach produced; a message of another length counts as
// one that does not open.
func OpenAny(recipient *identity.Device, prologue []byte, msgs [][]byte) (index int, sender identity.NoisePublic, payload []byte, err error) {
	static := recipient.NoiseKey()
	defer clear(static.Private)
	return openAny(static, prologue, msgs)
}

func openAny(static noise.DHKey, prologue []byte, msgs [][]byte) (index int, sender identity.NoisePublic, payload []byte, err error) {
	opened.Add(1)
	cs, done, err := defaultSuite(static)
	if err != nil {
		return -1, identity.NoisePublic{}, nil, ErrOpen // unreachable: a Device's key is valid
	}
	defer done()
	for i, m := range msgs {
		tried.Add(1)
		s, p, err := openFrom(cs, static, prologue, m)
		if err == nil {
			return i, s, p, nil
		}
	}
	return -1, identity.NoisePublic{}, nil, ErrNotRecipient
}

// opened and tried count OpenAny's calls and the messages it tried, in this
// process (see TrialCount).
var opened, tried atomic.Uint64

// TrialCount returns how many times OpenAny was called and how many
// messages it tried in this process so far. Each call costs at least one
// X25519 multiplication and each message tried one more, so a caller can
// show (and tests check) that some input cost none.
func TrialCount() (calls, messages uint64) { return opened.Load(), tried.Load() }
