import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { bookinfoRegistry, bookinfoSelfRegistered, manifests } from '../translate/testdata/bookinfo.js'
import { portProtocol, RegistrationError, Registry, type Service, type WorkloadRegistration } from './registry.js'

/** `address:port` of every endpoint of a service port, sorted. */
function endpointsOf(services: Service[], host: string, port: number): string[] {
  const svc = services.find((s) => s.hostname === host)
  assert.ok(svc, `no service ${host}`)
  return svc.endpoints.filter((e) => e.servicePort === port).map((e) => `${e.address}:${e.port}`)
}

class FakeClock {
  now = 1_000_000
  readonly fn = () => this.now
}

describe('Registry from ServiceEntry and WorkloadEntry', () => {
  const yaml = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: grpc-admin, protocol: GRPC, targetPort: 19090}
  - {number: 9443, name: metrics}
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: 10.0.0.1
  ports: {http: 18080}
  labels: {app: reviews, version: v1}
  serviceAccount: bookinfo-reviews
  locality: us-east/zone-a/rack-1
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-other-ns, namespace: prod}
spec:
  address: 10.0.0.9
  labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com, api2.example.com]
  exportTo: ['.']
  resolution: DNS
  subjectAltNames: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  endpoints:
  - {address: eu.api.example.com, locality: eu}
  - {address: us.api.example.com, ports: {https: 8443}}
`
  const services = Registry.fromResources(manifests(yaml)).services()

  it('lists services sorted by hostname, one per host', () => {
    assert.deepEqual(
      services.map((s) => `${s.hostname} ${s.namespace} ${s.resolution} ${s.location} ${s.exportTo}`),
      [
        'api.example.com default DNS MESH_EXTERNAL .',
        'api2.example.com default DNS MESH_EXTERNAL .',
        'reviews.default.svc.cluster.local default STATIC MESH_INTERNAL *',
      ],
    )
  })

  it('keeps the ServiceEntry subjectAltNames (none when it lists none)', () => {
    assert.deepEqual(services.find((s) => s.hostname === 'api.example.com')!.subjectAltNames, ['api.example.com'])
    assert.equal(services.find((s) => s.hostname.startsWith('reviews'))!.subjectAltNames, undefined)
  })

  it('gives ports with protocols (declared, or from the name)', () => {
    const reviews = services.find((s) => s.hostname.startsWith('reviews'))!
    assert.deepEqual(reviews.ports, [
      { number: 9080, name: 'http', protocol: 'HTTP' },
      { number: 9090, name: 'grpc-admin', protocol: 'GRPC' },
      { number: 9443, name: 'metrics', protocol: '' },
    ])
  })

  // endpoint port: named workload port, else targetPort, else the service port; only the SE's namespace selects
  const portCases: [string, number, string[]][] = [
    ['reviews.default.svc.cluster.local', 9080, ['10.0.0.1:18080']],
    ['reviews.default.svc.cluster.local', 9090, ['10.0.0.1:19090']],
    ['reviews.default.svc.cluster.local', 9443, ['10.0.0.1:9443']],
    ['api.example.com', 443, ['eu.api.example.com:443', 'us.api.example.com:8443']],
    ['api2.example.com', 443, ['eu.api.example.com:443', 'us.api.example.com:8443']],
  ]
  for (const [host, port, want] of portCases) {
    it(`endpoints of ${host}:${port}`, () => assert.deepEqual(endpointsOf(services, host, port), want))
  }

  it('carries labels, service account, locality and weight', () => {
    const e = services.find((s) => s.hostname.startsWith('reviews'))!.endpoints[0]!
    assert.deepEqual(e, {
      address: '10.0.0.1',
      servicePort: 9080,
      port: 18080,
      labels: { app: 'reviews', version: 'v1' },
      serviceAccount: 'bookinfo-reviews',
      locality: 'us-east/zone-a/rack-1',
      weight: 3,
      healthy: true,
      source: 'WorkloadEntry/default/reviews-v1',
    })
  })
})

describe('Registry self-registration', () => {
  const base: WorkloadRegistration = {
    name: 'reviews-v1',
    address: '127.0.0.1',
    ports: [{ name: 'http', number: 19081, servicePort: 9080 }],
    labels: { app: 'reviews', version: 'v1' },
    serviceAccount: 'bookinfo-reviews',
    ttlSeconds: 10,
  }

  it('makes <app>.<namespace>.svc.cluster.local from the app label', () => {
    const r = new Registry()
    assert.equal(r.register(base), 'default/reviews-v1')
    r.register({ ...base, name: 'reviews-v2', ports: { http: 19082 }, labels: { app: 'reviews', version: 'v2' } })
    const [svc] = r.services()
    assert.equal(svc!.hostname, 'reviews.default.svc.cluster.local')
    assert.deepEqual(svc!.ports, [{ number: 9080, name: 'http', protocol: 'HTTP' }])
    // replicas on different local ports unify by port name
    assert.deepEqual(endpointsOf(r.services(), svc!.hostname, 9080), ['127.0.0.1:19081', '127.0.0.1:19082'])
    assert.equal(svc!.source, 'workload')
  })

  it("carries a port's targetPort (the workload port policies name) on its endpoints, where it differs", () => {
    const r = new Registry()
    r.register({ ...base, ports: [{ name: 'http', number: 19081, servicePort: 9080, targetPort: 80 }] })
    r.register({
      ...base,
      name: 'reviews-v2',
      ports: [{ name: 'http', number: 19082, servicePort: 9080, targetPort: 19082 }],
    })
    const eps = r.services()[0]!.endpoints
    assert.deepEqual(
      eps.map((e) => [e.port, e.targetPort]),
      [
        [19081, 80],
        [19082, undefined],
      ],
    )
    assert.throws(
      () => r.register({ ...base, ports: [{ name: 'http', number: 1, targetPort: 0 }] }),
      /targetPort must be 1-65535/,
    )
  })

  it('joins the services its serviceHosts name, resolved in its namespace', () => {
    const r = new Registry()
    r.register({ ...base, name: 'api', namespace: 'prod', serviceHosts: ['api', 'api.example.com'], labels: {} })
    assert.deepEqual(
      r.services().map((s) => `${s.hostname}/${s.namespace}`),
      ['api.example.com/prod', 'api.prod.svc.cluster.local/prod'],
    )
  })

  it('becomes an endpoint of a ServiceEntry that defines its host (by port name)', () => {
    const r = Registry.fromResources(
      manifests(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
`),
    )
    r.register(base)
    const svc = r.services()
    assert.equal(svc.length, 1)
    assert.equal(svc[0]!.source, 'ServiceEntry/default/reviews')
    // selected by the workloadSelector and named by its app label: one endpoint, not two
    assert.deepEqual(endpointsOf(svc, 'reviews.default.svc.cluster.local', 9080), ['127.0.0.1:19081'])
  })

  it('expires after the TTL unless heart-beaten, with an injectable clock', () => {
    const clock = new FakeClock()
    const r = new Registry({ clock: clock.fn })
    let changes = 0
    r.onChange(() => changes++)
    const id = r.register(base)
    clock.now += 9_000
    assert.equal(r.heartbeat(id), true)
    clock.now += 9_000
    assert.equal(r.services().length, 1, 'heartbeat extended the TTL')
    clock.now += 1_000
    assert.equal(r.services().length, 0, 'expired: hidden at once')
    assert.equal(r.heartbeat(id), true, 'not pruned yet: a heartbeat revives it')
    assert.equal(r.services().length, 1)
    clock.now += 10_000
    assert.deepEqual(r.expire(), [id])
    assert.equal(r.heartbeat(id), false, 'pruned: must register again')
    assert.equal(r.workloads().length, 0)
    assert.equal(changes, 3, 'register, revival, expire')
  })

  it('expiresElsewhere: no expiry by the clock; callers are told of register, heartbeat and deregister only', () => {
    const clock = new FakeClock()
    const r = new Registry({ clock: clock.fn, expiresElsewhere: true })
    const seen: string[] = []
    r.onRegistration((e) =>
      seen.push(e.type === 'deregister' ? `deregister ${e.id}` : `${e.type} ${e.workload.id} ${e.workload.healthy}`),
    )
    const id = r.register(base)
    clock.now += 3_600_000
    assert.equal(r.services().length, 1, 'past its TTL, still served: the lease elsewhere decides')
    assert.deepEqual(r.expire(), [])
    assert.equal(r.heartbeat(id, { healthy: false }), true)
    const [w] = r.workloads()
    r.restore([{ ...w!, name: 'restored' }])
    assert.equal(r.workloads().length, 2)
    assert.equal(r.deregister(id), true)
    assert.deepEqual(seen, [`register ${id} true`, `heartbeat ${id} false`, `deregister ${id}`])
  })

  it('restores saved registrations with their health and a full TTL from now, skipping malformed ones', () => {
    const clock = new FakeClock()
    const before = new Registry({ clock: clock.fn })
    const id = before.register(base)
    before.heartbeat(id, { healthy: false })
    clock.now += 9_000
    const saved = before.workloads()
    const after = new Registry({ clock: clock.fn })
    const n = after.restore([...saved, { ...saved[0]!, id: 'default/bad', name: 'Not A Name' }])
    assert.equal(n, 1)
    assert.deepEqual(
      after.workloads().map((w) => [w.id, w.healthy, w.lastSeenMs]),
      [[id, false, clock.now]],
    )
    clock.now += 9_000
    assert.equal(after.services().length, 1, 'a full TTL from the restore, not from the last heartbeat')
    assert.equal(after.services()[0]!.endpoints[0]!.healthy, false)
  })

  it('reports health from heartbeats', () => {
    const r = new Registry()
    const id = r.register(base)
    r.heartbeat(id, { healthy: false })
    assert.equal(r.services()[0]!.endpoints[0]!.healthy, false)
    assert.equal(r.deregister(id), true)
    assert.equal(r.deregister(id), false)
    assert.deepEqual(r.services(), [])
  })

  const invalid: [string, Partial<WorkloadRegistration>][] = [
    ['bad name', { name: 'Reviews_V1' }],
    ['no address', { address: '' }],
    ['no ttl', { ttlSeconds: 0 }],
    ['bad port', { ports: [{ name: 'http', number: 70000 }] }],
    ['duplicate port names', { ports: { http: 1 } as Record<string, number> }],
    ['zero weight', { weight: 0 }],
    ['empty locality part', { locality: 'r1//s1' }],
    ['locality past subzone', { locality: 'r1/z1/s1/x' }],
  ]
  for (const [name, patch] of invalid) {
    it(`rejects ${name}`, () => {
      const reg = { ...base, ...patch }
      if (name === 'duplicate port names') {
        reg.ports = [
          { name: 'http', number: 1 },
          { name: 'http', number: 2 },
        ]
      }
      assert.throws(() => new Registry().register(reg), RegistrationError)
    })
  }
})

describe('portProtocol', () => {
  const cases: [string | undefined, string, string][] = [
    ['HTTP', 'x', 'HTTP'],
    [undefined, 'http', 'HTTP'],
    [undefined, 'http-web', 'HTTP'],
    [undefined, 'grpc-web', 'GRPC-WEB'],
    [undefined, 'grpc', 'GRPC'],
    [undefined, 'tcp-db', 'TCP'],
    [undefined, 'web', ''],
    ['https', 'x', 'HTTPS'],
  ]
  for (const [declared, name, want] of cases) {
    it(`${declared ?? '-'} ${name} → ${want || "''"}`, () => assert.equal(portProtocol(declared, name), want))
  }
})

describe('Bookinfo', () => {
  it('ServiceEntries + WorkloadEntries and self-registration give the same endpoints', () => {
    const strip = (services: Service[]) =>
      services.map((s) => ({
        hostname: s.hostname,
        ports: s.ports,
        endpoints: s.endpoints.map(({ source: _s, ...e }) => e),
      }))
    assert.deepEqual(strip(bookinfoSelfRegistered().services()), strip(bookinfoRegistry().services()))
  })
})

describe('Registry platform services (Kubernetes)', () => {
  const platform = (hostname: string, address: string): Service => ({
    hostname,
    namespace: 'default',
    ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
    endpoints: [
      {
        address,
        servicePort: 9080,
        port: 9080,
        labels: {},
        serviceAccount: 'default',
        locality: '',
        weight: 1,
        healthy: true,
        source: 'Pod/default/p',
      },
    ],
    resolution: 'STATIC',
    location: 'MESH_INTERNAL',
    exportTo: ['*'],
    source: `Service/default/${hostname.split('.')[0]}`,
  })

  it('joins the services in order; a ServiceEntry of the same host and namespace wins; each change is one', () => {
    const r = Registry.fromResources(
      manifests(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  endpoints: [{address: 10.9.9.9}]
`),
    )
    let changes = 0
    r.onChange(() => changes++)
    r.setPlatformServices([
      platform('reviews.default.svc.cluster.local', '10.0.0.1'),
      platform('ratings.default.svc.cluster.local', '10.0.0.2'),
      platform('details.default.svc.cluster.local', '10.0.0.3'),
    ])
    assert.equal(changes, 1)
    const s = r.services()
    assert.deepEqual(
      s.map((x) => [x.hostname, x.source, x.endpoints[0]!.address]),
      [
        ['details.default.svc.cluster.local', 'Service/default/details', '10.0.0.3'],
        ['ratings.default.svc.cluster.local', 'ServiceEntry/default/ratings', '10.9.9.9'],
        ['reviews.default.svc.cluster.local', 'Service/default/reviews', '10.0.0.1'],
      ],
    )
    r.setPlatformServices([])
    assert.deepEqual(
      r.services().map((x) => x.hostname),
      ['ratings.default.svc.cluster.local'],
    )
  })
})
