package localapi

// Duty hours, on-call rota and membership review. Routes (Server.registerDuty):
//
//	GET  /v1/duty?team=T                        node.DutyReport: each person's duty hours, the rota
//	POST /v1/duty    {"team","zone","utc_offset_minutes","shifts"}     publish this person's duty hours
//	POST /v1/rota    {"team","zone","utc_offset_minutes","escalate_after","renotify_every","slots"}
//	                                                                  publish the on-call rota (admins)
//	GET  /v1/review?team=T                      node.ReviewReport: members, devices, last seen, due
//	POST /v1/review  {"team"}                   record that the membership was reviewed (admins)

import (
	"context"
	"net/http"
	"net/url"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// DutyRequest sets this device's person's duty hours. Zone is an IANA time zone name (empty: the
// fixed Offset; with a zone, Offset is the fallback for a device that does not know it).
type DutyRequest struct {
	Team   string       `json:"team"`
	Zone   string       `json:"zone,omitempty"`
	Offset int16        `json:"utc_offset_minutes"`
	Shifts []crdt.Shift `json:"shifts"`
}

// RotaRequest sets a team's on-call rota. Durations are Go durations ("10m"); Zone and Offset as in
// DutyRequest.
type RotaRequest struct {
	Team          string             `json:"team"`
	Zone          string             `json:"zone,omitempty"`
	Offset        int16              `json:"utc_offset_minutes"`
	EscalateAfter string             `json:"escalate_after"`
	RenotifyEvery string             `json:"renotify_every"`
	Slots         []node.RotaSlotRef `json:"slots"`
}

// TeamRequest names a team.
type TeamRequest struct {
	Team string `json:"team"`
}

func (s *Server) registerDuty(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/duty", func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.Node.Duty(r.URL.Query().Get("team"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/duty", func(w http.ResponseWriter, r *http.Request) {
		var req DutyRequest
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if err := s.Node.SetDuty(req.Team, crdt.Duty{Zone: req.Zone, Offset: req.Offset, Shifts: req.Shifts}); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /v1/rota", func(w http.ResponseWriter, r *http.Request) {
		var req RotaRequest
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		esc, err := requiredDuration("escalate_after", req.EscalateAfter)
		if err != nil {
			writeErr(w, err)
			return
		}
		ren, err := requiredDuration("renotify_every", req.RenotifyEvery)
		if err != nil {
			writeErr(w, err)
			return
		}
		if err := s.Node.SetRota(req.Team, req.Zone, req.Offset, esc, ren, req.Slots); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET /v1/review", func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.Node.MembershipReview(r.URL.Query().Get("team"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/review", func(w http.ResponseWriter, r *http.Request) {
		var req TeamRequest
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		rep, err := s.Node.RecordReview(req.Team)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
}

// Duty returns a team's duty hours and rota.
func (c *Client) Duty(ctx context.Context, team string) (node.DutyReport, error) {
	var out node.DutyReport
	return out, c.do(ctx, http.MethodGet, "/v1/duty?"+url.Values{"team": {team}}.Encode(), nil, &out)
}

// SetDuty publishes this device's person's duty hours.
func (c *Client) SetDuty(ctx context.Context, req DutyRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/duty", req, nil)
}

// SetRota publishes a team's on-call rota.
func (c *Client) SetRota(ctx context.Context, req RotaRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/rota", req, nil)
}

// Review returns what an admin reviews in a team.
func (c *Client) Review(ctx context.Context, team string) (node.ReviewReport, error) {
	var out node.ReviewReport
	return out, c.do(ctx, http.MethodGet, "/v1/review?"+url.Values{"team": {team}}.Encode(), nil, &out)
}

// RecordReview records that the team's membership was reviewed.
func (c *Client) RecordReview(ctx context.Context, team string) (node.ReviewReport, error) {
	var out node.ReviewReport
	return out, c.do(ctx, http.MethodPost, "/v1/review", TeamRequest{Team: team}, &out)
}
