/**
 * The manifest loader: Istio's own sample files load unchanged, Kubernetes kinds are skipped, and every bad input is
 * reported with its file, document index and field path.
 */
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import {
  formatManifestError,
  isKubernetesBuiltin,
  loadManifestPath,
  type ManifestError,
  parseManifests,
} from './load.js'

/** The project root: the nearest folder above this file with a package.json. */
function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
  return dir
}

/** The project's own Istio-format fixtures. */
const FIXTURES = join(projectRoot(), 'test/fixtures/istio')

/**
 * Istio's own sample files, when a copy of them sits beside the checkout (`../shared/istio-samples` from the
 * project root) or where $LOOM_ISTIO_SAMPLES points. Optional: nothing else in the suite reads them.
 */
function istioSamplesDir(): string | undefined {
  const dir = process.env.LOOM_ISTIO_SAMPLES ?? resolve(projectRoot(), '../shared/istio-samples')
  return existsSync(dir) ? dir : undefined
}

const K8S_KINDS = new Set(['Deployment', 'Service', 'ServiceAccount'])

interface DirSummary {
  files: number
  accepted: number
  skipped: number
  byKind: Map<string, number>
  apiVersions: Set<string>
}

/** Loads every manifest file in `dir` and checks that each `kind:` line is accepted as Istio or skipped as Kubernetes. */
function loadDir(dir: string): DirSummary {
  const sum: DirSummary = { files: 0, accepted: 0, skipped: 0, byKind: new Map(), apiVersions: new Set() }
  for (const f of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    const text = readFileSync(join(dir, f), 'utf8')
    // swagger.yaml and the like are not Kubernetes manifests at all.
    if (!/^\s*"?kind"?:/m.test(text)) continue
    sum.files++
    const r = parseManifests(text, f)
    assert.deepEqual(r.errors.map(formatManifestError), [], f)
    for (const s of r.skipped) assert.ok(K8S_KINDS.has(s.kind), `${f}: skipped ${s.kind}`)
    // Every kind in the file is accounted for: accepted or skipped.
    assert.equal(r.resources.length + r.skipped.length, text.match(/^\s*"?kind"?:/gm)?.length, f)
    for (const res of r.resources) {
      sum.byKind.set(res.kind, (sum.byKind.get(res.kind) ?? 0) + 1)
      sum.apiVersions.add(res.apiVersion)
    }
    sum.accepted += r.resources.length
    sum.skipped += r.skipped.length
  }
  return sum
}

const describeSum = (s: DirSummary) =>
  `${s.files} manifest files: ${s.accepted} Istio resources accepted ` +
  `(${[...s.byKind].map(([k, n]) => `${k} ${n}`).join(', ')}); ${s.skipped} Kubernetes objects skipped`

describe('Istio-format fixtures (test/fixtures/istio)', () => {
  test('every fixture parses and validates; Kubernetes kinds in them are skipped', (t) => {
    const sum = loadDir(FIXTURES)
    t.diagnostic(describeSum(sum))
    assert.equal(sum.files, 30)
    assert.deepEqual(Object.fromEntries(sum.byKind), {
      AuthorizationPolicy: 7,
      DestinationRule: 11,
      Gateway: 1,
      PeerAuthentication: 5,
      RequestAuthentication: 2,
      ServiceEntry: 1,
      VirtualService: 13,
    })
    assert.equal(sum.skipped, 2, 'the Deployment and Service beside the gateway')
    assert.deepEqual([...sum.apiVersions].sort(), [
      'networking.istio.io/v1',
      'networking.istio.io/v1alpha3',
      'networking.istio.io/v1beta1',
      'security.istio.io/v1',
      'security.istio.io/v1beta1',
    ])
  })

  const load = (f: string) => {
    const r = parseManifests(readFileSync(join(FIXTURES, f), 'utf8'), f)
    assert.deepEqual(r.errors, [], f)
    return r
  }

  test('values come through as Istio means them', () => {
    const pa = load('peer-authentication-workload-httpbin-bar-port80-disable.yaml').resources[0]
    assert.ok(pa?.kind === 'PeerAuthentication')
    assert.deepEqual(pa.spec.portLevelMtls, { '80': { mode: 'DISABLE' } }, 'a numeric map key is a port name')
    assert.equal(pa.metadata.namespace, 'bar')
    const vs = load('virtual-service-all-v1.yaml').resources
    assert.deepEqual(
      vs.map((x) => `${x.metadata.namespace}/${x.metadata.name}`),
      ['default/productpage', 'default/reviews', 'default/ratings', 'default/details'],
      'flow style, one resource per document, in file order, in the default namespace',
    )
  })

  test('a JSON manifest, quoted scalars and the older API versions read as the v1 YAML does', () => {
    const spec = (f: string) => {
      const r = load(f).resources[0]
      assert.ok(r?.kind === 'VirtualService', f)
      return r.spec
    }
    assert.deepEqual(spec('virtual-service-reviews-jason-v2-v3.yaml').http?.[0]?.match, [
      { headers: { 'end-user': { exact: 'jason' } } },
    ])
    const weights = spec('virtual-service-reviews-80-20.yaml').http?.[0]?.route?.map((d) => d.weight)
    assert.deepEqual(weights, [80, 20], 'weights stay numbers')
    assert.equal(spec('request-timeouts-reviews-timeout-0.5s.yaml').http?.[0]?.timeout, '0.5s')
  })

  test('anchors and aliases resolve, within Istio resources and in Kubernetes kinds that are skipped', () => {
    const vs = load('fault-injection-details-v1.yaml').resources[0]
    assert.ok(vs?.kind === 'VirtualService')
    const [first, second] = vs.spec.http ?? []
    assert.deepEqual(second?.route?.[0]?.destination, { host: 'details', subset: 'v1' })
    assert.deepEqual(second?.route?.[0]?.destination, first?.route?.[0]?.destination)
    const gw = load('bookinfo-gateway.yaml')
    assert.deepEqual(
      gw.skipped.map((s) => s.kind),
      ['Deployment', 'Service'],
    )
    assert.deepEqual(
      gw.resources.map((r) => r.kind),
      ['Gateway', 'VirtualService'],
    )
  })
})

const SAMPLES = istioSamplesDir()

describe("Istio's own sample files (optional)", () => {
  test('every Istio resource in them parses and validates', {
    skip: SAMPLES === undefined && "skipped: no copy of Istio's samples beside the checkout (optional)",
  }, (t) => {
    const sum = loadDir(SAMPLES!)
    t.diagnostic(`checked ${describeSum(sum)}`)
    assert.ok(sum.files > 0, `no manifest files in ${SAMPLES}`)
  })

  test("the security tasks' files load unchanged and mean what the project's fixtures of them mean", {
    skip: SAMPLES === undefined && "skipped: no copy of Istio's samples beside the checkout (optional)",
  }, () => {
    const meaning = (dir: string, f: string) =>
      parseManifests(readFileSync(join(dir, f), 'utf8'), f).resources.map((r) => ({
        kind: r.kind,
        apiVersion: r.apiVersion,
        name: r.metadata.name,
        namespace: r.metadata.namespace,
        spec: r.spec,
      }))
    const same = [
      ...['allow-nothing', 'productpage-viewer', 'details-viewer', 'reviews-viewer', 'ratings-viewer'].map(
        (step) => `authz-${step}.yaml`,
      ),
      'jwt-authz-require-jwt.yaml',
      'jwt-authz-require-jwt-group1.yaml',
      'peer-authentication-mesh-strict.yaml',
      'peer-authentication-namespace-foo-strict.yaml',
      'peer-authentication-workload-httpbin-bar-strict.yaml',
      'peer-authentication-workload-httpbin-bar-port80-disable.yaml',
      'peer-authentication-overwrite-example-foo-disable.yaml',
      'destination-rule-httpbin-bar-istio-mutual.yaml',
      'destination-rule-httpbin-bar-port8000-disable.yaml',
      'destination-rule-overwrite-example-foo-disable.yaml',
    ]
    for (const f of same) {
      const original = meaning(SAMPLES!, f)
      assert.ok(original.length >= 1, f)
      assert.deepEqual(original, meaning(FIXTURES, f), f)
    }
    // the RequestAuthentication: the same rule, save the key set (Istio's names a URL, the fixture a key of its own)
    const keyless = (dir: string) =>
      meaning(dir, 'jwt-request-authentication-httpbin.yaml').map((r) => {
        const spec = r.spec as { jwtRules?: Record<string, unknown>[] }
        const jwtRules = spec.jwtRules?.map(({ jwks: _, jwksUri: __, ...rest }) => rest)
        return { ...r, spec: { ...spec, jwtRules } }
      })
    assert.deepEqual(keyless(SAMPLES!), keyless(FIXTURES))
    // the project's tokens claim what Istio's demo.jwt and groups-scope.jwt claim
    const claims = (file: string) => {
      const payload = readFileSync(file, 'utf8').trim().split('.')[1]!
      const { exp: _, iat: __, ...rest } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
      return rest
    }
    for (const t of ['demo.jwt', 'groups-scope.jwt'])
      assert.deepEqual(claims(join(SAMPLES!, t)), claims(join(projectRoot(), 'test/fixtures/istio-jwt/tokens', t)), t)
  })
})

const VS_OK = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ok
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`

/** A VirtualService whose spec is `spec` (indented by the caller). */
const vs = (spec: string, name = 'reviews') =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ${name}\nspec:\n${spec}`

interface BadCase {
  name: string
  text: string
  /** expected errors: [document index, path, message fragment] */
  errors: [number, string, string][]
  line?: number
}

const bad: BadCase[] = [
  {
    name: 'unknown field',
    text: `${VS_OK}---\n${vs(`  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      wieght: 50
`)}`,
    errors: [[1, 'spec.http[0].route[0].wieght', 'unknown field']],
  },
  {
    name: 'wrong type',
    text: vs('  hosts: reviews\n  http:\n  - route:\n    - destination: {host: reviews}\n'),
    errors: [[0, 'spec.hosts', 'wrong type']],
  },
  {
    name: 'bad enum',
    text: `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
`,
    errors: [[0, 'spec.trafficPolicy.loadBalancer.simple', 'invalid value "FASTEST"; expected one of UNSPECIFIED']],
  },
  {
    name: 'weights not summing to 100',
    text: vs(`  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 10
`),
    errors: [[0, 'spec.http[0].route', 'total destination weight 90 != 100']],
  },
  {
    name: 'bad regex',
    text: vs(`  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "/api/(v1"}
    route:
    - destination: {host: reviews}
`),
    errors: [[0, 'spec.http[0].match[0].uri.regex', 'RE2 rejected the regex']],
  },
  {
    name: 'bad regex in a header match',
    text: vs(`  hosts: [reviews]
  http:
  - match:
    - headers:
        x-version: {regex: "v[0-9"}
    route:
    - destination: {host: reviews}
`),
    errors: [[0, 'spec.http[0].match[0].headers.x-version.regex', 'RE2 rejected the regex']],
  },
  {
    name: 'missing name',
    text: `apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  namespace: foo
spec:
  mtls: {mode: STRICT}
`,
    errors: [[0, 'metadata.name', 'required field is missing']],
  },
  {
    name: 'bad duration',
    text: vs('  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    timeout: 5 seconds\n'),
    errors: [[0, 'spec.http[0].timeout', 'invalid duration "5 seconds"']],
  },
  {
    name: 'duration below 1ms',
    text: vs(
      '  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n' +
        '    retries: {attempts: 2, perTryTimeout: 500us}\n',
    ),
    errors: [[0, 'spec.http[0].retries.perTryTimeout', 'at least 1ms']],
  },
  {
    name: 'port out of range',
    text: vs('  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, port: {number: 70000}}\n'),
    errors: [[0, 'spec.http[0].route[0].destination.port.number', 'between 1 and 65535']],
  },
  {
    name: 'unknown kind',
    text: `${VS_OK}---\napiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: x}\nspec: {}\n`,
    errors: [[1, 'kind', 'unsupported kind "VirtualServce"; Loom supports VirtualService, DestinationRule']],
  },
  {
    name: 'unsupported Istio kind',
    text: 'apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: x}\nspec: {}\n',
    errors: [[0, 'kind', 'unsupported kind "EnvoyFilter"']],
  },
  {
    name: 'wrong apiVersion for the kind',
    text: VS_OK.replace('networking.istio.io/v1', 'security.istio.io/v1'),
    errors: [[0, 'apiVersion', 'use one of networking.istio.io/v1, networking.istio.io/v1beta1']],
  },
  {
    name: 'invalid YAML',
    text: `apiVersion: v1
kind: ServiceAccount
metadata:
  name: a
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: b
spec:
  hosts: [reviews
  http: []
`,
    errors: [[1, '', 'YAML: ']],
    line: 12,
  },
  {
    name: 'duplicate keys',
    text: `# a comment before the first document
---
${VS_OK}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: b
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    route:
    - destination: {host: ratings}
`,
    errors: [[1, 'spec.http[0].route', 'YAML: duplicated mapping key (line 22, column 5)']],
    line: 22,
  },
  {
    name: 'duplicate key in metadata',
    text: 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: a\n  name: b\nspec: {}\n',
    errors: [[0, 'metadata.name', 'duplicated mapping key']],
    line: 5,
  },
  {
    name: 'a document that is not an object',
    text: `${VS_OK}---\n- just\n- a list\n`,
    errors: [[1, '', 'must be an object']],
  },
  {
    name: 'missing apiVersion and kind',
    text: 'metadata: {name: x}\n',
    errors: [
      [0, 'kind', 'required field is missing'],
      [0, 'apiVersion', 'required field is missing'],
    ],
  },
]

describe('parseManifests: errors carry the document index and field path', () => {
  for (const c of bad) {
    test(c.name, () => {
      const r = parseManifests(c.text, 'bad.yaml')
      const got = r.errors.map((e) => [e.index, e.path, e.message] as const)
      assert.equal(got.length, c.errors.length, JSON.stringify(got))
      c.errors.forEach(([index, path, fragment], i) => {
        const e = r.errors[i] as ManifestError
        assert.equal(e.source, 'bad.yaml')
        assert.equal(e.index, index, JSON.stringify(got))
        assert.equal(e.path, path, JSON.stringify(got))
        assert.ok(e.message.includes(fragment), `${e.message} should include ${fragment}`)
      })
      if (c.line !== undefined) assert.equal(r.errors[0]?.line, c.line)
    })
  }

  test('errors name the kind and name of their document', () => {
    const r = parseManifests(vs('  hosts: [reviews]\n  http:\n  - route: []\n', 'my-vs'), 'f.yaml')
    assert.equal(r.errors[0]?.kind, 'VirtualService')
    assert.equal(r.errors[0]?.name, 'my-vs')
    assert.equal(
      formatManifestError(r.errors[0]!),
      'f.yaml: document 0 (VirtualService my-vs): spec.http[0]: one of route, redirect or directResponse is required',
    )
  })

  test('a document with a YAML error still gets its kind and name', () => {
    const r = parseManifests(
      'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec: {a: [}\n',
      'f',
    )
    assert.equal(r.errors[0]?.kind, 'Gateway')
    assert.equal(r.errors[0]?.name, 'gw')
  })

  test('one bad document does not hide the others', () => {
    const r = parseManifests(`${VS_OK}---\nkey: [\n---\n${VS_OK.replace('name: ok', 'name: ok2')}`, 'f')
    assert.deepEqual(
      r.resources.map((x) => x.metadata.name),
      ['ok', 'ok2'],
    )
    assert.equal(r.errors.length, 1)
    assert.equal(r.errors[0]?.index, 1)
  })
})

describe('parseManifests: documents', () => {
  test('Kubernetes kinds are skipped and reported, not errors', () => {
    const text = `apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
---
apiVersion: v1
kind: Namespace
metadata: {name: n}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
---
${VS_OK}`
    const r = parseManifests(text, 'f')
    assert.deepEqual(r.errors, [])
    assert.equal(r.resources.length, 1)
    assert.deepEqual(
      r.skipped.map((s) => [s.index, s.kind, s.name]),
      [
        [0, 'Service', 'reviews'],
        [1, 'Deployment', 'reviews-v1'],
        [2, 'ConfigMap', 'c'],
        [3, 'Namespace', 'n'],
        [4, 'NetworkPolicy', 'p'],
      ],
    )
    assert.ok(isKubernetesBuiltin('v1'))
    assert.ok(isKubernetesBuiltin('rbac.authorization.k8s.io/v1'))
    assert.ok(!isKubernetesBuiltin('networking.istio.io/v1'))
    assert.ok(!isKubernetesBuiltin('example.com/v1'))
  })

  test('empty documents, comments and a trailing --- count as documents but yield nothing', () => {
    const text = `# header comment\n\n${VS_OK}---\n# only a comment\n---\n${VS_OK.replace('name: ok', 'name: b')}---\n`
    const r = parseManifests(text, 'f')
    assert.deepEqual(r.errors, [])
    assert.equal(r.resources.length, 2)
    const withError = parseManifests(`${text}kind: Nope\n`, 'f')
    assert.equal(withError.errors[0]?.index, 3)
  })

  test('CRLF line endings and a byte-order mark', () => {
    const r = parseManifests(`\uFEFF${VS_OK}---\n${VS_OK}`.replace(/\n/g, '\r\n'), 'f')
    assert.deepEqual(r.errors, [])
    assert.equal(r.resources.length, 2)
  })

  test('a JSON object', () => {
    const obj = {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'deny-all', namespace: 'prod' },
      spec: { action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] },
    }
    const r = parseManifests(JSON.stringify(obj, null, '\t'), 'p.json')
    assert.deepEqual(r.errors, [])
    assert.equal(r.resources[0]?.metadata.namespace, 'prod')
  })

  test('a Kubernetes List, with errors located inside items', () => {
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } },
        { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'gw' }, spec: { servers: [] } },
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'ServiceEntry',
          metadata: { name: 'se' },
          spec: {
            hosts: ['api.example.com'],
            ports: [{ number: 443, name: 'https', protocol: 'TLS' }],
            resolution: 'DNS',
          },
        },
      ],
    }
    const r = parseManifests(JSON.stringify(list), 'list.json')
    assert.deepEqual(
      r.errors.map((e) => [e.index, e.kind, e.name, e.path]),
      [[0, 'Gateway', 'gw', 'items[1].spec.servers']],
    )
    assert.deepEqual(
      r.resources.map((x) => x.kind),
      ['ServiceEntry'],
    )
    assert.deepEqual(
      r.skipped.map((s) => s.kind),
      ['Service'],
    )
  })

  test('duplicate keys in JSON are errors too', () => {
    const r = parseManifests('{"apiVersion": "v1", "kind": "List", "kind": "List", "items": []}', 'd.json')
    assert.equal(r.errors.length, 1)
    assert.match(r.errors[0]!.message, /duplicated mapping key/)
    assert.equal(r.errors[0]?.line, 1)
  })

  test('YAML anchors and merge keys, as Kubernetes reads them', () => {
    const text = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: &v1 {version: v1}
    trafficPolicy: &tp
      loadBalancer: {simple: RANDOM}
  - name: v2
    labels:
      <<: *v1
      version: v2
    trafficPolicy: *tp
`
    const r = parseManifests(text, 'f')
    assert.deepEqual(r.errors, [])
    const dr = r.resources[0]
    assert.ok(dr?.kind === 'DestinationRule')
    assert.deepEqual(dr.spec.subsets?.[1]?.labels, { version: 'v2' })
  })

  test('timestamps stay strings (kubectl get -o yaml output)', () => {
    const text = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: istio-system
  creationTimestamp: 2024-05-01T10:00:00Z
  resourceVersion: "12345"
  generation: 3
  uid: 0b3a1c2e-5d6f-4a7b-8c9d-0e1f2a3b4c5d
  managedFields: [{manager: kubectl}]
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
status: {}
`
    const r = parseManifests(text, 'f')
    assert.deepEqual(r.errors, [])
    assert.deepEqual(r.resources[0]?.metadata, {
      name: 'gw',
      namespace: 'istio-system',
      creationTimestamp: '2024-05-01T10:00:00Z',
      resourceVersion: '12345',
      generation: 3,
      uid: '0b3a1c2e-5d6f-4a7b-8c9d-0e1f2a3b4c5d',
    })
  })
})

describe('loadManifestPath', () => {
  test('a directory: *.yaml, *.yml and *.json, sorted, with each error naming its file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'loom-api-'))
    try {
      await writeFile(join(dir, 'b.yml'), VS_OK.replace('name: ok', 'name: b'))
      await writeFile(join(dir, 'a.yaml'), VS_OK.replace('name: ok', 'name: a'))
      await writeFile(
        join(dir, 'c.json'),
        '{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "c"}}',
      )
      await writeFile(join(dir, 'README.md'), '# not a manifest')
      const r = await loadManifestPath(dir)
      assert.deepEqual(
        r.resources.map((x) => x.metadata.name),
        ['a', 'b'],
      )
      assert.deepEqual(
        r.errors.map((e) => [e.source, e.index, e.path]),
        [[join(dir, 'c.json'), 0, 'spec.servers']],
      )
      const one = await loadManifestPath(join(dir, 'a.yaml'))
      assert.equal(one.resources.length, 1)
      await assert.rejects(loadManifestPath(join(dir, 'missing.yaml')), /LOOM_ERR_CONFIG_READ|cannot read/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
