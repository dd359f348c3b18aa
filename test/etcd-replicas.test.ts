/**
 * Several `loom control` replicas on one real 3-member etcd cluster, with real sidecars (`loom proxy --xds a,b`) in
 * front of real backends: the replicas share the CA root and the token key, serve the same versions for the same
 * config (a proxy that moves is pushed nothing it has), and proxies fail over when a replica drains or dies, serving
 * their config meanwhile. Each chaos test counts what was lost (failed requests, config, registrations): 0.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as http from 'node:http'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, spawnLoom, startControl, startSidecar } from './helpers/control.js'
import { ETCD_MISSING, type EtcdCluster, etcdBinary, startEtcdCluster } from './helpers/etcd.js'
import { stat } from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const SAMPLES = new URL('../../test/fixtures/istio', import.meta.url).pathname

interface Row {
  nodeId: string
  replica: string | null
  adminAddress: string | null
  synced: boolean
  perType: { typeUrl: string; ackedVersion?: string }[]
}

async function proxyStatus(cp: Control, local = false): Promise<Row[]> {
  const res = await fetch(`http://${cp.api}/api/v1/proxy-status${local ? '?local=true' : ''}`)
  assert.equal(res.status, 200)
  return (await res.json()) as Row[]
}

/** The row of the sidecar whose admin endpoint is `admin`, on `cp` (this replica's proxies only), or undefined. */
async function rowOf(cp: Control, admin: string): Promise<Row | undefined> {
  return (await proxyStatus(cp, true)).find((r) => r.adminAddress === admin)
}

function get(port: number, agent: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', headers: { host: 'reviews:9080' }, agent }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve(`${res.statusCode} ${body}`))
      })
      .on('error', reject)
  })
}

/** A steady request loop through a sidecar: every answer that is not a 200 from a backend is a failure. */
function requestLoop(port: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const counts = { ok: 0, failed: 0, errors: [] as string[], last: '' }
  let running = true
  const done = (async () => {
    while (running) {
      try {
        const r = await get(port, agent)
        counts.last = r
        if (r.startsWith('200 ')) counts.ok++
        else {
          counts.failed++
          counts.errors.push(r)
        }
      } catch (err) {
        counts.failed++
        counts.errors.push(String(err))
      }
      await new Promise((r) => setTimeout(r, 5))
    }
    agent.destroy()
  })()
  return {
    counts,
    async stop() {
      running = false
      await done
      return counts
    },
  }
}

async function register(cp: Control, name: string, version: string, port: number, ttlSeconds: number) {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
    method: 'POST',
    body: JSON.stringify({
      name,
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: port, servicePort: 9080 }],
      labels: { app: 'reviews', version },
      ttlSeconds,
    }),
  })
  assert.equal(res.status, 200, await res.text())
}

async function workloads(cp: Control): Promise<string[]> {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`)
  return ((await res.json()) as { id: string }[]).map((w) => w.id).sort()
}

const portOf = (addr: string) => Number(addr.slice(addr.lastIndexOf(':') + 1))

describe('loom control replicas on etcd', { skip: etcdBinary() === null ? ETCD_MISSING : false }, () => {
  let cluster: EtcdCluster
  const cps: Record<'a' | 'b', Control | null> = { a: null, b: null }
  const sidecars: (Proc & { admin: string; out: number })[] = []
  const backends: Backend[] = []
  const extra = (id: string) => [
    '--store',
    cluster.url,
    '--etcd-prefix',
    '/loom-replicas',
    '--telemetry-interval',
    'off',
    '--replica-id',
    id,
    // short-lived workload certificates: the identity test sees renewals within seconds
    '--cert-ttl',
    '6s',
  ]
  /** (re)starts replica `id`, on its previous data directory and xDS port when it ran before */
  const start = async (id: 'a' | 'b', prev: Control | null) => {
    cps[id] = await startControl(prev?.dataDir, prev === null ? 0 : portOf(prev.xds), extra(id))
    return cps[id]!
  }
  const a = () => cps.a!
  const b = () => cps.b!

  before(async () => {
    cluster = await startEtcdCluster()
    // the first replica makes the CA root and the token key; the second, started at the same time, loads them
    await Promise.all([start('a', null), start('b', null)])
    for (const v of ['v1', 'v3']) {
      const backend = await startBackend((_q, r) => r.end(v))
      backends.push(backend)
      await register(a(), `reviews-${v}`, v, backend.port, 600)
    }
    const applied = await a().loom(['apply', '-f', `${SAMPLES}/destination-rule-reviews.yaml`])
    assert.equal(applied.code, 0, applied.stderr)
    for (const [i, name] of ['productpage', 'ratings'].entries()) {
      const out = await freePort()
      const s = await startSidecar(`${a().xds},${b().xds}`, { app: name, version: `v${i + 1}` }, out)
      sidecars.push({ ...s, out })
    }
    const agent = new http.Agent()
    for (const s of sidecars)
      await eventually(async () => (await get(s.out, agent)).startsWith('200 '), 15000, 'the sidecar to route')
    agent.destroy()
  })
  after(async () => {
    for (const s of sidecars) await s.stop()
    await cps.a?.stop()
    await cps.b?.stop()
    await Promise.all(backends.map((x) => x.close()))
    await cluster?.stop()
  })

  test('replicas share the CA root and the token signing key, and elect one leader', async () => {
    const bundle = (cp: Control) => readFileSync(join(cp.dataDir, 'ca', 'trust-bundle.pem'), 'utf8')
    assert.match(bundle(a()), /BEGIN CERTIFICATE/)
    assert.equal(bundle(a()), bundle(b()), 'one trust bundle')
    const key = (cp: Control) => readFileSync(join(cp.dataDir, 'token-key'), 'utf8')
    assert.equal(key(a()), key(b()), 'one token key')
    const health = async (cp: Control) =>
      (await (await fetch(`http://${cp.api}/healthz`)).json()) as { replica: string; leader: boolean }
    await eventually(
      async () => [await health(a()), await health(b())].filter((h) => h.leader).length === 1,
      10000,
      'one leader',
    )
    assert.deepEqual([(await health(a())).replica, (await health(b())).replica], ['a', 'b'])
  })

  test('proxy-status on either replica shows every proxy and the replica it is on', async () => {
    for (const s of sidecars) await eventually(async () => (await rowOf(a(), s.admin))?.synced === true, 10000)
    for (const cp of [a(), b()]) {
      const rows = (await proxyStatus(cp)).filter((r) => sidecars.some((s) => s.admin === r.adminAddress))
      assert.deepEqual(
        rows.map((r) => r.replica),
        ['a', 'a'],
      )
    }
  })

  test('a proxy moved from replica A to B (A drains on SIGTERM) is pushed nothing for unchanged config', async () => {
    const s = sidecars[0]!
    await eventually(async () => (await rowOf(a(), s.admin))?.synced === true, 10000, 'synced on a')
    const before = await rowOf(a(), s.admin)
    const responses = await stat(s.admin, 'control_plane.responses')
    const connections = await stat(s.admin, 'control_plane.connections')
    const loop = requestLoop(s.out)
    const t0 = Date.now()
    assert.equal(await a().stop('SIGTERM'), 0, 'a drains and exits cleanly')
    await eventually(async () => (await rowOf(b(), s.admin))?.synced === true, 10000, 'the proxy to be on b')
    const moved = Date.now() - t0
    const after = await rowOf(b(), s.admin)
    // the versions are content hashes: b serves what a served, and the proxy, which says what it holds, is not
    // pushed any of it again
    const versions = (r: Row | undefined) => Object.fromEntries(r!.perType.map((t) => [t.typeUrl, t.ackedVersion]))
    assert.deepEqual(versions(after), versions(before))
    assert.equal(await stat(s.admin, 'control_plane.connections'), connections + 1, 'one new stream, to b')
    assert.equal(await stat(s.admin, 'control_plane.responses'), responses, 'no response: it had that config')
    const counts = await loop.stop()
    console.log(
      `drain: proxy on b ${moved} ms after SIGTERM to a; ${counts.ok} requests, ${counts.failed} failed; ` +
        `${types(before)} types resumed with 0 responses`,
    )
    assert.equal(counts.failed, 0, counts.errors.slice(0, 3).join('\n'))
    assert.ok(counts.ok > 0)
    await start('a', a())
  })

  test('kill -9 one of two control planes under traffic through sidecars', async () => {
    // every sidecar on b first (the one moved above stays there): then b is killed
    for (const s of sidecars) {
      if ((await rowOf(b(), s.admin)) === undefined) {
        await eventually(async () => (await rowOf(a(), s.admin))?.synced === true, 10000, 'synced on a')
      }
    }
    const onB = []
    for (const s of sidecars) if ((await rowOf(b(), s.admin)) !== undefined) onB.push(s)
    const victim = onB.length > 0 ? 'b' : 'a'
    const survivor = victim === 'b' ? 'a' : 'b'
    const loops = sidecars.map((s) => requestLoop(s.out))
    await new Promise((r) => setTimeout(r, 300))
    const t0 = Date.now()
    cps[victim]!.proc.kill('SIGKILL')
    await cps[victim]!.stop()
    for (const s of sidecars)
      await eventually(
        async () => (await rowOf(cps[survivor]!, s.admin))?.synced === true,
        10000,
        `every proxy on ${survivor}`,
      )
    const failedOver = Date.now() - t0
    // a config change applied right after reaches every proxy
    const applied = await cps[survivor]!.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-v3.yaml`])
    assert.equal(applied.code, 0, applied.stderr)
    const t1 = Date.now()
    const agent = new http.Agent()
    for (const s of sidecars) {
      await eventually(
        async () => {
          for (let i = 0; i < 4; i++) if ((await get(s.out, agent)) !== '200 v3') return false
          return true
        },
        10000,
        'the change to reach the sidecar',
      )
    }
    agent.destroy()
    const converged = Date.now() - t1
    const counts = await Promise.all(loops.map((l) => l.stop()))
    const failed = counts.reduce((n, c) => n + c.failed, 0)
    const ok = counts.reduce((n, c) => n + c.ok, 0)
    console.log(
      `kill -9 ${victim}: ${sidecars.length} proxies on ${survivor} after ${failedOver} ms; ` +
        `change applied on ${survivor} served by every proxy after ${converged} ms; ${ok} requests, ${failed} failed`,
    )
    assert.equal(failed, 0, counts.flatMap((c) => c.errors.slice(0, 3)).join('\n'))
    assert.ok(failedOver < 5000, `failed over within a few seconds (${failedOver} ms)`)
    await start(victim, cps[victim])
  })

  test('stop all control planes, restart them: no config and no live registration lost', async () => {
    // a live registration: a lease of its own, heartbeats to whichever replica answers. Its TTL is what an outage
    // may last and lose nothing: stopping and starting two replicas has taken over 8 s on a loaded 2-core machine
    const ttl = 30
    const live = await startBackend((_q, r) => r.end('live'))
    backends.push(live)
    await register(b(), 'reviews-live', 'live', live.port, ttl)
    let beating = true
    const beats = (async () => {
      while (beating) {
        for (const cp of [cps.a, cps.b]) {
          try {
            await fetch(`http://${cp!.api}/api/v1/workloads/default/reviews-live/heartbeat`, {
              method: 'POST',
              signal: AbortSignal.timeout(1000),
            })
            break
          } catch {
            // down: the next one
          }
        }
        await new Promise((r) => setTimeout(r, 500))
      }
    })()
    const resources = async (cp: Control) => {
      let out = ''
      for (const kind of ['vs', 'dr']) {
        const got = await cp.loom(['get', kind, '-o', 'json'])
        assert.equal(got.code, 0, got.stderr)
        out += got.stdout
      }
      assert.match(out, /"reviews"/)
      return out
    }
    await eventually(async () => (await workloads(a())).includes('default/reviews-live'), 5000, 'a to see it')
    const config = await resources(a())
    const registered = await workloads(a())
    const loops = sidecars.map((s) => requestLoop(s.out))
    const t0 = Date.now()
    await Promise.all([a().stop(), b().stop()])
    // no control plane at all: the proxies serve their last config
    await new Promise((r) => setTimeout(r, 1000))
    await Promise.all([start('a', a()), start('b', b())])
    const down = Date.now() - t0
    for (const cp of [a(), b()]) {
      assert.equal(await resources(cp), config, 'the config is as it was')
      assert.deepEqual(await workloads(cp), registered, `every registration is there (down ${down} ms, TTL ${ttl} s)`)
    }
    for (const s of sidecars)
      await eventually(
        async () => (await proxyStatus(a())).some((r) => r.adminAddress === s.admin && r.synced),
        10000,
        'every proxy back on a replica',
      )
    const counts = await Promise.all(loops.map((l) => l.stop()))
    beating = false
    await beats
    const failed = counts.reduce((n, c) => n + c.failed, 0)
    console.log(
      `all replicas down for ${down} ms: ${registered.length} registrations and the config kept; ` +
        `${counts.reduce((n, c) => n + c.ok, 0)} requests meanwhile, ${failed} failed`,
    )
    assert.equal(failed, 0, counts.flatMap((c) => c.errors.slice(0, 3)).join('\n'))
  })

  test('a token made on one replica gets a certificate from the other; renewals go on when that one dies', async () => {
    const made = await a().loom(['token', 'create', '--namespace', 'shop', '--service-account', 'reviews'])
    assert.equal(made.code, 0, made.stderr)
    const dir = mkdtempSync(join(tmpdir(), 'loom-replica-id-'))
    const file = join(dir, 'token')
    writeFileSync(file, `${made.stdout.trim()}\n`, { mode: 0o600 })
    // b first: the token (signed with the key a published) is checked there
    const proxy = await spawnLoom([
      'proxy',
      '--xds',
      `${b().xds},${a().xds}`,
      '--admin',
      '127.0.0.1:0',
      '--namespace',
      'shop',
      '--service-account',
      'reviews',
      '--identity-token-file',
      file,
    ])
    try {
      const admin = String(proxy.ready.admin)
      const identity = async () =>
        ((await (await fetch(`http://${admin}/certs`)).json()) as { identity?: { serial_number: string } | null })
          .identity ?? null
      await eventually(async () => (await identity()) !== null, 15000, 'the first certificate')
      const first = (await identity())!.serial_number
      b().proc.kill('SIGKILL')
      await b().stop()
      // the renewal (at half the 6 s lifetime) finds b gone and asks a, which verifies the chain b issued
      const serials = new Set([first])
      await eventually(
        async () => {
          serials.add((await identity())!.serial_number)
          return serials.size >= 3
        },
        20000,
        'two renewals after b died',
      )
      assert.match(proxy.stderr(), /"msg":"certificate renewed".*"via":"certificate"/)
      assert.equal(proxy.proc.exitCode, null)
    } finally {
      await proxy.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

function types(r: Row | undefined): number {
  return r?.perType.length ?? 0
}
