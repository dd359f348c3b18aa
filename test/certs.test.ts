/** `loom certs`: every sidecar's workload certificate and the trust bundle of a running `loom up` mesh. */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { type RunningUp, startUp } from './helpers/up.js'
import { runLoom } from './helpers/proxy.js'

interface CertsJson {
  trustDomain: string | null
  proxies: {
    workload: string
    kind: string
    spiffeId: string | null
    serialNumber: string | null
    issuer: string | null
    notAfter: string | null
    nextRenewal: string | null
    error: string | null
  }[]
  trustBundle: { subject: string; serialNumber: string; notAfter: string; trustedUntil: string | null }[] | null
}

const WANT: Record<string, string> = {
  reviews: 'spiffe://cluster.local/ns/shop/sa/bookinfo-reviews',
  plain: 'spiffe://cluster.local/ns/default/sa/default',
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

test('loom certs with no mesh running: a clear error and exit code 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-certs-none-'))
  for (const args of [
    ['certs', '--data-dir', dir],
    ['certs', '--data-dir', dir, '-o', 'json'],
  ]) {
    const r = await runLoom(args)
    assert.equal(r.code, 1)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^loom: no mesh is running \(no .*up\.json\); start one with 'loom up -f <dir>'/)
  }
  const bad = await runLoom(['certs', '--data-dir', dir, '-o', 'yaml'])
  assert.equal(bad.code, 1)
  assert.match(bad.stderr, /-o must be table or json, not "yaml"/)
})

test('loom certs after loom up died: every row and the trust bundle say what does not answer, exit code 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-certs-stale-'))
  const [admin, api] = [await closedPort(), await closedPort()]
  const gone = spawn(process.execPath, ['-e', ''])
  await new Promise((r) => gone.once('exit', r))
  const workload = { name: 'reviews', namespace: 'shop', adminPort: admin, identityTokenFile: join(dir, 't') }
  writeFileSync(
    join(dir, 'up.json'),
    JSON.stringify({ pid: gone.pid, dataDir: dir, api: `127.0.0.1:${api}`, workloads: [workload], gateways: [] }),
  )
  const r = await runLoom(['certs', '--data-dir', dir])
  assert.equal(r.code, 1)
  assert.match(r.stderr, new RegExp(`the loom up of .* \\(pid ${gone.pid}\\) is not running; 'loom down --data-dir`))
  assert.match(r.stdout, new RegExp(`\nreviews +- the proxy's admin endpoint 127\\.0\\.0\\.1:${admin} does not answer`))
  assert.match(
    r.stdout,
    new RegExp(`\nTrust bundle: the control plane at 127\\.0\\.0\\.1:${api} does not answer \\(ECONNREFUSED\\)`),
  )
})

describe('loom certs on a running mesh', { timeout: 240_000 }, () => {
  let up: RunningUp
  let dataDir = ''

  before(async () => {
    up = await startUp('up-identity', 150_000)
    dataDir = up.dataDir
  })
  after(() => up?.stop())

  test('-o json: each sidecar with the SPIFFE ID of its service account, a future expiry, the root', async () => {
    let body: CertsJson | null = null
    let last = ''
    // "up" means every proxy has its config; the first certificates may arrive a moment later
    await eventually(
      async () => {
        const r = await runLoom(['certs', '--data-dir', dataDir, '-o', 'json'])
        last = `exit ${r.code}\n${r.stdout}${r.stderr}`
        if (r.code === 0) body = JSON.parse(r.stdout) as CertsJson
        else await new Promise((res) => setTimeout(res, 250))
        return r.code === 0
      },
      60_000,
      'loom certs -o json to find every certificate',
    ).catch((err: Error) => assert.fail(`${err.message}; last: ${last}`))
    const b = body! as CertsJson
    assert.equal(b.trustDomain, 'cluster.local')
    assert.deepEqual(b.proxies.map((p) => p.workload).sort(), Object.keys(WANT).sort())
    const now = Date.now()
    for (const p of b.proxies) {
      assert.equal(p.kind, 'sidecar')
      assert.equal(p.error, null)
      assert.equal(p.spiffeId, WANT[p.workload])
      assert.match(p.serialNumber!, /^[0-9a-f]+$/)
      assert.ok(Date.parse(p.notAfter!) > now, `${p.workload}: not after ${p.notAfter} is in the future`)
      assert.ok(Date.parse(p.nextRenewal!) > now, `${p.workload}: next renewal ${p.nextRenewal}`)
      assert.ok(Date.parse(p.nextRenewal!) < Date.parse(p.notAfter!), 'renewed before it expires')
      assert.ok(p.issuer !== null && p.issuer !== '', 'the issuer is named')
    }
    assert.equal(b.trustBundle!.length, 1)
    const root = b.trustBundle![0]!
    assert.equal(root.trustedUntil, null)
    assert.ok(Date.parse(root.notAfter) > now)
    assert.equal(b.proxies[0]!.issuer, root.subject, 'the generated root signs the leaves')
  })

  test('table: one row per sidecar with its SPIFFE ID and expiry, then the trust bundle', async () => {
    const r = await runLoom(['certs', '--data-dir', dataDir])
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.split('\n')
    assert.match(lines[0]!, /^WORKLOAD\s+SPIFFE ID\s+SERIAL\s+ISSUER\s+NOT AFTER\s+NEXT RENEWAL$/)
    for (const [w, id] of Object.entries(WANT)) {
      const row = lines.find((l) => l.startsWith(`${w} `))
      assert.ok(row !== undefined, `a row for ${w}:\n${r.stdout}`)
      assert.ok(row.includes(id), row)
      assert.match(row, /\d{4}-\d\d-\d\dT[\d:.]+Z \(in \d+/, 'the expiry and how long from now')
    }
    assert.match(r.stdout, /\nTrust bundle \(cluster\.local, 1 root\):\n {2}SUBJECT\s+SERIAL\s+NOT AFTER\s+TRUSTED\n/)
    assert.match(r.stdout, /active \(signs\)\n$/)
  })

  test('a proxy that does not answer: its row says so, the others are printed, exit code 1', async () => {
    const state = JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as {
      workloads: { name: string; adminPort: number }[]
    }
    const dead = state.workloads.find((w) => w.name === 'plain')!
    dead.adminPort = await closedPort()
    const other = join(mkdtempSync(join(tmpdir(), 'loom-certs-copy-')), 'mesh')
    mkdirSync(other)
    writeFileSync(join(other, 'up.json'), JSON.stringify(state))

    const t = await runLoom(['certs', '--data-dir', other])
    assert.equal(t.code, 1)
    const row = t.stdout.split('\n').find((l) => l.startsWith('plain '))!
    assert.match(row, /does not answer \(ECONNREFUSED\)/)
    assert.ok(row.includes(`127.0.0.1:${dead.adminPort}`), row)
    assert.ok(t.stdout.includes(WANT.reviews!), 'the other sidecar is still printed')
    assert.match(t.stdout, /Trust bundle \(cluster\.local, 1 root\)/)

    const j = await runLoom(['certs', '--data-dir', other, '-o', 'json'])
    assert.equal(j.code, 1)
    const body = JSON.parse(j.stdout) as CertsJson
    const plain = body.proxies.find((p) => p.workload === 'plain')!
    assert.equal(plain.spiffeId, null)
    assert.match(plain.error!, /the proxy's admin endpoint 127\.0\.0\.1:\d+ does not answer/)
    assert.equal(body.proxies.find((p) => p.workload === 'reviews')!.spiffeId, WANT.reviews)
  })
})
