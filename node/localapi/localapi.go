// Package localapi is the node's local control API: JSON over HTTP on a unix socket inside the data
// directory (mode 0600, in a 0700 directory), so only the device's user can drive the node. The CLI's
// commands other than init and up are thin clients of it.
//
// Routes (all JSON; errors are {"error": "..."} with a 4xx/5xx status):
//
//	GET  /v1/status
//	GET  /v1/teams
//	POST /v1/teams             {"name","kind"}
//	POST /v1/invite            {"team","ttl"}                  ttl is a Go duration, "" = 24h
//	POST /v1/join              {"code"}
//	POST /v1/send              {"team","text","priority","patient","reply_to"}    reply_to: a message id of
//	                                                           the team, or a unique prefix of 8+ hex characters
//	GET  /v1/messages?team=T[&follow=1]                        NDJSON, one message per line, in display
//	                                                           order: by (hlc, id), a reply never before its parent;
//	                                                           with follow, each message once (a queued one too)
//	GET  /v1/peers
//	GET  /v1/ui                                               {"url"}: the web UI's sign-in address
//	                                                           (with this start's token in its fragment)
//	     /v1/members, /v1/devices, /v1/verify              membership and safety numbers: see members.go
//	POST /v1/devices/history   {"team","device"}               history from another device of yours: history.go
//	     /v1/export, /v1/audit/...                         subject-access export, audit trail: see audit.go
//	POST /v1/remote-wipe       {"team","device","ttl"}         an admin removes a lost device and issues its
//	                                                           wipe order (lock.go)
//	     /v1/lock, /v1/unlock, /v1/wipe                    the daemon's lock, served by Gate (lock.go):
//	                                                           while locked every other route answers 423
//
// The server holds no state of its own; Serve returns when its context ends. The daemon serves the
// socket through a Gate, which hands each request to the Server of the node unlocked now.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/join"
	"github.com/fieldmesh/fieldmesh/node/lowdata"
	"github.com/fieldmesh/fieldmesh/node/unixapi"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/rawid"
)

// Status is the JSON form of node.Status.
type Status struct {
	Device string         `json:"device"`
	Short  string         `json:"short"`
	Name   string         `json:"name"`
	PeerID string         `json:"peer_id"`
	Addrs  []string       `json:"addrs"`
	Teams  int            `json:"teams"`
	Peers  int            `json:"peers"`
	Sync   node.SyncStats `json:"sync"`
	Relays []Relay        `json:"relays"`
	// LowData is the low-data mode and what waits because of it.
	LowData lowdata.Status `json:"low_data"`
	// Attachments is what attachment chunks take on this device, and its storage budget.
	Attachments AttachmentStorage `json:"attachments"`
	// TeamLock is the strictest lock the teams' policies ask of this device.
	TeamLock TeamLockStatus `json:"team_lock"`
}

// Relay is the JSON form of node.RelayInfo. Times are RFC 3339, empty for never.
type Relay struct {
	PeerID      string            `json:"peer_id"`
	Addrs       []string          `json:"addrs"`
	From        string            `json:"from"`
	Connected   bool              `json:"connected"`
	Enrolled    []string          `json:"enrolled"`
	Refused     map[string]string `json:"refused"`
	LastContact string            `json:"last_contact"`
	LastSync    string            `json:"last_sync"`
	LastError   string            `json:"last_error"`
	// Waiting is, per team id, how many envelopes this device stored since its last reconciliation
	// with the relay for that team (since start, for a team not in Reconciled): what may not have
	// reached the relay yet.
	Waiting    map[string]uint64 `json:"waiting"`
	Reconciled []string          `json:"reconciled"`
}

func relayJSON(r node.RelayInfo) Relay {
	out := Relay{PeerID: r.PeerID.String(), Addrs: []string{}, From: r.From, Connected: r.Connected, Enrolled: []string{},
		Refused: map[string]string{}, LastError: r.LastError, Waiting: map[string]uint64{}, Reconciled: []string{}}
	for t, n := range r.Waiting {
		out.Waiting[t.String()] = n
	}
	for _, t := range r.Reconciled {
		out.Reconciled = append(out.Reconciled, t.String())
	}
	for _, a := range r.Addrs {
		out.Addrs = append(out.Addrs, a.String())
	}
	for _, t := range r.Enrolled {
		out.Enrolled = append(out.Enrolled, t.String())
	}
	for t, why := range r.Refused {
		out.Refused[t.String()] = why
	}
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	out.LastContact, out.LastSync = stamp(r.LastContact), stamp(r.LastSync)
	return out
}

// Team is the JSON form of node.TeamInfo.
type Team struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Members  int    `json:"members"`
	Messages int    `json:"messages"`
	Admin    bool   `json:"admin"`
	// Removed: this device was removed from the team (omitted otherwise).
	Removed bool `json:"removed,omitempty"`
	// LookAlike: another team of this device has a name that looks like this one (omitted otherwise).
	LookAlike bool `json:"look_alike,omitempty"`
}

// Invite is a created invite code.
type Invite struct {
	Code    string `json:"code"`
	Expires string `json:"expires"`
}

// SendRequest posts a message. ReplyTo names the message replied to by its id or a unique prefix of
// it of at least 8 hex characters (its short id); it must be a message of the team.
type SendRequest struct {
	Team     string `json:"team"`
	Text     string `json:"text"`
	Priority string `json:"priority,omitempty"`
	Patient  string `json:"patient"`
	ReplyTo  string `json:"reply_to"`
	// Attachments, if any, are sent through POST /v1/attachments/send (attach.go).
	Attachments []AttachmentFile `json:"attachments,omitempty"`
	// AllowIdentifiers sends text that looks like it holds a raw patient identifier (an NHS number, a
	// date of birth, a phone number: sync/rawid); without it such text is refused with advice.
	AllowIdentifiers bool `json:"allow_identifiers,omitempty"`
	// ForRecord asks for the message to be filed to the health record (crdt.Message.ForRecord).
	ForRecord bool `json:"for_record,omitempty"`
}

// Sent acknowledges a message: it is durably stored on the device.
type Sent struct {
	ID  string `json:"id"`
	HLC uint64 `json:"hlc"`
}

// Message is the JSON form of a message view.
type Message struct {
	ID         string `json:"id"`
	Author     string `json:"author"`
	AuthorName string `json:"author_name"`
	Time       string `json:"time"`
	HLC        uint64 `json:"hlc"`
	Text       string `json:"text"`
	Priority   string `json:"priority"`
	Patient    string `json:"patient"`
	ReplyTo    string `json:"reply_to"`
	// Received and Read count the other members whose devices acknowledged the message.
	Received int `json:"received"`
	Read     int `json:"read"`
	// Queued: this device's own message, held in the outbox by low-data mode and not sent yet.
	Queued bool `json:"queued"`
	// ForRecord: its author asked for it to be filed to the health record.
	ForRecord bool `json:"for_record,omitempty"`
	// FiledTo is the health record's reference ("Communication/123") once a record gateway filed
	// it; its body is deleted everywhere a grace period later. Empty: not filed.
	FiledTo string `json:"filed_to,omitempty"`
}

// Peer is a connected peer.
type Peer struct {
	PeerID string   `json:"peer_id"`
	Device string   `json:"device"`
	Addrs  []string `json:"addrs"`
	// Relay: the peer is one of this device's clinic relays, not a device.
	Relay bool `json:"relay"`
}

type apiError struct {
	Error string `json:"error"`
}

// Server serves the API for one node.
type Server struct {
	Node   *node.Node
	Logger *slog.Logger // nil discards
	// record is the record gateway's state (record.go).
	record recordState
	// UILogin returns the web UI's sign-in address, token included (node/webui's Server.LoginURL);
	// nil when the daemon serves no web UI.
	UILogin func() string
}

// UI is the answer of GET /v1/ui.
type UI struct {
	URL string `json:"url"`
}

// ErrNoUI is what GET /v1/ui answers when the node serves no web UI.
var ErrNoUI = errors.New("this node serves no web UI")

func (s *Server) ui(w http.ResponseWriter, r *http.Request) {
	if s.UILogin == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: ErrNoUI.Error()})
		return
	}
	writeJSON(w, http.StatusOK, UI{URL: s.UILogin()})
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/teams", s.teams)
	mux.HandleFunc("POST /v1/teams", s.createTeam)
	mux.HandleFunc("POST /v1/invite", s.invite)
	mux.HandleFunc("POST /v1/join", s.join)
	mux.HandleFunc("POST /v1/send", s.send)
	mux.HandleFunc("GET /v1/messages", s.messages)
	mux.HandleFunc("GET /v1/peers", s.peers)
	mux.HandleFunc("GET /v1/ui", s.ui)
	mux.HandleFunc("GET /v1/relays", s.relays)
	mux.HandleFunc("POST /v1/relays/forget", s.forgetRelay)
	mux.HandleFunc("GET /v1/members", s.members)
	mux.HandleFunc("POST /v1/members/remove", s.membership(func(r MembershipRequest) error { return s.Node.RemoveMember(r.Team, r.Member) }))
	mux.HandleFunc("POST /v1/members/promote", s.membership(func(r MembershipRequest) error { return s.Node.Promote(r.Team, r.Member) }))
	mux.HandleFunc("POST /v1/devices/link", s.linkDevice)
	mux.HandleFunc("POST /v1/devices/remove", s.membership(func(r MembershipRequest) error { return s.Node.RemoveDevice(r.Team, r.Device) }))
	mux.HandleFunc("POST /v1/verify", s.verify)
	mux.HandleFunc("POST /v1/remote-wipe", s.remoteWipe)
	s.registerUsage(mux)
	s.registerAudit(mux)
	s.registerAttachments(mux)
	s.registerDuty(mux)
	s.registerPolicy(mux)
	s.registerRecord(mux)
	s.registerHistory(mux)
	return mux
}

// maxRequest bounds request bodies.
const maxRequest = 64 << 10

// Listen opens the API socket at path. A stale socket left by a crashed node is replaced; a live one
// (another node running on this data directory) is an error.
func Listen(path string) (net.Listener, error) {
	l, err := unixapi.Listen(path)
	if errors.Is(err, unixapi.ErrInUse) {
		return nil, fmt.Errorf("localapi: a node is already running on %s", path)
	}
	if err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	return l, nil
}

// Serve serves the API on l until ctx ends, then shuts down and removes nothing (the caller owns l).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return unixapi.Serve(ctx, l, s.Handler())
}

// ErrIdentifiers is the error of a send whose text looks like it holds a raw patient identifier.
var ErrIdentifiers = errors.New("not sent: the text looks like it holds a raw patient identifier")

// checkIdentifiers is the check before sending, for every client of the API (the CLI and the web UI):
// text that looks like it holds a raw patient identifier is refused, with the advice to identify the
// patient by a reference token, unless the request allows it.
func checkIdentifiers(req SendRequest) error {
	fs := rawid.Scan(req.Text, time.Now())
	if len(fs) == 0 || req.AllowIdentifiers {
		return nil
	}
	var what []string
	for _, f := range fs {
		if k := f.Kind.String(); !slices.Contains(what, k) {
			what = append(what, k)
		}
	}
	return fmt.Errorf("%w (%s): identify the patient with a reference token in the patient field (for example your clinic's case number) instead, or allow identifiers if you must",
		ErrIdentifiers, strings.Join(what, ", "))
}

func writeJSON(w http.ResponseWriter, code int, v any) { unixapi.WriteJSON(w, code, v) }

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, node.ErrUnknownTeam), errors.Is(err, node.ErrNoRelay), errors.Is(err, node.ErrUnknownMessage):
		code = http.StatusNotFound
	case errors.Is(err, join.ErrRefused), errors.Is(err, join.ErrInviteExpired), errors.Is(err, node.ErrRemoved):
		code = http.StatusForbidden
	}
	msg := err.Error()
	for _, p := range []string{"node: ", "join: ", "usage: ", "lowdata: ", "audit: ", "export: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	writeJSON(w, code, apiError{Error: msg})
}

// durationField parses a request's duration field (a Go duration such as
// "10m"): empty is zero (the field is not set), anything else must be a
// positive duration.
func durationField(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad %s %q: give a positive duration such as 10m", name, s)
	}
	return d, nil
}

// requiredDuration is durationField for a field that must be set.
func requiredDuration(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("%s is missing: give a positive duration such as 10m", name)
	}
	return durationField(name, s)
}

func decode(r *http.Request, v any) error {
	if err := unixapi.Decode(nil, r, maxRequest, v); err != nil {
		return fmt.Errorf("localapi: bad request: %w", err)
	}
	return nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.Node.Status()
	out := Status{
		Device: st.Device.String(), Short: st.Device.Short(), Name: st.Name, PeerID: st.PeerID.String(),
		Teams: st.Teams, Peers: st.Peers, Sync: st.Sync, Addrs: []string{}, Relays: []Relay{},
	}
	// On an error reading the outbox the mode is still known; the count is left out.
	out.LowData, _ = s.Node.LowData()
	// Likewise the attachments' storage, from the store; on an error only the budget is shown.
	as, _ := s.Node.AttachmentStorage()
	out.Attachments = AttachmentStorage{Bytes: as.Bytes, Chunks: as.Chunks, Budget: as.Budget, Evicted: as.Evicted}
	out.TeamLock = teamLockStatus(s.Node.TeamLocks())
	for _, r := range s.Node.Relays() {
		out.Relays = append(out.Relays, relayJSON(r))
	}
	for _, a := range st.Addrs {
		out.Addrs = append(out.Addrs, a.String())
	}
	writeJSON(w, http.StatusOK, out)
}

func teamJSON(t node.TeamInfo) Team {
	return Team{ID: t.ID.String(), Name: t.Name, Kind: t.Kind.String(), Members: t.Members, Messages: t.Messages, Admin: t.Admin, Removed: t.Removed, LookAlike: t.LookAlike}
}

func (s *Server) teams(w http.ResponseWriter, r *http.Request) {
	out := []Team{}
	for _, t := range s.Node.Teams() {
		out = append(out, teamJSON(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Kind == "" {
		req.Kind = "clinical"
	}
	kind, err := crdt.ParseTeamKind(req.Kind)
	if err != nil {
		writeErr(w, err)
		return
	}
	t, err := s.Node.CreateTeam(req.Name, kind)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, teamJSON(t))
}

func (s *Server) invite(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Team string `json:"team"`
		TTL  string `json:"ttl"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	ttl, err := durationField("invite lifetime", req.TTL)
	if err != nil {
		writeErr(w, err)
		return
	}
	inv, err := s.Node.Invite(req.Team, ttl)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Invite{Code: inv.Code(), Expires: inv.Expires.UTC().Format(time.RFC3339)})
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Code string `json:"code"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	t, err := s.Node.Join(r.Context(), req.Code)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, teamJSON(t))
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	var req SendRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	m, err := s.messageOf(req)
	if err != nil {
		writeErr(w, err)
		return
	}
	id, hlc, err := s.Node.Send(req.Team, m)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Sent{ID: id.String(), HLC: uint64(hlc)})
}

// messageOf is the message a send request asks for, without its attachments. Text that looks like
// it holds a raw identifier is refused here (checkIdentifiers), for every route that sends.
func (s *Server) messageOf(req SendRequest) (crdt.Message, error) {
	if err := checkIdentifiers(req); err != nil {
		return crdt.Message{}, err
	}
	m := crdt.Message{Text: req.Text, Patient: req.Patient, ForRecord: req.ForRecord}
	if req.Priority != "" {
		p, err := crdt.ParsePriority(req.Priority)
		if err != nil {
			return crdt.Message{}, err
		}
		m.Priority = p
	}
	if req.ReplyTo != "" {
		id, err := s.Node.MessageID(req.Team, req.ReplyTo)
		if err != nil {
			return crdt.Message{}, err
		}
		m.ReplyTo = &id
	}
	return m, nil
}

// MessageJSON is the JSON form of a message as the node shows it (the web UI pages these).
func MessageJSON(m node.Message) Message {
	out := Message{
		ID: m.ID.String(), Author: m.Author.String(), AuthorName: m.AuthorName,
		Time: m.Time.Time().UTC().Format(time.RFC3339Nano), HLC: uint64(m.Time),
		Text: m.Text, Priority: m.Priority.String(), Patient: m.Patient,
		Received: len(m.ReceivedBy), Read: len(m.ReadBy), Queued: m.Queued, ForRecord: m.ForRecord,
	}
	if m.Filed != nil {
		out.FiledTo = m.Filed.Ref
	}
	if m.ReplyTo != nil {
		out.ReplyTo = m.ReplyTo.String()
	}
	return out
}

// messages streams a team's messages as NDJSON. With follow=1 it keeps the response open and writes
// each message that arrives later, never one twice.
func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	team := r.URL.Query().Get("team")
	follow := r.URL.Query().Get("follow") == "1"
	var (
		updates <-chan struct{}
		stop    func()
	)
	if follow {
		ch, cancel, err := s.Node.Watch(team)
		if err != nil {
			writeErr(w, err)
			return
		}
		updates, stop = ch, cancel
		defer stop()
	}
	msgs, err := s.Node.Messages(team)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	shown := make(map[crdt.OpID]bool, len(msgs))
	write := func(msgs []node.Message) error {
		var written []crdt.OpID
		for _, m := range msgs {
			if shown[m.ID] {
				continue
			}
			shown[m.ID] = true
			if err := enc.Encode(MessageJSON(m)); err != nil {
				return err
			}
			written = append(written, m.ID)
		}
		if flusher != nil {
			flusher.Flush()
		}
		// What reached the reader counts as read; it is acknowledged in the node's next batch.
		return s.Node.MarkRead(team, written)
	}
	if err := write(msgs); err != nil || !follow {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-updates:
			msgs, err := s.Node.Messages(team)
			if err != nil {
				return
			}
			if err := write(msgs); err != nil {
				return
			}
		}
	}
}

func (s *Server) peers(w http.ResponseWriter, r *http.Request) {
	out := []Peer{}
	for _, p := range s.Node.Peers() {
		pj := Peer{PeerID: p.ID.String(), Device: p.Device.String(), Addrs: []string{}, Relay: p.Relay}
		if p.Relay {
			pj.Device = ""
		}
		for _, a := range p.Addrs {
			pj.Addrs = append(pj.Addrs, a.String())
		}
		out = append(out, pj)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) relays(w http.ResponseWriter, r *http.Request) {
	out := []Relay{}
	for _, ri := range s.Node.Relays() {
		out = append(out, relayJSON(ri))
	}
	writeJSON(w, http.StatusOK, out)
}

// ForgetRelayRequest names a relay by peer id or a unique prefix of it.
type ForgetRelayRequest struct {
	Relay string `json:"relay"`
}

func (s *Server) forgetRelay(w http.ResponseWriter, r *http.Request) {
	var in ForgetRelayRequest
	if err := decode(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	id, err := s.Node.ForgetRelay(in.Relay)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"peer_id": id.String()})
}
