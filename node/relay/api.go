package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/node/unixapi"
)

// The relay's local API: JSON over HTTP on the data directory's unix socket (DIR/api.sock, mode 0600, as
// a device node's), for `fieldmesh relay status` and `fieldmesh relay admit`.
//
//	GET  /v1/relay/status                  Status
//	POST /v1/relay/admit   {"code"}        Admitted
//	POST /v1/relay/revoke  {"topic"}       Revoked (topic: the short form Status lists)
//
// Errors are {"error": "..."} with a 4xx/5xx status.

// Admitted answers an admit request.
type Admitted struct {
	Topic string `json:"topic"` // short form
	Added bool   `json:"added"` // false when the relay already carried it
}

// Revoked answers a revoke request.
type Revoked struct {
	Topic string `json:"topic"` // short form
}

type apiError struct {
	Error string `json:"error"`
}

const maxAPIRequest = 16 << 10

// APIHandler returns the relay's local API routes.
func (r *Relay) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/relay/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.Status())
	})
	mux.HandleFunc("POST /v1/relay/admit", func(w http.ResponseWriter, req *http.Request) {
		var in struct {
			Code string `json:"code"`
		}
		if err := unixapi.Decode(w, req, maxAPIRequest, &in); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "bad request: " + err.Error()})
			return
		}
		c, err := relayproto.ParseCode(in.Code)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: strings.TrimPrefix(err.Error(), "relay: ")})
			return
		}
		added, err := r.Admit(c)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: strings.TrimPrefix(err.Error(), "relay: ")})
			return
		}
		writeJSON(w, http.StatusOK, Admitted{Topic: c.Topic.Short(), Added: added})
	})
	mux.HandleFunc("POST /v1/relay/revoke", func(w http.ResponseWriter, req *http.Request) {
		var in struct {
			Topic string `json:"topic"`
		}
		if err := unixapi.Decode(w, req, maxAPIRequest, &in); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "bad request: " + err.Error()})
			return
		}
		t, err := r.Revoke(strings.ToLower(strings.TrimSpace(in.Topic)))
		switch {
		case errors.Is(err, ErrNotCarried):
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("this relay carries no topic %q (relay status lists the topics it carries)", in.Topic)})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, apiError{Error: strings.TrimPrefix(err.Error(), "relay: ")})
		default:
			writeJSON(w, http.StatusOK, Revoked{Topic: t.Short()})
		}
	})
	r.registerAudit(mux)
	return mux
}

// ServeAPI serves the local API on l until ctx ends. The caller owns l.
func (r *Relay) ServeAPI(ctx context.Context, l net.Listener) error {
	return unixapi.Serve(ctx, l, r.APIHandler())
}

func writeJSON(w http.ResponseWriter, code int, v any) { unixapi.WriteJSON(w, code, v) }

// ErrNotRunning is returned by the API client when no relay answers on the socket.
var ErrNotRunning = errors.New("no relay is running on this data directory (start one with: fieldmesh relay)")

// APIClient talks to a running relay's local API.
type APIClient struct{ hc *http.Client }

// NewAPIClient returns a client for the API socket at path.
func NewAPIClient(path string) *APIClient {
	return &APIClient{hc: unixapi.NewClient(path)}
}

func (c *APIClient) do(ctx context.Context, method, route string, in, out any) error {
	req, err := unixapi.NewRequest(ctx, method, "http://relay"+route, in)
	if err != nil {
		return err
	}
	resp, err := unixapi.Do(c.hc, req, ErrNotRunning, "relay api")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("relay api: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var ae apiError
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			if resp.StatusCode == http.StatusNotFound {
				return errors.New("the daemon on this data directory is not a relay (it is a device node?)")
			}
			ae.Error = "relay answered " + resp.Status
		}
		return errors.New(ae.Error)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("relay api: bad answer: %w", err)
	}
	return nil
}

// Status returns the relay's status.
func (c *APIClient) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/relay/status", nil, &s)
}

// Admit asks the relay to carry the topic of a relay code.
func (c *APIClient) Admit(ctx context.Context, code string) (Admitted, error) {
	var a Admitted
	return a, c.do(ctx, http.MethodPost, "/v1/relay/admit", map[string]string{"code": code}, &a)
}

// Revoke asks the relay to stop carrying a topic (its short form) and delete what it holds of it.
func (c *APIClient) Revoke(ctx context.Context, topic string) (Revoked, error) {
	var rv Revoked
	return rv, c.do(ctx, http.MethodPost, "/v1/relay/revoke", map[string]string{"topic": topic}, &rv)
}
