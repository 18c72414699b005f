package localapi

// Data accounting, low-data mode and on-demand reconciliation. Routes (Server.registerUsage):
//
//	GET  /v1/usage[?month=YYYY-MM]   usage.Report of a month (default: the current one)
//	GET  /v1/low-data                lowdata.Status
//	POST /v1/low-data  {"on": bool}  turns low-data mode on or off; answers lowdata.Status
//	POST /v1/sync                    reconciles every team with the connected members now; {"synced": n}

import (
	"context"
	"net/http"
	"net/url"

	"github.com/fieldmesh/fieldmesh/node/lowdata"
	"github.com/fieldmesh/fieldmesh/node/usage"
)

// Synced answers POST /v1/sync: how many (peer, team) pairs were reconciled.
type Synced struct {
	Synced int `json:"synced"`
}

// registerUsage adds the routes of this file to mux.
func (s *Server) registerUsage(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/usage", s.usage)
	mux.HandleFunc("GET /v1/low-data", s.lowData)
	mux.HandleFunc("POST /v1/low-data", s.setLowData)
	mux.HandleFunc("POST /v1/sync", s.syncNow)
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	rep, err := s.Node.Usage(r.URL.Query().Get("month"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) lowData(w http.ResponseWriter, r *http.Request) {
	st, err := s.Node.LowData()
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) setLowData(w http.ResponseWriter, r *http.Request) {
	var req struct {
		On *bool `json:"on"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.On == nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: `localapi: bad request: "on" is required`})
		return
	}
	st, err := s.Node.SetLowData(*req.On)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) syncNow(w http.ResponseWriter, r *http.Request) {
	n, err := s.Node.SyncNow(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Synced{Synced: n})
}

// Usage returns the data usage report of month ("YYYY-MM"; "" is the current month).
func (c *Client) Usage(ctx context.Context, month string) (usage.Report, error) {
	var rep usage.Report
	route := "/v1/usage"
	if month != "" {
		route += "?" + url.Values{"month": {month}}.Encode()
	}
	return rep, c.do(ctx, http.MethodGet, route, nil, &rep)
}

// LowData returns the node's low-data mode.
func (c *Client) LowData(ctx context.Context) (lowdata.Status, error) {
	var st lowdata.Status
	return st, c.do(ctx, http.MethodGet, "/v1/low-data", nil, &st)
}

// SetLowData turns low-data mode on or off; turning it off returns once the queued messages are
// published.
func (c *Client) SetLowData(ctx context.Context, on bool) (lowdata.Status, error) {
	var st lowdata.Status
	return st, c.do(ctx, http.MethodPost, "/v1/low-data", map[string]bool{"on": on}, &st)
}

// SyncNow asks the node to reconcile every team with the connected members now, and returns how
// many (peer, team) pairs were reconciled.
func (c *Client) SyncNow(ctx context.Context) (int, error) {
	var s Synced
	return s.Synced, c.do(ctx, http.MethodPost, "/v1/sync", struct{}{}, &s)
}
