// Package session is the daemon's lock: it owns the store and the node while the device is unlocked,
// and the locked device (node/locked) while it is locked, and moves between the two (docs/security.md,
// "Lock and wipe").
//
//   - Lock (asked for, after IdleLock without a request of the local API or UI, or after UnreachedLock
//     without reaching a member or relay of any team): the node stops and its cores' keys are
//     overwritten (node.WipeKeys), the store is closed and its data key overwritten (storage), and
//     only public facts stay (node.Sealed). Envelopes that arrive while locked are sealed into a spool
//     to a fresh X25519 key whose private half was put in the store before it closed.
//   - Unlock needs the passphrase. After the first wrong try the next comes at once (a typo); after
//     more, each waits 1 s, 2 s, 4 s, … (at most MaxWait) before the next one is tried; the count is kept in DIR/unlock-wait, so restarting the daemon does not reset it.
//     The store opens, a new node starts, and the spool is opened and judged by the node's cores.
//   - Wipe destroys the store: the keyring first (storage's crypto-shredding), then every file of the
//     data directory. A remote wipe order that passes its Check (locked or not) does the same.
//
// Go cannot promise erasure: the garbage collector may have copied a key before it was overwritten,
// freed memory keeps its bytes until reused, Badger keeps its own copies of the data key and its
// per-file keys (not reachable from here), and ecdh private keys cannot be overwritten at all. What this
// package promises is that no reachable object of the daemon holds the store key or a team key while
// it is locked, and that the slices it and the cores own were overwritten.
//
// Concurrency: a Session's methods are safe for concurrent use; Lock, Unlock and Wipe are serialised.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/locked"
	"github.com/fieldmesh/fieldmesh/node/proximity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Defaults.
const (
	// DefaultIdleLock is how long the device stays unlocked without a request of the local API or UI.
	DefaultIdleLock = 5 * time.Minute
	// DefaultUnreachedLock is how long the device stays unlocked without reaching its teams.
	DefaultUnreachedLock = 14 * 24 * time.Hour
	spoolName            = "sealed-inbox"
	secretSpool          = "lock-spool"
)

// ErrLocked is returned for what needs the device unlocked.
var ErrLocked = errors.New("fieldmesh is locked: unlock it with: fieldmesh unlock")

// ErrWiped is returned by every method once the device wiped itself.
var ErrWiped = errors.New("this device was wiped")

// Config configures a Session.
type Config struct {
	// Dir is the data directory. Required.
	Dir string
	// Node configures each node the session starts (Store and OnWipe are the session's).
	Node node.Config
	// Prepare, if set, adjusts each node's Config just before that node starts (at Start and at each
	// Unlock). The phone binding gives each node a fresh radio (node/proximity) this way, since a
	// node closes its radio when it stops. An error fails the start or the unlock.
	Prepare func(*node.Config) error
	// IdleLock locks after this long without Touch. Default DefaultIdleLock; negative: never.
	IdleLock time.Duration
	// UnreachedLock locks when the device has not completed a reconciliation with a member or relay
	// for this long (counted from the later of the last one and the last unlock). Default
	// DefaultUnreachedLock; negative: never.
	UnreachedLock time.Duration
	// CheckEvery is how often the idle and unreached rules are checked. Default 5 s.
	CheckEvery time.Duration
	// Logger receives the session's logs. Nil discards.
	Logger *slog.Logger
	// Now is the clock. Nil is time.Now.
	Now func() time.Time
	// OnWipe is called (on its own goroutine) once the device wiped itself; the daemon exits.
	OnWipe func()
	// KDF is not read: Open uses the parameters stored in the keyring.
}

// Session is the daemon's lock state.
type Session struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex // serialises Lock, Unlock, Wipe; guards the fields below
	st         *storage.Store
	n          *node.Node
	done       chan struct{} // closed when the current node goes (lock, wipe, close)
	ld         *locked.Device
	key        []byte // the device's Ed25519 key while locked (the locked host's identity)
	sealed     node.Sealed
	spoolPub   [32]byte
	listen     []string
	lastActive time.Time
	unlockedAt time.Time
	wiped      bool
	closed     bool
}

// Start runs an unlocked session over an opened store: it starts the node, and first judges what a
// previous lock left sealed (a daemon stopped while locked).
func Start(cfg Config, st *storage.Store) (*Session, error) {
	if cfg.Dir == "" || st == nil {
		return nil, errors.New("session: Config.Dir and a store are required")
	}
	if cfg.IdleLock == 0 {
		cfg.IdleLock = DefaultIdleLock
	}
	if cfg.UnreachedLock == 0 {
		cfg.UnreachedLock = DefaultUnreachedLock
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = 5 * time.Second
	}
	s := &Session{cfg: cfg, log: cfg.Logger, now: cfg.Now, listen: cfg.Node.ListenAddrs}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startNode(st); err != nil {
		return nil, err
	}
	return s, nil
}

// startNode starts a node on st and gives it the spool. The caller holds mu.
func (s *Session) startNode(st *storage.Store) error {
	cfg := s.cfg.Node
	cfg.Store = st
	cfg.ListenAddrs = s.listen
	cfg.OnWipe = s.remoteWipe
	if s.cfg.Prepare != nil {
		if err := s.cfg.Prepare(&cfg); err != nil {
			return err
		}
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	s.st, s.n, s.done = st, n, make(chan struct{})
	s.lastActive, s.unlockedAt = s.now(), s.now()
	s.readSpool()
	return nil
}

// readSpool hands the node what arrived while locked, then deletes the spool and its key. The caller
// holds mu.
func (s *Session) readSpool() {
	path := filepath.Join(s.cfg.Dir, spoolName)
	k, err := s.st.Secret(secretSpool)
	if err == nil && len(k) == 64 {
		var pub, priv [32]byte
		copy(pub[:], k[:32])
		copy(priv[:], k[32:])
		clear(k)
		n, bad := 0, 0
		bad, err = locked.ReadSpool(path, &pub, &priv, func(r locked.Record) error {
			if rerr := s.n.ReceiveSealed(r.Topic, r.From, r.Raw); rerr == nil {
				n++
			}
			return nil
		})
		clear(priv[:])
		if err != nil {
			s.log.Warn("reading what arrived while locked failed", "err", err)
		} else {
			s.log.Info("judged what arrived while locked", "envelopes", n, "unreadable", bad)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("removing the sealed inbox failed", "err", err)
	}
	if err := s.st.PutSecret(secretSpool, nil); err != nil {
		s.log.Warn("forgetting the sealed inbox key failed", "err", err)
	}
}

// Current returns the unlocked node and a channel closed when it goes (the device locks), or
// ErrLocked.
func (s *Session) Current() (*node.Node, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.wiped:
		return nil, nil, ErrWiped
	case s.n == nil:
		return nil, nil, ErrLocked
	}
	return s.n, s.done, nil
}

// Touch records a user's request: the idle timer starts again.
func (s *Session) Touch() {
	s.mu.Lock()
	s.lastActive = s.now()
	s.mu.Unlock()
}

// State describes the lock.
type State struct {
	Locked bool `json:"locked"`
	// Failures counts wrong passphrases since the last unlock, and Wait is how long until the next
	// try is accepted (zero: now).
	Failures int           `json:"failures"`
	Wait     time.Duration `json:"wait"`
}

// State returns the lock's state.
func (s *Session) State() State {
	s.mu.Lock()
	isLocked := s.n == nil
	s.mu.Unlock()
	b := readBackoff(s.cfg.Dir)
	st := State{Locked: isLocked, Failures: b.Failures}
	if w := b.until().Sub(s.now()); w > 0 {
		st.Wait = w
	}
	return st
}

// Lock locks the device. Locking a locked device does nothing.
func (s *Session) Lock() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lockLocked("asked")
}

func (s *Session) lockLocked(why string) error {
	switch {
	case s.wiped:
		return ErrWiped
	case s.closed:
		return errors.New("session: closed")
	case s.n == nil:
		return nil
	}
	sealed := s.n.Sealed()
	s.listen = listenOf(s.n)
	key := s.n.Identity().Device.SigningKey()
	pub, priv, err := locked.NewKey()
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	kp := append(pub[:], priv[:]...)
	clear(priv[:])
	err = s.st.PutSecret(secretSpool, kp)
	clear(kp)
	if err != nil {
		return fmt.Errorf("session: keep the sealed inbox key: %w", err)
	}
	close(s.done)
	nerr := s.n.Close()
	_ = s.n.WipeKeys()
	serr := s.st.Close()
	s.n, s.st = nil, nil
	if err := errors.Join(nerr, serr); err != nil {
		s.log.Warn("closing the node to lock failed", "err", err)
	}
	s.key, s.sealed, s.spoolPub = key, sealed, *pub
	s.startLocked()
	runtime.GC()
	debug.FreeOSMemory()
	s.log.Info("locked", "why", why)
	return nil
}

// startLocked starts the locked device (node/locked). Without it the device is still locked, but
// unreachable until unlock. The caller holds mu.
func (s *Session) startLocked() {
	spool, err := locked.CreateSpool(filepath.Join(s.cfg.Dir, spoolName), &s.spoolPub)
	if err == nil {
		s.ld, err = locked.Start(locked.Config{Key: s.key, ListenAddrs: s.listen, State: s.sealed, Spool: spool,
			OnWipe: s.remoteWipe, Logger: s.log, Now: s.now, RedialInterval: s.cfg.Node.RedialInterval,
			WipeAsk: s.cfg.Node.WipeAsk})
		if err != nil {
			spool.Close()
		}
	}
	if err != nil {
		s.ld = nil
		s.log.Warn("the locked device could not start: nothing arrives until unlock", "err", err)
	}
}

// listenOf returns the node's bound listen addresses, so the locked host and the next node listen on
// the same ports. Radio addresses (node/proximity) are left out: the locked host has no radio, and the
// next node listens on its own radio's address.
func listenOf(n *node.Node) []string {
	var out []string
	for _, a := range n.Host().Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(proximity.Code); err == nil {
			continue
		}
		if s := a.String(); !strings.Contains(s, "p2p-circuit") {
			out = append(out, s) // circuit addresses come from relay reservations, not listeners
		}
	}
	return out
}

// Unlock opens the store with the passphrase and starts the node. A wrong passphrase counts towards
// the backoff (WaitError when tried too soon).
func (s *Session) Unlock(passphrase []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.wiped:
		return ErrWiped
	case s.n != nil:
		return nil
	}
	st, err := Open(s.cfg.Dir, passphrase, s.cfg.Logger, s.now)
	if err != nil {
		return err
	}
	if s.ld != nil {
		if err := s.ld.Close(); err != nil {
			s.log.Debug("stopping the locked device", "err", err)
		}
		s.ld = nil
	}
	if err := s.startNode(st); err != nil {
		st.Close()
		s.startLocked() // still locked, and reachable again
		return err
	}
	clear(s.key)
	s.key, s.sealed = nil, node.Sealed{}
	s.log.Info("unlocked")
	return nil
}

// Open opens the store in dir with the passphrase, under the wrong-passphrase backoff: a try before
// the wait of the last failure ended is refused with a WaitError (the passphrase is not tried), and a
// wrong passphrase lengthens the wait. The daemon's start uses it too.
func Open(dir string, passphrase []byte, logger *slog.Logger, now func() time.Time) (*storage.Store, error) {
	if now == nil {
		now = time.Now
	}
	b := readBackoff(dir)
	if w := b.until().Sub(now()); w > 0 {
		return nil, &WaitError{Wait: w}
	}
	st, err := storage.Open(dir, storage.Options{Passphrase: passphrase, Logger: logger})
	if errors.Is(err, storage.ErrWrongPassphrase) {
		b.fail(now())
		if werr := b.write(dir); werr != nil {
			return nil, errors.Join(err, werr)
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if b.Failures > 0 {
		if err := removeBackoff(dir); err != nil {
			st.Close()
			return nil, err
		}
	}
	return st, nil
}

// Wipe destroys the device's store and data: the keyring first (crypto-shredding), then the database,
// then every other file of the data directory. Afterwards every method returns ErrWiped and OnWipe
// runs.
func (s *Session) Wipe() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wipeLocked()
}

func (s *Session) wipeLocked() error {
	if s.wiped {
		return nil
	}
	var errs []error
	if s.n != nil {
		close(s.done)
		errs = append(errs, s.n.Close())
		_ = s.n.WipeKeys()
		errs = append(errs, s.st.Wipe())
		s.n, s.st = nil, nil
	} else {
		if s.ld != nil {
			errs = append(errs, s.ld.Close())
			s.ld = nil
		}
		errs = append(errs, storage.Wipe(s.cfg.Dir))
	}
	clear(s.key)
	s.key = nil
	errs = append(errs, removeAll(s.cfg.Dir))
	s.wiped = true
	s.log.Warn("device wiped")
	if s.cfg.OnWipe != nil {
		go s.cfg.OnWipe()
	}
	return errors.Join(errs...)
}

// removeAll deletes every entry of dir but the local API socket (the daemon still answers on it, to
// say the device was wiped).
func removeAll(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("session: wipe: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

// remoteWipe acts on a wipe order that passed its Check (node or locked device): it runs on a
// goroutine of its own, since it stops the one that called it.
func (s *Session) remoteWipe(o *wipeorder.Order) {
	go func() {
		s.log.Warn("remote wipe ordered by an admin", "signer", o.Signer)
		if err := s.Wipe(); err != nil {
			s.log.Error("remote wipe failed", "err", err)
		}
	}()
}

// Run checks the idle and unreached rules every CheckEvery until ctx ends.
func (s *Session) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.check()
		}
	}
}

// check locks if a rule says so: the device's own IdleLock and UnreachedLock, each shortened by the
// policies of its teams (node.TeamLocks: the shortest wins; a team policy never lengthens them).
func (s *Session) check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil || s.wiped || s.closed {
		return
	}
	now := s.now()
	since := func(contact time.Time) time.Duration {
		if s.unlockedAt.After(contact) {
			contact = s.unlockedAt
		}
		return now.Sub(contact)
	}
	teams := s.n.TeamLocks()
	if idle := IdleLimit(s.cfg.IdleLock, teams); idle > 0 && now.Sub(s.lastActive) >= idle {
		_ = s.lockLocked("idle")
		return
	}
	if s.cfg.UnreachedLock > 0 && since(s.n.LastContact()) >= s.cfg.UnreachedLock {
		_ = s.lockLocked("team not reached")
		return
	}
	for _, t := range teams {
		if t.OfflineLock > 0 && since(t.LastContact) >= t.OfflineLock {
			s.log.Info("locking: a team's policy", "team", t.Team.Short(), "offline", t.OfflineLock)
			_ = s.lockLocked("team not reached (team policy)")
			return
		}
	}
}

// IdleLimit returns the idle timeout in force: the shortest of local (the device's own; negative:
// never) and the teams' LockAfter; zero or negative: none.
func IdleLimit(local time.Duration, teams []node.TeamLock) time.Duration {
	idle := local
	for _, t := range teams {
		if t.LockAfter > 0 && (idle <= 0 || t.LockAfter < idle) {
			idle = t.LockAfter
		}
	}
	return idle
}

// Locked reports whether the device is locked.
func (s *Session) Locked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n == nil
}

// Host returns the host the device is reachable on now (the node's, or the locked device's).
func (s *Session) PeerAddrs() []peer.AddrInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.n != nil:
		h := s.n.Host()
		return []peer.AddrInfo{{ID: h.ID(), Addrs: h.Addrs()}}
	case s.ld != nil:
		h := s.ld.Host()
		return []peer.AddrInfo{{ID: h.ID(), Addrs: h.Addrs()}}
	}
	return nil
}

// Close stops the node or the locked device and closes the store. Idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.n != nil {
		close(s.done)
		errs = append(errs, s.n.Close(), s.st.Close())
		s.n, s.st = nil, nil
	}
	if s.ld != nil {
		errs = append(errs, s.ld.Close())
		s.ld = nil
	}
	clear(s.key)
	return errors.Join(errs...)
}

// Carrier returns the locked device while the device is locked, else nil.
func (s *Session) Carrier() *locked.Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ld
}
