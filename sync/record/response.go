package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// MaxResponse bounds the server answers the gateway reads, in bytes: a
// transaction response of two entries, or a patient search, is a few KiB;
// the server's echo of the resources is under 64 KiB (a message is at most
// 16 KiB of text). A transaction that carries attachments may be answered
// with them echoed: its answer is bounded by MaxTransactionResponse.
const MaxResponse = 1 << 20

// MaxBundle is the largest transaction Bundle the gateway posts, in bytes:
// a message's attachments are at most crdt.MaxMessageAttachmentBytes (8 MiB),
// 10.7 MiB in base64, and its text at most 16 KiB. A larger Bundle is not
// posted: the message is held as TooLarge. The gateway may be set lower, to
// the record server's own request limit.
const MaxBundle = 16 << 20

// MaxTransactionResponse bounds the answer to a transaction: MaxResponse,
// and the server's echo of every resource (twice the Bundle at most).
const MaxTransactionResponse = MaxResponse + 2*MaxBundle

// Code is what became of one attempt to file a message, or why it waits.
type Code uint8

// Codes. The zero Code is Pending (never tried).
const (
	Pending          Code = iota
	Filed                 // the server confirmed every entry
	Unreachable           // no answer: connection refused, reset, timeout (retried)
	ServerError           // 5xx, 408 or 429 (retried)
	Unauthorized          // 401 or 403 (retried: the credentials may be fixed)
	Rejected              // any other 4xx, e.g. 422 (held)
	Partial               // a success that does not confirm every entry (held)
	NoPatient             // the patient token matches no patient (held)
	AmbiguousPatient      // the token matches several patients (held)
	Unmappable            // the profile cannot map the message (held)
	// WaitingAttachments: the gateway does not hold every chunk of the message's attachments yet;
	// it asked its peers for them (retried).
	WaitingAttachments
	TooLarge // the Bundle is over the gateway's limit, or the server answered 413 (held)
	maxCode
)

// String names the code.
func (c Code) String() string {
	switch c {
	case Pending:
		return "pending"
	case Filed:
		return "filed"
	case Unreachable:
		return "server unreachable"
	case ServerError:
		return "server error"
	case Unauthorized:
		return "unauthorized"
	case Rejected:
		return "rejected by the server"
	case Partial:
		return "partial failure"
	case NoPatient:
		return "unknown patient"
	case AmbiguousPatient:
		return "ambiguous patient"
	case Unmappable:
		return "cannot be mapped"
	case WaitingAttachments:
		return "waiting for attachments"
	case TooLarge:
		return "too large for the server"
	}
	return fmt.Sprintf("Code(%d)", uint8(c))
}

// Retried reports whether a message in this state is tried again after a
// backoff; the others are held until an operator acts (or HeldRetry passes).
func (c Code) Retried() bool {
	return c == Pending || c == Unreachable || c == ServerError || c == Unauthorized || c == WaitingAttachments
}

// Outcome is the result of one attempt.
type Outcome struct {
	Code   Code
	Status int    // the HTTP status, if there was an answer
	Ref    string // for Filed: the record's reference of the filed resource, "Type/id"
}

// Classify turns an HTTP status into the outcome of a failed attempt
// (for 2xx, call ParseResponse).
func Classify(status int) Outcome {
	switch {
	case status == 401 || status == 403:
		return Outcome{Code: Unauthorized, Status: status}
	case status == 408 || status == 429 || status >= 500:
		return Outcome{Code: ServerError, Status: status}
	case status == 413:
		return Outcome{Code: TooLarge, Status: status}
	case status >= 400:
		return Outcome{Code: Rejected, Status: status}
	}
	return Outcome{Code: Partial, Status: status} // 1xx, 3xx: not a success
}

type bundleResponse struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		Response *struct {
			Status   string `json:"status"`
			Location string `json:"location"`
		} `json:"response"`
	} `json:"entry"`
}

// ParseResponse reads the server's answer to a transaction Bundle of
// entries entries: Filed, with the reference of the first entry's resource,
// only if the answer is a 2xx transaction-response with one 2xx response
// per entry and a location of the form Type/id (a version suffix
// /_history/v is dropped); otherwise Classify's outcome, or Partial.
func ParseResponse(status int, body []byte, entries int) Outcome {
	if status < 200 || status > 299 {
		return Classify(status)
	}
	partial := Outcome{Code: Partial, Status: status}
	if len(body) > MaxTransactionResponse {
		return partial
	}
	var b bundleResponse
	if err := json.Unmarshal(body, &b); err != nil || b.ResourceType != "Bundle" || b.Type != "transaction-response" || len(b.Entry) != entries {
		return partial
	}
	ref := ""
	for i, e := range b.Entry {
		if e.Response == nil {
			return partial
		}
		code, _, _ := strings.Cut(strings.TrimSpace(e.Response.Status), " ")
		n, err := strconv.Atoi(code)
		if err != nil || n < 200 || n > 299 {
			return partial
		}
		if i == 0 {
			ref = relativeRef(e.Response.Location)
		}
	}
	if !crdt.ValidRecordRef(ref) {
		return partial
	}
	return Outcome{Code: Filed, Status: status, Ref: ref}
}

// relativeRef returns "Type/id" from a location "[base/]Type/id[/_history/v]".
func relativeRef(loc string) string {
	if i := strings.Index(loc, "/_history/"); i >= 0 {
		loc = loc[:i]
	}
	parts := strings.Split(strings.TrimRight(loc, "/"), "/")
	if len(parts) < 2 {
		return ""
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}

// PatientSearch returns the relative URL of the record's search for a
// patient token: Patient?identifier=TOKEN (TOKEN may be "system|value").
func PatientSearch(token string) string {
	return "Patient?identifier=" + url.QueryEscape(token)
}

// ParsePatientMatch reads the answer to PatientSearch: the one patient's
// reference "Patient/id", or NoPatient or AmbiguousPatient; a failed search
// is Classify's outcome.
func ParsePatientMatch(status int, body []byte) (string, Outcome) {
	if status < 200 || status > 299 {
		return "", Classify(status)
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			} `json:"resource"`
			Search *struct {
				Mode string `json:"mode"`
			} `json:"search"`
		} `json:"entry"`
	}
	if len(body) > MaxResponse || json.Unmarshal(body, &b) != nil || b.ResourceType != "Bundle" {
		return "", Outcome{Code: Partial, Status: status}
	}
	var found []string
	for _, e := range b.Entry {
		if e.Resource.ResourceType != "Patient" || e.Search != nil && e.Search.Mode != "" && e.Search.Mode != "match" {
			continue
		}
		found = append(found, "Patient/"+e.Resource.ID)
	}
	switch {
	case len(found) == 0:
		return "", Outcome{Code: NoPatient, Status: status}
	case len(found) > 1:
		return "", Outcome{Code: AmbiguousPatient, Status: status}
	case !validPatientRef(found[0]):
		return "", Outcome{Code: Partial, Status: status}
	}
	return found[0], Outcome{Code: Filed, Status: status}
}

// MaxPatientTable bounds a patient mapping table file, in bytes.
const MaxPatientTable = 4 << 20

// PatientTable maps patient tokens to the record's patient references: a
// deployment's override of the record's search.
type PatientTable map[string]string

// ParsePatientTable reads a mapping table: one "TOKEN<TAB>Patient/id" line
// per token (a tab, or one or more spaces, between the two); blank lines
// and lines starting with # are skipped. A token may appear once. Errors
// name the line, never its content.
func ParsePatientTable(b []byte) (PatientTable, error) {
	if len(b) > MaxPatientTable {
		return nil, fmt.Errorf("record: patient table is %d bytes, limit %d", len(b), MaxPatientTable)
	}
	t := make(PatientTable)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), crdt.MaxPatientLen+crdt.MaxRecordRefLen+16)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		i := strings.IndexAny(s, "\t ")
		if i < 0 {
			return nil, fmt.Errorf("record: patient table line %d: want TOKEN and Patient/id", line)
		}
		tok, ref := s[:i], strings.TrimSpace(s[i:])
		switch {
		case len(tok) > crdt.MaxPatientLen:
			return nil, fmt.Errorf("record: patient table line %d: token longer than %d bytes", line, crdt.MaxPatientLen)
		case !validPatientRef(ref):
			return nil, fmt.Errorf("record: patient table line %d: the reference is not Patient/id", line)
		}
		if _, dup := t[tok]; dup {
			return nil, fmt.Errorf("record: patient table line %d: a token given twice", line)
		}
		t[tok] = ref
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("record: patient table line %d: %w", line+1, err)
	}
	return t, nil
}
