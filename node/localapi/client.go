package localapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/fieldmesh/fieldmesh/node/unixapi"
)

// ErrNotRunning is returned by the client when no node answers on the socket.
var ErrNotRunning = errors.New("no node is running on this data directory (start one with: fieldmesh up)")

// Client talks to a node's local API.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the API socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, hc: unixapi.NewClient(path)}
}

func (c *Client) do(ctx context.Context, method, route string, in, out any) error {
	resp, err := c.open(ctx, method, route, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("localapi: bad answer from the node: %w", err)
	}
	return nil
}

func (c *Client) open(ctx context.Context, method, route string, in any) (*http.Response, error) {
	req, err := unixapi.NewRequest(ctx, method, "http://fieldmesh"+route, in)
	if err != nil {
		return nil, err
	}
	resp, err := unixapi.Do(c.hc, req, ErrNotRunning, "localapi")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var ae apiError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxRequest))
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			ae.Error = fmt.Sprintf("node answered %s", resp.Status)
		}
		return nil, errors.New(ae.Error)
	}
	return resp, nil
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Teams lists the node's teams.
func (c *Client) Teams(ctx context.Context) ([]Team, error) {
	var ts []Team
	return ts, c.do(ctx, http.MethodGet, "/v1/teams", nil, &ts)
}

// CreateTeam creates a team.
func (c *Client) CreateTeam(ctx context.Context, name, kind string) (Team, error) {
	var t Team
	return t, c.do(ctx, http.MethodPost, "/v1/teams", map[string]string{"name": name, "kind": kind}, &t)
}

// Invite creates an invite code; ttl 0 means the default.
func (c *Client) Invite(ctx context.Context, team string, ttl time.Duration) (Invite, error) {
	var inv Invite
	req := map[string]string{"team": team}
	if ttl > 0 {
		req["ttl"] = ttl.String()
	}
	return inv, c.do(ctx, http.MethodPost, "/v1/invite", req, &inv)
}

// Join uses an invite code.
func (c *Client) Join(ctx context.Context, code string) (Team, error) {
	var t Team
	return t, c.do(ctx, http.MethodPost, "/v1/join", map[string]string{"code": code}, &t)
}

// Send posts a message and returns once the node has it durably stored.
func (c *Client) Send(ctx context.Context, req SendRequest) (Sent, error) {
	var s Sent
	if len(req.Attachments) > 0 {
		return s, c.do(ctx, http.MethodPost, "/v1/attachments/send", req, &s)
	}
	return s, c.do(ctx, http.MethodPost, "/v1/send", req, &s)
}

// Peers lists connected peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var ps []Peer
	return ps, c.do(ctx, http.MethodGet, "/v1/peers", nil, &ps)
}

// Relays returns the node's clinic relays.
func (c *Client) Relays(ctx context.Context) ([]Relay, error) {
	var rs []Relay
	return rs, c.do(ctx, http.MethodGet, "/v1/relays", nil, &rs)
}

// ForgetRelay makes the node stop using a relay (peer id or a unique prefix) and returns its peer id.
func (c *Client) ForgetRelay(ctx context.Context, relay string) (string, error) {
	var out struct {
		PeerID string `json:"peer_id"`
	}
	return out.PeerID, c.do(ctx, http.MethodPost, "/v1/relays/forget", ForgetRelayRequest{Relay: relay}, &out)
}

// Messages calls fn for each message of a team, in order. With follow it keeps calling fn for new
// messages until ctx ends or fn returns an error (which Messages returns).
func (c *Client) Messages(ctx context.Context, team string, follow bool, fn func(Message) error) error {
	q := url.Values{"team": {team}}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := c.open(ctx, http.MethodGet, "/v1/messages?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("localapi: bad message from the node: %w", err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: the connection to it broke", ErrNodeStopped)
		}
		return fmt.Errorf("localapi: %w", err)
	}
	if follow {
		return ErrNodeStopped
	}
	return nil
}

// ErrNodeStopped is returned by Messages with follow when the node stops (it ends the stream), or
// wrapped when the connection to it broke (the node was killed).
var ErrNodeStopped = errors.New("localapi: the node stopped")

// UI returns the running node's web UI sign-in address (with the token of this start in its fragment).
func (c *Client) UI(ctx context.Context) (string, error) {
	var u UI
	return u.URL, c.do(ctx, http.MethodGet, "/v1/ui", nil, &u)
}

// Export makes a subject-access export on the node (recorded in its audit trail).
func (c *Client) Export(ctx context.Context, req ExportRequest) (Export, error) {
	var e Export
	return e, c.do(ctx, http.MethodPost, "/v1/export", req, &e)
}

// AuditVerify checks the node's audit trail.
func (c *Client) AuditVerify(ctx context.Context) (AuditVerify, error) {
	var v AuditVerify
	return v, c.do(ctx, http.MethodGet, "/v1/audit/verify", nil, &v)
}

// AuditExport returns the node's audit trail as a FHIR R4 Bundle of AuditEvents (JSON); the export
// is recorded in the trail.
func (c *Client) AuditExport(ctx context.Context) ([]byte, error) {
	var raw json.RawMessage
	return raw, c.do(ctx, http.MethodGet, "/v1/audit/export", nil, &raw)
}

// AuditRestart starts a new audit trail in place of one that fails verification, and returns where
// the old file was kept.
func (c *Client) AuditRestart(ctx context.Context) (string, error) {
	var out AuditRestart
	return out.Kept, c.do(ctx, http.MethodPost, "/v1/audit/restart", nil, &out)
}
