package audit

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The FHIR R4 form of the trail: a Bundle of type collection holding one AuditEvent per record
// (http://hl7.org/fhir/R4/auditevent.html), with DICOM audit event codes as type and subtype where
// one fits and fieldmesh's own event kind always as a subtype. Like the trail, it carries kinds,
// times, counts and short ids only.

// Code systems and identifier systems of the export.
const (
	systemDCM        = "http://dicom.nema.org/resources/ontology/DCM"
	systemAction     = "http://hl7.org/fhir/audit-event-action"
	systemSourceType = "http://terminology.hl7.org/CodeSystem/security-source-type"
	systemEntityType = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	// SystemKind codes fieldmesh's event kinds (Kind.String).
	SystemKind = "urn:fieldmesh:audit-event-kind"
	// SystemDevice, SystemTeam and SystemOp name short ids (8 hex characters).
	SystemDevice = "urn:fieldmesh:device-short-id"
	SystemTeam   = "urn:fieldmesh:team-short-id"
	SystemOp     = "urn:fieldmesh:op-short-id"
)

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

type identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

type reference struct {
	Identifier *identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

type auditAgent struct {
	Type      *codeable  `json:"type,omitempty"`
	Who       *reference `json:"who,omitempty"`
	Requestor bool       `json:"requestor"`
}

type codeable struct {
	Coding []coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

type auditSource struct {
	Observer reference `json:"observer"`
	Type     []coding  `json:"type,omitempty"`
}

type auditDetail struct {
	Type        string `json:"type"`
	ValueString string `json:"valueString"`
}

type auditEntity struct {
	What   *reference    `json:"what,omitempty"`
	Type   *coding       `json:"type,omitempty"`
	Role   *coding       `json:"role,omitempty"`
	Detail []auditDetail `json:"detail,omitempty"`
}

// AuditEvent is the subset of FHIR R4's AuditEvent the export writes.
type AuditEvent struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id"`
	Type         coding        `json:"type"`
	Subtype      []coding      `json:"subtype"`
	Action       string        `json:"action,omitempty"`
	Recorded     string        `json:"recorded"`
	Outcome      string        `json:"outcome"`
	Agent        []auditAgent  `json:"agent"`
	Source       auditSource   `json:"source"`
	Entity       []auditEntity `json:"entity,omitempty"`
}

type bundleEntry struct {
	FullURL  string     `json:"fullUrl"`
	Resource AuditEvent `json:"resource"`
}

type bundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Timestamp    string        `json:"timestamp"`
	Entry        []bundleEntry `json:"entry"`
}

// kindCodes maps a kind to its DICOM type, an optional DICOM subtype and the FHIR action.
var kindCodes = map[Kind]struct {
	typ, typDisplay, sub, subDisplay, action string
}{
	Created:       {"110113", "Security Alert", "110136", "Security Roles Changed", "C"},
	Membership:    {"110113", "Security Alert", "110136", "Security Roles Changed", "U"},
	Rekey:         {"110113", "Security Alert", "110129", "Security Configuration", "U"},
	Filed:         {"110106", "Export", "", "", "R"},
	Deleted:       {"110100", "Application Activity", "", "", "D"},
	Exported:      {"110106", "Export", "", "", "R"},
	Wiped:         {"110100", "Application Activity", "", "", "D"},
	RelayAdmitted: {"110113", "Security Alert", "110126", "Node Authentication", "E"},
	AuditExported: {"110101", "Audit Log Used", "", "", "R"},
	Restarted:     {"110100", "Application Activity", "110134", "Audit Recording Started", "E"},
	RelayRevoked:  {"110113", "Security Alert", "110126", "Node Authentication", "D"},
	Reviewed:      {"110113", "Security Alert", "110136", "Security Roles Changed", "R"},
}

// fhirTime formats t as a FHIR instant.
func fhirTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Resource returns r as a FHIR AuditEvent observed by device (this device's short id).
func Resource(r Record, device ShortID) AuditEvent {
	e := r.Event
	kc := kindCodes[e.Kind]
	ev := AuditEvent{
		ResourceType: "AuditEvent",
		ID:           fmt.Sprintf("fieldmesh-%s-%d", device, r.Seq),
		Type:         coding{System: systemDCM, Code: kc.typ, Display: kc.typDisplay},
		Action:       kc.action,
		Recorded:     fhirTime(e.Time),
		Outcome:      "0",
		Source: auditSource{
			Observer: reference{Identifier: &identifier{System: SystemDevice, Value: device.String()}, Display: "fieldmesh device"},
			Type:     []coding{{System: systemSourceType, Code: "4", Display: "Application Server"}},
		},
	}
	if kc.sub != "" {
		ev.Subtype = append(ev.Subtype, coding{System: systemDCM, Code: kc.sub, Display: kc.subDisplay})
	}
	ev.Subtype = append(ev.Subtype, coding{System: SystemKind, Code: e.Kind.String()})
	who := device
	if e.Actor != (ShortID{}) {
		who = e.Actor
	}
	ev.Agent = []auditAgent{{Who: &reference{Identifier: &identifier{System: SystemDevice, Value: who.String()}}, Requestor: true}}
	var details []auditDetail
	if e.Epoch != 0 {
		details = append(details, auditDetail{Type: "epoch", ValueString: strconv.FormatUint(uint64(e.Epoch), 10)})
	}
	if e.Count != 0 {
		details = append(details, auditDetail{Type: "count", ValueString: strconv.FormatUint(uint64(e.Count), 10)})
	}
	if e.Subject != 0 {
		details = append(details, auditDetail{Type: "subject", ValueString: e.Subject.String()})
	}
	details = append(details, auditDetail{Type: "mac", ValueString: fmt.Sprintf("%x", r.MAC)})
	obj := &coding{System: systemEntityType, Code: "2", Display: "System Object"}
	if e.Team != (ShortID{}) {
		ev.Entity = append(ev.Entity, auditEntity{What: &reference{Identifier: &identifier{System: SystemTeam, Value: e.Team.String()}}, Type: obj, Detail: details})
		details = nil
	}
	if e.Op != (ShortID{}) {
		ev.Entity = append(ev.Entity, auditEntity{What: &reference{Identifier: &identifier{System: SystemOp, Value: e.Op.String()}}, Type: obj, Detail: details})
		details = nil
	}
	if details != nil {
		ev.Entity = append(ev.Entity, auditEntity{Type: obj, Detail: details})
	}
	for _, c := range e.Changes {
		ev.Entity = append(ev.Entity, auditEntity{
			What:   &reference{Identifier: &identifier{System: SystemDevice, Value: c.Device.String()}},
			Type:   &coding{System: systemEntityType, Code: "1", Display: "Person"},
			Detail: []auditDetail{{Type: "action", ValueString: c.Action.String()}},
		})
	}
	return ev
}

// Bundle returns the records as a FHIR R4 Bundle (type collection) of AuditEvents observed by
// device, stamped at now, as indented JSON.
func Bundle(recs []Record, device ShortID, now time.Time) ([]byte, error) {
	b := bundle{ResourceType: "Bundle", Type: "collection", Timestamp: fhirTime(now), Entry: []bundleEntry{}}
	for _, r := range recs {
		res := Resource(r, device)
		b.Entry = append(b.Entry, bundleEntry{FullURL: "urn:fieldmesh:audit:" + res.ID, Resource: res})
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("audit: encode bundle: %w", err)
	}
	return out, nil
}
