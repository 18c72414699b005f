package localapi

// Team lock policy. Routes (Server.registerPolicy):
//
//	GET  /v1/policy?team=T                                   Policy: the team's lock policy
//	POST /v1/policy  {"team","lock_after","offline_lock_days"}  publish it (admins)

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Policy is a team's lock policy. LockAfter is a Go duration ("2m"), empty for none; OfflineLockDays
// 0 for none. Set is false when no admin published a policy.
type Policy struct {
	Team            string `json:"team"`
	LockAfter       string `json:"lock_after"`
	OfflineLockDays uint16 `json:"offline_lock_days"`
	Set             bool   `json:"set"`
}

// TeamLockStatus is the strictest lock that the device's teams' policies ask (status): the shortest
// idle timeout and offline limit, empty or 0 when no team asks one.
type TeamLockStatus struct {
	LockAfter       string `json:"lock_after"`
	OfflineLockDays uint16 `json:"offline_lock_days"`
}

func teamLockStatus(ls []node.TeamLock) TeamLockStatus {
	var idle, offline time.Duration
	for _, l := range ls {
		if l.LockAfter > 0 && (idle == 0 || l.LockAfter < idle) {
			idle = l.LockAfter
		}
		if l.OfflineLock > 0 && (offline == 0 || l.OfflineLock < offline) {
			offline = l.OfflineLock
		}
	}
	out := TeamLockStatus{OfflineLockDays: uint16(offline / (24 * time.Hour))}
	if idle > 0 {
		out.LockAfter = idle.String()
	}
	return out
}

func (s *Server) registerPolicy(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		team := r.URL.Query().Get("team")
		p, ok, err := s.Node.Policy(team)
		if err != nil {
			writeErr(w, err)
			return
		}
		out := Policy{Team: team, OfflineLockDays: p.OfflineLockDays, Set: ok}
		if p.LockAfter > 0 {
			out.LockAfter = p.LockAfter.String()
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		var req Policy
		if err := decode(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		after, err := durationField("lock_after", req.LockAfter)
		if err != nil {
			writeErr(w, err)
			return
		}
		p := crdt.Policy{LockAfter: after, OfflineLockDays: req.OfflineLockDays}
		if err := s.Node.SetPolicy(req.Team, p); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
}

// Policy returns a team's lock policy.
func (c *Client) Policy(ctx context.Context, team string) (Policy, error) {
	var out Policy
	return out, c.do(ctx, http.MethodGet, "/v1/policy?"+url.Values{"team": {team}}.Encode(), nil, &out)
}

// SetPolicy publishes a team's lock policy (admins only).
func (c *Client) SetPolicy(ctx context.Context, p Policy) error {
	return c.do(ctx, http.MethodPost, "/v1/policy", p, nil)
}
