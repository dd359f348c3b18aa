/**
 * `loom describe workload` against a real `loom control`: each inbound port's mTLS mode and the PeerAuthentication
 * that decided it (port, workload and namespace levels, and the default), a DestinationRule's TLS modes for a
 * destination, and the AuthorizationPolicies and RequestAuthentications that apply, in the table, JSON and YAML
 * outputs and from the API endpoint they read.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Control, startControl } from './helpers/control.js'
import { writeTemp } from './helpers/proxy.js'

const CONFIG = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db-ports, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  portLevelMtls: {"5432": {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-tls, namespace: shop}
spec:
  host: api.shop.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings: [{port: {number: 8443}, tls: {mode: DISABLE}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/api]}}]
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: istio-system, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [shop]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: shop}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  jwtRules: [{issuer: https://issuer.example, jwks: '{"keys": []}'}]
`

interface Security {
  workload: { name: string; serviceAccount: string }
  ports: { servicePort: number; protocol: string; filter: string; mode: string; level: string; policy: string | null }[]
  outboundTls: { host: string; subset: string; port: number; mode: string; rule: string }[]
  authorizationPolicies: {
    name: string
    namespace: string
    action: string
    dryRun?: boolean
    httpOnlyRules?: number[]
  }[]
  requestAuthentications: { name: string; namespace: string }[]
}

describe('loom describe workload', () => {
  let cp: Control

  before(async () => {
    cp = await startControl()
    const register = async (body: unknown) => {
      const r = await fetch(`http://${cp.api}/api/v1/workloads`, { method: 'POST', body: JSON.stringify(body) })
      assert.equal(r.status, 200, await r.text())
    }
    await register({
      name: 'db-v1',
      namespace: 'shop',
      address: '127.0.0.1',
      serviceAccount: 'db',
      ports: [
        { name: 'http-admin', number: 18080, servicePort: 8080 },
        { name: 'tcp-postgres', number: 15432, servicePort: 5432 },
      ],
      labels: { app: 'db' },
      ttlSeconds: 600,
    })
    await register({
      name: 'api-v1',
      namespace: 'shop',
      address: '127.0.0.2',
      ports: [{ name: 'http', number: 8443 }],
      labels: { app: 'api' },
      ttlSeconds: 600,
    })
    const r = await cp.loom(['apply', '-f', writeTemp('security.yaml', CONFIG)])
    assert.equal(r.code, 0, r.stderr)
  })
  after(async () => {
    await cp?.stop()
  })

  test('json: ports with their mode and deciding policy, outbound TLS, the policies that apply', async () => {
    const r = await cp.loom(['describe', 'workload', 'db-v1', '-n', 'shop', '-o', 'json'])
    assert.equal(r.code, 0, r.stderr)
    const sec = JSON.parse(r.stdout) as Security
    assert.equal(sec.workload.serviceAccount, 'db')
    assert.deepEqual(
      sec.ports.map((p) => [p.servicePort, p.protocol, p.filter, p.mode, p.level, p.policy]),
      [
        [5432, 'TCP', 'tcp', 'DISABLE', 'port', 'shop/db-ports'],
        [8080, 'HTTP', 'http', 'STRICT', 'namespace', 'shop/default'],
      ],
    )
    assert.deepEqual(sec.outboundTls, [
      { host: 'api.shop.svc.cluster.local', subset: '', port: 0, mode: 'ISTIO_MUTUAL', rule: 'shop/api-tls' },
      { host: 'api.shop.svc.cluster.local', subset: '', port: 8443, mode: 'DISABLE', rule: 'shop/api-tls' },
    ])
    // in config order (the translator's)
    assert.deepEqual(sec.authorizationPolicies, [
      { name: 'audit-all', namespace: 'istio-system', action: 'DENY', dryRun: true },
      { name: 'db-allow', namespace: 'shop', action: 'ALLOW', httpOnlyRules: [1] },
    ])
    assert.deepEqual(sec.requestAuthentications, [{ name: 'jwt', namespace: 'shop' }])
  })

  test('table and yaml', async () => {
    const r = await cp.loom(['describe', 'workload', 'db-v1', '-n', 'shop'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^Workload: +db-v1$/m)
    assert.match(r.stdout, /^ {2}5432 +15432 +TCP +DISABLE +shop\/db-ports \(port\)$/m)
    assert.match(r.stdout, /^ {2}8080 +18080 +HTTP +STRICT +shop\/default \(namespace\)$/m)
    assert.match(r.stdout, /^ {2}api\.shop\.svc\.cluster\.local +- +\* +ISTIO_MUTUAL +shop\/api-tls$/m)
    assert.match(r.stdout, /^ {2}shop +db-allow +ALLOW +rules 1 read HTTP: on TCP ports left out$/m)
    assert.match(r.stdout, /^ {2}istio-system +audit-all +DENY +dry run \(not enforced\)$/m)
    assert.match(r.stdout, /^RequestAuthentications:\n {2}NAMESPACE +NAME\n {2}shop +jwt$/m)
    const y = await cp.loom(['describe', 'workload', 'db-v1', '-n', 'shop', '-o', 'yaml'])
    assert.equal(y.code, 0, y.stderr)
    assert.match(y.stdout, /^ {2}- servicePort: 5432$/m)
    assert.match(y.stdout, /^ {4}mode: DISABLE$/m)
  })

  test('a workload no policy names: the default mode, and the namespace-wide ones', async () => {
    const r = await cp.loom(['describe', 'workload', 'api-v1', '-n', 'shop'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^ {2}8443 +8443 +HTTP +STRICT +shop\/default \(namespace\)$/m)
    assert.doesNotMatch(r.stdout, /other-app|db-allow/)
    // no PeerAuthentication in its namespace: PERMISSIVE by default
    const del = await cp.loom(['delete', 'PeerAuthentication', 'default', '-n', 'shop'])
    assert.equal(del.code, 0, del.stderr)
    const j = await cp.loom(['describe', 'workload', 'api-v1', '-n', 'shop', '-o', 'json'])
    const sec = JSON.parse(j.stdout) as Security
    assert.deepEqual(sec.ports[0], {
      servicePort: 8443,
      workloadPort: 8443,
      protocol: 'HTTP',
      filter: 'http',
      mode: 'PERMISSIVE',
      level: 'default',
      policy: null,
    })
  })

  test('loom apply says a targetRefs policy is not applied, and which rules a TCP port leaves out', async () => {
    const file = writeTemp(
      'target.yaml',
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: w}]
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-get, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{to: [{operation: {paths: [/x]}}]}]
`,
    )
    const r = await cp.loom(['apply', '-f', file])
    assert.equal(r.code, 0, r.stderr)
    assert.match(
      r.stderr,
      /Warning: \[AuthorizationPolicy\/shop\/waypoint\] spec\.targetRefs: this policy is not applied: targetRef attaches it to a Gateway or Service, which Istio enforces only on waypoint proxies and Gateway API gateways/,
    )
    // db-v1 registered a TCP port (5432) of the service db
    assert.match(
      r.stderr,
      /Warning: \[AuthorizationPolicy\/shop\/db-get\] spec\.rules\[0\]: this rule reads HTTP requests \(paths\) and the policy applies to TCP ports \(db\.shop\.svc\.cluster\.local:5432\): there, the rule is left out/,
    )
  })

  test('an unknown workload: a clear error naming the ones there are', async () => {
    const r = await cp.loom(['describe', 'workload', 'nope', '-n', 'shop'])
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /workload shop\/nope is not registered; workloads: shop\/api-v1, shop\/db-v1/)
  })
})
