package relay

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/storage"
)

// The relay's audit trail (package audit) in DIR/audit.log, keyed and anchored in the relay's store:
// it records each topic the relay is admitted for (relay admit) and each it stops carrying (relay
// revoke), by the topic's short form and the admin the code names. The routes are the device's
// (node/localapi), so `fieldmesh audit verify|export|restart --data DIR` work on a relay's directory:
//
//	GET  /v1/audit/verify    {"ok","records","anchored","error"}
//	GET  /v1/audit/export    the trail as a FHIR R4 Bundle of AuditEvents
//	POST /v1/audit/restart   {"kept"}

// auditStore keeps the trail's key and head as meta records of the relay's store.
type auditStore struct{ s *store }

var _ audit.Store = auditStore{}

func (a auditStore) get(name string) ([]byte, error) {
	v, err := a.s.meta("audit-" + name)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, storage.ErrNotFound
	}
	return v, err
}

func (a auditStore) Secret(name string) ([]byte, error)  { return a.get(name) }
func (a auditStore) Setting(name string) ([]byte, error) { return a.get(name) }
func (a auditStore) PutSecret(name string, value []byte) error {
	return a.s.putMeta("audit-"+name, value)
}
func (a auditStore) PutSetting(name string, value []byte) error {
	return a.s.putMeta("audit-"+name, value)
}

// record appends an event, logging a failure (the event happened; `audit verify` shows the trail's
// state).
func (r *Relay) record(e audit.Event) {
	if r.audit == nil {
		return
	}
	if err := r.audit.Append(r.ctx, e); err != nil && r.ctx.Err() == nil {
		r.log.Error("audit trail: event not recorded", "kind", e.Kind.String(), "err", err)
	}
}

// selfShort is the relay's short id in its trail: the first 4 bytes of its identity key.
func (r *Relay) selfShort() audit.ShortID {
	d, err := relayproto.DeviceOf(r.host.ID())
	if err != nil {
		return audit.ShortID{}
	}
	return audit.Short(d[:])
}

// auditVerify is the JSON of GET /v1/audit/verify (node/localapi's AuditVerify).
type auditVerify struct {
	OK       bool   `json:"ok"`
	Records  uint64 `json:"records"`
	Anchored uint64 `json:"anchored"`
	Error    string `json:"error,omitempty"`
}

func (r *Relay) registerAudit(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit/verify", func(w http.ResponseWriter, _ *http.Request) {
		s, err := r.audit.Verify()
		out := auditVerify{OK: err == nil, Records: s.Records, Anchored: s.Anchored}
		if err != nil {
			out.Error = err.Error()
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/audit/export", func(w http.ResponseWriter, req *http.Request) {
		b, err := r.auditExport(req)
		if err != nil {
			writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/fhir+json")
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	})
	mux.HandleFunc("POST /v1/audit/restart", func(w http.ResponseWriter, req *http.Request) {
		kept, err := r.audit.Restart(req.Context())
		if err != nil {
			writeJSON(w, http.StatusConflict, apiError{Error: strings.TrimPrefix(err.Error(), "audit: ")})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"kept": kept})
	})
}

func (r *Relay) auditExport(req *http.Request) ([]byte, error) {
	s, err := r.audit.Verify()
	if err != nil {
		return nil, err
	}
	if err := r.audit.Append(req.Context(), audit.Event{Kind: audit.AuditExported, Count: uint32(min(s.Records+1, 1<<32-1))}); err != nil {
		return nil, err
	}
	recs, err := r.audit.Records()
	if err != nil {
		return nil, err
	}
	b, err := audit.Bundle(recs, r.selfShort(), r.now())
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return b, nil
}
