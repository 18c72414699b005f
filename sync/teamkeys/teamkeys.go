package teamkeys

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Limits, in counts.
const (
	// MaxEpochs is the most epochs a Keys holds (with chains or with the
	// outer key only). Learn and LearnPrior refuse one more
	// (ErrTooManyEpochs): the caller forgets an old epoch first.
	MaxEpochs = envelope.MaxPriorKeys // 512
	// MaxForgotten is the most forgotten epoch tags a Keys remembers, so
	// that it never learns a forgotten epoch again. Forget beyond it drops
	// the smallest tags from the list.
	MaxForgotten = 1 << 16
	// MaxPrekeys is the most prekeys a Keys holds: one fresh, published and
	// not used yet, and one for each epoch still held that was learned
	// through a prekey (about five with weekly epochs and 30 days of
	// retention). NewPrekey beyond it destroys the oldest. Each held prekey
	// costs a trial of every box of a commit this device has not opened
	// (OpenBox), newest first.
	MaxPrekeys = 32
)

// Errors. Every error of Keys wraps one of these, or an error of
// sync/envelope (a malformed or tampered envelope, a sealed op that does
// not match it).
var (
	// ErrUnknownEpoch: this device holds no key of the envelope's epoch (not
	// yet: keep the envelope and retry when the epoch is learned; or never:
	// an epoch it is not a member of, or one it forgot).
	ErrUnknownEpoch = errors.New("teamkeys: no key for this epoch")
	// ErrNoChain: the outer layer opened and the sender's signature
	// verified, but this device has no receiver chain for the sender in that
	// epoch: the epoch is known only by its outer key (history from before
	// this device was a recipient), the sender is not a recipient, or the
	// envelope is this device's own.
	ErrNoChain = errors.New("teamkeys: no chain for this sender in this epoch")
	// ErrReplay: the message's index in its sender's chain was already
	// consumed here (its key is deleted).
	ErrReplay = errors.New("teamkeys: message already opened (replay)")
	// ErrTooFarAhead: opening the message would store more than
	// senderkey.MaxSkipped keys of its sender's messages that have not
	// arrived. Nothing changed: keep the envelope and retry once earlier
	// messages of that sender have arrived.
	ErrTooFarAhead = errors.New("teamkeys: message too far ahead of its sender's chain; retry after earlier ones")
	// ErrCannotSend: Seal under an epoch this device holds no sender chain
	// of (it was not a recipient, or the epoch is unknown or forgotten).
	ErrCannotSend = errors.New("teamkeys: no sender chain for this epoch")
	// ErrForgotten: the epoch's tag was forgotten (Forget), and is never
	// learned again.
	ErrForgotten = errors.New("teamkeys: epoch tag forgotten")
	// ErrTooManyEpochs: learning the epoch would hold more than MaxEpochs.
	ErrTooManyEpochs = errors.New("teamkeys: too many epochs held; forget old ones")
	// ErrWrongOp: the op cannot be sealed here (another team, another
	// author, the wrong kind for the form, a body that does not decode).
	ErrWrongOp = errors.New("teamkeys: cannot seal this op")
	// ErrEncoding: Unmarshal met bytes that are not a valid state of this
	// team and device.
	ErrEncoding = errors.New("teamkeys: bad state encoding")
)

// Epoch is what a device holds of one key epoch: the outer key, the id of
// the op that started it (zero while the epoch is known only from prior
// keys), and, if the device was one of the epoch's recipients, its own
// sender chain and a receiver chain for every other recipient. The epoch
// key K itself is dropped once these are derived. An Epoch is not safe for
// concurrent use.
type Epoch struct {
	tag    uint32
	outer  seal.EpochKey
	commit crdt.OpID
	// list is the device ids of the epoch's recipients, in the order of
	// its create or commit op (ascending): a chain envelope names its
	// sender by a slot in it. Nil while the epoch is known by its outer key
	// only (its commit op not learned yet).
	list []identity.DeviceID
	send *senderkey.SenderState // nil: not a recipient (recv is nil too)
	recv map[identity.DeviceID]*senderkey.ReceiverState
}

// NewEpoch derives the state of an epoch from its key: the outer key, and,
// if self is among recipients with its current Noise key, its sender chain
// and a receiver chain for every other recipient. commit is the id of the
// create or commit op that started the epoch. The caller drops key
// afterwards. A device learns an epoch through Keys.Learn; an Epoch made
// here and not learned opens envelopes (OpenChain) without being kept.
func NewEpoch(self *identity.Device, key seal.EpochKey, commit crdt.OpID, recipients []crdt.Recipient) *Epoch {
	ep := &Epoch{tag: crdt.TagOf(commit), outer: envelope.OuterKey(key), commit: commit, list: DeviceList(recipients)}
	me, noise := self.ID(), self.NoisePublic()
	if !slices.ContainsFunc(recipients, func(r crdt.Recipient) bool { return r.Device == me && r.Noise == noise }) {
		return ep
	}
	ep.send = senderkey.NewSender(key, me)
	ep.recv = make(map[identity.DeviceID]*senderkey.ReceiverState, len(recipients)-1)
	for _, r := range recipients {
		if r.Device != me {
			ep.recv[r.Device] = senderkey.NewReceiver(key, r.Device)
		}
	}
	return ep
}

// DeviceList returns the device ids of recipients, in their order: an
// epoch's list, which a chain envelope's slot indexes.
func DeviceList(recipients []crdt.Recipient) []identity.DeviceID {
	out := make([]identity.DeviceID, len(recipients))
	for i, r := range recipients {
		out[i] = r.Device
	}
	return out
}

// Tag returns the epoch's tag.
func (ep *Epoch) Tag() uint32 { return ep.tag }

// List returns the device ids of the epoch's recipients in the order of
// its create or commit op (a chain envelope's sender slot indexes it), or
// nil while only its outer key is known.
func (ep *Epoch) List() []identity.DeviceID { return slices.Clone(ep.list) }

// Commit returns the id of the op that started the epoch (zero if it is
// known only by its outer key).
func (ep *Epoch) Commit() crdt.OpID { return ep.commit }

// Chains reports whether this device holds the epoch's chains (it was a
// recipient).
func (ep *Epoch) Chains() bool { return ep.send != nil }

func (ep *Epoch) wipe() {
	if ep.send != nil {
		ep.send.Wipe()
	}
	for _, r := range ep.recv {
		r.Wipe()
	}
	clear(ep.recv)
	ep.outer = seal.EpochKey{}
	ep.list = nil
}

// Opened is a chain-form envelope opened without consuming its message
// key: the op (with its seal) and where it was sealed. Op is nil when the
// envelope could not be read (OpenChain's ErrNoChain): the outer layer
// and the sender's signature still checked, so Sender and Index are
// authentic.
type Opened struct {
	Op     *crdt.Op
	Sender identity.DeviceID
	Index  uint32
	Tag    uint32
	// Epoch is the id of the op that started the epoch the envelope was
	// opened in (zero if the epoch is known only by its outer key).
	Epoch crdt.OpID
	// Inner and Sig are the seal's inner hash and signature (crdt.Seal):
	// with the op id, half of an equivocation evidence.
	Inner crdt.InnerHash
	Sig   []byte
}

// Sealed returns the half of an equivocation evidence that o's seal of op
// id gives (crdt.SealedOf).
func (o *Opened) Sealed(id crdt.OpID) crdt.SealedID {
	return crdt.SealedID{ID: id, Inner: o.Inner, Sig: o.Sig}
}

// OpenChain opens a chain-form envelope of this epoch without changing
// anything: the outer layer (envelope.OpenChain, which verifies the
// sender's signature), then, if this device holds the sender's receiver
// chain, the inner layer (Chain.Peek). Errors: envelope.ErrBadSeal (the
// signature does not verify: a changed envelope, or one of another epoch
// of the tag, as the outer layer has no Poly1305 tag of its own), ErrNoChain, ErrReplay and
// ErrTooFarAhead (these three with the Opened that says who sent it and
// where: its outer layer and signature checked), ErrUnknownEpoch wrapping
// envelope.ErrNoList (the outer layer opens, but the epoch is known by its
// outer key only, without the recipient list that names the sender: keep
// the envelope until the epoch's commit is learned), and the envelope
// errors of Chain.Peek.
func (ep *Epoch) OpenChain(e *envelope.Envelope, team crdt.TeamID) (*Opened, error) {
	c, err := envelope.OpenChain(e, ep.outer, team, ep.list)
	if errors.Is(err, envelope.ErrNoList) {
		return nil, fmt.Errorf("%w: tag %08x: %w", ErrUnknownEpoch, e.Epoch, err)
	}
	if err != nil {
		return nil, wrap("open", err)
	}
	o := &Opened{Sender: c.Sender, Index: c.Index, Tag: e.Epoch, Epoch: ep.commit, Inner: c.Inner, Sig: c.Sig}
	r := ep.recv[c.Sender]
	if r == nil {
		why := "the epoch is known by its outer key only"
		switch {
		case ep.send != nil && ep.send.Sender() == c.Sender:
			why = "the envelope is this device's own"
		case ep.Chains():
			why = "the sender is not a recipient of the epoch"
		}
		return o, fmt.Errorf("%w: %v in tag %08x: %s", ErrNoChain, c.Sender.Short(), e.Epoch, why)
	}
	op, err := c.Peek(r)
	switch {
	case errors.Is(err, senderkey.ErrReplay):
		return o, fmt.Errorf("%w: %w", ErrReplay, err)
	case errors.Is(err, senderkey.ErrTooFarAhead):
		return o, fmt.Errorf("%w: %w", ErrTooFarAhead, err)
	case err != nil:
		return nil, wrap("open", err)
	}
	o.Op = op
	return o, nil
}

// Keys is one team's learned epochs on one device: the state the node
// keeps next to a team's log, persisted as one record of the encrypted
// store. It never holds an epoch key K longer than one call. It is not safe
// for concurrent use.
type Keys struct {
	team      crdt.TeamID
	self      *identity.Device
	epochs    map[uint32][]*Epoch // by tag: normally one each, more only if two commits share a tag
	forgotten map[uint32]struct{}
	prekeys   []*heldPrekey // oldest first
}

// heldPrekey is a prekey this device made and published, whether an epoch
// it learned was boxed to it, and the tags of the held epochs learned
// through it.
type heldPrekey struct {
	key    epochkey.Prekey
	used   bool
	opened []uint32 // ascending
}

// New returns the empty key state of team on device self.
func New(team crdt.TeamID, self *identity.Device) *Keys {
	return &Keys{team: team, self: self, epochs: map[uint32][]*Epoch{}, forgotten: map[uint32]struct{}{}}
}

// Tags returns the tags of the epochs held (with chains or with the outer
// key only), ascending, each once.
func (k *Keys) Tags() []uint32 { return slices.Sorted(maps.Keys(k.epochs)) }

// Len returns the number of epochs held.
func (k *Keys) Len() int {
	n := 0
	for _, eps := range k.epochs {
		n += len(eps)
	}
	return n
}

// Held reports whether an epoch with this tag is held.
func (k *Keys) Held(tag uint32) bool { return len(k.epochs[tag]) > 0 }

// TagState sums up what k holds of the epochs of tag: how many, how many
// with their recipient list, and how many with chains. It changes whenever
// something k holds could open more envelopes of tag: a caller that found
// an envelope of tag opened by none of them need not try again until it
// does.
func (k *Keys) TagState(tag uint32) [3]int {
	var s [3]int
	for _, ep := range k.epochs[tag] {
		s[0]++
		if ep.list != nil {
			s[1]++
		}
		if ep.send != nil {
			s[2]++
		}
	}
	return s
}

// Forgotten reports whether the tag was forgotten.
func (k *Keys) Forgotten(tag uint32) bool {
	_, ok := k.forgotten[tag]
	return ok
}

// Epoch returns the epoch started by the op with the given id, if held.
func (k *Keys) Epoch(commit crdt.OpID) (*Epoch, bool) {
	for _, ep := range k.epochs[crdt.TagOf(commit)] {
		if ep.commit == commit {
			return ep, true
		}
	}
	return nil, false
}

// CanSend reports whether this device holds its sender chain of the epoch
// started by commit (and the chain is not exhausted).
func (k *Keys) CanSend(commit crdt.OpID) bool {
	ep, ok := k.Epoch(commit)
	return ok && ep.Chains() && ep.send.Next() <= senderkey.MaxIndex
}

// recipientsOf returns the recipient devices of the epoch a create or
// commit op starts.
func recipientsOf(op *crdt.Op) ([]crdt.Recipient, error) {
	switch op.Kind {
	case crdt.KindCreate:
		c, err := crdt.UnmarshalCreate(op.Body)
		if err != nil {
			return nil, err
		}
		return []crdt.Recipient{{Device: c.Creator.Device, Noise: c.Creator.Noise}}, nil
	case crdt.KindMember:
		c, err := crdt.UnmarshalCommit(op.Body)
		if err != nil {
			return nil, err
		}
		return c.Recipients, nil
	}
	return nil, fmt.Errorf("a %v op starts no epoch", op.Kind)
}

// Recipients returns the recipient devices of the epoch a create or commit
// op starts, or an error wrapping ErrWrongOp.
func Recipients(op *crdt.Op) ([]crdt.Recipient, error) {
	r, err := recipientsOf(op)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrongOp, err)
	}
	return r, nil
}

// SealCommit seals a KindCreate or KindMember op by this device in commit
// form: a fresh random epoch key K (from rand; nil = crypto/rand), one box
// for each recipient of the op's body (Create.Creator, or
// Commit.Recipients, in that order), and as prior keys the outer key of
// every epoch held (one per tag) that include accepts (nil: all). It then
// learns the new epoch itself (its sender chain and a receiver chain for
// every other recipient if this device is one, else the outer key only) and
// forgets K.
//
// include is where the caller applies the rule that keeps prior keys from
// reaching devices they should not: hand on only the outer keys of epochs
// whose commits the caller's log holds and judged, so that an epoch whose
// commit removed a device is never handed to that device by a commit that
// did not know of the removal.
//
// Errors: ErrWrongOp, ErrForgotten (the op's tag was forgotten: make the
// op again at another time), ErrTooManyEpochs, or an envelope error (sizes
// are checked before any work). On error the state is unchanged.
func (k *Keys) SealCommit(op *crdt.Op, rand io.Reader, include func(EpochInfo) bool, prekeys map[identity.DeviceID]identity.NoisePublic) (*envelope.Envelope, error) {
	if err := k.checkOwn(op); err != nil {
		return nil, err
	}
	recipients, err := Recipients(op)
	if err != nil {
		return nil, err
	}
	id := op.ID()
	tag := crdt.TagOf(id)
	if k.Forgotten(tag) {
		return nil, fmt.Errorf("%w: tag %08x", ErrForgotten, tag)
	}
	if _, ok := k.Epoch(id); ok {
		// A second key for one commit would make its epoch ambiguous.
		return nil, fmt.Errorf("%w: the epoch of commit %v is already held", ErrWrongOp, id.Short())
	}
	if k.Len() >= MaxEpochs {
		return nil, fmt.Errorf("%w: %d held", ErrTooManyEpochs, k.Len())
	}
	key, err := seal.NewEpochKey(rand)
	if err != nil {
		return nil, fmt.Errorf("teamkeys: new epoch key: %w", err)
	}
	noise := make([]identity.NoisePublic, len(recipients))
	for i, r := range recipients {
		if err := r.Noise.Check(); err != nil {
			// Every box to such a key would be readable by anyone; the membership rules refuse it too.
			return nil, fmt.Errorf("teamkeys: seal commit: %w: device %v: %v", epochkey.ErrSeal, r.Device.Short(), err)
		}
		noise[i] = boxKey(r, k.self.ID(), prekeys)
		if r.Device == k.self.ID() {
			// This device learns the epoch below, from K: its own box is sealed
			// to a key made now and destroyed at once, so that nothing it keeps
			// (its static key, a prekey) reopens the box later.
			throwaway, err := epochkey.NewPrekey(rand)
			if err != nil {
				return nil, fmt.Errorf("teamkeys: seal commit: %w", err)
			}
			noise[i] = throwaway.Public
			throwaway.Wipe()
		}
	}
	e, err := envelope.SealCommit(op, k.self, key, noise, k.priorKeys(tag, include), rand)
	if err != nil {
		return nil, fmt.Errorf("teamkeys: seal commit: %w", err)
	}
	k.add(NewEpoch(k.self, key, id, recipients))
	return e, nil
}

// boxKey is the key a recipient's box is sealed to: its newest prekey
// known, else its static Noise key (a device whose prekey op has not reached
// the committer: see the package documentation).
func boxKey(r crdt.Recipient, self identity.DeviceID, prekeys map[identity.DeviceID]identity.NoisePublic) identity.NoisePublic {
	if p, ok := prekeys[r.Device]; ok && r.Device != self {
		return p
	}
	return r.Noise
}

// priorKeys returns the outer key of every epoch held that include accepts
// (nil: all), one per tag (the first accepted), ascending by tag, without
// except.
func (k *Keys) priorKeys(except uint32, include func(EpochInfo) bool) []envelope.PriorKey {
	out := make([]envelope.PriorKey, 0, len(k.epochs))
	for _, tag := range k.Tags() {
		if tag == except {
			continue
		}
		for _, ep := range k.epochs[tag] {
			if include == nil || include(EpochInfo{Tag: tag, Commit: ep.commit, Chains: ep.Chains()}) {
				out = append(out, envelope.PriorKey{Tag: tag, Outer: ep.outer})
				break
			}
		}
	}
	return out
}

// add inserts ep (the caller checked the limits), keeping each tag's list
// sorted by commit id.
func (k *Keys) add(ep *Epoch) {
	eps := append(k.epochs[ep.tag], ep)
	slices.SortFunc(eps, compareEpochs)
	k.epochs[ep.tag] = eps
}

func compareEpochs(a, b *Epoch) int {
	return cmp.Or(cmp.Compare(a.tag, b.tag), bytes.Compare(a.commit[:], b.commit[:]), bytes.Compare(a.outer.Bytes(), b.outer.Bytes()))
}

// checkOwn checks that op is this team's and this device's.
func (k *Keys) checkOwn(op *crdt.Op) error {
	switch {
	case op.Team != k.team:
		return fmt.Errorf("%w: op of team %v, keys of team %v", ErrWrongOp, op.Team.Short(), k.team.Short())
	case op.Author != k.self.ID():
		return fmt.Errorf("%w: op by %v, this device is %v", ErrWrongOp, op.Author.Short(), k.self.ID().Short())
	}
	return nil
}

// Seal seals an op by this device, of any kind but create and commit, in
// chain form under the epoch started by commit, with the next key of this
// device's sender chain of that epoch, which advances (its old key is
// overwritten). It returns the envelope and the op with its seal. Persist
// the state (Marshal) before the envelope leaves the device: see
// crypto/senderkey on rollback.
//
// Errors: ErrWrongOp, ErrCannotSend, or an envelope error (an op too large
// for an envelope is refused before the chain advances). On error the
// state is unchanged.
func (k *Keys) Seal(op *crdt.Op, commit crdt.OpID) (*envelope.Envelope, *crdt.Op, error) {
	if err := k.checkOwn(op); err != nil {
		return nil, nil, err
	}
	if op.Kind.StartsEpoch() {
		return nil, nil, fmt.Errorf("%w: a %v op travels in commit form (SealCommit)", ErrWrongOp, op.Kind)
	}
	if !k.CanSend(commit) {
		return nil, nil, fmt.Errorf("%w: epoch %v", ErrCannotSend, commit.Short())
	}
	ep, _ := k.Epoch(commit)
	slot := slices.Index(ep.list, k.self.ID())
	if slot < 0 {
		return nil, nil, fmt.Errorf("%w: epoch %v does not list this device", ErrCannotSend, commit.Short())
	}
	e, sealed, err := envelope.SealChain(op, k.self, ep.tag, ep.outer, ep.send, slot)
	if err != nil {
		return nil, nil, fmt.Errorf("teamkeys: seal: %w", err)
	}
	return e, sealed, nil
}

func wrap(verb string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("teamkeys: %s: %w", verb, err)
}

// OpenChain opens a chain-form envelope without changing anything, with
// each held epoch of its tag in turn (normally one): see Epoch.OpenChain.
// Errors: ErrUnknownEpoch (no epoch of that tag is held, or it is of none
// of them: then envelope.ErrBadSeal is wrapped too; or the epoch is held
// without its recipient list: then envelope.ErrNoList), envelope.ErrBadSeal, ErrNoChain (with the Opened), ErrReplay,
// ErrTooFarAhead, envelope errors.
//
// The chain form has no Poly1305 tag (envelope format 7 on its outer layer, 8 on both), so a wrong
// outer key and a changed envelope both end at the signature
// (envelope.ErrBadSeal). Against an epoch held with its chains that is
// ErrBadSeal: an honest peer of that epoch could have checked it (a
// tag shared with an epoch not held is about 2^-32 a pair). Against an
// epoch held by its outer key only it is ErrUnknownEpoch: the envelope
// may be of another epoch of the tag that this device has not learned, so
// it is held, not passed on, as one of an unknown epoch.
func (k *Keys) OpenChain(e *envelope.Envelope) (*Opened, error) {
	if e.Form() != envelope.FormChain {
		return nil, fmt.Errorf("teamkeys: open: %w: a %v-form envelope", envelope.ErrMalformed, e.Form())
	}
	eps := k.epochs[e.Epoch]
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, e.Epoch)
	}
	// Several epochs may share the tag: the one whose chains open it wins;
	// else the most telling failure: any failure past the outer layer (a
	// verified sender) before an outer layer that does not open, which
	// says only that the envelope is of none of these epochs.
	var (
		best      *Opened
		bestErr   error
		bestOuter bool
	)
	for _, ep := range eps {
		o, err := ep.OpenChain(e, k.team)
		if err == nil {
			return o, nil
		}
		if bestErr == nil || pastSignature(err) && !pastSignature(bestErr) || !pastSignature(bestErr) && bestOuter && !outerFailure(ep, o, err) {
			best, bestErr, bestOuter = o, err, outerFailure(ep, o, err)
		}
	}
	if bestOuter {
		return nil, fmt.Errorf("%w: tag %08x: %w", ErrUnknownEpoch, e.Epoch, bestErr)
	}
	return best, bestErr
}

// OpenChainListed opens the outer layer of a chain-form envelope whose
// epoch is held by its outer key only and without its recipient list (the
// epoch's commit not learned: OpenChain says ErrUnknownEpoch wrapping
// envelope.ErrNoList), naming the sender from list: the recipient list of
// a create or commit op of that tag that the caller holds (its log, or a
// commit opened but not judged yet). The list only says whose key verifies
// the sender's signature, which signs the full device id, so a wrong list
// makes it fail (envelope.ErrBadSeal). On success the error is ErrNoChain
// with the Opened (sender, index, signature checked; Op nil, Epoch zero),
// as for any epoch held without chains. It changes nothing. Errors:
// ErrUnknownEpoch (no outer-only epoch of the tag without a list opens
// it), envelope.ErrBadSeal, ErrNoChain.
func (k *Keys) OpenChainListed(e *envelope.Envelope, list []identity.DeviceID) (*Opened, error) {
	if e.Form() != envelope.FormChain || list == nil {
		return nil, fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, e.Epoch)
	}
	var first error
	for _, ep := range k.epochs[e.Epoch] {
		if ep.list != nil {
			continue
		}
		c, err := envelope.OpenChain(e, ep.outer, k.team, list)
		if err == nil {
			o := &Opened{Sender: c.Sender, Index: c.Index, Tag: e.Epoch, Inner: c.Inner, Sig: c.Sig}
			return o, fmt.Errorf("%w: %v in tag %08x: the epoch is known by its outer key only", ErrNoChain, c.Sender.Short(), e.Epoch)
		}
		first = cmp.Or(first, err)
	}
	if first != nil {
		return nil, wrap("open", first)
	}
	return nil, fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, e.Epoch)
}

// outerFailure reports whether ep.OpenChain failed in a way that says
// only that the envelope may be of another epoch of the tag: a signature
// that does not verify under an epoch held by its outer key only (see
// Keys.OpenChain).
func outerFailure(ep *Epoch, o *Opened, err error) bool {
	return o == nil && errors.Is(err, envelope.ErrBadSeal) && !ep.Chains()
}

// pastSignature reports whether ep.OpenChain got past the signature: the
// sender is verified, whatever failed after it. That is the envelope's own
// epoch speaking, and it outranks what any other epoch of the tag says: a
// member can hand on a junk prior key under a real tag, and the epoch it
// makes (no list, a wrong outer key) must not hide it.
func pastSignature(err error) bool {
	return !errors.Is(err, envelope.ErrBadSeal) && !errors.Is(err, envelope.ErrNoList)
}

// Consume spends the message key of an envelope OpenChain opened (its op
// accepted): see senderkey's Consume. Errors: ErrUnknownEpoch (the epoch
// is no longer held), ErrNoChain, ErrReplay, ErrTooFarAhead. On error the
// state is unchanged.
func (k *Keys) Consume(o *Opened) error {
	ep, ok := k.Epoch(o.Epoch)
	if !ok {
		return fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, o.Tag)
	}
	r := ep.recv[o.Sender]
	if r == nil {
		return fmt.Errorf("%w: %v in tag %08x", ErrNoChain, o.Sender.Short(), o.Tag)
	}
	err := r.Consume(o.Index)
	switch {
	case errors.Is(err, senderkey.ErrReplay):
		return fmt.Errorf("%w: %w", ErrReplay, err)
	case errors.Is(err, senderkey.ErrTooFarAhead):
		return fmt.Errorf("%w: %w", ErrTooFarAhead, err)
	}
	return wrap("consume", err)
}

// CanOpen reports whether the message key of the given position is still
// held: it has not been consumed.
func (k *Keys) CanOpen(epoch crdt.OpID, sender identity.DeviceID, index uint32) bool {
	ep, ok := k.Epoch(epoch)
	if !ok {
		return false
	}
	r := ep.recv[sender]
	return r != nil && r.Has(index)
}

// Box is a commit envelope's box opened by this device: the epoch key it
// held and the Noise static key of the device that sealed it.
type Box struct {
	Key    seal.EpochKey
	Sender identity.NoisePublic
	// Prekey is the public half of the prekey that opened the box (zero:
	// the device's static key did).
	Prekey identity.NoisePublic
}

// BoxKeys is what OpenBox tries a commit's boxes with: this device's
// prekeys, newest first, then its static key. Take it from Keys.BoxKeys
// under the lock that guards the Keys; it is a copy, safe to use outside.
type BoxKeys struct {
	self    *identity.Device
	prekeys []epochkey.Prekey
}

// BoxKeys returns a copy of the keys OpenBox tries.
func (k *Keys) BoxKeys() BoxKeys {
	bk := BoxKeys{self: k.self, prekeys: make([]epochkey.Prekey, 0, len(k.prekeys))}
	for i := len(k.prekeys) - 1; i >= 0; i-- {
		bk.prekeys = append(bk.prekeys, k.prekeys[i].key)
	}
	return bk
}

// StaticOnly returns the BoxKeys of a device that holds no prekey (one that
// has not joined a team yet, or a test).
func StaticOnly(self *identity.Device) BoxKeys { return BoxKeys{self: self} }

// Wipe overwrites the prekeys of the copy.
func (bk *BoxKeys) Wipe() {
	for i := range bk.prekeys {
		bk.prekeys[i].Wipe()
	}
}

// OpenBox trial-opens a commit-form envelope's boxes with self's static key
// (envelope.OpenBox). It uses no Keys, so a caller can run it outside the
// lock that guards them; it costs about one X25519 multiplication per box
// (a 256-box envelope about 9 ms). Errors: envelope.ErrNotRecipient and
// the envelope's layout errors.
func OpenBox(bk BoxKeys, team crdt.TeamID, e *envelope.Envelope) (*Box, error) {
	for _, p := range bk.prekeys {
		key, sender, err := envelope.OpenBoxWith(e, p, team)
		if err == nil {
			return &Box{Key: key, Sender: sender, Prekey: p.Public}, nil
		}
		if !errors.Is(err, envelope.ErrNotRecipient) {
			return nil, err
		}
	}
	key, sender, err := envelope.OpenBox(e, bk.self, team)
	if err != nil {
		return nil, err
	}
	return &Box{Key: key, Sender: sender}, nil
}

// NewPrekey makes a prekey for this device to publish (crdt.Prekey) and
// holds its private half, destroying the oldest held beyond MaxPrekeys.
// Persist the state (Marshal) in the same write as the op that publishes it.
func (k *Keys) NewPrekey(rand io.Reader) (identity.NoisePublic, error) {
	p, err := epochkey.NewPrekey(rand)
	if err != nil {
		return identity.NoisePublic{}, fmt.Errorf("teamkeys: %w", err)
	}
	k.prekeys = append(k.prekeys, &heldPrekey{key: p})
	for len(k.prekeys) > MaxPrekeys {
		k.prekeys[0].key.Wipe()
		k.prekeys = k.prekeys[1:]
	}
	return p.Public, nil
}

// HoldPrekey holds a prekey made elsewhere and handed over unpublished: the
// one a joining device sends in its join request, which the commit that
// adds it boxes its first epoch key to.
func (k *Keys) HoldPrekey(p epochkey.Prekey) {
	if slices.ContainsFunc(k.prekeys, func(h *heldPrekey) bool { return h.key.Public == p.Public }) {
		return
	}
	k.prekeys = append(k.prekeys, &heldPrekey{key: p})
}

// DropPrekey destroys the held prekey with this public half, if held (one
// made by NewPrekey whose op could not be published).
func (k *Keys) DropPrekey(pub identity.NoisePublic) {
	k.prekeys = slices.DeleteFunc(k.prekeys, func(h *heldPrekey) bool {
		if h.key.Public == pub {
			h.key.Wipe()
			return true
		}
		return false
	})
}

// WantsPrekey reports whether this device should publish a new prekey: it
// holds none that no learned epoch was boxed to.
func (k *Keys) WantsPrekey() bool {
	return !slices.ContainsFunc(k.prekeys, func(h *heldPrekey) bool { return !h.used })
}

// BoxKeyCount is how many keys OpenBox tries each box with: the prekeys
// held and the static key. A commit of n boxes costs up to n times this in
// X25519 multiplications.
func (k *Keys) BoxKeyCount() int { return len(k.prekeys) + 1 }

// Prekeys returns the public halves of the prekeys held, oldest first.
func (k *Keys) Prekeys() []identity.NoisePublic {
	out := make([]identity.NoisePublic, len(k.prekeys))
	for i, h := range k.prekeys {
		out[i] = h.key.Public
	}
	return out
}

// used records that the epoch with this tag was learned through the
// prekey pub. The prekey is then kept exactly as long as the keys of the
// epochs it opened (Forget destroys it with the last of them), and not
// longer: a commit made concurrently with the one it opened (in another
// partition, by an admin that had not seen this device's next prekey) may
// still be boxed to it, and must open while its epoch could be read at all.
func (k *Keys) used(pub identity.NoisePublic, tag uint32) {
	i := slices.IndexFunc(k.prekeys, func(h *heldPrekey) bool { return h.key.Public == pub })
	if i < 0 {
		return
	}
	h := k.prekeys[i]
	h.used = true
	if j, found := slices.BinarySearch(h.opened, tag); !found {
		h.opened = slices.Insert(h.opened, j, tag)
	}
}

// dropOpened removes a forgotten tag from the prekeys that opened it and
// destroys the used prekeys left without an epoch.
func (k *Keys) dropOpened(tag uint32) {
	k.prekeys = slices.DeleteFunc(k.prekeys, func(h *heldPrekey) bool {
		if j, found := slices.BinarySearch(h.opened, tag); found {
			h.opened = slices.Delete(h.opened, j, j+1)
		}
		if h.used && len(h.opened) == 0 && !keepPrekeys {
			h.key.Wipe()
			return true
		}
		return false
	})
}

// CommitOpened is a commit-form envelope opened: its op (with its seal),
// the prior keys it carries, and, when it was opened through this device's
// box, that box. It changes nothing until Learn.
type CommitOpened struct {
	Op    *crdt.Op
	Prior []envelope.PriorKey
	Box   *Box // nil: opened with an outer key (Outer)
	// Outer is the outer key that opened it, when Box is nil: one held, or
	// a prior key of another commit.
	Outer seal.EpochKey
}

// OpenCommitWith opens a commit-form envelope with an outer key that is not
// held (a prior key carried by another commit not yet judged); see
// OpenCommit.
func (k *Keys) OpenCommitWith(e *envelope.Envelope, outer seal.EpochKey) (*CommitOpened, error) {
	op, prior, err := envelope.OpenCommit(e, outer, k.team)
	if err != nil {
		return nil, wrap("open", err)
	}
	return &CommitOpened{Op: op, Prior: prior, Outer: outer}, nil
}

// Wipe overwrites the epoch key of the box, if any.
func (c *CommitOpened) Wipe() {
	if c.Box != nil {
		c.Box.Key = seal.EpochKey{}
	}
}

// OpenCommit opens a commit-form envelope without changing anything: with
// box (this device's box, from OpenBox) if given, else with each outer key
// held for its tag. Errors: ErrUnknownEpoch (no box and no held outer key
// opens it), ErrForgotten, envelope errors (a box that opens under a
// signature that does not verify is envelope.ErrBadOp).
func (k *Keys) OpenCommit(e *envelope.Envelope, box *Box) (*CommitOpened, error) {
	if e.Form() != envelope.FormCommit {
		return nil, fmt.Errorf("teamkeys: open: %w: a %v-form envelope", envelope.ErrMalformed, e.Form())
	}
	if k.Forgotten(e.Epoch) {
		return nil, fmt.Errorf("%w: tag %08x", ErrForgotten, e.Epoch)
	}
	if box != nil {
		op, prior, err := envelope.OpenCommit(e, envelope.OuterKey(box.Key), k.team)
		if err != nil {
			return nil, wrap("open", err)
		}
		return &CommitOpened{Op: op, Prior: prior, Box: box}, nil
	}
	var first error
	for _, ep := range k.epochs[e.Epoch] {
		op, prior, err := envelope.OpenCommit(e, ep.outer, k.team)
		if err == nil {
			return &CommitOpened{Op: op, Prior: prior, Outer: ep.outer}, nil
		}
		first = cmp.Or(first, err)
	}
	if first != nil && !errors.Is(first, envelope.ErrOpen) {
		return nil, wrap("open", first)
	}
	return nil, fmt.Errorf("%w: tag %08x, and no box for this device", ErrUnknownEpoch, e.Epoch)
}

// Learn adopts the epoch of an opened commit, once the commit was judged: a
// commit opened through this device's box gives the epoch's chains if the
// op lists this device as a recipient with its current Noise key (else its
// outer key), replacing what prior keys gave; one opened with a held outer
// key only records the commit's id with it. Learning an epoch held with its
// chains changes nothing. Learn does not learn the commit's prior keys:
// see LearnPrior. Errors: ErrForgotten, ErrTooManyEpochs, ErrWrongOp (a body
// without recipients). On error the state is unchanged.
func (k *Keys) Learn(c *CommitOpened) error {
	id := c.Op.ID()
	tag := crdt.TagOf(id)
	if k.Forgotten(tag) {
		return fmt.Errorf("%w: tag %08x", ErrForgotten, tag)
	}
	if ep, ok := k.Epoch(id); ok && (ep.Chains() || c.Box == nil) {
		return nil
	}
	recipients, err := Recipients(c.Op)
	if err != nil {
		return err
	}
	if c.Box == nil {
		// Opened with a prior outer key: name the epoch of that key, and
		// keep its recipient list (which names the senders of its chain
		// envelopes).
		for _, ep := range k.epochs[tag] {
			if ep.commit == (crdt.OpID{}) && ep.outer.Equal(c.Outer) {
				ep.commit = id
				ep.list = DeviceList(recipients)
				slices.SortFunc(k.epochs[tag], compareEpochs)
				return nil
			}
		}
		return fmt.Errorf("%w: tag %08x: its outer key is not held", ErrUnknownEpoch, tag)
	}
	ep := NewEpoch(k.self, c.Box.Key, id, recipients)
	// Outer-only epochs of the same key (from prior keys) are replaced.
	eps := k.epochs[tag]
	kept := eps[:0]
	for _, old := range eps {
		if old.outer.Equal(ep.outer) && !old.Chains() {
			continue
		}
		kept = append(kept, old)
	}
	if len(kept) < len(eps) {
		k.epochs[tag] = append(kept, ep)
		slices.SortFunc(k.epochs[tag], compareEpochs)
		k.used(c.Box.Prekey, tag)
		return nil
	}
	if k.Len() >= MaxEpochs {
		ep.wipe()
		return fmt.Errorf("%w: %d held", ErrTooManyEpochs, k.Len())
	}
	k.add(ep)
	k.used(c.Box.Prekey, tag)
	return nil
}

// LearnPrior adds the outer key of an epoch from a commit's prior keys, if
// its tag is not forgotten and no held epoch has that outer key. It reports
// whether it added one. Errors: ErrTooManyEpochs.
func (k *Keys) LearnPrior(p envelope.PriorKey) (bool, error) {
	if k.Forgotten(p.Tag) {
		return false, nil
	}
	for _, ep := range k.epochs[p.Tag] {
		if ep.outer.Equal(p.Outer) {
			return false, nil
		}
	}
	if k.Len() >= MaxEpochs {
		return false, fmt.Errorf("%w: %d held", ErrTooManyEpochs, k.Len())
	}
	k.add(&Epoch{tag: p.Tag, outer: p.Outer})
	return true, nil
}

// Forget destroys everything held of the epochs with the given tag (outer
// keys and chains, overwritten as far as Go allows) and remembers the tag,
// so that neither a replay of its commit nor another commit's prior keys
// bring it back (which would also restart this device's sender chain at
// index 0). Forgetting a tag not held records it all the same (an epoch to
// refuse before learning it).
func (k *Keys) Forget(tag uint32) {
	for _, ep := range k.epochs[tag] {
		ep.wipe()
	}
	delete(k.epochs, tag)
	k.dropOpened(tag)
	k.forgotten[tag] = struct{}{}
	if len(k.forgotten) > MaxForgotten {
		delete(k.forgotten, slices.MinFunc(slices.Collect(maps.Keys(k.forgotten)), cmp.Compare[uint32]))
	}
}

// EpochInfo describes a held epoch for the caller's retention and eviction
// decisions.
type EpochInfo struct {
	Tag    uint32
	Commit crdt.OpID // zero: known by its outer key only
	Chains bool
}

// Epochs lists the held epochs, ascending by tag.
func (k *Keys) Epochs() []EpochInfo {
	var out []EpochInfo
	for _, tag := range k.Tags() {
		for _, ep := range k.epochs[tag] {
			out = append(out, EpochInfo{Tag: tag, Commit: ep.commit, Chains: ep.Chains()})
		}
	}
	return out
}
