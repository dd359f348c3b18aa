/**
 * AuthorizationPolicy end to end: `loom control`, a sidecar whose inbound listener fronts a real backend, and
 * requests sent straight to that listener (plain text, as from a caller outside the mesh). Policies are applied
 * with `loom apply` and take effect over xDS: allow-nothing denies everything with Istio's 403, an ALLOW admits
 * only what it names, a DENY wins over an ALLOW, and a path DENY holds for every spelling the connection manager
 * normalizes (BASE by default; `//admin` only with MERGE_SLASHES, as in Istio).
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { stat, writeTemp } from './helpers/proxy.js'
import { type Backend, freePort, rawExchange, startBackend } from './helpers/servers.js'

interface Reply {
  status: number
  reason: string
  body: string
}

async function send(port: number, path: string, method = 'GET', headers: string[] = []): Promise<Reply> {
  const extra = headers.map((h) => `${h}\r\n`).join('')
  const { text } = await rawExchange(
    port,
    `${method} ${path} HTTP/1.1\r\nhost: productpage:9080\r\n${extra}connection: close\r\n\r\n`,
  )
  const [head = '', body = ''] = text.split('\r\n\r\n')
  const status = Number(head.split(' ')[1])
  const reason = /\r\nx-loom-reason: ([^\r]*)/i.exec(head)?.[1] ?? ''
  return { status, reason, body }
}

const policy = (name: string, spec: string) =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}, namespace: default}\nspec: ${spec}\n`

interface Mesh {
  cp: Control
  sidecar: Proc & { admin: string }
  /** the sidecar's inbound listener */
  inbound: number
}

describe('AuthorizationPolicy through loom control and a sidecar', () => {
  const procs: Proc[] = []
  let backend: Backend

  before(async () => {
    backend = await startBackend()
  })
  after(async () => {
    for (const p of procs.reverse()) await p.stop()
    await backend?.close()
  })

  /** A control plane with `args`, productpage registered with the sidecar's inbound port, and its sidecar. */
  async function mesh(args: string[] = []): Promise<Mesh> {
    const cp = await startControl(undefined, 0, args)
    procs.push(cp)
    const inbound = await freePort()
    const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name: 'productpage-v1',
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: inbound, servicePort: 9080 }],
        labels: { app: 'productpage', version: 'v1' },
        ttlSeconds: 600,
      }),
    })
    assert.equal(res.status, 200, await res.text())
    const sidecar = await startSidecar(cp.xds, { app: 'productpage', version: 'v1' }, await freePort(), [
      '--metadata',
      `APP_PORTS=9080:${backend.port}`,
    ])
    procs.push(sidecar)
    await eventually(async () => (await send(inbound, '/')).status === 200, 15000, 'the inbound listener')
    return { cp, sidecar, inbound }
  }

  async function apply(cp: Control, yaml: string): Promise<void> {
    const r = await cp.loom(['apply', '-f', writeTemp('authz.yaml', yaml)])
    assert.equal(r.code, 0, r.stderr)
  }

  async function until(m: Mesh, path: string, status: number, method = 'GET', headers: string[] = []) {
    await eventually(
      async () => (await send(m.inbound, path, method, headers)).status === status,
      15000,
      `${method} ${path} → ${status}`,
    )
  }

  let m: Mesh
  test('allow-nothing ({}) denies every request with 403 RBAC: access denied', async () => {
    m = await mesh()
    await apply(m.cp, policy('allow-nothing', '{}'))
    await until(m, '/productpage', 403)
    const seen = backend.requests.length
    for (const [path, method] of [
      ['/', 'GET'],
      ['/productpage', 'POST'],
      ['/x?y=1', 'DELETE'],
    ] as const) {
      const r = await send(m.inbound, path, method)
      assert.equal(r.status, 403, `${method} ${path}`)
      assert.equal(r.body.trimEnd(), 'RBAC: access denied')
      assert.equal(r.reason, 'rbac_access_denied_matched_policy[none]')
    }
    assert.equal(backend.requests.length, seen, 'nothing reached the backend')
    const denied = await stat(m.sidecar.admin, `http.inbound_0.0.0.0_${m.inbound}.rbac.denied`)
    assert.ok(denied >= 4, `rbac.denied ${denied}`)
  })

  test('an ALLOW for GET /productpage admits only that', async () => {
    await apply(
      m.cp,
      policy('productpage-get', '{rules: [{to: [{operation: {methods: [GET], paths: [/productpage]}}]}]}'),
    )
    await until(m, '/productpage', 200)
    assert.equal((await send(m.inbound, '/productpage?u=normal')).status, 200)
    assert.equal(backend.requests.at(-1)?.url, '/productpage?u=normal')
    assert.equal((await send(m.inbound, '/productpage', 'POST')).status, 403)
    assert.equal((await send(m.inbound, '/reviews')).status, 403)
    assert.equal((await send(m.inbound, '/productpage/x')).status, 403)
    const allowed = await stat(m.sidecar.admin, `http.inbound_0.0.0.0_${m.inbound}.rbac.allowed`)
    assert.ok(allowed >= 2, `rbac.allowed ${allowed}`)
  })

  test('a DENY on a header wins over the ALLOW', async () => {
    await apply(
      m.cp,
      policy('deny-header', "{action: DENY, rules: [{when: [{key: 'request.headers[x-block]', values: ['yes']}]}]}"),
    )
    await until(m, '/productpage', 403, 'GET', ['x-block: yes'])
    const r = await send(m.inbound, '/productpage', 'GET', ['x-block: yes'])
    assert.equal(r.reason, 'rbac_access_denied_matched_policy[ns[default]-policy[deny-header]-rule[0]]')
    assert.equal((await send(m.inbound, '/productpage', 'GET', ['x-block: no'])).status, 200)
    assert.equal((await send(m.inbound, '/productpage')).status, 200)
  })

  test('deleting the policies opens the workload again', async () => {
    for (const name of ['allow-nothing', 'productpage-get', 'deny-header']) {
      const r = await m.cp.loom(['delete', 'AuthorizationPolicy', name])
      assert.equal(r.code, 0, r.stderr)
    }
    await until(m, '/reviews', 200)
  })

  test('ports name the service port the sidecar serves, wherever it listens', async () => {
    await apply(m.cp, policy('by-port', "{rules: [{to: [{operation: {ports: ['9090']}}]}]}"))
    await until(m, '/', 403)
    await apply(m.cp, policy('by-port', "{rules: [{to: [{operation: {ports: ['9080']}}]}]}"))
    await until(m, '/', 200)
    const r = await m.cp.loom(['delete', 'AuthorizationPolicy', 'by-port'])
    assert.equal(r.code, 0, r.stderr)
  })

  const DENY_ADMIN = policy(
    'deny-admin',
    "{action: DENY, rules: [{to: [{operation: {paths: ['/admin', '/admin/*']}}]}]}",
  )

  test('a path DENY holds for every spelling BASE normalization gives the same path', async () => {
    await apply(m.cp, DENY_ADMIN)
    await until(m, '/admin', 403)
    const seen = backend.requests.length
    for (const path of [
      '/admin',
      '/admin/x',
      '/./admin',
      '/x/../admin',
      '/%61dmin',
      '/%61dmin/x?q=1',
      '/a/b/../../admin',
    ]) {
      assert.equal((await send(m.inbound, path)).status, 403, path)
    }
    assert.equal(backend.requests.length, seen, 'nothing reached the backend')
    // BASE keeps double slashes: `//admin` is another path, as in Istio (MERGE_SLASHES below closes it)
    assert.equal((await send(m.inbound, '//admin')).status, 200)
    assert.equal((await send(m.inbound, '/administrator')).status, 200)
  })

  test('with MERGE_SLASHES, //admin is /admin and denied too', async () => {
    const merged = await mesh(['--path-normalization', 'MERGE_SLASHES'])
    await apply(merged.cp, DENY_ADMIN)
    await until(merged, '/admin', 403)
    for (const path of ['//admin', '///admin//x', '/.//admin', '//%61dmin']) {
      assert.equal((await send(merged.inbound, path)).status, 403, path)
    }
    assert.equal((await send(merged.inbound, '/productpage')).status, 200)
  })
})
