// Package export renders a subject-access export: everything a device still holds about one
// subject — a patient reference, or a member — as a FHIR R4 Bundle (JSON, type collection) and as a
// readable HTML report. It renders what it is given and decides nothing: which messages and facts
// belong to the subject is the node's rule (node.Node.Export), so a test of the rule drives the node.
//
// The Bundle holds a Communication per message (its op id as business identifier, status, sent,
// priority mapped to FHIR's request-priority codes, the sender as a Practitioner, the team as a
// Group, the subject as a Patient referenced by identifier, the text as payload, the reply as
// inResponseTo, the acknowledgement counts as a note), a Practitioner per author and a Group per
// team (with the member's entries, for a member export). Teams are named by their short id (the
// first 8 hex characters) and their display name: a team's full id is a secret of its members.
//
// The HTML report is made with html/template: every text from the network is escaped.
//
// What it writes is the subject's data, in clear, by design: the caller writes it where the user
// asked, and the audit trail records that an export was made (never of whom).
package export

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"time"
)

// Data is what an export holds.
type Data struct {
	// Device and DeviceName are the exporting device (its full id, hex) and its member's name.
	Device     string
	DeviceName string
	// Patient or Member is the subject (one of them is set).
	Patient string
	Member  string
	// Made is when the export was made.
	Made        time.Time
	Teams       []Team
	Messages    []Message
	Memberships []Membership
}

// Team is a team that holds something of the subject.
type Team struct {
	Short string // the first 8 hex characters of its id
	Name  string
	Kind  string // "clinical" or "social"
}

// Message is one message the device holds.
type Message struct {
	ID         string // op id, 32 hex characters
	Team       string // the team's Short
	Author     string // the author device's id, hex
	AuthorName string
	Time       time.Time
	Text       string
	Priority   string // routine, urgent or emergency
	Patient    string
	ReplyTo    string // op id, or ""
	Received   int    // members that acknowledged it as received
	Read       int    // members that acknowledged it as read
	Queued     bool   // this device's own, not sent yet (low-data mode)
}

// Membership is a member's place in a team.
type Membership struct {
	Team    string // the team's Short
	Person  string // the person id, hex
	Name    string
	Admin   bool
	Removed bool // the person was removed (Devices are those removed)
	Devices []Device
}

// Device is one device of a member.
type Device struct {
	ID    string // hex
	Label string
}

// Subject returns "patient REF" or "member NAME".
func (d Data) Subject() string {
	if d.Member != "" {
		return "member " + d.Member
	}
	return "patient " + d.Patient
}

// uuid returns a name-based UUID (SHA-256, version bits 8: RFC 9562's custom form) of parts, so
// the same thing gets the same fullUrl in every export.
func uuid(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Identifier systems of the export.
const (
	SystemOp      = "urn:fieldmesh:op-id"
	SystemDevice  = "urn:fieldmesh:device-id"
	SystemTeam    = "urn:fieldmesh:team-short-id"
	SystemPatient = "urn:fieldmesh:patient-reference"
)

// requestPriority maps a message priority to FHIR's request-priority code.
func requestPriority(p string) string {
	switch p {
	case "urgent":
		return "urgent"
	case "emergency":
		return "stat"
	}
	return "routine"
}

func fhirTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

type ident struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type ref struct {
	Reference  string `json:"reference,omitempty"`
	Identifier *ident `json:"identifier,omitempty"`
	Display    string `json:"display,omitempty"`
}

type entry struct {
	FullURL  string `json:"fullUrl"`
	Resource any    `json:"resource"`
}

// Bundle returns d as a FHIR R4 Bundle of type collection, indented JSON.
func Bundle(d Data) ([]byte, error) {
	var entries []entry
	teamURL := map[string]string{}
	for _, t := range d.Teams {
		u := uuid("team", t.Short)
		teamURL[t.Short] = u
		g := map[string]any{
			"resourceType": "Group",
			"identifier":   []ident{{System: SystemTeam, Value: t.Short}},
			"active":       true,
			"type":         "practitioner",
			"actual":       true,
			"name":         t.Name,
			"code":         map[string]any{"text": t.Kind + " team"},
		}
		var members []map[string]any
		for _, m := range d.Memberships {
			if m.Team != t.Short {
				continue
			}
			members = append(members, map[string]any{
				"entity":   ref{Reference: uuid("person", m.Person), Display: m.Name},
				"inactive": m.Removed,
			})
		}
		if members != nil {
			g["member"] = members
			g["quantity"] = len(members)
		}
		entries = append(entries, entry{FullURL: u, Resource: g})
	}
	// Practitioners: the subject member's person, and every author.
	seen := map[string]bool{}
	for _, m := range d.Memberships {
		u := uuid("person", m.Person)
		if seen[u] {
			continue
		}
		seen[u] = true
		ids := []ident{{System: SystemDevice, Value: m.Person}}
		for _, dv := range m.Devices {
			if dv.ID != m.Person {
				ids = append(ids, ident{System: SystemDevice, Value: dv.ID})
			}
		}
		entries = append(entries, entry{FullURL: u, Resource: map[string]any{
			"resourceType": "Practitioner", "identifier": ids, "name": []map[string]any{{"text": m.Name}},
		}})
	}
	authorURL := func(m Message) string { return uuid("device", m.Author) }
	for _, m := range d.Messages {
		u := authorURL(m)
		if seen[u] {
			continue
		}
		seen[u] = true
		entries = append(entries, entry{FullURL: u, Resource: map[string]any{
			"resourceType": "Practitioner", "identifier": []ident{{System: SystemDevice, Value: m.Author}},
			"name": []map[string]any{{"text": m.AuthorName}},
		}})
	}
	patientURL := ""
	if d.Patient != "" {
		patientURL = uuid("patient", d.Patient)
		entries = append(entries, entry{FullURL: patientURL, Resource: map[string]any{
			"resourceType": "Patient", "identifier": []ident{{System: SystemPatient, Value: d.Patient}},
		}})
	}
	for _, m := range d.Messages {
		c := map[string]any{
			"resourceType": "Communication",
			"identifier":   []ident{{System: SystemOp, Value: m.ID}},
			"status":       "completed",
			"priority":     requestPriority(m.Priority),
			"sent":         fhirTime(m.Time),
			"sender":       ref{Reference: authorURL(m), Display: m.AuthorName},
			"payload":      []map[string]any{{"contentString": m.Text}},
			"note":         []map[string]any{{"text": fmt.Sprintf("received by %d, read by %d members", m.Received, m.Read)}},
		}
		if m.Queued {
			c["status"] = "preparation"
			delete(c, "sent")
		}
		if u, ok := teamURL[m.Team]; ok {
			c["recipient"] = []ref{{Reference: u}}
		}
		switch {
		case m.Patient != "" && m.Patient == d.Patient:
			c["subject"] = ref{Reference: patientURL}
		case m.Patient != "":
			c["subject"] = ref{Identifier: &ident{System: SystemPatient, Value: m.Patient}}
		}
		if m.ReplyTo != "" {
			c["inResponseTo"] = []ref{{Identifier: &ident{System: SystemOp, Value: m.ReplyTo}}}
		}
		entries = append(entries, entry{FullURL: uuid("op", m.ID), Resource: c})
	}
	if entries == nil {
		entries = []entry{}
	}
	b := map[string]any{
		"resourceType": "Bundle",
		"identifier":   ident{System: "urn:fieldmesh:export", Value: uuid("export", d.Device, d.Subject(), fhirTime(d.Made))},
		"type":         "collection",
		"timestamp":    fhirTime(d.Made),
		"entry":        entries,
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("export: encode bundle: %w", err)
	}
	return out, nil
}

//go:embed report.html.tmpl
var reportSource string

var report = template.Must(template.New("report").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") },
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
}).Parse(reportSource))

// HTML returns d as a readable HTML report. Every text in it is escaped by html/template.
func HTML(d Data) ([]byte, error) {
	var b bytes.Buffer
	if err := report.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("export: render report: %w", err)
	}
	return b.Bytes(), nil
}
