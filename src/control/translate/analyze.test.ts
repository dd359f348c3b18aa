import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Registry } from '../registry/registry.js'
import { analyze, type Diagnostic } from './analyze.js'
import { applied, bookinfoRegistry, manifests, samples } from './testdata/bookinfo.js'

const SERVICES = bookinfoRegistry().services()

/** `level resource path: message` lines, for compact expectations. */
const lines = (ds: Diagnostic[]) => ds.map((d) => `${d.level} ${d.resource} ${d.path}: ${d.message}`)

const vs = (name: string, spec: string, ns = 'default') => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${name}, namespace: ${ns}}
spec:
${spec
  .trim()
  .split('\n')
  .map((l) => `  ${l}`)
  .join('\n')}
`

describe('analyze', () => {
  const cases: [string, string, string[]][] = [
    [
      'unknown destination host',
      vs('a', 'hosts: [reviews]\nhttp: [{route: [{destination: {host: nope}}]}]'),
      [
        'error VirtualService/default/a spec.http[0].route[0].destination.host: destination host nope.default.svc.cluster.local not found in the registry',
      ],
    ],
    [
      'missing subset',
      vs('a', 'hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v9}}]}]'),
      [
        'error VirtualService/default/a spec.http[0].route[0].destination.subset: subset v9 of reviews.default.svc.cluster.local is not defined by any DestinationRule',
      ],
    ],
    [
      'destination port the service does not have',
      vs('a', 'hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, port: {number: 80}}}]}]'),
      [
        'error VirtualService/default/a spec.http[0].route[0].destination.port: reviews.default.svc.cluster.local has no port 80',
      ],
    ],
    [
      'unknown gateway',
      vs('a', 'hosts: [x.example.com]\ngateways: [nope]\nhttp: [{route: [{destination: {host: reviews}}]}]'),
      ['error VirtualService/default/a spec.gateways[0]: gateway default/nope not found'],
    ],
    [
      'two VirtualServices for one host on the mesh',
      `${vs('a', 'hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}]}]')}---\n${vs(
        'b',
        'hosts: [reviews.default.svc.cluster.local]\nhttp: [{route: [{destination: {host: reviews}}]}]',
      )}`,
      [
        'error VirtualService/default/b spec.hosts: host reviews.default.svc.cluster.local is also routed by VirtualService/default/a on the mesh; only the oldest applies',
      ],
    ],
    [
      'rules after a catch-all',
      vs(
        'a',
        `hosts: [reviews]
http:
- match: [{uri: {prefix: /a}}, {uri: {prefix: /}}, {uri: {exact: /b}}]
  route: [{destination: {host: reviews}}]
- route: [{destination: {host: reviews}}]
- route: [{destination: {host: ratings}}]`,
      ),
      [
        'warning VirtualService/default/a spec.http[0].match[2]: unreachable: spec.http[0].match[1] matches every request',
        'warning VirtualService/default/a spec.http[1]: unreachable: spec.http[0].match[1] already matches every request',
        'warning VirtualService/default/a spec.http[2]: unreachable: spec.http[0].match[1] already matches every request',
      ],
    ],
    [
      'not translated yet',
      vs(
        'a',
        `hosts: [reviews]
http:
- fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
  corsPolicy: {allowOrigins: [{exact: 'https://x.example'}]}
  mirror: {host: ratings}
  retries: {attempts: 3, retryRemoteLocalities: true}
  route: [{destination: {host: reviews}}]`,
      ),
      [
        'warning VirtualService/default/a spec.http[0].retries.retryRemoteLocalities: retryRemoteLocalities is not supported yet; retries do not prefer other localities',
      ],
    ],
    [
      'DestinationRule for an unknown host, unsupported policies, empty subset',
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: x}
spec:
  host: nope.example.com
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 1s, maxConnections: 10, tcpKeepalive: {time: 60s}}}
    outlierDetection: {consecutive5xxErrors: 1, minHealthPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v9, labels: {version: v9}}
`,
      [
        "warning DestinationRule/default/reviews spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: TCP keepalive is not supported by Loom's proxy yet; ignored",
        "warning DestinationRule/default/reviews spec.trafficPolicy.outlierDetection.minHealthPercent: Loom's proxy has no panic threshold (as minHealthPercent 0): when every host is ejected, requests get 503",
        'warning DestinationRule/default/reviews spec.subsets[0]: subset v9 selects no endpoint of reviews.default.svc.cluster.local',
        'warning DestinationRule/default/x spec.host: no service nope.example.com in the registry',
      ],
    ],
    [
      'locality failover without outlier detection',
      `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 1}
      loadBalancer: {localityLbSetting: {failoverPriority: [version]}}
`,
      [
        'warning DestinationRule/default/reviews spec.trafficPolicy.loadBalancer.localityLbSetting: outlier detection policy must be provided for failover; without outlierDetection it is ignored',
      ],
    ],
    [
      'gateway servers Loom cannot serve yet',
      `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: OPTIONAL_MUTUAL, credentialName: cert}
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ['*']
    tls: {mode: AUTO_PASSTHROUGH}
`,
      [
        'warning Gateway/default/gw spec.servers[0].tls: TLS mode OPTIONAL_MUTUAL is not supported yet; the server gets no listener',
        'warning Gateway/default/gw spec.servers[1].port.protocol: TLS servers are not supported yet; no listener',
      ],
    ],
    [
      'GlobalRateLimit hosts no service answers to, and a host two unmatched limits cover',
      `apiVersion: loom.dev/v1alpha1
kind: GlobalRateLimit
metadata: {name: a, namespace: default}
spec: {hosts: [reviews, nope, "*.example.com"], requestsPerSecond: 10}
---
apiVersion: loom.dev/v1alpha1
kind: GlobalRateLimit
metadata: {name: b, namespace: default}
spec: {hosts: [reviews], requestsPerSecond: 5}
---
apiVersion: loom.dev/v1alpha1
kind: GlobalRateLimit
metadata: {name: c, namespace: default}
spec: {hosts: [reviews], requestsPerSecond: 5, match: {method: POST}}
`,
      [
        'warning GlobalRateLimit/default/a spec.hosts[1]: nope.default.svc.cluster.local is not in the registry; the limit applies to no route yet',
        'warning GlobalRateLimit/default/a spec.hosts[2]: no service in the registry is under *.example.com; the limit applies to no route yet',
        'warning GlobalRateLimit/default/b spec.hosts[0]: reviews.default.svc.cluster.local is also limited by GlobalRateLimit/default/a; requests count against both',
      ],
    ],
  ]
  for (const [name, yaml, want] of cases) {
    it(name, () => assert.deepEqual(lines(analyze(manifests(yaml), SERVICES)), want))
  }

  it('locality load balancing on a DNS service is a warning (its cluster is not rewritten per locality)', () => {
    const resources = manifests(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: ext.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
`)
    assert.deepEqual(lines(analyze(resources, Registry.fromResources(resources).services())), [
      'warning DestinationRule/default/ext spec.trafficPolicy.loadBalancer.localityLbSetting: ext.example.com is resolved by DNS: locality load balancing is not applied to it yet',
    ])
  })

  it('Bookinfo as shipped: only the subsets without workloads are reported', () => {
    const ds = analyze(
      samples(
        'virtual-service-all-v1.yaml',
        'destination-rule-all.yaml',
        'virtual-service-reviews-jason-v2-v3.yaml',
        'bookinfo-gateway.yaml',
      ),
      SERVICES,
    )
    assert.deepEqual(lines(ds), [
      'warning DestinationRule/default/details spec.subsets[1]: subset v2 selects no endpoint of details.default.svc.cluster.local',
      'warning DestinationRule/default/ratings spec.subsets[1]: subset v2 selects no endpoint of ratings.default.svc.cluster.local',
      'warning DestinationRule/default/ratings spec.subsets[2]: subset v2-mysql selects no endpoint of ratings.default.svc.cluster.local',
      'warning DestinationRule/default/ratings spec.subsets[3]: subset v2-mysql-vm selects no endpoint of ratings.default.svc.cluster.local',
    ])
  })

  it('a VirtualService on a gateway and the mesh does not conflict with itself; two on one gateway merge', () => {
    const gw = samples('bookinfo-gateway.yaml')
    const second = manifests(
      vs('more', 'hosts: ["*"]\ngateways: [bookinfo-gateway]\nhttp: [{route: [{destination: {host: reviews}}]}]'),
    )
    assert.deepEqual(lines(analyze(applied(gw, second), SERVICES)), [
      'warning VirtualService/default/more spec.hosts: host * is also routed by VirtualService/default/bookinfo on gateway default/bookinfo-gateway; routes merge',
    ])
  })
})

describe('AuthorizationPolicy rules that read HTTP requests, on TCP ports', () => {
  const yaml = (action: string) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}, {number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.7, labels: {app: db}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  action: ${action}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/api]}}]
  - to: [{operation: {methods: [GET]}}]
    when: [{key: 'request.headers[x-user]', values: [admin]}]
`
  it('ALLOW: the rule is left out there (a warning per rule, with the fields and the ports)', () => {
    const resources = manifests(yaml('ALLOW'))
    assert.deepEqual(
      lines(analyze(resources, Registry.fromResources(resources).services())).filter((l) =>
        l.includes('AuthorizationPolicy'),
      ),
      [
        'warning AuthorizationPolicy/default/db spec.rules[1]: this rule reads HTTP requests (methods, request.headers[x-user]) and the policy applies to TCP ports (db.default.svc.cluster.local:5432): there, the rule is left out, so it admits no connection (Istio)',
      ],
    )
  })
  it('DENY: the fields are dropped; a policy selecting no TCP workload gets no warning', () => {
    const resources = manifests(yaml('DENY'))
    const ds = lines(analyze(resources, Registry.fromResources(resources).services()))
    assert.ok(
      ds.some((l) =>
        l.endsWith('those fields are dropped and the rest of the rule applies to every connection (Istio)'),
      ),
      ds.join('\n'),
    )
    const other = manifests(yaml('DENY').replace('matchLabels: {app: db}', 'matchLabels: {app: web}'))
    assert.deepEqual(
      lines(analyze(other, Registry.fromResources(other).services())).filter((l) => l.includes('AuthorizationPolicy')),
      [],
    )
  })
})
