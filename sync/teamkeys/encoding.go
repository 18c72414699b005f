package teamkeys

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

const (
	stateVersion = 1

	flagCommit = 1 << 0 // the commit id follows
	flagChains = 1 << 1 // the sender state and receiver states follow

	senderStateSize = 70 // senderkey's SenderState encoding
	minReceiverSize = 72 // senderkey's ReceiverState encoding with no skipped keys

	maxEpochSize = 4 + 1 + 32 + seal.KeySize + senderStateSize + binary.MaxVarintLen16 +
		envelope.MaxBoxes*(binary.MaxVarintLen32+senderkey.MaxReceiverSize)

	// MaxStateSize is the largest encoding Unmarshal accepts (bytes): the
	// most epochs, each with the most receivers, each with the most skipped
	// keys, and the most forgotten tags. It is a bound, not a size to
	// expect: a 30-device team with weekly epochs over a year is about
	// 120 KB. Unmarshal reads sequentially and allocates only as it
	// consumes input.
	MaxStateSize int64 = 1 + 32 + 32 + binary.MaxVarintLen16 + MaxEpochs*maxEpochSize +
		binary.MaxVarintLen32 + MaxForgotten*4
)

// Marshal encodes the whole state (version 1), for one record of the
// encrypted store; integers big-endian, uvarints minimal:
//
//	version     1 byte   (1)
//	team       32 bytes
//	device     32 bytes  this device's id
//	epochs     uvarint count (0..MaxEpochs), then each, ascending by tag:
//	  tag        4 bytes
//	  flags      1 byte   bit 0: commit id follows; bit 1: chains follow; no other bit
//	  [commit   32 bytes]
//	  outer     32 bytes  the outer key
//	  [chains:  sender state (70 bytes, crypto/senderkey);
//	            uvarint count (0..MaxBoxes-1) of receiver states, ascending by sender,
//	            each as uvarint length and crypto/senderkey's encoding]
//	forgotten  uvarint count (0..MaxForgotten), then each tag 4 bytes, ascending
//
// Each state has exactly one encoding. The result holds secrets (outer
// keys, chain keys); the store encrypts it at rest. Persist it after every
// Seal and SealCommit before the envelope leaves the device, and after
// every Open that succeeded.
func (k *Keys) Marshal() []byte {
	b := make([]byte, 0, 128+len(k.epochs)*256)
	b = append(b, stateVersion)
	b = append(b, k.team[:]...)
	me := k.self.ID()
	b = append(b, me[:]...)
	b = binary.AppendUvarint(b, uint64(len(k.epochs)))
	for _, tag := range k.Tags() {
		ep := k.epochs[tag]
		b = binary.BigEndian.AppendUint32(b, tag)
		var flags byte
		if ep.commit != (crdt.OpID{}) {
			flags |= flagCommit
		}
		if ep.chains() {
			flags |= flagChains
		}
		b = append(b, flags)
		if flags&flagCommit != 0 {
			b = append(b, ep.commit[:]...)
		}
		raw := ep.outer.Bytes()
		b = append(b, raw...)
		clear(raw)
		if !ep.chains() {
			continue
		}
		s, _ := ep.send.MarshalBinary()
		b = append(b, s...)
		clear(s)
		b = binary.AppendUvarint(b, uint64(len(ep.recv)))
		for _, d := range slices.SortedFunc(maps.Keys(ep.recv), compareDevice) {
			r, _ := ep.recv[d].MarshalBinary()
			b = binary.AppendUvarint(b, uint64(len(r)))
			b = append(b, r...)
			clear(r)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(k.forgotten)))
	for _, tag := range slices.Sorted(maps.Keys(k.forgotten)) {
		b = binary.BigEndian.AppendUint32(b, tag)
	}
	return b
}

func compareDevice(a, b identity.DeviceID) int { return bytes.Compare(a[:], b[:]) }

// Unmarshal decodes the output of Marshal for team on device self. It
// refuses input over MaxStateSize before reading it, another team or
// device, unknown versions and flags, non-minimal uvarints, counts over
// their limits or over what the input holds, lists out of order, chain
// states of another device than the one listed, trailing bytes, and
// everything crypto/senderkey's decoders refuse. It never panics (fuzzed)
// and the result does not alias b.
func Unmarshal(team crdt.TeamID, self *identity.Device, b []byte) (*Keys, error) {
	if int64(len(b)) > MaxStateSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrEncoding, len(b), MaxStateSize)
	}
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != stateVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrEncoding, v)
	}
	if t := d.fixed(32); d.err == nil && !bytes.Equal(t, team[:]) {
		return nil, fmt.Errorf("%w: the state of another team", ErrEncoding)
	}
	me := self.ID()
	if dev := d.fixed(32); d.err == nil && !bytes.Equal(dev, me[:]) {
		return nil, fmt.Errorf("%w: the state of another device", ErrEncoding)
	}
	k := New(team, self)
	n := d.count(MaxEpochs, 4+1+seal.KeySize)
	prev := int64(-1)
	for range n {
		tag := d.uint32()
		if d.err == nil && int64(tag) <= prev {
			d.fail("epoch tags not strictly ascending")
		}
		prev = int64(tag)
		ep := &epoch{}
		flags := d.byte()
		if d.err == nil && flags&^(flagCommit|flagChains) != 0 {
			d.fail(fmt.Sprintf("unknown epoch flags %#x", flags))
		}
		if flags&flagCommit != 0 {
			copy(ep.commit[:], d.fixed(32))
			if d.err == nil && ep.commit == (crdt.OpID{}) {
				d.fail("zero commit id") // Marshal writes none then
			}
		}
		ep.outer, _ = seal.EpochKeyFromBytes(d.fixed(seal.KeySize))
		if flags&flagChains != 0 {
			d.chains(ep, me)
		}
		if d.err != nil {
			return nil, d.err
		}
		k.epochs[tag] = ep
	}
	m := d.count(MaxForgotten, 4)
	prev = -1
	for range m {
		tag := d.uint32()
		if d.err == nil && int64(tag) <= prev {
			d.fail("forgotten tags not strictly ascending")
		}
		prev = int64(tag)
		if _, held := k.epochs[tag]; d.err == nil && held {
			d.fail("a forgotten tag is held")
		}
		k.forgotten[tag] = struct{}{}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, d.err
	}
	return k, nil
}

// decoder reads a state encoding; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrEncoding, why)
	}
}

func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if len(d.b) < n {
		d.fail("truncated")
		return make([]byte, n)
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) byte() byte { return d.fixed(1)[0] }

func (d *decoder) uint32() uint32 { return binary.BigEndian.Uint32(d.fixed(4)) }

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		d.fail("uvarint not minimally encoded")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of at most max items of at least minSize bytes each,
// refusing one that the rest of the input cannot hold.
func (d *decoder) count(max, minSize int) int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(max) || v*uint64(minSize) > uint64(len(d.b)) {
		d.fail(fmt.Sprintf("count %d over the limit %d or the %d bytes left", v, max, len(d.b)))
		return 0
	}
	return int(v)
}

// chains reads the sender and receiver states of an epoch of device me.
func (d *decoder) chains(ep *epoch, me identity.DeviceID) {
	s, err := senderkey.UnmarshalSender(d.fixed(senderStateSize))
	if d.err != nil {
		return
	}
	if err != nil {
		d.fail(err.Error())
		return
	}
	if s.Sender() != me {
		d.fail("a sender state of another device")
		return
	}
	ep.send = s
	n := d.count(envelope.MaxBoxes-1, 1+minReceiverSize) // 0 for a device alone in its epoch
	ep.recv = make(map[identity.DeviceID]*senderkey.ReceiverState, n)
	var prev *identity.DeviceID
	for range n {
		l := d.uvarint()
		if d.err == nil && l > uint64(len(d.b)) {
			d.fail("truncated receiver state")
		}
		if d.err != nil {
			return
		}
		raw := d.fixed(int(l))
		r, err := senderkey.UnmarshalReceiver(raw)
		if err != nil {
			d.fail(err.Error())
			return
		}
		who := r.Sender()
		switch {
		case who == me:
			d.fail("a receiver state of this device")
		case prev != nil && compareDevice(*prev, who) >= 0:
			d.fail("receiver states not strictly ascending by sender")
		}
		if d.err != nil {
			return
		}
		ep.recv[who] = r
		prev = &who
	}
}
