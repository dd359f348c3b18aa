/**
 * Incremental translation gives what translation from scratch gives: seeded random change sequences over a pool of
 * ServiceEntries, WorkloadEntries (endpoints), VirtualServices, DestinationRules, Sidecars, AuthorizationPolicies and
 * PeerAuthentications, with proxies of several namespaces and labels; after every change each proxy's snapshot
 * from the incremental translator (or the one it kept, when the translator says nothing changed for it) equals
 * `translate()`, byte for byte (canonical JSON, order and versions).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { keyOf, type Resource } from '../../api/index.js'
import { TYPE_URL, type Snapshot } from '../../xds/snapshot.js'
import { Registry } from '../registry/registry.js'
import { manifests } from './testdata/bookinfo.js'
import { BatchTranslator, type TranslateInput, type TranslateNode, translate } from './translate.js'
import { canonicalJson, type Json } from './util.js'

/** mulberry32: a small seeded PRNG, so a failing sequence is reproducible from its seed */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const NAMESPACES = ['default', 'shop', 'istio-system']
const APPS = ['a', 'b', 'c', 'd']
const VERSIONS = ['v1', 'v2']

interface Doc {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace: string; creationTimestamp?: string }
  spec: Record<string, unknown>
}

class Gen {
  constructor(readonly r: () => number) {}
  int(n: number): number {
    return Math.floor(this.r() * n)
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!
  }
  chance(p: number): boolean {
    return this.r() < p
  }
  ns(): string {
    return this.pick(NAMESPACES.slice(0, 2))
  }
  /** a host as a resource of `ns` may write it: short name, `name.ns`, or FQDN */
  host(ns: string): string {
    const app = this.pick(APPS)
    const hns = this.chance(0.7) ? ns : this.ns()
    const form = this.int(4)
    if (form === 0 && hns === ns) return app
    if (form === 1) return `${app}.${hns}`
    if (form === 2 && this.chance(0.2)) return 'ext.example.com'
    return `${app}.${hns}.svc.cluster.local`
  }
  time(): string {
    return `2024-01-01T00:00:${String(this.int(60)).padStart(2, '0')}Z`
  }

  serviceEntry(app: string, ns: string): Doc {
    const ports: Record<string, unknown>[] = [{ number: 80, name: 'http', protocol: 'HTTP', targetPort: 8080 }]
    if (this.chance(0.4)) ports.push({ number: 9090, name: 'grpc', protocol: 'GRPC' })
    if (this.chance(0.2)) ports.push({ number: 3306, name: 'tcp', protocol: 'TCP' })
    const spec: Record<string, unknown> = {
      hosts: [`${app}.${ns}.svc.cluster.local`],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports,
    }
    if (this.chance(0.7)) spec.workloadSelector = { labels: { app } }
    else
      spec.endpoints = Array.from({ length: 1 + this.int(3) }, () => ({
        address: `10.9.${this.int(4)}.${this.int(200)}`,
        labels: { version: this.pick(VERSIONS) },
        ...(this.chance(0.3) ? { locality: this.pick(['r1/z1', 'r1/z2', 'r2/z3']) } : {}),
      }))
    if (this.chance(0.15)) spec.exportTo = ['.']
    return doc('ServiceEntry', app, ns, spec)
  }

  workloadEntry(name: string, ns: string, address: string): Doc {
    const spec: Record<string, unknown> = {
      address,
      labels: { app: this.pick(APPS), version: this.pick(VERSIONS) },
      serviceAccount: 'sa',
    }
    if (this.chance(0.4)) spec.locality = this.pick(['r1/z1', 'r1/z2', 'r2/z3'])
    return doc('WorkloadEntry', name, ns, spec)
  }

  destination(ns: string): Record<string, unknown> {
    const d: Record<string, unknown> = { host: this.host(ns) }
    if (this.chance(0.4)) d.subset = this.pick(VERSIONS)
    if (this.chance(0.3)) d.port = { number: this.pick([80, 9090]) }
    return d
  }

  virtualService(name: string, ns: string): Doc {
    const hosts = [this.host(ns)]
    if (this.chance(0.2)) hosts.push('other.example.com')
    if (this.chance(0.05)) hosts.push(`*.${ns}.svc.cluster.local`)
    const http: Record<string, unknown>[] = []
    for (let i = 0, n = 1 + this.int(2); i < n; i++) {
      const rule: Record<string, unknown> = {}
      if (this.chance(0.5)) {
        const match: Record<string, unknown> = { uri: { prefix: this.pick(['/api', '/v2', '/']) } }
        if (this.chance(0.2)) match.sourceLabels = { app: this.pick(APPS) }
        rule.match = [match]
      }
      if (this.chance(0.5)) {
        const w = this.int(101)
        rule.route = [
          { destination: this.destination(ns), weight: w },
          { destination: this.destination(ns), weight: 100 - w },
        ]
      } else rule.route = [{ destination: this.destination(ns) }]
      if (this.chance(0.5)) rule.timeout = `${1 + this.int(9)}s`
      if (this.chance(0.15)) rule.mirror = { host: this.host(ns) }
      http.push(rule)
    }
    const spec: Record<string, unknown> = { hosts, http }
    if (this.chance(0.15)) spec.exportTo = ['.']
    return doc('VirtualService', name, ns, spec, this.time())
  }

  destinationRule(name: string, ns: string): Doc {
    const spec: Record<string, unknown> = {
      host: this.chance(0.05) ? `*.${ns}.svc.cluster.local` : this.host(ns),
      subsets: VERSIONS.filter(() => this.chance(0.6)).map((v) => ({ name: v, labels: { version: v } })),
    }
    const policy: Record<string, unknown> = {}
    if (this.chance(0.4))
      policy.loadBalancer = this.chance(0.5)
        ? { simple: this.pick(['ROUND_ROBIN', 'RANDOM']) }
        : { consistentHash: { httpHeaderName: 'x-user' } }
    if (this.chance(0.3)) policy.outlierDetection = { consecutive5xxErrors: 1 + this.int(5), interval: '10s' }
    if (this.chance(0.2)) policy.connectionPool = { http: { http1MaxPendingRequests: 1 + this.int(100) } }
    if (Object.keys(policy).length > 0) spec.trafficPolicy = policy
    if (this.chance(0.1)) spec.exportTo = ['.']
    if (this.chance(0.1)) spec.workloadSelector = { matchLabels: { app: this.pick(APPS) } }
    return doc('DestinationRule', name, ns, spec, this.time())
  }

  sidecar(name: string, ns: string): Doc {
    const spec: Record<string, unknown> = { egress: [{ hosts: [this.pick(['./*', '*/*', 'default/*', 'shop/*'])] }] }
    if (this.chance(0.5)) spec.workloadSelector = { labels: { app: this.pick(APPS) } }
    return doc('Sidecar', name, ns, spec)
  }

  authorizationPolicy(name: string, ns: string): Doc {
    const spec: Record<string, unknown> = {
      rules: [{ from: [{ source: { namespaces: [this.ns()] } }], to: [{ operation: { methods: ['GET'] } }] }],
    }
    if (this.chance(0.6)) spec.selector = { matchLabels: { app: this.pick(APPS) } }
    if (this.chance(0.2)) spec.action = 'DENY'
    return doc('AuthorizationPolicy', name, this.chance(0.2) ? 'istio-system' : ns, spec)
  }

  peerAuthentication(name: string, ns: string): Doc {
    return doc('PeerAuthentication', name, ns, { mtls: { mode: this.pick(['STRICT', 'PERMISSIVE', 'DISABLE']) } })
  }

  /** A new or replaced resource of a random kind. */
  resource(): Doc {
    const ns = this.ns()
    const n = this.int(3)
    const k = this.r()
    if (k < 0.2) return this.serviceEntry(this.pick(APPS), ns)
    if (k < 0.35) return this.workloadEntry(`w${this.int(6)}`, ns, this.address())
    if (k < 0.6) return this.virtualService(`vs${n}`, ns)
    if (k < 0.8) return this.destinationRule(`dr${n}`, ns)
    if (k < 0.87) return this.authorizationPolicy(`ap${n}`, ns)
    if (k < 0.94) return this.sidecar(`sc${n}`, ns)
    return this.peerAuthentication(`pa${n}`, ns)
  }

  /** a proxy's address, or another endpoint's */
  address(): string {
    return this.chance(0.6) ? this.pick(NODES).ip : `10.8.0.${this.int(20)}`
  }
}

function doc(kind: string, name: string, namespace: string, spec: Record<string, unknown>, created?: string): Doc {
  const group = kind === 'AuthorizationPolicy' || kind === 'PeerAuthentication' ? 'security' : 'networking'
  const metadata: Doc['metadata'] = { name, namespace }
  if (created !== undefined) metadata.creationTimestamp = created
  return { apiVersion: `${group}.istio.io/v1`, kind, metadata, spec }
}

function node(app: string, version: string, namespace: string, ip: string, extra: Partial<TranslateNode> = {}) {
  const n: TranslateNode = {
    id: `sidecar~${ip}~${app}-${version}.${namespace}~${namespace}.svc.cluster.local`,
    kind: 'sidecar',
    namespace,
    labels: { app, version },
    serviceAccount: 'sa',
    ip,
    generator: 'envoy',
    ...extra,
  }
  return n
}

const NODES: TranslateNode[] = [
  node('a', 'v1', 'default', '10.0.0.1'),
  node('a', 'v2', 'default', '10.0.0.2', { locality: { region: 'r1', zone: 'z1' } }),
  node('b', 'v1', 'default', '10.0.0.3'),
  node('c', 'v1', 'shop', '10.0.0.4', { metadata: { INTERCEPTION_MODE: 'REDIRECT', INBOUND_ADDRESS: '10.0.0.4' } }),
  node('d', 'v2', 'shop', '10.0.0.5', { locality: { region: 'r2', zone: 'z3' } }),
  node('a', 'v1', 'shop', '10.0.0.6'),
  node('b', 'v2', 'istio-system', '10.0.0.7'),
  // scoped proxies (on demand): two alike with one scope (they share), one with another, one with nothing
  node('c', 'v1', 'default', '10.0.0.8', { scopeHosts: new Set(['a.default.svc.cluster.local']) }),
  node('c', 'v1', 'default', '10.0.0.9', { scopeHosts: new Set(['a.default.svc.cluster.local']) }),
  node('d', 'v1', 'shop', '10.0.0.10', {
    scopeHosts: new Set(['b.shop.svc.cluster.local', 'c.default.svc.cluster.local', 'x.example.com']),
  }),
  node('d', 'v1', 'default', '10.0.0.11', { scopeHosts: new Set() }),
]

/** a random scope: some of the hosts the generator's ServiceEntries use */
function randomScope(g: Gen): Set<string> {
  const out = new Set<string>()
  for (const app of APPS)
    for (const ns of NAMESPACES.slice(0, 2)) if (g.chance(0.3)) out.add(`${app}.${ns}.svc.cluster.local`)
  return out
}

/** The resources validated as `loom apply` would (JSON is YAML). */
function validated(docs: Doc[]): Resource[] {
  return docs.length === 0 ? [] : manifests(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs }))
}

function inputOf(docs: Doc[]): TranslateInput {
  const resources = validated(docs)
  return { resources, services: Registry.fromResources(resources).services() }
}

function assertSame(actual: Snapshot, expected: Snapshot, what: string): void {
  const types = (s: Snapshot) => [...s.resources.keys()].sort()
  assert.deepEqual(types(actual), types(expected), `${what}: types`)
  for (const type of types(expected)) {
    const a = actual.resources.get(type)!
    const e = expected.resources.get(type)!
    assert.deepEqual([...a.items.keys()], [...e.items.keys()], `${what} ${type}: names`)
    assert.equal(canonicalJson([...a.items.values()]), canonicalJson([...e.items.values()]), `${what} ${type}`)
    assert.equal(a.version, e.version, `${what} ${type}: version`)
  }
}

describe('incremental translation', () => {
  it('equals translation from scratch after every change of 200 random sequences', () => {
    let skipped = 0
    let pushed = 0
    let kept = 0
    for (let seed = 1; seed <= 200; seed++) {
      const g = new Gen(prng(seed))
      const docs = new Map<string, Doc>()
      const put = (d: Doc) => {
        // what validation refuses (a route to the same host twice...) is never applied
        try {
          validated([d])
        } catch {
          return
        }
        docs.set(`${d.kind}/${d.metadata.namespace}/${d.metadata.name}`, d)
      }
      for (const app of APPS) for (const ns of NAMESPACES.slice(0, 2)) if (g.chance(0.7)) put(g.serviceEntry(app, ns))
      for (let i = 0; i < 6; i++) put(g.workloadEntry(`w${i}`, g.ns(), g.address()))
      for (let i = 0; i < 3; i++) put(g.resource())
      let batch: BatchTranslator | undefined
      const given = new Map<string, Snapshot>()
      for (let step = 0; step < 6; step++) {
        if (step > 0) {
          const r = g.r()
          const keys = [...docs.keys()]
          if (r < 0.55) put(g.resource())
          else if (r < 0.7 && keys.length > 0) docs.delete(g.pick(keys))
          else if (r < 0.85) {
            // endpoints: a workload moves, or a ServiceEntry's inline endpoints change
            put(g.workloadEntry(`w${g.int(6)}`, g.ns(), g.address()))
          } else if (r < 0.93 && keys.length > 0) {
            // the same content again, as new objects (a reload)
            const d = docs.get(g.pick(keys))!
            put(structuredClone(d))
          } else {
            // several at once
            for (let i = 0; i < 3; i++) put(g.resource())
          }
        }
        const input = inputOf([...docs.values()])
        batch = new BatchTranslator(input, batch)
        // some proxies are away for a generation; they come back with a full snapshot
        // a proxy whose scope changes from one generation to the next (it asks for more hosts, or fewer)
        const roaming = node('a', 'v1', 'default', '10.0.0.12', { scopeHosts: randomScope(g) })
        const order = [...NODES, roaming].sort(() => g.r() - 0.5)
        for (const n of order) {
          if (given.has(n.id) && g.chance(0.1)) {
            given.delete(n.id)
            continue
          }
          const what = `seed ${seed} step ${step} ${n.id}`
          const expected = translate(input, n)
          let actual: Snapshot
          if (!given.has(n.id) || g.chance(0.1)) actual = batch.translate(n)
          else {
            const u = batch.update(n)
            if (u === null) skipped++
            else pushed++
            actual = u ?? given.get(n.id)!
          }
          assertSame(actual, expected, what)
          given.set(n.id, actual)
        }
        if (batch.change !== null && batch.change.global === null) kept++
      }
    }
    // the incremental paths ran: proxies were skipped, and changes were bounded
    assert.ok(skipped > 300, `skipped ${skipped}`)
    assert.ok(pushed > 300, `pushed ${pushed}`)
    assert.ok(kept > 200, `bounded changes ${kept}`)
  })

  it('keeps the JSON objects of the services a change does not touch, and the proxies it does not reach', () => {
    const g = new Gen(prng(7))
    const docs = APPS.flatMap((app) => [g.serviceEntry(app, 'default'), g.serviceEntry(app, 'shop')])
    docs.forEach((d) => {
      delete d.spec.exportTo
    })
    const vs = (timeout: string) =>
      doc('VirtualService', 'a', 'default', {
        hosts: ['a'],
        http: [{ route: [{ destination: { host: 'a' } }], timeout }],
      })
    const first = inputOf([...docs, vs('1s')])
    const a = new BatchTranslator(first)
    const before = new Map(NODES.map((n) => [n.id, a.translate(n)]))
    const second = inputOf([...docs, vs('2s')])
    const b = new BatchTranslator(second, a)
    assert.deepEqual([...b.change!.hosts], [])
    assert.deepEqual([...b.change!.routeHosts], ['a.default.svc.cluster.local'])
    for (const n of NODES) {
      const s = b.update(n)
      assert.notEqual(s, null, `${n.id} sees a.default`)
      assertSame(s!, translate(second, n), n.id)
      const clusters = (x: Snapshot) => x.resources.get(TYPE_URL.cluster)!.items
      // every cluster is the same object as before: the VirtualService changes routes only
      for (const [name, c] of clusters(s!))
        if (name.startsWith('outbound|')) assert.equal(c, clusters(before.get(n.id)!).get(name), name)
    }
    // a DestinationRule for a host exported only to its namespace: proxies of other namespaces keep their snapshots
    const shopOnly = (d: Doc) => {
      if (d.metadata.name === 'b' && d.metadata.namespace === 'shop') d.spec.exportTo = ['.']
      return d
    }
    const third = inputOf([...docs.map((d) => shopOnly(structuredClone(d))), vs('2s')])
    const c = new BatchTranslator(third, b)
    const fourth = inputOf([
      ...docs.map((d) => shopOnly(structuredClone(d))),
      vs('2s'),
      doc('DestinationRule', 'b', 'shop', { host: 'b', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }),
    ])
    for (const n of NODES) c.translate(n)
    const d = new BatchTranslator(fourth, c)
    for (const n of NODES) {
      const s = d.update(n)
      if (n.namespace === 'shop') assertSame(s!, translate(fourth, n), n.id)
      else assert.equal(s, null, `${n.id} does not see b.shop`)
    }
    assert.equal(keyOf(validated([vs('1s')])[0]!), keyOf(validated([vs('2s')])[0]!))
  })

  it('gives proxies that differ only in scope the same objects for the services they share', () => {
    const g = new Gen(prng(11))
    const docs = APPS.map((app) => g.serviceEntry(app, 'default'))
    docs.forEach((d) => {
      delete d.spec.exportTo
    })
    const input = inputOf([
      ...docs,
      doc('VirtualService', 'a', 'default', { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' } }] }] }),
    ])
    const fqdn = (app: string) => `${app}.default.svc.cluster.local`
    const batch = new BatchTranslator(input)
    const one = node('c', 'v1', 'default', '10.0.0.8', { scopeHosts: new Set([fqdn('a'), fqdn('b')]) })
    const two = node('c', 'v1', 'default', '10.0.0.9', { scopeHosts: new Set([fqdn('a'), fqdn('d')]) })
    const full = node('c', 'v1', 'default', '10.0.0.10')
    const snap = (n: TranslateNode) => {
      const s = batch.translate(n)
      assertSame(s, translate(input, n), n.id)
      return s
    }
    const s1 = snap(one)
    const s2 = snap(two)
    const s3 = snap(full)
    const items = (s: Snapshot, type: string) => s.resources.get(type as never)!.items
    const clusterNames = (s: Snapshot) =>
      [...items(s, TYPE_URL.cluster).keys()].filter((k) => k.startsWith('outbound|'))
    assert.ok(
      clusterNames(s1).some((k) => k.endsWith(fqdn('b'))) && !clusterNames(s1).some((k) => k.endsWith(fqdn('d'))),
    )
    // a's clusters and load assignments: one object for all three
    let shared = 0
    for (const name of clusterNames(s1).filter((k) => k.endsWith(`|${fqdn('a')}`))) {
      assert.equal(items(s2, TYPE_URL.cluster).get(name), items(s1, TYPE_URL.cluster).get(name), name)
      assert.equal(items(s3, TYPE_URL.cluster).get(name), items(s1, TYPE_URL.cluster).get(name), name)
      const eds = items(s1, TYPE_URL.endpoint).get(name)
      if (eds !== undefined) assert.equal(items(s2, TYPE_URL.endpoint).get(name), eds, name)
      shared++
    }
    assert.ok(shared > 0)
    // and a's routes: the virtual hosts for a in each route configuration hold the same route list
    const routesOfA = (s: Snapshot) => {
      const vhosts = [...items(s, TYPE_URL.route).values()].flatMap((r) => r.virtual_hosts as Json[])
      return vhosts.filter((v) => (v.name as string).startsWith(`${fqdn('a')}:`)).map((v) => v.routes)
    }
    const a1 = routesOfA(s1)
    assert.ok(a1.length > 0)
    assert.deepEqual(
      routesOfA(s2).map((r, i) => r === a1[i]),
      a1.map(() => true),
    )
  })
})
