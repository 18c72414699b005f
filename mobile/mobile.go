// Package mobile is the phone binding: a facade over a fieldmesh node in gomobile's subset of Go, so
// `gobind` (golang.org/x/mobile) generates its Java and Objective-C classes (make mobile-bind). Every
// exported name uses only strings, []byte, numbers, bools, pointers to structs of those, interfaces
// whose methods use them (Events, Radio: implemented natively), and (T, error) returns. Lists come
// as structs with Len and Get, since gobind binds no slices of structs.
//
// Main types:
//
//   - Node: one device. NewNode(dataDir), then Create (first run) or Start with the passphrase; Stop;
//     Lock, Unlock with the passphrase, IsLocked, Wipe.
//     Teams, CreateTeam, Invite, Join, Send, Messages and Members drive the node in this process.
//   - Events: the app's callback. It hears a team id when a team changes, never content, so what it
//     shows on a lock screen is "new messages", not what they say.
//   - Radio: the native short-range radio (Nearby Connections, Multipeer Connectivity), as
//     node/proximity states it; the native code reports what it sees through Node's Radio* methods.
//
// Lock: the node runs under the daemon's lock (node/session). Lock closes the store and overwrites the
// keys; what members send meanwhile is kept sealed on disk (to a key only the store holds) and judged
// at Unlock(passphrase), whose wrong tries wait longer each time (the count kept on disk). While
// locked, every content method returns ErrLocked. Wipe destroys the store's keys, then every file of
// the data directory. The app calls Lock itself (screen off, app in the background): there is no idle
// timer here; the lock after 14 days without reaching the team is the daemon's. While locked the
// phone is reachable over IP only (the locked device has no radio).
//
// Not there yet: the "filed to record" status.
//
// Concurrency: a Node's methods are safe for concurrent use; Events methods are called on goroutines
// of the node, one team at a time in order, and must not block for long.
package mobile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	stdsync "sync"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/proximity"
	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// ErrNotStarted is returned by the methods that need a running node before Start.
var ErrNotStarted = errors.New("the node is not started")

// ErrLocked is returned by every content method (Teams, Messages, Members, Send, …) while the phone
// is locked: Unlock with the passphrase first.
var ErrLocked = errors.New("fieldmesh is locked: unlock it with the passphrase")

// ErrWiped is returned by every method once the phone's fieldmesh data was wiped (Wipe, or a wipe
// order of a team admin).
var ErrWiped = errors.New("fieldmesh was wiped from this phone")

// Events is implemented by the app to hear what changes. Team ids only: no content.
type Events interface {
	// TeamChanged says a team's messages or members changed (also when the device joins or creates
	// it): re-read Messages or Members.
	TeamChanged(teamID string)
	// Stopped says the node stopped (Stop was called).
	Stopped()
}

// Radio is the native short-range radio; see node/proximity.Radio for the contract.
type Radio interface {
	Start(name string) error
	Connect(endpoint string) error
	Send(endpoint string, payload []byte) error
	Disconnect(endpoint string) error
	Stop() error
}

var _ proximity.Radio = Radio(nil)

// Node is one fieldmesh device on a phone. Its zero value is not usable: use NewNode.
type Node struct {
	dir string

	mu       stdsync.Mutex // guards the fields below
	events   Events
	radio    Radio
	listen   []string
	noMDNS   bool
	ses      *session.Session
	stopRun  context.CancelFunc // stops ses.Run (the unreached-team lock)
	px       *proximity.Adapter // the radio of the current node (a new one at each unlock)
	wn       *node.Node         // the node the watches below are on
	watching map[string]func()
	starting bool              // session.Start runs (without m.mu)
	wiped    bool              // Wipe ran while not started
	kdf      storage.KDFParams // tests make it cheap; zero is the default
}

// NewNode returns a Node on the data directory dataDir (the app's private files directory).
func NewNode(dataDir string) *Node {
	return &Node{dir: dataDir, watching: make(map[string]func())}
}

// SetEvents sets the app's callback; call it before Start.
func (m *Node) SetEvents(e Events) {
	m.mu.Lock()
	m.events = e
	m.mu.Unlock()
}

// SetRadio sets the native radio the node also connects over; call it before Start. Nil: none.
func (m *Node) SetRadio(r Radio) {
	m.mu.Lock()
	m.radio = r
	m.mu.Unlock()
}

// SetListen sets the IP addresses to listen on, as multiaddrs separated by spaces or lines (default:
// TCP and QUIC on every interface, random ports), or "off" for none (the radio only: SetRadio), and
// whether local-network discovery (mDNS) is off. Call it before Start.
func (m *Node) SetListen(addrs string, noMDNS bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listen = nil
	for _, a := range strings.Fields(addrs) {
		m.listen = append(m.listen, a)
	}
	m.noMDNS = noMDNS
}

// Exists reports whether the data directory holds a store (so Start, not Create, is next).
func (m *Node) Exists() bool {
	_, err := os.Stat(filepath.Join(m.dir, "keyring"))
	return err == nil
}

// Create makes the encrypted store and this device's identity, with the name the team will see,
// then starts the node. An empty passphrase is refused and nothing is created.
func (m *Node) Create(name, passphrase string) error {
	if strings.TrimSpace(passphrase) == "" {
		return errors.New("a passphrase is needed")
	}
	if strings.TrimSpace(name) == "" {
		return errors.New("a name is needed")
	}
	if m.Exists() {
		return fmt.Errorf("a fieldmesh store already exists in %s: start it with its passphrase", m.dir)
	}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return err
	}
	st, err := storage.Create(m.dir, storage.Options{Passphrase: []byte(passphrase), KDF: m.kdf})
	if err != nil {
		return userErr(err)
	}
	if _, err := node.Init(st, name); err != nil {
		st.Close()
		return userErr(err)
	}
	return m.start(st)
}

// Start opens the store with the passphrase and starts the node, unlocked. A second Start is
// refused. Wrong passphrases count towards the same wait as Unlock's.
func (m *Node) Start(passphrase string) error {
	m.mu.Lock()
	running := m.ses != nil
	m.mu.Unlock()
	if running {
		return errors.New("the node is already started")
	}
	st, err := session.Open(m.dir, []byte(passphrase), nil, nil)
	if err != nil {
		return userErr(err)
	}
	return m.start(st)
}

func (m *Node) start(st *storage.Store) error {
	m.mu.Lock()
	if m.ses != nil || m.starting {
		m.mu.Unlock()
		st.Close()
		return errors.New("the node is already started")
	}
	cfg := session.Config{Dir: m.dir, Node: node.Config{ListenAddrs: m.listen, NoMDNS: m.noMDNS},
		Prepare: m.prepare, IdleLock: -1}
	if m.radio == nil && len(m.listen) == 1 && m.listen[0] == "off" {
		m.mu.Unlock()
		st.Close()
		return errors.New("listening off needs a radio (SetRadio)")
	}
	m.starting = true
	m.mu.Unlock()
	// Not under m.mu: the radio reports what it finds (Radio* methods) while the node starts.
	ses, err := session.Start(cfg, st)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.starting = false
	if err != nil {
		st.Close()
		m.px = nil
		return userErr(err)
	}
	m.ses, m.wiped = ses, false
	ctx, cancel := context.WithCancel(context.Background())
	m.stopRun = cancel
	go ses.Run(ctx)
	m.watchAllLocked()
	return nil
}

// prepare gives each node the session starts (at Start and at each Unlock) a radio Adapter of its
// own, since a node closes its Adapter when it stops.
func (m *Node) prepare(cfg *node.Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	off := len(m.listen) == 1 && m.listen[0] == "off"
	if m.radio == nil {
		return nil
	}
	id, err := node.LoadIdentity(cfg.Store)
	if err != nil {
		return userErr(err)
	}
	pid, err := node.PeerID(id.Device.ID())
	if err != nil {
		return err
	}
	px, err := proximity.New(m.radio, pid.String(), nil)
	if err != nil {
		return userErr(err)
	}
	m.px, cfg.Proximity = px, px
	switch {
	case off:
		cfg.ListenAddrs = nil // the node listens on the radio's address
	case len(cfg.ListenAddrs) == 0:
		cfg.ListenAddrs = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	}
	return nil
}

// watchAllLocked watches every team of the current node.
func (m *Node) watchAllLocked() {
	if m.ses == nil {
		return
	}
	n, _, err := m.ses.Current()
	if err != nil {
		return
	}
	for _, t := range n.Teams() {
		m.watchLocked(t.ID.String())
	}
}

// watchLocked tells the Events of every change of team id until the node goes (Lock, Stop, Wipe).
func (m *Node) watchLocked(id string) {
	if m.ses == nil {
		return
	}
	n, gone, err := m.ses.Current()
	if err != nil {
		return
	}
	if m.wn != n { // a new node since the last watches (an Unlock): the old ones ended with theirs
		go m.takeWatchesLocked()()
		m.wn = n
	}
	if _, ok := m.watching[id]; ok {
		return
	}
	ch, cancel, err := n.Watch(id)
	if err != nil {
		return
	}
	ev := m.events
	done := make(chan struct{})
	var wg stdsync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ch:
				if ev != nil {
					ev.TeamChanged(id)
				}
			case <-gone:
				return
			case <-done:
				return
			}
		}
	}()
	var once stdsync.Once
	m.watching[id] = func() { once.Do(func() { cancel(); close(done); wg.Wait() }) }
}

// takeWatchesLocked forgets every watch and returns the function that ends them, to call without
// m.mu (a watch may be in Events.TeamChanged, and the app may call the Node from there).
func (m *Node) takeWatchesLocked() func() {
	stops := m.watching
	m.watching = make(map[string]func())
	m.wn = nil
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// Stop stops the node (or the locked device) and closes the store. Idempotent. Start, with the
// passphrase, is next.
func (m *Node) Stop() error {
	m.mu.Lock()
	ses, ev := m.ses, m.events
	if ses == nil {
		m.mu.Unlock()
		return nil
	}
	stopWatches := m.takeWatchesLocked()
	m.stopRun()
	m.ses, m.px, m.stopRun = nil, nil, nil
	m.mu.Unlock()
	stopWatches()
	err := ses.Close()
	if ev != nil {
		ev.Stopped()
	}
	return userErr(err)
}

// Lock locks the phone: the node stops, its keys are overwritten and the store closes; what members
// send meanwhile is kept sealed on disk (to a key only the unlocked store holds) and shown after
// Unlock. Every content method returns ErrLocked until Unlock. Locking a locked phone does nothing.
// While locked, the phone is reachable over IP only (not over the radio).
func (m *Node) Lock() error {
	m.mu.Lock()
	ses := m.ses
	if ses == nil {
		err := m.notStartedLocked()
		m.mu.Unlock()
		return err
	}
	stopWatches := m.takeWatchesLocked()
	m.mu.Unlock()
	stopWatches()
	// Not under m.mu: the radio reports its links closing (Radio* methods) while the node stops.
	return userErr(ses.Lock())
}

// Unlock opens the store with the passphrase and starts the node again; what arrived while locked is
// then read. A wrong passphrase is refused ("wrong passphrase"); after the second wrong one in a row
// each next try must wait (1 s, 2 s, 4 s, … up to an hour), and a try before the wait ended is
// refused with "too many wrong passphrases: try again in …", without trying the passphrase. The count
// is kept on disk: restarting the app does not reset it.
func (m *Node) Unlock(passphrase string) error {
	m.mu.Lock()
	ses := m.ses
	if ses == nil {
		err := m.notStartedLocked()
		m.mu.Unlock()
		return err
	}
	m.mu.Unlock()
	// Not under m.mu: the node's radio reports what it finds (Radio* methods) while it starts.
	if err := ses.Unlock([]byte(passphrase)); err != nil {
		return userErr(err)
	}
	m.mu.Lock()
	m.watchAllLocked()
	m.mu.Unlock()
	return nil
}

// IsLocked reports whether the phone is locked (false when it is not started).
func (m *Node) IsLocked() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ses != nil && m.ses.Locked()
}

// Wipe destroys this phone's fieldmesh data: the store's keys first (so what is left of the store
// can never be read), then every file of the data directory. It works started or not, locked or not
// (a forgotten passphrase: Wipe, then Create). Afterwards every method but Create and Exists returns
// ErrWiped, until Create.
func (m *Node) Wipe() error {
	m.mu.Lock()
	if ses := m.ses; ses != nil {
		stopWatches := m.takeWatchesLocked()
		m.stopRun()
		m.ses, m.px, m.stopRun, m.wiped = nil, nil, nil, true
		m.mu.Unlock()
		stopWatches()
		// Not under m.mu: the radio reports its links closing (Radio* methods) while the node stops.
		err := ses.Wipe()
		return userErr(errors.Join(err, ses.Close()))
	}
	defer m.mu.Unlock()
	var errs []error
	if m.Exists() {
		errs = append(errs, storage.Wipe(m.dir))
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(m.dir, e.Name())))
	}
	m.wiped = true
	return userErr(errors.Join(errs...))
}

func (m *Node) notStartedLocked() error {
	if m.wiped {
		return ErrWiped
	}
	return ErrNotStarted
}

// node returns the unlocked node, or ErrNotStarted, ErrLocked or ErrWiped.
func (m *Node) node() (*node.Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ses == nil {
		return nil, m.notStartedLocked()
	}
	n, _, err := m.ses.Current()
	switch {
	case errors.Is(err, session.ErrLocked):
		return nil, ErrLocked
	case errors.Is(err, session.ErrWiped):
		return nil, ErrWiped
	case err != nil:
		return nil, userErr(err)
	}
	m.ses.Touch()
	return n, nil
}

// Team is a team as the phone lists it.
type Team struct {
	ID       string
	Name     string
	Kind     string // clinical or social
	Members  int
	Messages int
	Admin    bool
	Removed  bool // this device was removed from the team
}

func teamOf(t node.TeamInfo) *Team {
	return &Team{ID: t.ID.String(), Name: t.Name, Kind: t.Kind.String(), Members: t.Members,
		Messages: t.Messages, Admin: t.Admin, Removed: t.Removed}
}

// TeamList is a list of teams.
type TeamList struct{ teams []*Team }

// Len is the number of teams.
func (l *TeamList) Len() int { return len(l.teams) }

// Get returns team i (0 ≤ i < Len), or nil.
func (l *TeamList) Get(i int) *Team {
	if i < 0 || i >= len(l.teams) {
		return nil
	}
	return l.teams[i]
}

// Teams lists the device's teams, by name.
func (m *Node) Teams() (*TeamList, error) {
	n, err := m.node()
	if err != nil {
		return nil, err
	}
	l := &TeamList{}
	for _, t := range n.Teams() {
		l.teams = append(l.teams, teamOf(t))
	}
	return l, nil
}

// CreateTeam creates a team (kind "clinical" or "social") with this device as its first admin.
func (m *Node) CreateTeam(name, kind string) (*Team, error) {
	n, err := m.node()
	if err != nil {
		return nil, err
	}
	k, err := crdt.ParseTeamKind(kind)
	if err != nil {
		return nil, userErr(err)
	}
	t, err := n.CreateTeam(name, k)
	if err != nil {
		return nil, userErr(err)
	}
	m.watch(t.ID.String())
	return teamOf(t), nil
}

func (m *Node) watch(id string) {
	m.mu.Lock()
	m.watchLocked(id)
	m.mu.Unlock()
}

// Invite makes a one-time invite code for the team, valid for ttlSeconds (0: 24 hours).
func (m *Node) Invite(team string, ttlSeconds int64) (string, error) {
	n, err := m.node()
	if err != nil {
		return "", err
	}
	if ttlSeconds < 0 {
		return "", errors.New("the time to live must be positive")
	}
	inv, err := n.Invite(team, time.Duration(ttlSeconds)*time.Second)
	if err != nil {
		return "", userErr(err)
	}
	return inv.Code(), nil
}

// Join joins a team with an invite code; the inviter must be reachable (on the network or the radio).
func (m *Node) Join(code string) (*Team, error) {
	n, err := m.node()
	if err != nil {
		return nil, err
	}
	t, err := n.Join(context.Background(), strings.TrimSpace(code))
	if err != nil {
		return nil, userErr(err)
	}
	m.watch(t.ID.String())
	return teamOf(t), nil
}

// Send sends a message to a team (its name or id). Priority is "routine" (or ""), "urgent" or
// "emergency"; patient is an optional patient reference; replyTo an optional message id (8 or more hex
// characters). It returns the message's id once the message is stored on this device.
func (m *Node) Send(team, text, priority, patient, replyTo string) (string, error) {
	n, err := m.node()
	if err != nil {
		return "", err
	}
	msg := crdt.Message{Text: text, Patient: patient}
	if priority != "" {
		if msg.Priority, err = crdt.ParsePriority(priority); err != nil {
			return "", userErr(err)
		}
	}
	if replyTo != "" {
		id, err := n.MessageID(team, replyTo)
		if err != nil {
			return "", userErr(err)
		}
		msg.ReplyTo = &id
	}
	id, _, err := n.Send(team, msg)
	if err != nil {
		return "", userErr(err)
	}
	return id.String(), nil
}

// Message is a message as the phone shows it.
type Message struct {
	ID         string
	Author     string // the device id
	AuthorName string
	TimeMillis int64 // Unix milliseconds
	Text       string
	Priority   string
	Patient    string
	ReplyTo    string // the id of the message it answers, or ""
	ReceivedBy int
	ReadBy     int
	Queued     bool // low-data mode holds it in the outbox: not sent yet
}

// MessageList is a list of messages.
type MessageList struct{ msgs []*Message }

// Len is the number of messages.
func (l *MessageList) Len() int { return len(l.msgs) }

// Get returns message i (0 ≤ i < Len), or nil.
func (l *MessageList) Get(i int) *Message {
	if i < 0 || i >= len(l.msgs) {
		return nil
	}
	return l.msgs[i]
}

// Messages returns a team's messages in display order, the newest last; limit > 0 keeps only the
// newest limit of them.
func (m *Node) Messages(team string, limit int) (*MessageList, error) {
	n, err := m.node()
	if err != nil {
		return nil, err
	}
	ms, err := n.Messages(team)
	if err != nil {
		return nil, userErr(err)
	}
	if limit > 0 && len(ms) > limit {
		ms = ms[len(ms)-limit:]
	}
	l := &MessageList{msgs: make([]*Message, 0, len(ms))}
	for _, x := range ms {
		mm := &Message{ID: x.ID.String(), Author: x.Author.String(), AuthorName: x.AuthorName,
			TimeMillis: x.Time.Time().UnixMilli(), Text: x.Text, Priority: x.Priority.String(), Patient: x.Patient,
			ReceivedBy: len(x.ReceivedBy), ReadBy: len(x.ReadBy), Queued: x.Queued}
		if x.ReplyTo != nil {
			mm.ReplyTo = x.ReplyTo.String()
		}
		l.msgs = append(l.msgs, mm)
	}
	return l, nil
}

// Member is a person of a team.
type Member struct {
	ID           string // the person's first device id
	Name         string
	Admin        bool
	Self         bool
	Devices      int
	Verification string // unverified, verified or keys-changed
}

// MemberList is a list of members.
type MemberList struct{ members []*Member }

// Len is the number of members.
func (l *MemberList) Len() int { return len(l.members) }

// Get returns member i (0 ≤ i < Len), or nil.
func (l *MemberList) Get(i int) *Member {
	if i < 0 || i >= len(l.members) {
		return nil
	}
	return l.members[i]
}

// Members lists a team's current members.
func (m *Node) Members(team string) (*MemberList, error) {
	n, err := m.node()
	if err != nil {
		return nil, err
	}
	ms, err := n.Members(team)
	if err != nil {
		return nil, userErr(err)
	}
	l := &MemberList{}
	for _, x := range ms {
		l.members = append(l.members, &Member{ID: x.ID.String(), Name: x.Name, Admin: x.Admin, Self: x.Self,
			Devices: len(x.Devices), Verification: string(x.Status)})
	}
	return l, nil
}

// The native radio reports what it sees with these methods (node/proximity.Adapter's, by name).
// Before Start or after Stop they do nothing.

func (m *Node) adapter() *proximity.Adapter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.px
}

// RadioFound: the radio discovered a device at endpoint, advertising name.
func (m *Node) RadioFound(endpoint, name string) {
	if a := m.adapter(); a != nil {
		a.Found(endpoint, name)
	}
}

// RadioLost: the endpoint went out of range.
func (m *Node) RadioLost(endpoint string) {
	if a := m.adapter(); a != nil {
		a.Lost(endpoint)
	}
}

// RadioIncoming: a device opened a link to this one.
func (m *Node) RadioIncoming(endpoint string) {
	if a := m.adapter(); a != nil {
		a.Incoming(endpoint)
	}
}

// RadioReceived: a payload arrived on the link to endpoint. It may block until the node takes it:
// call it from a thread per link, never the UI thread.
func (m *Node) RadioReceived(endpoint string, payload []byte) {
	if a := m.adapter(); a != nil {
		a.Received(endpoint, payload)
	}
}

// RadioDisconnected: the link to endpoint ended.
func (m *Node) RadioDisconnected(endpoint string) {
	if a := m.adapter(); a != nil {
		a.Disconnected(endpoint)
	}
}

// userErr turns an error into the line a person reads: known store errors in words, and without
// the Go package prefix of our packages.
func userErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, session.ErrWiped):
		return ErrWiped
	case errors.Is(err, storage.ErrWrongPassphrase):
		return errors.New("wrong passphrase")
	case errors.Is(err, storage.ErrNotInitialized):
		return errors.New("no fieldmesh store here yet: create one")
	case errors.Is(err, storage.ErrLocked):
		return errors.New("the node is already running")
	}
	s := err.Error()
	for _, p := range []string{"node: ", "storage: ", "crdt: ", "device: ", "join: ", "proximity: ", "humancode: ", "session: ", "locked: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return errors.New(s)
}
