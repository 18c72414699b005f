package crdt

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Limits of a Policy.
const (
	// MinLockAfter and MaxLockAfter bound Policy.LockAfter when it is set: a policy shorter than
	// ten seconds would lock a device while its user types, and one of a day asks nothing.
	MinLockAfter = 10 * time.Second
	MaxLockAfter = 24 * time.Hour
	// MaxOfflineLockDays bounds Policy.OfflineLockDays (a year).
	MaxOfflineLockDays = 365
)

// Policy is the body of a team-policy op (KindPolicy), which only an admin may publish; the latest
// op by (Time, ID) of a current admin's device that counts is State.Policy. It asks every member
// device's lock to be at least this strict: a device locks after LockAfter without a request of
// its local API or UI (zero: the team asks nothing), and when it has not reached a member or relay
// of the team for OfflineLockDays days (zero: the team asks nothing). A device applies the
// shortest of its own setting and every team's policy; a policy never lengthens a device's own.
//
// Encoding: version 1 | lock-after uint32 (seconds; 0, or MinLockAfter..MaxLockAfter) |
// offline-lock-days uint16 (0..MaxOfflineLockDays).
type Policy struct {
	LockAfter       time.Duration
	OfflineLockDays uint16
}

const policySize = 1 + 4 + 2

// Validate checks what UnmarshalPolicy checks: LockAfter is zero or a whole number of seconds in
// MinLockAfter..MaxLockAfter, OfflineLockDays at most MaxOfflineLockDays.
func (p Policy) Validate() error {
	if p.LockAfter != 0 && (p.LockAfter < MinLockAfter || p.LockAfter > MaxLockAfter || p.LockAfter%time.Second != 0) {
		return fmt.Errorf("%w: lock after %v (want whole seconds from %v to %v, or none)", ErrInvalid, p.LockAfter, MinLockAfter, MaxLockAfter)
	}
	if p.OfflineLockDays > MaxOfflineLockDays {
		return fmt.Errorf("%w: offline lock after %d days (want 0..%d)", ErrInvalid, p.OfflineLockDays, MaxOfflineLockDays)
	}
	return nil
}

// OfflineLock returns OfflineLockDays as a duration (zero: none).
func (p Policy) OfflineLock() time.Duration {
	return time.Duration(p.OfflineLockDays) * 24 * time.Hour
}

// Marshal encodes p. It does not validate; call Validate first.
func (p Policy) Marshal() []byte {
	b := make([]byte, 0, policySize)
	b = append(b, bodyVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(p.LockAfter/time.Second))
	return binary.BigEndian.AppendUint16(b, p.OfflineLockDays)
}

// UnmarshalPolicy decodes and validates a Policy body.
func UnmarshalPolicy(b []byte) (Policy, error) {
	if len(b) != policySize {
		return Policy{}, fmt.Errorf("%w: policy body of %d bytes, want %d", ErrMalformed, len(b), policySize)
	}
	d := wire.NewReader(b)
	d.Version("policy", bodyVersion)
	secs := d.Uint32()
	var p Policy
	p.OfflineLockDays = d.Uint16()
	if err := d.Finish(); err != nil {
		return Policy{}, err
	}
	if secs > uint32(MaxLockAfter/time.Second) {
		return Policy{}, fmt.Errorf("%w: lock after %d seconds", ErrInvalid, secs)
	}
	p.LockAfter = time.Duration(secs) * time.Second
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// PolicyView is the team's policy as the State shows it.
type PolicyView struct {
	ID   OpID
	By   identity.DeviceID
	Time HLC
	Policy
}

// policy computes State.Policy: the latest policy op by (Time, ID) of a current admin's device
// that counts.
func (l *Log) policy(j *opJudge, members []MemberInfo) *PolicyView {
	var out *PolicyView
	for id, op := range l.ops {
		if op.Kind != KindPolicy || !isAdmin(members, op.Author) || !j.counts(id) {
			continue
		}
		p, err := UnmarshalPolicy(op.Body)
		if err != nil || out != nil && !newer(op.Time, id, out.Time, out.ID) {
			continue
		}
		out = &PolicyView{ID: id, By: op.Author, Time: op.Time, Policy: p}
	}
	return out
}
