package localapi

// Subject-access export and the audit trail. Routes (Server.registerAudit):
//
//	POST /v1/export        {"patient"} or {"member"}   Export: the FHIR Bundle and the HTML report of
//	                                                   everything the device holds about the subject
//	GET  /v1/audit/verify                              AuditVerify: whether the trail's chain holds
//	GET  /v1/audit/export                              the trail as a FHIR Bundle of AuditEvents
//	POST /v1/audit/restart                             AuditRestart: a new chain in place of one that
//	                                                   fails verification (the old file is kept)

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/export"
)

// ExportRequest names the subject of an export: exactly one of Patient and Member.
type ExportRequest struct {
	Patient string `json:"patient,omitempty"`
	Member  string `json:"member,omitempty"`
}

// Export is a subject-access export: the FHIR R4 Bundle (JSON) and the HTML report.
type Export struct {
	Bundle   json.RawMessage `json:"bundle"`
	HTML     string          `json:"html"`
	Messages int             `json:"messages"`
	Teams    int             `json:"teams"`
}

// AuditVerify is what checking the audit trail found. OK false comes with the reason in Error.
type AuditVerify struct {
	OK       bool   `json:"ok"`
	Records  uint64 `json:"records"`
	Anchored uint64 `json:"anchored"`
	Error    string `json:"error,omitempty"`
}

func (s *Server) registerAudit(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/export", s.export)
	mux.HandleFunc("GET /v1/audit/verify", s.auditVerify)
	mux.HandleFunc("GET /v1/audit/export", s.auditExport)
	mux.HandleFunc("POST /v1/audit/restart", s.auditRestart)
}

// AuditRestart answers POST /v1/audit/restart: where the old trail was kept.
type AuditRestart struct {
	Kept string `json:"kept"`
}

func (s *Server) auditRestart(w http.ResponseWriter, r *http.Request) {
	l, err := s.Node.AuditTrail()
	if err != nil {
		writeErr(w, err)
		return
	}
	kept, err := l.Restart(r.Context())
	if err != nil {
		writeJSON(w, http.StatusConflict, apiError{Error: strings.TrimPrefix(err.Error(), "audit: ")})
		return
	}
	writeJSON(w, http.StatusOK, AuditRestart{Kept: kept})
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	var req ExportRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	d, err := s.Node.Export(r.Context(), node.ExportRequest{Patient: req.Patient, Member: req.Member})
	if err != nil {
		writeErr(w, err)
		return
	}
	b, err := export.Bundle(d)
	if err == nil {
		var h []byte
		if h, err = export.HTML(d); err == nil {
			writeJSON(w, http.StatusOK, Export{Bundle: b, HTML: string(h), Messages: len(d.Messages), Teams: len(d.Teams)})
			return
		}
	}
	writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) {
	l, err := s.Node.AuditTrail()
	if err != nil {
		writeErr(w, err)
		return
	}
	sum, err := l.Verify()
	out := AuditVerify{OK: err == nil, Records: sum.Records, Anchored: sum.Anchored}
	if err != nil {
		out.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) {
	b, err := s.Node.AuditExport(r.Context())
	if errors.Is(err, node.ErrNoAudit) {
		writeErr(w, err)
		return
	}
	if err != nil {
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
