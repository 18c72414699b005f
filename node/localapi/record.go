package localapi

// The record gateway (node/recordgw). Route (Server.registerRecord):
//
//	POST /v1/record/sync  RecordSyncRequest -> NDJSON of RecordReport: one per filing pass; with
//	                      "watch", one after each pass until the client goes away
//
// The credentials travel in the request, over the API's socket (mode 0600), and live in the node's
// memory for the request only: they are never stored or logged.

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/fieldmesh/fieldmesh/node/recordgw"
	"github.com/fieldmesh/fieldmesh/node/unixapi"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record"
)

// maxRecordRequest bounds a record sync request: a patient mapping table and a CA bundle.
const maxRecordRequest = record.MaxPatientTable + 1<<20

// recordWatchPoll bounds how long a watching sync waits without a change: new clinical teams and
// messages held past their backoff are picked up at least this often.
const recordWatchPoll = time.Minute

// RecordSyncRequest asks the node to file its clinical teams' messages to a FHIR server.
type RecordSyncRequest struct {
	FHIR string `json:"fhir"`
	// Authorization is the Authorization header's value ("Bearer T", "Basic B"), or empty.
	Authorization string `json:"authorization,omitempty"`
	// CA is a PEM bundle of the CAs to trust for an https server (empty: the system's).
	CA string `json:"ca,omitempty"`
	// Profile names the mapping profile (empty: record.DefaultProfile).
	Profile string `json:"profile,omitempty"`
	// Patients is a patient mapping table (record.ParsePatientTable), or empty.
	Patients string `json:"patients,omitempty"`
	// Watch keeps filing, after every change and backoff, until the client goes away.
	Watch bool `json:"watch,omitempty"`
	// MaxBundle is the largest Bundle to post, in bytes (recordgw.Config.MaxBundle); 0: the default.
	MaxBundle int `json:"max_bundle,omitempty"`
}

// RecordHeld is a message the gateway could not file yet.
type RecordHeld struct {
	Team     string `json:"team"`    // short team id
	Message  string `json:"message"` // short message id
	Outcome  string `json:"outcome"`
	Status   int    `json:"status,omitempty"`
	Attempts int    `json:"attempts"`
	Next     string `json:"next"` // RFC 3339
}

// RecordReport is the outcome of one filing pass.
type RecordReport struct {
	Filed    int          `json:"filed"`
	Queued   int          `json:"queued"`
	Waiting  []RecordHeld `json:"waiting"`
	Stopped  string       `json:"stopped,omitempty"`
	NotAdmin []string     `json:"not_admin,omitempty"` // short ids of clinical teams this device does not administer
	Next     string       `json:"next,omitempty"`
	// Unfiled counts, by short team id, the clinical messages due and not filed for longer than the
	// node's WarnUnfiled (30 days): the admins' warning.
	Unfiled map[string]int `json:"unfiled,omitempty"`
	// Error is set on the last report of a stream that ended on an error.
	Error string `json:"error,omitempty"`
}

type recordState struct {
	mu      sync.Mutex
	running bool
}

// ErrRecordBusy is answered when a record sync is already running on the node.
var ErrRecordBusy = errors.New("a record sync is already running on this node")

func (s *Server) registerRecord(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/record/sync", s.recordSync)
}

func (s *Server) gateway(req RecordSyncRequest) (*recordgw.Gateway, error) {
	cfg := recordgw.Config{FHIR: req.FHIR, Authorization: req.Authorization, Logger: s.Logger, MaxBundle: req.MaxBundle}
	if req.CA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(req.CA)) {
			return nil, errors.New("the CA file holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	p, err := record.ProfileByName(req.Profile)
	if err != nil {
		return nil, err
	}
	cfg.Profile = p
	if req.Patients != "" {
		t, err := record.ParsePatientTable([]byte(req.Patients))
		if err != nil {
			return nil, err
		}
		cfg.Patients = t
	}
	return recordgw.New(cfg, s.Node, s.Node.Store())
}

func (s *Server) recordSync(w http.ResponseWriter, r *http.Request) {
	var req RecordSyncRequest
	if err := unixapi.Decode(nil, r, maxRecordRequest, &req); err != nil {
		writeErr(w, fmt.Errorf("localapi: bad request: %w", err))
		return
	}
	gw, err := s.gateway(req)
	if err != nil {
		writeErr(w, err)
		return
	}
	s.record.mu.Lock()
	busy := s.record.running
	s.record.running = true
	s.record.mu.Unlock()
	if busy {
		writeJSON(w, http.StatusConflict, apiError{Error: ErrRecordBusy.Error()})
		return
	}
	defer func() {
		s.record.mu.Lock()
		s.record.running = false
		s.record.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	ctx := r.Context()
	for {
		changed, stop := s.watchClinical()
		rep, err := gw.Pass(ctx)
		out := s.reportJSON(rep)
		if err != nil {
			out.Error = err.Error()
		}
		werr := enc.Encode(out)
		if flusher != nil {
			flusher.Flush()
		}
		if err != nil || werr != nil || !req.Watch {
			stop()
			return
		}
		wait := recordWatchPoll
		if !rep.Next.IsZero() {
			wait = min(wait, max(time.Until(rep.Next), 0)+10*time.Millisecond)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
		stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// watchClinical returns a channel that receives when any of the node's clinical teams changes, and
// a function that stops watching.
func (s *Server) watchClinical() (<-chan struct{}, func()) {
	out := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, t := range s.Node.RecordTeams() {
		ch, stop, err := s.Node.Watch(t.ID.String())
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			select {
			case <-ch:
				select {
				case out <- struct{}{}:
				default:
				}
			case <-ctx.Done():
			}
		}()
	}
	return out, func() { cancel(); wg.Wait() }
}

func (s *Server) reportJSON(rep recordgw.Report) RecordReport {
	out := RecordReport{Filed: rep.Filed, Queued: rep.Queued, Stopped: rep.Stopped, Waiting: []RecordHeld{}}
	for _, h := range rep.Waiting {
		out.Waiting = append(out.Waiting, RecordHeld{
			Team: h.Team.Short(), Message: h.ID.Short(), Outcome: h.Code.String(), Status: h.Status,
			Attempts: h.Attempts, Next: h.Next.UTC().Format(time.RFC3339),
		})
	}
	for _, t := range rep.NotAdmin {
		out.NotAdmin = append(out.NotAdmin, t.Short())
	}
	if !rep.Next.IsZero() {
		out.Next = rep.Next.UTC().Format(time.RFC3339)
	}
	for team, ids := range s.Node.Unfiled() {
		if out.Unfiled == nil {
			out.Unfiled = make(map[string]int)
		}
		out.Unfiled[crdt.TeamID(team).Short()] = len(ids)
	}
	return out
}

// RecordSync asks the node to file to the record and calls fn with each report; with req.Watch it
// returns when ctx ends or the node goes away.
func (c *Client) RecordSync(ctx context.Context, req RecordSyncRequest, fn func(RecordReport) error) error {
	resp, err := c.open(ctx, http.MethodPost, "/v1/record/sync", req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var rep RecordReport
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			return fmt.Errorf("localapi: bad report from the node: %w", err)
		}
		if err := fn(rep); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("localapi: %w", err)
	}
	return nil
}
