/**
 * Istio's authentication-policy task (tasks/security/authentication/authn-policy) end to end on a `loom up` mesh:
 * sleep and httpbin in foo and bar with sidecars and in legacy without; each sleep calls each httpbin after each
 * step, and the matrix of answers is the task's. A sleep with a sidecar sends through it (automatic mTLS to
 * httpbins with sidecars, plain text to legacy); sleep.legacy dials the httpbin's port in plain text.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { apply, curl, fixture, readMesh, remove, type UpMesh, workload } from './helpers/istio-task.js'
import { startUp } from './helpers/up.js'

const NAMESPACES = ['foo', 'bar', 'legacy'] as const
type Ns = (typeof NAMESPACES)[number]
/** `from→to` → expected status (0: the connection fails, curl's `000`) */
type Matrix = Record<string, number>

/** Every pair 200, but those listed. */
function expect(failing: Record<string, number> = {}): Matrix {
  const m: Matrix = {}
  for (const from of NAMESPACES) for (const to of NAMESPACES) m[`${from}→${to}`] = 200
  return { ...m, ...failing }
}

async function matrix(mesh: UpMesh): Promise<Matrix> {
  const m: Matrix = {}
  await Promise.all(
    NAMESPACES.flatMap((from) =>
      NAMESPACES.map(async (to) => {
        const r = await curl(
          mesh,
          workload(mesh, 'sleep', from),
          { service: 'httpbin', namespace: to, port: 8000 },
          '/ip',
        )
        m[`${from}→${to}`] = r.status
      }),
    ),
  )
  return m
}

/** Waits until every sleep→httpbin answer is the expected one (config reaches the proxies asynchronously). */
async function settles(mesh: UpMesh, step: string, want: Matrix): Promise<void> {
  let last: Matrix = {}
  await eventually(
    async () => {
      last = await matrix(mesh)
      return Object.keys(want).every((k) => last[k] === want[k])
    },
    30_000,
    step,
  ).catch((err: Error) => {
    const differ = Object.keys(want).filter((k) => last[k] !== want[k])
    throw new Error(`${err.message}: ${differ.map((k) => `${k} ${last[k]} (want ${want[k]})`).join(', ')}`)
  })
}

/** The X-Forwarded-Client-Cert httpbin in `to` sees from sleep in `from` ('' for none). */
async function xfcc(mesh: UpMesh, from: Ns, to: Ns): Promise<string> {
  const r = await curl(
    mesh,
    workload(mesh, 'sleep', from),
    { service: 'httpbin', namespace: to, port: 8000 },
    '/headers',
  )
  assert.equal(r.status, 200, r.body)
  return (JSON.parse(r.body) as { headers: Record<string, string> }).headers['X-Forwarded-Client-Cert'] ?? ''
}

test("Istio's authentication policy task: PERMISSIVE, mesh, namespace, workload and port STRICT, overrides", {
  timeout: 420_000,
}, async (t) => {
  const up = await startUp('istio-peer-authn', 240_000)
  t.after(() => up.stop())
  const mesh = readMesh(up.dataDir)
  assert.equal(workload(mesh, 'httpbin', 'legacy').sidecar, false)
  assert.equal(workload(mesh, 'sleep', 'legacy').sidecar, false)

  // setup: everything answers; foo and bar speak mTLS to each other (httpbin sees the caller's identity), plain
  // text to legacy
  await settles(mesh, 'setup (PERMISSIVE)', expect())
  assert.match(await xfcc(mesh, 'foo', 'bar'), /URI=spiffe:\/\/cluster\.local\/ns\/foo\/sa\/sleep/)
  assert.equal(await xfcc(mesh, 'foo', 'legacy'), '')
  assert.equal(await xfcc(mesh, 'legacy', 'foo'), '')

  // mesh-wide STRICT: plain text from sleep.legacy is refused by foo and bar; legacy itself still answers anyone
  await apply(mesh, fixture('peer-authentication-mesh-strict.yaml'))
  await settles(mesh, 'mesh STRICT', expect({ 'legacy→foo': 0, 'legacy→bar': 0 }))
  await remove(mesh, fixture('peer-authentication-mesh-strict.yaml'))
  await settles(mesh, 'mesh STRICT removed', expect())

  // namespace foo STRICT: only sleep.legacy → httpbin.foo fails
  await apply(mesh, fixture('peer-authentication-namespace-foo-strict.yaml'))
  await settles(mesh, 'namespace foo STRICT', expect({ 'legacy→foo': 0 }))

  // workload httpbin.bar STRICT (and the task's DestinationRule: clients send it mTLS)
  await apply(mesh, fixture('peer-authentication-workload-httpbin-bar-strict.yaml'))
  await apply(mesh, fixture('destination-rule-httpbin-bar-istio-mutual.yaml'))
  await settles(mesh, 'workload httpbin.bar STRICT', expect({ 'legacy→foo': 0, 'legacy→bar': 0 }))

  // httpbin.bar STRICT but its workload port 80 DISABLE, and clients send its service port 8000 plain text
  await apply(mesh, fixture('peer-authentication-workload-httpbin-bar-port80-disable.yaml'))
  await apply(mesh, fixture('destination-rule-httpbin-bar-port8000-disable.yaml'))
  await settles(mesh, 'httpbin.bar port 80 DISABLE', expect({ 'legacy→foo': 0 }))
  assert.equal(await xfcc(mesh, 'foo', 'bar'), '', 'plain text to httpbin.bar:8000')

  // the workload policy overrides foo's namespace STRICT. Before the DestinationRule comes, automatic mTLS already
  // sends plain text to a port whose policy is DISABLE (as Istio's), so nothing breaks in between.
  await apply(mesh, fixture('peer-authentication-overwrite-example-foo-disable.yaml'))
  await settles(mesh, 'httpbin.foo DISABLE', expect())
  assert.equal(await xfcc(mesh, 'bar', 'foo'), '')
  await apply(mesh, fixture('destination-rule-overwrite-example-foo-disable.yaml'))
  await settles(mesh, 'httpbin.foo DISABLE with its DestinationRule', expect())

  // cleanup: back to PERMISSIVE and automatic mTLS
  for (const f of [
    'destination-rule-overwrite-example-foo-disable.yaml',
    'peer-authentication-overwrite-example-foo-disable.yaml',
    'destination-rule-httpbin-bar-port8000-disable.yaml',
    'peer-authentication-workload-httpbin-bar-port80-disable.yaml',
    'peer-authentication-namespace-foo-strict.yaml',
  ])
    await remove(mesh, fixture(f))
  await settles(mesh, 'cleanup', expect())
  assert.match(await xfcc(mesh, 'bar', 'foo'), /URI=spiffe:\/\/cluster\.local\/ns\/bar\/sa\/sleep/)
})
