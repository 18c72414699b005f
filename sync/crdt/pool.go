package crdt

import (
	"bytes"
	"slices"
	"sync"
)

// A Pool lets the logs of many devices in one process hold one copy of each
// op they all hold, and of each message body decoded from it. The simulator
// runs thousands of device cores in one process, and every member of a team
// holds the team's whole history: without a Pool each core keeps its own
// decoded copy of every op (a quarter of a long run's memory). A device
// holds one log a team, so a process running one device gains nothing from
// a Pool, and the node does not use one.
//
// A log shares an op only with a byte-for-byte equal one (the same id,
// parents, body and seal), and the logs never write to the ops they hold
// but for Redact, which does not wipe the body of a shared op (the other
// logs still hold it): a Pool is for a process whose logs are all its own,
// such as a simulation, not for a device whose memory must forget what it
// redacted. A Pool keeps every op its logs added for as long as it lives
// (make one a run). It is safe for concurrent use.
type Pool struct {
	mu   sync.Mutex
	ops  map[OpID]*Op
	msgs map[*Op]pooledMessage
}

type pooledMessage struct {
	m   Message
	err error
}

// NewPool returns an empty Pool.
func NewPool() *Pool {
	return &Pool{ops: make(map[OpID]*Op), msgs: make(map[*Op]pooledMessage)}
}

// NewPooledLog returns an empty log of team that shares the ops it holds
// with the other logs of pool (see Pool); a nil pool is NewLog.
func NewPooledLog(team TeamID, pool *Pool) *Log {
	l := NewLog(team)
	l.pool = pool
	return l
}

// share returns the op to keep under id for op: the pool's copy if it is
// equal to op, else (the first of id, kept for the logs that add it later)
// a copy of op.
func (p *Pool) share(id OpID, op *Op) *Op {
	p.mu.Lock()
	defer p.mu.Unlock()
	if x, ok := p.ops[id]; ok {
		if x.equal(op) {
			return x
		}
		return op.Clone()
	}
	c := op.Clone()
	p.ops[id] = c
	return c
}

// Len returns the number of ops the pool holds.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ops)
}

// shared reports whether op, held under id, is the pool's copy.
func (p *Pool) shared(id OpID, op *Op) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ops[id] == op
}

// message decodes op's message body, once for all the logs that hold op
// when it is the pool's copy. A Message's strings do not change, and its
// slices (ReplyTo, Attachments) are read, never written, by this package and
// its callers (MessageView is handed out by value, as State.clone does).
func (p *Pool) message(id OpID, op *Op) (Message, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ops[id] != op {
		return UnmarshalMessage(op.Body)
	}
	if pm, ok := p.msgs[op]; ok {
		return pm.m, pm.err
	}
	m, err := UnmarshalMessage(op.Body)
	p.msgs[op] = pooledMessage{m, err}
	return m, err
}

// equal reports whether o and x are the same op, byte for byte.
func (o *Op) equal(x *Op) bool {
	return o.Team == x.Team && o.Author == x.Author && o.Time == x.Time && o.Kind == x.Kind &&
		o.redacted == x.redacted && o.Seal.Epoch == x.Seal.Epoch && o.Seal.Index == x.Seal.Index &&
		o.Seal.Inner == x.Seal.Inner && bytes.Equal(o.Seal.Sig, x.Seal.Sig) &&
		bytes.Equal(o.Body, x.Body) && slices.Equal(o.Parents, x.Parents)
}

// keep returns the op the log keeps under id for op: a copy of its own, or
// the pool's.
func (l *Log) keep(id OpID, op *Op) *Op {
	if l.pool == nil || op.Redacted() {
		return op.Clone()
	}
	return l.pool.share(id, op)
}

// message decodes the message body of op, held under id.
func (l *Log) message(id OpID, op *Op) (Message, error) {
	if l.pool == nil {
		return UnmarshalMessage(op.Body)
	}
	return l.pool.message(id, op)
}
