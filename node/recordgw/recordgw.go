// Package recordgw is the I/O half of the record gateway: it files a clinical team's messages to a
// FHIR R4 server over HTTP, keeps its filing queue in the node's encrypted store, and publishes a
// filed op for what the server confirmed. What to file, how to map it and how to read the server's
// answers is sync/record's (pure); this package does the requests, the persistence and the
// reporting.
//
// One Pass: sync the queue with the messages due (a message filed meanwhile, by this gateway or
// another, or deleted, leaves it); then, oldest first, for each message that may be tried now,
// resolve its patient token (the deployment's table, else Patient?identifier=TOKEN), post its
// transaction Bundle, and record the outcome in the queue (persisted before the next request). What
// the server confirmed, entry by entry, is published in filed ops (up to crdt.MaxFiledEntries
// messages each) at the end of the pass, and only then dropped from the queue: a crash in between
// files the message again, and the identifier's ifNoneExist makes that the same resource. A server
// that does not answer, or refuses the credentials, ends the pass (the rest waits its backoff).
//
// Attachments: a message is filed with its attachments (record.Message.Attachments), which the
// gateway takes from the node whole and checked against their manifests (Source.RecordAttachments).
// A message whose chunks are not all on this device is not posted: the node asks the connected peers
// for them, whatever its low-data mode, and the message waits (record.WaitingAttachments, looked at
// again within record.MaxWaitAttachments). A Bundle over Config.MaxBundle is not posted, and one the
// server answers with 413 is not filed: both are held as record.TooLarge and reported.
//
// The credentials (an Authorization header value) live in memory only, for the gateway's life; they
// are never stored, logged or reported. Logs and reports name messages and teams by short ids.
//
// Concurrency: a Gateway is safe for concurrent use; passes run one at a time.
package recordgw

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record"
)

// Source is what the gateway needs of the node (node.Node implements it).
type Source interface {
	RecordTeams() []node.RecordTeam
	PublishFiled(team crdt.TeamID, f crdt.Filed) error
	DeviceID() identity.DeviceID
	// RecordAttachments returns a message's attachments, whole and checked, or an error wrapping
	// node.ErrAttachmentMissing (having asked the peers for the chunks it lacks).
	RecordAttachments(team crdt.TeamID, m crdt.MessageView) ([]node.Attachment, error)
}

// Queue is where the gateway keeps its queue (storage.Store implements it).
type Queue interface {
	UpdateRecordQ(ops []storage.RecordQOp) error
	RecordQ(fn func(storage.RecordQKey, []byte) error) error
}

var (
	_ Source = (*node.Node)(nil)
	_ Queue  = (*storage.Store)(nil)
)

// Config configures a Gateway. FHIR is required.
type Config struct {
	// FHIR is the record server's base URL (http or https), e.g. https://record.example/fhir.
	FHIR string
	// Authorization is the Authorization header's value ("Bearer T" or "Basic B"), or "" for none.
	// A secret: kept in memory only.
	Authorization string
	// RootCAs, if set, are the only CAs trusted for an https FHIR server; nil: the system's.
	RootCAs *x509.CertPool
	// Profile maps messages; nil is the default profile.
	Profile record.Profile
	// Patients is the deployment's patient mapping table; nil: search the record for every token.
	Patients record.PatientTable
	// Timeout bounds each request. Default 30 s.
	Timeout time.Duration
	// MaxBundle is the largest Bundle posted, in bytes; a message whose Bundle is larger (its
	// attachments) is held as too large, never posted. Default and most record.MaxBundle (16 MiB);
	// set it to the server's request limit if that is lower.
	MaxBundle int
	// Backoff says when failed messages are tried again; the zero value has record's defaults.
	Backoff record.Backoff
	// Client, if set, does the HTTP (tests); nil builds one from RootCAs.
	Client *http.Client
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger receives what the gateway does (short ids, never content). Nil discards.
	Logger *slog.Logger
}

// Gateway files messages to a FHIR server.
type Gateway struct {
	cfg    Config
	base   *url.URL
	src    Source
	store  Queue
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex // held for a whole pass
	q        *record.Queue
	loaded   bool
	patients map[string]string // tokens resolved by search in this gateway's life
	// pause is when the server may be tried again after a pass stopped on it (unreachable, or
	// refusing the credentials): the backoff of the message that found it so, for all of them.
	pause time.Time
}

// New returns a gateway over the node src and its store. It checks the configuration; it does no
// I/O until Pass.
func New(cfg Config, src Source, store Queue) (*Gateway, error) {
	u, err := url.Parse(strings.TrimRight(cfg.FHIR, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("record server URL %q: want http(s)://host/path", cfg.FHIR)
	}
	if u.User != nil {
		return nil, errors.New("record server URL: give credentials in a file (--token-file or --basic-file), not in the URL")
	}
	if cfg.Profile == nil {
		cfg.Profile, _ = record.ProfileByName("")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxBundle <= 0 || cfg.MaxBundle > record.MaxBundle {
		cfg.MaxBundle = record.MaxBundle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	client := cfg.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
		tr.Proxy = nil
		client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Gateway{
		cfg: cfg, base: u, src: src, store: store, client: client, log: cfg.Logger.With("part", "record"),
		q: record.NewQueue(cfg.Backoff), patients: make(map[string]string),
	}, nil
}

// Held is a message the gateway could not file, for the report.
type Held struct {
	Team     crdt.TeamID
	ID       crdt.OpID
	Code     record.Code
	Status   int
	Attempts int
	Next     time.Time
}

// Report says what a pass did and what waits.
type Report struct {
	// Filed counts the messages the server confirmed in this pass (and published as filed).
	Filed int
	// Queued counts the messages still waiting after it; Waiting lists those that failed at least
	// once (held, or retried after a backoff), sorted by team and queue time.
	Queued  int
	Waiting []Held
	// Stopped says why the pass ended early ("" if it did not): the server is unreachable, or
	// refuses the credentials.
	Stopped string
	// NotAdmin lists the clinical teams this device is not an admin of: its filings would not
	// count there, so it files nothing of them.
	NotAdmin []crdt.TeamID
	// Next is when the queue has something to try again (zero: nothing queued).
	Next time.Time
}

// Pass runs one filing pass (see the package doc). It returns an error only when the queue cannot
// be read or written, or a filed op cannot be published; the server's failures are in the Report.
func (g *Gateway) Pass(ctx context.Context) (Report, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var rep Report
	if err := g.load(); err != nil {
		return rep, err
	}
	now := g.cfg.Now()
	views := make(map[crdt.OpID]crdt.MessageView)
	for _, t := range g.src.RecordTeams() {
		var due []crdt.OpID
		if !t.Admin {
			rep.NotAdmin = append(rep.NotAdmin, t.ID)
		} else {
			for _, m := range t.Due {
				due = append(due, m.ID)
				views[m.ID] = m
			}
		}
		if err := g.persist(g.q.Sync(t.ID, due, now)); err != nil {
			return rep, err
		}
	}
	filed := make(map[crdt.TeamID][]crdt.FiledEntry)
	var done []record.Entry
	var try []record.Entry
	if now.Before(g.pause) {
		rep.Stopped = "waiting for the server"
	} else {
		try = g.q.Next(now, g.q.Len())
	}
	for _, e := range try {
		if ctx.Err() != nil {
			break
		}
		m, ok := views[e.ID]
		if !ok {
			continue
		}
		o := g.file(ctx, e.Team, m)
		if o.Code == record.Filed {
			filed[e.Team] = append(filed[e.Team], crdt.FiledEntry{Message: e.ID, Ref: o.Ref})
			done = append(done, e)
			continue
		}
		g.log.Info("message not filed", "team", e.Team, "message", e.ID.Short(), "outcome", o.Code.String(), "status", o.Status)
		ch := g.q.Done(e.Team, e.ID, g.cfg.Now(), o)
		if err := g.persist(ch); err != nil {
			return rep, err
		}
		if o.Code == record.Unreachable || o.Code == record.Unauthorized {
			rep.Stopped = o.Code.String()
			if len(ch.Put) == 1 {
				g.pause = time.UnixMilli(ch.Put[0].Next)
			}
			break
		}
	}
	n, err := g.publish(filed)
	rep.Filed = n
	if err != nil {
		return rep, err
	}
	for _, e := range done {
		if err := g.persist(g.q.Done(e.Team, e.ID, g.cfg.Now(), record.Outcome{Code: record.Filed})); err != nil {
			return rep, err
		}
	}
	rep.Queued = g.q.Len()
	for _, e := range g.q.Entries() {
		if e.Attempts > 0 {
			rep.Waiting = append(rep.Waiting, Held{Team: e.Team, ID: e.ID, Code: e.Code, Status: int(e.Status), Attempts: int(e.Attempts), Next: time.UnixMilli(e.Next)})
		}
	}
	if w, ok := g.q.Wait(g.cfg.Now()); ok {
		rep.Next = g.cfg.Now().Add(w)
		if rep.Next.Before(g.pause) {
			rep.Next = g.pause
		}
	}
	if rep.Filed > 0 {
		g.log.Info("filed to the record", "messages", rep.Filed)
	}
	return rep, nil
}

// publish publishes the filed ops, per team in chunks of crdt.MaxFiledEntries, and returns how
// many messages they name.
func (g *Gateway) publish(filed map[crdt.TeamID][]crdt.FiledEntry) (int, error) {
	n := 0
	teams := make([]crdt.TeamID, 0, len(filed))
	for t := range filed {
		teams = append(teams, t)
	}
	slices.SortFunc(teams, func(a, b crdt.TeamID) int { return bytes.Compare(a[:], b[:]) })
	at := uint64(g.cfg.Now().UnixMilli())
	for _, t := range teams {
		es := filed[t]
		slices.SortFunc(es, func(a, b crdt.FiledEntry) int { return a.Message.Compare(b.Message) })
		for len(es) > 0 {
			chunk := es[:min(len(es), crdt.MaxFiledEntries)]
			if err := g.src.PublishFiled(t, crdt.Filed{At: at, Entries: chunk}); err != nil {
				return n, fmt.Errorf("publish filed op in team %s: %w", t.Short(), err)
			}
			n += len(chunk)
			es = es[len(chunk):]
		}
	}
	return n, nil
}

// load reads the stored queue once.
func (g *Gateway) load() error {
	if g.loaded {
		return nil
	}
	err := g.store.RecordQ(func(k storage.RecordQKey, v []byte) error {
		e, err := record.UnmarshalEntry(v)
		if err != nil || e.Team != k.Team || e.ID != k.ID {
			// A record that does not decode is dropped: the next Sync queues its message again.
			g.log.Warn("record queue entry does not decode; queued again", "message", crdt.OpID(k.ID).Short())
			return nil
		}
		g.q.Load(e)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the record queue: %w", err)
	}
	g.loaded = true
	return nil
}

// persist stores the queue's changes.
func (g *Gateway) persist(ch record.Changes) error {
	if len(ch.Put)+len(ch.Delete) == 0 {
		return nil
	}
	ops := make([]storage.RecordQOp, 0, len(ch.Put)+len(ch.Delete))
	for _, e := range ch.Put {
		ops = append(ops, storage.RecordQOp{Key: storage.RecordQKey{Team: e.Team, ID: e.ID}, Value: e.Marshal()})
	}
	for _, e := range ch.Delete {
		ops = append(ops, storage.RecordQOp{Key: storage.RecordQKey{Team: e.Team, ID: e.ID}})
	}
	if err := g.store.UpdateRecordQ(ops); err != nil {
		return fmt.Errorf("write the record queue: %w", err)
	}
	return nil
}

// file gathers the message's attachments, resolves its patient and posts its Bundle.
func (g *Gateway) file(ctx context.Context, team crdt.TeamID, m crdt.MessageView) record.Outcome {
	msg := record.Message{
		ID: m.ID, Team: team, Author: m.Author, AuthorName: m.AuthorName, Sent: m.Time.Time(), Text: m.Text,
		Priority: m.Priority, ReplyTo: m.ReplyTo, Gateway: g.src.DeviceID(), Recorded: g.cfg.Now(),
	}
	if len(m.Attachments) > 0 {
		files, err := g.src.RecordAttachments(team, m)
		if errors.Is(err, node.ErrAttachmentMissing) {
			return record.Outcome{Code: record.WaitingAttachments}
		}
		if err != nil {
			g.log.Warn("attachments do not open", "team", team, "message", m.ID.Short())
			return record.Outcome{Code: record.Unmappable}
		}
		for _, f := range files {
			msg.Attachments = append(msg.Attachments, record.File{Type: f.Type, Data: f.Data})
		}
	}
	if m.Patient != "" {
		ref, o := g.patient(ctx, m.Patient)
		if o.Code != record.Filed {
			return o
		}
		msg.Patient = ref
	}
	b, err := g.cfg.Profile.Bundle(msg)
	if err != nil {
		return record.Outcome{Code: record.Unmappable}
	}
	body := b.Marshal()
	if len(body) > g.cfg.MaxBundle {
		return record.Outcome{Code: record.TooLarge}
	}
	status, body, err := g.do(ctx, http.MethodPost, "", body)
	if err != nil {
		return record.Outcome{Code: record.Unreachable}
	}
	return record.ParseResponse(status, body, len(b.Entry))
}

// patient resolves a token: the table, else what a search found before, else a search.
func (g *Gateway) patient(ctx context.Context, token string) (string, record.Outcome) {
	if ref, ok := g.cfg.Patients[token]; ok {
		return ref, record.Outcome{Code: record.Filed}
	}
	if ref, ok := g.patients[token]; ok {
		return ref, record.Outcome{Code: record.Filed}
	}
	status, body, err := g.do(ctx, http.MethodGet, record.PatientSearch(token), nil)
	if err != nil {
		return "", record.Outcome{Code: record.Unreachable}
	}
	ref, o := record.ParsePatientMatch(status, body)
	if o.Code == record.Filed {
		g.patients[token] = ref
	}
	return ref, o
}

// do sends one request to the server (path relative to the base, "" for the base) and reads at
// most record.MaxResponse bytes of the answer, record.MaxTransactionResponse for a transaction
// (the server may echo its attachments).
func (g *Gateway) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	u := g.base.String() + "/" + path
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/fhir+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if g.cfg.Authorization != "" {
		req.Header.Set("Authorization", g.cfg.Authorization)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	limit := int64(record.MaxResponse)
	if method == http.MethodPost {
		limit = record.MaxTransactionResponse
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}
