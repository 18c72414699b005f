package teamkeys

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Limits, in counts.
const (
	// MaxEpochs is the most epochs a Keys holds (with chains or with the
	// outer key only). Learning one more is ErrTooManyEpochs: Forget old
	// epochs (retention). Prior keys beyond it are not learned.
	MaxEpochs = envelope.MaxPriorKeys // 512
	// MaxForgotten is the most forgotten epoch tags a Keys remembers, so
	// that it never learns a forgotten epoch again. Forget beyond it drops
	// the smallest tags from the list.
	MaxForgotten = 1 << 16
)

// Errors. Every error of Keys wraps one of these, or an error of
// sync/envelope (a malformed or tampered envelope, a sealed op that does
// not match it).
var (
	// ErrUnknownEpoch: this device holds no key of the envelope's epoch (not
	// yet: keep the envelope and retry when Tags grows; or never: an epoch
	// it is not a member of, or one it forgot).
	ErrUnknownEpoch = errors.New("teamkeys: no key for this epoch")
	// ErrNoChain: the outer layer opened but this device has no receiver
	// chain for the sender in that epoch: the epoch is known only by its
	// outer key (history from before this device was a recipient), or the
	// envelope is this device's own.
	ErrNoChain = errors.New("teamkeys: no chain for this sender in this epoch")
	// ErrReplay: the message's index in its sender's chain was already
	// opened here (its key is deleted).
	ErrReplay = errors.New("teamkeys: message already opened (replay)")
	// ErrTooFarAhead: opening the message would store more than
	// senderkey.MaxSkipped keys of its sender's messages that have not
	// arrived. Nothing changed: keep the envelope and retry once earlier
	// messages of that sender have arrived.
	ErrTooFarAhead = errors.New("teamkeys: message too far ahead of its sender's chain; retry after earlier ones")
	// ErrCannotSend: Seal under an epoch this device holds no sender chain
	// of (it was not a recipient, or the epoch is unknown or forgotten).
	ErrCannotSend = errors.New("teamkeys: no sender chain for this epoch")
	// ErrEpochConflict: a commit would give a held or forgotten epoch tag
	// another key (SealCommit of an op whose tag is taken, a box whose key
	// differs from the outer key already held for its tag).
	ErrEpochConflict = errors.New("teamkeys: epoch tag already held or forgotten")
	// ErrTooManyEpochs: learning the epoch would hold more than MaxEpochs.
	ErrTooManyEpochs = errors.New("teamkeys: too many epochs held; forget old ones")
	// ErrWrongOp: the op cannot be sealed here (another team, another
	// author, the wrong kind for the form, a body that does not decode).
	ErrWrongOp = errors.New("teamkeys: cannot seal this op")
	// ErrEncoding: Unmarshal met bytes that are not a valid state of this
	// team and device.
	ErrEncoding = errors.New("teamkeys: bad state encoding")
)

// Keys is one team's epoch keys on one device: for each epoch it holds,
// the outer key and, if this device was one of the epoch's recipients, its
// own sender chain and a receiver chain for every other recipient. It
// never holds an epoch key K longer than one call. It is not safe for
// concurrent use.
type Keys struct {
	team      crdt.TeamID
	self      *identity.Device
	epochs    map[uint32]*epoch
	forgotten map[uint32]struct{}
}

// epoch is what a Keys holds of one epoch.
type epoch struct {
	outer seal.EpochKey
	// commit is the id of the op that started the epoch, once its envelope
	// has been opened or sealed here; zero while the epoch is known only
	// from prior keys.
	commit crdt.OpID
	// send is this device's chain; nil if it was not a recipient (then recv
	// is nil too: the epoch is known by its outer key only).
	send *senderkey.SenderState
	recv map[identity.DeviceID]*senderkey.ReceiverState // the other recipients
}

func (ep *epoch) chains() bool { return ep.send != nil }

func (ep *epoch) wipe() {
	if ep.send != nil {
		ep.send.Wipe()
	}
	for _, r := range ep.recv {
		r.Wipe()
	}
	clear(ep.recv)
	ep.outer = seal.EpochKey{}
}

// New returns the empty key state of team on device self.
func New(team crdt.TeamID, self *identity.Device) *Keys {
	return &Keys{team: team, self: self, epochs: map[uint32]*epoch{}, forgotten: map[uint32]struct{}{}}
}

// Tags returns the tags of the epochs held (with chains or with the outer
// key only), ascending.
func (k *Keys) Tags() []uint32 { return slices.Sorted(maps.Keys(k.epochs)) }

// CanSend reports whether this device holds its sender chain of the epoch
// with the given tag (and the chain is not exhausted).
func (k *Keys) CanSend(tag uint32) bool {
	ep := k.epochs[tag]
	return ep != nil && ep.chains() && ep.send.Next() <= senderkey.MaxIndex
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

// newEpoch derives the state of an epoch from its key K: the outer key,
// and, if this device is among recipients (its device id with its Noise
// key), its sender chain and a receiver chain for every other recipient.
// The caller drops K afterwards.
func (k *Keys) newEpoch(key seal.EpochKey, commit crdt.OpID, recipients []crdt.Recipient) *epoch {
	ep := &epoch{outer: envelope.OuterKey(key), commit: commit}
	me, noise := k.self.ID(), k.self.NoisePublic()
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

// SealCommit seals a KindCreate or KindMember op by this device in commit
// form: a fresh random epoch key K (from rand; nil = crypto/rand), one box
// for each recipient of the op's body (Create.Creator, or
// Commit.Recipients, in that order), and as prior keys the outer key of
// every epoch held. It then learns the new epoch itself (its sender chain
// and a receiver chain for every other recipient if this device is one,
// else the outer key only) and forgets K.
//
// Errors: ErrWrongOp, ErrEpochConflict (the op's tag is held or
// forgotten), ErrTooManyEpochs, or an envelope error (sizes are checked
// before any work). On error the state is unchanged.
func (k *Keys) SealCommit(op *crdt.Op, rand io.Reader) (*envelope.Envelope, error) {
	if err := k.checkOwn(op); err != nil {
		return nil, err
	}
	recipients, err := recipientsOf(op)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrongOp, err)
	}
	id := op.ID()
	tag := crdt.TagOf(id)
	if k.taken(tag) {
		return nil, fmt.Errorf("%w: tag %08x", ErrEpochConflict, tag)
	}
	if len(k.epochs) >= MaxEpochs {
		return nil, fmt.Errorf("%w: %d held", ErrTooManyEpochs, len(k.epochs))
	}
	key, err := seal.NewEpochKey(rand)
	if err != nil {
		return nil, fmt.Errorf("teamkeys: new epoch key: %w", err)
	}
	noise := make([]identity.NoisePublic, len(recipients))
	for i, r := range recipients {
		noise[i] = r.Noise
	}
	e, err := envelope.SealCommit(op, k.self, key, noise, k.priorKeys(), rand)
	if err != nil {
		return nil, fmt.Errorf("teamkeys: seal commit: %w", err)
	}
	k.epochs[tag] = k.newEpoch(key, id, recipients)
	return e, nil
}

// priorKeys returns the outer key of every epoch held, ascending by tag.
func (k *Keys) priorKeys() []envelope.PriorKey {
	out := make([]envelope.PriorKey, 0, len(k.epochs))
	for _, tag := range k.Tags() {
		out = append(out, envelope.PriorKey{Tag: tag, Outer: k.epochs[tag].outer})
	}
	return out
}

func (k *Keys) taken(tag uint32) bool {
	_, held := k.epochs[tag]
	_, gone := k.forgotten[tag]
	return held || gone
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
// chain form under the epoch with the given tag, with the next key of this
// device's sender chain of that epoch, which advances (its old key is
// overwritten). Persist the state (Marshal) before the envelope leaves the
// device: see crypto/senderkey on rollback.
//
// Errors: ErrWrongOp, ErrCannotSend, or an envelope error (an op too large
// for an envelope is refused before the chain advances). On error the
// state is unchanged.
func (k *Keys) Seal(op *crdt.Op, tag uint32) (*envelope.Envelope, error) {
	if err := k.checkOwn(op); err != nil {
		return nil, err
	}
	if op.Kind == crdt.KindCreate || op.Kind == crdt.KindMember {
		return nil, fmt.Errorf("%w: a %v op travels in commit form (SealCommit)", ErrWrongOp, op.Kind)
	}
	if !k.CanSend(tag) {
		return nil, fmt.Errorf("%w: tag %08x", ErrCannotSend, tag)
	}
	ep := k.epochs[tag]
	e, err := envelope.SealChain(op, tag, ep.outer, ep.send)
	if err != nil {
		return nil, fmt.Errorf("teamkeys: seal: %w", err)
	}
	return e, nil
}

// Check authenticates the outer layer of e without changing anything: for
// the gossip validator. A chain-form envelope needs the outer key of its
// epoch; a commit-form one needs that outer key or a box for this device
// (which costs the trial opening, see sync/envelope), and its op and the
// author's signatures are checked too. Errors: ErrUnknownEpoch or an
// envelope error.
func (k *Keys) Check(e *envelope.Envelope) error {
	ep := k.epochs[e.Epoch]
	switch {
	case e.Form() == envelope.FormChain && ep != nil:
		_, err := envelope.OpenChain(e, ep.outer, k.team)
		return wrap("check", err)
	case e.Form() == envelope.FormCommit && ep != nil:
		_, _, err := envelope.OpenCommit(e, ep.outer, k.team)
		return wrap("check", err)
	case e.Form() == envelope.FormCommit:
		key, err := envelope.OpenBox(e, k.self, k.team)
		if errors.Is(err, envelope.ErrNotRecipient) {
			return fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, e.Epoch)
		}
		if err != nil {
			return wrap("check", err)
		}
		_, _, err = envelope.OpenCommit(e, envelope.OuterKey(key), k.team)
		return wrap("check", err)
	case e.Form() == envelope.FormChain:
		return fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, e.Epoch)
	}
	_, err := envelope.OpenChain(e, seal.EpochKey{}, k.team) // reports the layout error
	return wrap("check", err)
}

func wrap(verb string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("teamkeys: %s: %w", verb, err)
}

// Open opens an envelope of either form and returns its op, verified
// (signature, id, time and team; for the chain form, author = the chain's
// sender). On any error the state is unchanged.
//
// Chain form: opens the outer layer with the epoch's outer key, then the
// inner one with the sender's receiver chain, which advances (the used key
// is deleted, keys of messages jumped over are kept, at most
// senderkey.MaxSkipped). Errors: ErrUnknownEpoch, ErrNoChain, ErrReplay,
// ErrTooFarAhead.
//
// Commit form: if the epoch is held with its chains, the envelope is known
// (a replay): its op is returned, nothing is learned. Otherwise this
// device trial-opens the boxes; if one opens, it learns the epoch (its
// chains if the op lists this device as a recipient with its current Noise
// key, else the outer key only), and the prior outer keys it does not hold
// (up to MaxEpochs, never a forgotten one); if none opens but the outer key
// is held (from prior keys), it returns the op and learns the prior keys.
// Errors: ErrUnknownEpoch (no box for this device and no outer key, or a
// forgotten epoch), ErrEpochConflict, ErrTooManyEpochs.
//
// Either form may also fail with an envelope error (malformed, ErrOpen,
// ErrBadOp...).
func (k *Keys) Open(e *envelope.Envelope) (*crdt.Op, error) {
	if e.Form() == envelope.FormCommit {
		return k.openCommit(e)
	}
	return k.openChain(e)
}

func (k *Keys) openChain(e *envelope.Envelope) (*crdt.Op, error) {
	ep := k.epochs[e.Epoch]
	if ep == nil {
		if e.Form() != envelope.FormChain {
			_, err := envelope.OpenChain(e, seal.EpochKey{}, k.team) // reports the layout error
			return nil, wrap("open", err)
		}
		return nil, fmt.Errorf("%w: tag %08x", ErrUnknownEpoch, e.Epoch)
	}
	c, err := envelope.OpenChain(e, ep.outer, k.team)
	if err != nil {
		return nil, wrap("open", err)
	}
	r := ep.recv[c.Sender]
	if r == nil {
		why := "the epoch is known by its outer key only"
		switch {
		case c.Sender == k.self.ID():
			why = "the envelope is this device's own"
		case ep.chains():
			why = "the sender is not a recipient of the epoch"
		}
		return nil, fmt.Errorf("%w: %v in tag %08x: %s", ErrNoChain, c.Sender.Short(), e.Epoch, why)
	}
	op, err := c.Open(r)
	switch {
	case errors.Is(err, senderkey.ErrReplay):
		return nil, fmt.Errorf("%w: %w", ErrReplay, err)
	case errors.Is(err, senderkey.ErrTooFarAhead):
		return nil, fmt.Errorf("%w: %w", ErrTooFarAhead, err)
	case err != nil:
		return nil, wrap("open", err)
	}
	return op, nil
}

func (k *Keys) openCommit(e *envelope.Envelope) (*crdt.Op, error) {
	tag := e.Epoch
	if _, gone := k.forgotten[tag]; gone {
		return nil, fmt.Errorf("%w: tag %08x was forgotten", ErrUnknownEpoch, tag)
	}
	ep := k.epochs[tag]
	if ep != nil && ep.chains() {
		// Known with its chains: a replay. Nothing to learn.
		op, _, err := envelope.OpenCommit(e, ep.outer, k.team)
		return op, wrap("open", err)
	}
	key, err := envelope.OpenBox(e, k.self, k.team)
	switch {
	case err == nil:
		return k.learnCommit(e, ep, key)
	case errors.Is(err, envelope.ErrNotRecipient) && ep != nil:
		op, prior, err := envelope.OpenCommit(e, ep.outer, k.team)
		if err != nil {
			return nil, wrap("open", err)
		}
		k.learnPrior(prior)
		if ep.commit == (crdt.OpID{}) {
			ep.commit = op.ID()
		}
		return op, nil
	case errors.Is(err, envelope.ErrNotRecipient):
		return nil, fmt.Errorf("%w: tag %08x, and no box for this device", ErrUnknownEpoch, tag)
	}
	return nil, wrap("open", err)
}

// learnCommit learns the epoch of a commit envelope whose box for this
// device held key; old is the epoch's state if its outer key was held.
func (k *Keys) learnCommit(e *envelope.Envelope, old *epoch, key seal.EpochKey) (*crdt.Op, error) {
	outer := envelope.OuterKey(key)
	if old != nil && !old.outer.Equal(outer) {
		return nil, fmt.Errorf("%w: tag %08x: the box holds another key than the outer key held", ErrEpochConflict, e.Epoch)
	}
	if old == nil && len(k.epochs) >= MaxEpochs {
		return nil, fmt.Errorf("%w: %d held", ErrTooManyEpochs, len(k.epochs))
	}
	op, prior, err := envelope.OpenCommit(e, outer, k.team)
	if err != nil {
		return nil, wrap("open", err)
	}
	recipients, err := recipientsOf(op)
	if err != nil {
		return nil, fmt.Errorf("teamkeys: open: %w: %w", envelope.ErrBadOp, err)
	}
	if n := e.Boxes(); n != len(recipients) {
		return nil, fmt.Errorf("teamkeys: open: %w: %d boxes for %d recipients", envelope.ErrBadOp, n, len(recipients))
	}
	k.epochs[e.Epoch] = k.newEpoch(key, op.ID(), recipients)
	k.learnPrior(prior)
	return op, nil
}

// learnPrior adds the outer keys of epochs neither held nor forgotten, as
// long as fewer than MaxEpochs are held.
func (k *Keys) learnPrior(prior []envelope.PriorKey) {
	for _, p := range prior {
		if len(k.epochs) >= MaxEpochs {
			return
		}
		if !k.taken(p.Tag) {
			k.epochs[p.Tag] = &epoch{outer: p.Outer}
		}
	}
}

// Forget destroys everything held of the epoch with the given tag (its
// outer key and chains, overwritten as far as Go allows) and remembers the
// tag, so that neither a replay of its commit nor another commit's prior
// keys bring it back (which would also restart this device's sender chain
// at index 0 and reuse its keys). Forgetting a tag not held records it all
// the same (an epoch to refuse before learning it).
func (k *Keys) Forget(tag uint32) {
	if ep := k.epochs[tag]; ep != nil {
		ep.wipe()
		delete(k.epochs, tag)
	}
	k.forgotten[tag] = struct{}{}
	if len(k.forgotten) > MaxForgotten {
		delete(k.forgotten, slices.MinFunc(slices.Collect(maps.Keys(k.forgotten)), cmp.Compare[uint32]))
	}
}
