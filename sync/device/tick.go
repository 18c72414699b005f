package device

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record"
)

// TickOptions adjust what Tick does.
type TickOptions struct {
	// NoAcks skips the acknowledgement batch (low-data mode defers it; what
	// to acknowledge is computed from the log when it runs again).
	NoAcks bool
}

// Tick does what time asks of the team: it drops held envelopes that
// waited too long, retries the rest, asks again to read stored envelopes it
// carried sealed and can read now (Effects.Reopen; see reread), destroys the keys of epochs that ended
// more than RetainKeys ago, re-keys when the state asks for it or the
// current epoch is older than RotateEvery (admins only, after a random
// wait of up to RekeyJitter), publishes evidence of equivocation, and every
// AckInterval the batched acknowledgements. Call it every few seconds to a
// minute.
//
// A commit need not wait for this device's view to be complete: its prior
// keys are only those of epochs whose commits the log holds (see commit),
// so it never hands a device the outer key of an epoch whose commit,
// unseen here, removed that device.
func (t *Team) Tick(now time.Time, opt TickOptions) Effects {
	t.now = now
	var eff Effects
	for _, id := range t.pending.expire(now) {
		t.opaque.add(id)
		t.patience.add(id)
	}
	t.settle(&eff)
	t.reread(&eff)
	t.deleteFiled(&eff)
	if t.canWrite() != nil {
		return eff
	}
	eff.Alerts = append(eff.Alerts, t.due(&eff.Write)...)
	t.forgetOld(&eff)
	t.tendEpochs(&eff)
	t.tendPrekey(&eff)
	if !opt.NoAcks && t.cfg.AckInterval > 0 && now.Sub(t.lastAck) >= t.cfg.AckInterval {
		if _, ack, err := t.Acks(now); err != nil {
			t.log.Warn("acknowledgements not published", "err", err)
		} else {
			eff.merge(ack)
		}
	}
	t.flushEvidence(&eff)
	return eff
}

// tendPrekey publishes a fresh prekey (a crdt.Prekey op) when this device
// can send in the current epoch and holds no prekey that no learned epoch
// was boxed to, or the team does not show the newest it holds. The next
// commit boxes this device's epoch key to it; the prekey is destroyed with
// the keys of the last epoch it opened (teamkeys), so a captured device
// cannot reopen an epoch past retention. The prekey's private half is
// persisted in the same write as the op (ownKept).
func (t *Team) tendPrekey(eff *Effects) {
	s := t.view() // read before the prekey op is added
	if s.Current < 0 || !t.keys.CanSend(s.Epochs[s.Current].ID) {
		return
	}
	shown, ok := s.Prekeys[t.self.ID()]
	if ok && !t.keys.WantsPrekey() && slices.Contains(t.keys.Prekeys(), shown) {
		return
	}
	fresh, err := t.keys.NewPrekey(t.cfg.Rand)
	if err != nil {
		t.log.Warn("prekey not made", "err", err)
		return
	}
	op, err := t.Make(t.now, crdt.KindPrekey, crdt.Prekey{Key: fresh}.Marshal())
	if err == nil {
		var pub Effects
		_, pub, err = t.Publish(t.now, op)
		eff.merge(pub)
	}
	if err != nil {
		t.keys.DropPrekey(fresh)
		t.log.Warn("prekey not published", "err", err)
	}
}

// redactEpochs deletes the bodies of the messages sealed in the epochs of
// the tags, whose keys were just destroyed.
func (t *Team) redactEpochs(tags map[uint32]bool, eff *Effects) {
	if len(tags) == 0 {
		return
	}
	var ids []crdt.OpID
	for _, op := range t.lg.Ops() {
		if op.Kind == crdt.KindMessage && tags[op.Seal.Epoch] && !op.Redacted() {
			ids = append(ids, op.ID())
		}
	}
	if lost := t.dueAmong(ids); lost > 0 {
		t.log.Warn("clinical messages deleted with their epoch's keys before the record received them", "messages", lost)
	}
	t.redact(ids, "deleted messages past retention", eff)
}

// dueAmong counts, on an admin's device, the messages among ids that are
// due for filing (Unfiled's rule, at any age).
func (t *Team) dueAmong(ids []crdt.OpID) int {
	due := make(map[crdt.OpID]bool)
	for _, id := range t.unfiledBefore(t.now.Add(time.Hour)) {
		due[id] = true
	}
	n := 0
	for _, id := range ids {
		if due[id] {
			n++
		}
	}
	return n
}

// redact deletes the bodies of the messages ids: the log keeps each
// message's place (crdt.Log.Redact) and the store its redacted form,
// written over the old record (storage.Collect then removes the old
// version). The attachments of those messages go too (Write.DropChunks):
// their keys were in the bodies. It logs how many, with why.
func (t *Team) redact(ids []crdt.OpID, why string, eff *Effects) {
	n := 0
	for _, id := range ids {
		attached := false
		if op, ok := t.lg.Op(id); ok {
			m, err := crdt.UnmarshalMessage(op.Body)
			attached = err == nil && len(m.Attachments) > 0
		}
		if !t.lg.Redact(id) {
			continue
		}
		if attached {
			eff.Write.DropChunks = append(eff.Write.DropChunks, id)
		}
		r, _ := t.lg.Op(id)
		eff.Write.Ops = append(eff.Write.Ops, Record{Time: uint64(r.Time), ID: id, Data: r.MarshalStored()})
		n++
	}
	if n > 0 {
		t.state = nil
		eff.Changed = true
		t.log.Info(why, "messages", n)
	}
}

// deleteFiled deletes the bodies of the shown messages that a filed op
// that counts names (crdt.State.Filed), once FiledGrace has passed since
// that op's time. It runs on every device, members or not: a device
// removed from the team deletes what the record holds too.
func (t *Team) deleteFiled(eff *Effects) {
	s := t.view() // the redactions below leave it as it is
	if len(s.Filed) == 0 {
		return
	}
	var ids []crdt.OpID
	for _, m := range s.Messages {
		if m.Filed != nil && !t.now.Before(m.Filed.Time.Time().Add(t.cfg.FiledGrace)) {
			ids = append(ids, m.ID)
		}
	}
	t.redact(ids, "deleted messages filed to the record", eff)
}

// Unfiled returns, for a device of an admin of a clinical team, the ids of
// the messages due for filing (record.Due) that are older than WarnUnfiled:
// the team's admins are warned that the record has not received them, and
// that they are deleted with their epoch's keys (RetainKeys) whether filed
// or not. It returns nil on any other device, and in display order.
func (t *Team) Unfiled(now time.Time) []crdt.OpID {
	return t.unfiledBefore(now.Add(-t.cfg.WarnUnfiled))
}

// unfiledBefore is Unfiled with a cutoff time.
func (t *Team) unfiledBefore(cutoff time.Time) []crdt.OpID {
	s := t.snapshot()
	p, ok := s.PersonOf(t.self.ID())
	if !ok || !p.Admin || s.Kind != crdt.Clinical {
		return nil
	}
	var out []crdt.OpID
	for _, m := range s.Messages {
		if record.Due(s.Kind, m) && m.Time.Time().Before(cutoff) {
			out = append(out, m.ID)
		}
	}
	return out
}

// forgetOld destroys the keys of epochs that ended (a later-numbered epoch
// started) more than RetainKeys ago; never the current one. The messages
// sealed in them lose their bodies (redactEpochs); every other op stays,
// and the envelopes stay sealed for relaying.
func (t *Team) forgetOld(eff *Effects) {
	s := t.view() // redactions leave it as it is
	if s.Current < 0 {
		return
	}
	cutoff := t.now.Add(-t.cfg.RetainKeys)
	forgot := 0
	tags := make(map[uint32]bool)
	for _, ep := range t.keys.Epochs() {
		if ep.Commit == (crdt.OpID{}) {
			continue
		}
		end, ok := epochEnd(s, ep.Commit)
		if ok && end.Before(cutoff) {
			t.keys.Forget(ep.Tag)
			forgot++
			tags[ep.Tag] = true
		}
	}
	t.redactEpochs(tags, eff)
	t.retireHistory(s, cutoff, eff)
	if forgot > 0 {
		eff.Write.Keys = t.keys.Marshal()
		t.log.Info("destroyed old epoch keys", "epochs", forgot)
	}
}

// epochEnd returns when the epoch started by commit ended: the time of the
// first epoch numbered after it. The current epoch and epochs the state
// does not list have not ended.
func epochEnd(s *crdt.State, commit crdt.OpID) (time.Time, bool) {
	var number uint32
	found := false
	for i, e := range s.Epochs {
		if e.ID == commit {
			if i == s.Current {
				return time.Time{}, false
			}
			number, found = e.Number, true
		}
	}
	if !found {
		return time.Time{}, false
	}
	for _, e := range s.Epochs {
		if e.Number > number {
			return e.Time.Time(), true
		}
	}
	return time.Time{}, false
}

// rekeyDue says why the team needs a re-key now, or "".
func (t *Team) rekeyDue(s *crdt.State) string {
	switch {
	case s.NeedsRekey:
		return "the epochs after a merge list removed devices or miss members"
	case s.Current >= 0 && t.now.Sub(s.Epochs[s.Current].Time.Time()) > t.cfg.RotateEvery:
		return "scheduled rotation"
	case t.handoverGap(s):
		return "the current epoch did not hand on an epoch its devices need"
	}
	return ""
}

// handoverGap reports whether the current epoch's commit did not carry the
// outer key of a valid epoch that some of its recipients are not
// recipients of, and that this device holds: its author did not hold it
// (it knew the commit only as an op), so those devices cannot read that
// epoch's commit until a device that holds it re-keys.
func (t *Team) handoverGap(s *crdt.State) bool {
	if s.Current < 0 {
		return false
	}
	cur := s.Epochs[s.Current]
	prior, ok := t.priors[cur.ID]
	if !ok {
		return false // not known here (own, or not opened): nothing to compare
	}
	carried := make(map[uint32]bool, len(prior))
	for _, p := range prior {
		carried[p.Tag] = true
	}
	for _, e := range s.Epochs {
		if e.ID == cur.ID || carried[e.Tag] {
			continue
		}
		if _, held := t.keys.Epoch(e.ID); !held {
			continue
		}
		for _, r := range cur.Recipients {
			if !containsDevice(recipientDevices(e.Recipients), r.Device) {
				return true
			}
		}
	}
	return false
}

func recipientDevices(rs []crdt.Recipient) []identity.DeviceID {
	out := make([]identity.DeviceID, len(rs))
	for i, r := range rs {
		out[i] = r.Device
	}
	return out
}

// tendEpochs re-keys when the state asks for it (admins only; see Tick).
func (t *Team) tendEpochs(eff *Effects) {
	s := t.view() // read before the commit below changes the log
	p, ok := s.PersonOf(t.self.ID())
	why := t.rekeyDue(s)
	if !ok || !p.Admin || why == "" {
		t.rekeyAt = time.Time{}
		return
	}
	if t.rekeyAt.IsZero() {
		t.rekeyAt = t.now.Add(t.jitter())
	}
	if t.now.Before(t.rekeyAt) {
		return
	}
	t.rekeyAt = time.Time{}
	if _, re, err := t.commit(nil, why); err != nil {
		t.log.Warn("re-key failed", "err", err)
	} else {
		eff.merge(re)
	}
}

// jitter returns a random wait in [0, RekeyJitter].
func (t *Team) jitter() time.Duration {
	var b [8]byte
	if _, err := io.ReadFull(t.cfg.Rand, b[:]); err != nil {
		return t.cfg.RekeyJitter
	}
	return time.Duration(binary.BigEndian.Uint64(b[:]) % uint64(t.cfg.RekeyJitter+1))
}

// MarkRead records that the user was shown these messages: they are
// acknowledged as read in the next batch.
func (t *Team) MarkRead(ids []crdt.OpID) {
	for _, id := range ids {
		t.reads[id] = struct{}{}
	}
}

// Acks publishes the pending acknowledgements now, and returns how many
// ack ops it made: one "read" op for the messages the user was shown since
// the last batch and one "received" op for every other message of someone
// else held but not acknowledged, each covering up to crdt.MaxAckIDs
// messages. So a 30-person team sends at most 29 ack ops per batch, however
// many messages flowed. What still needs acknowledging is computed from
// the log (this device's own acks are ops in it), so nothing is lost or
// repeated across restarts; read marks not yet published are lost on a
// restart and become "received".
func (t *Team) Acks(now time.Time) (int, Effects, error) {
	t.now = now
	t.lastAck = now
	var eff Effects
	if t.canWrite() != nil {
		return 0, eff, nil
	}
	me := t.self.ID()
	s := t.view() // read before the ack ops are added
	marks := t.reads
	t.reads = make(map[crdt.OpID]struct{})
	var recv, read []crdt.OpID
	for _, m := range s.Messages {
		if m.Author == me {
			continue
		}
		if _, shown := marks[m.ID]; shown {
			if !containsDevice(m.ReadBy, me) {
				read = append(read, m.ID)
			}
			continue
		}
		if !containsDevice(m.ReceivedBy, me) {
			recv = append(recv, m.ID)
		}
	}
	count := 0
	for _, batch := range []struct {
		read bool
		ids  []crdt.OpID
	}{{true, read}, {false, recv}} {
		for _, a := range crdt.SplitAcks(batch.read, batch.ids) {
			op, err := t.Make(now, crdt.KindAck, a.Marshal())
			if err == nil {
				var pub Effects
				_, pub, err = t.Publish(now, op)
				eff.merge(pub)
			}
			if err != nil {
				if batch.read {
					t.MarkRead(a.IDs) // kept for the next batch
				}
				return count, eff, err
			}
			count++
		}
	}
	return count, eff, nil
}

func containsDevice[T comparable](ds []T, d T) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

// flushEvidence publishes the evidence of equivocation found, if this
// device is a member: an evidence op makes every device hide both ops. It
// also publishes again, once per epoch, evidence that the current epoch's
// devices may not be able to read (sealed in an epoch some of them were not
// recipients of): they may read one of the ops, and must hide it too.
func (t *Team) flushEvidence(eff *Effects) {
	if t.canWrite() != nil {
		return
	}
	t.republishEvidence()
	if len(t.evidence) == 0 {
		return
	}
	evs := t.evidence
	t.evidence = nil
	for _, ev := range evs {
		op, err := t.Make(t.now, crdt.KindEvidence, ev.Marshal())
		if err == nil {
			var pub Effects
			_, pub, err = t.Publish(t.now, op)
			eff.merge(pub)
		}
		if err != nil {
			t.log.Warn("evidence of equivocation not published", "err", err)
			t.evidence = append(t.evidence, ev)
		}
	}
}

// republishEvidence queues again the evidence of each equivocation the
// state lists whose evidence ops none of the current epoch's devices can
// all read.
func (t *Team) republishEvidence() {
	s := t.view() // it only queues evidence: the log does not change here
	if len(s.Equivocations) == 0 || s.Current < 0 {
		return
	}
	cur := s.Epochs[s.Current]
	readable := func(tag uint32) bool {
		for _, e := range s.Epoch(tag) {
			all := true
			for _, r := range cur.Recipients {
				if !containsDevice(recipientDevices(e.Recipients), r.Device) {
					all = false
					break
				}
			}
			if all {
				return true
			}
		}
		return false
	}
	byPos := make(map[position][]*crdt.Op)
	for _, op := range t.lg.Ops() {
		if op.Kind != crdt.KindEvidence || !s.Counts(op.ID()) {
			continue
		}
		e, err := crdt.UnmarshalEvidence(op.Body)
		if err != nil {
			continue
		}
		pos := position{e.Epoch, e.Device, e.Index}
		byPos[pos] = append(byPos[pos], op)
	}
	// In chain order, not the map's: the evidence ops are made in this
	// order, so a replay makes the same ops.
	poss := slices.SortedFunc(maps.Keys(byPos), func(a, b position) int {
		return cmp.Or(cmp.Compare(a.tag, b.tag), bytes.Compare(a.sender[:], b.sender[:]), cmp.Compare(a.index, b.index))
	})
	for _, pos := range poss {
		ops := byPos[pos]
		key := evidenceKey{pos, cur.ID}
		if t.republished[key] {
			continue
		}
		seen := false
		for _, op := range ops {
			seen = seen || readable(op.Seal.Epoch)
		}
		t.republished[key] = true
		if seen {
			continue
		}
		if e, err := crdt.UnmarshalEvidence(ops[0].Body); err == nil {
			t.evidence = append(t.evidence, e)
		}
	}
}

// evidenceKey names an equivocation republished in an epoch.
type evidenceKey struct {
	pos   position
	epoch crdt.OpID
}

// reread asks again to read (Effects.Reopen) the stored envelopes this
// device carried sealed and now holds the chains of their epoch for, that
// are not held and were not asked for within pendingTTL. A carried
// envelope is asked for once when its epoch is learned (reopenTag); if it
// is then held waiting for its parents or its witness until it expires, or
// the device restarts before it is kept, nothing else would bring it back:
// the store holds its envelope, so no peer sends it again. It stays carried
// until its op is kept (keep) or it opens to something this device does
// not keep (giveUp).
func (t *Team) reread(eff *Effects) {
	if len(t.carried) == 0 {
		return
	}
	readable := make(map[uint32]bool)
	for _, ep := range t.keys.Epochs() {
		if ep.Chains {
			readable[ep.Tag] = true
		}
	}
	var ids []crdt.OpID
	for id, tag := range t.carried {
		if !readable[tag] || t.pending.get(id) != nil {
			continue
		}
		if at, ok := t.reopenAt[id]; ok && t.now.Before(at) {
			continue
		}
		ids = append(ids, id)
	}
	slices.SortFunc(ids, crdt.OpID.Compare)
	for _, id := range ids {
		t.askReopen(id, eff)
	}
}

// reopenTag asks to read the carried envelopes of an epoch tag whose
// chains this device just learned.
func (t *Team) reopenTag(tag uint32, eff *Effects) {
	var ids []crdt.OpID
	for id, ct := range t.carried {
		if ct == tag {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, crdt.OpID.Compare)
	for _, id := range ids {
		t.askReopen(id, eff)
	}
}

// askReopen asks for the carried envelope id to be given to Receive again.
func (t *Team) askReopen(id crdt.OpID, eff *Effects) {
	t.reopenAt[id] = t.now.Add(pendingTTL)
	eff.Reopen = append(eff.Reopen, id)
}

// giveUp stops reading a carried envelope again: it opened to something
// this device does not keep (refused, or dropped when judged). It stays
// stored, carried for others; a restart tries it once more.
func (t *Team) giveUp(id crdt.OpID) {
	delete(t.carried, id)
	delete(t.reopenAt, id)
}
