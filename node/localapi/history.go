package localapi

// History hand-over on demand. Route (Server.registerHistory):
//
//	POST /v1/devices/history  {"team": ..., "device": ...}  asks another device of this device's person
//	                          for the team's history now; {"kept": n}

import (
	"context"
	"net/http"
)

// HistoryRequest is the body of POST /v1/devices/history: the team, and the other device of this
// device's person to ask (8 or more hex characters of its id).
type HistoryRequest struct {
	Team   string `json:"team"`
	Device string `json:"device"`
}

// HistoryResult answers POST /v1/devices/history: how many ops the hand-over kept.
type HistoryResult struct {
	Kept int `json:"kept"`
}

func (s *Server) registerHistory(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/devices/history", s.fetchHistory)
}

func (s *Server) fetchHistory(w http.ResponseWriter, r *http.Request) {
	var req HistoryRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	n, err := s.Node.FetchHistory(r.Context(), req.Team, req.Device)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, HistoryResult{Kept: n})
}

// FetchHistory asks another device of this device's person for the team's history now, and returns
// how many ops were kept.
func (c *Client) FetchHistory(ctx context.Context, team, device string) (int, error) {
	var out HistoryResult
	err := c.do(ctx, http.MethodPost, "/v1/devices/history", HistoryRequest{Team: team, Device: device}, &out)
	return out.Kept, err
}
