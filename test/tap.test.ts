/**
 * `loom tap` through the Bookinfo mesh of `loom up`, as a user runs it: with reviews pinned to v2, each product page
 * load makes exactly one request into reviews-v2 (from productpage) and one out of it (to ratings). A tap on
 * reviews-v2 sees those, with the identities mTLS gives, and stops after `--max`; its filters keep the rest out.
 * The mesh runs without access logs: the tap works from the proxies alone.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readState, type UpState } from '../src/runtime/up.js'
import { eventually } from './helpers/control.js'
import { LOOM, ROOT, runLoom, writeTemp } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const NET = join(ROOT, 'examples', 'bookinfo', 'networking')
const REVIEWS_V2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
`
const ID = (sa: string) => `spiffe://cluster.local/ns/default/sa/${sa}`

interface Tap {
  proc: ChildProcess
  stdout: () => string
  stderr: () => string
  exited: Promise<number | null>
}

describe('loom tap', { timeout: 240_000 }, () => {
  let up: RunningUp
  let state: UpState
  let page: string
  const taps: Tap[] = []

  /** Starts `loom tap` and resolves once it is tapping (it says so on stderr). */
  const tap = async (args: string[]): Promise<Tap> => {
    const proc = spawn(process.execPath, [LOOM, 'tap', ...args, '--server', state.api], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    proc.stdout!.on('data', (d) => (out += d))
    proc.stderr!.on('data', (d) => (err += d))
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)))
    const t: Tap = { proc, stdout: () => out, stderr: () => err, exited }
    taps.push(t)
    await eventually(async () => err.includes('tapping') || proc.exitCode !== null, 20_000, `loom tap: ${err}`)
    assert.equal(proc.exitCode, null, err)
    return t
  }
  const load = async () => {
    const r = await fetch(page)
    const html = await r.text()
    assert.equal(r.status, 200)
    return html
  }

  before(async () => {
    up = await startUp(BOOKINFO, 150_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    for (const f of [join(NET, 'destination-rule-all.yaml'), writeTemp('reviews-v2.yaml', REVIEWS_V2)]) {
      const r = await runLoom(['apply', '-f', f, '--server', state.api])
      assert.equal(r.code, 0, r.stderr)
    }
    // v2 only: black stars on every load
    await eventually(
      async () => {
        for (let i = 0; i < 4; i++) if (!(await load()).includes('text-black-500')) return false
        return true
      },
      60_000,
      'reviews pinned to v2',
    )
  })
  after(async () => {
    for (const t of taps) if (t.proc.exitCode === null) t.proc.kill('SIGKILL')
    await up?.stop()
  })

  test('three page loads: three requests in from productpage, three out to ratings; then --max ends the tap', async () => {
    const t = await tap(['deploy/reviews-v2', '--method', 'GET', '--max', '6', '-o', 'json'])
    for (let i = 0; i < 3; i++) await load()
    assert.equal(await t.exited, 0, t.stderr())
    const lines = t
      .stdout()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.equal(lines.length, 6, t.stdout())
    const inbound = lines.filter((l) => l.direction === 'inbound')
    const outbound = lines.filter((l) => l.direction === 'outbound')
    assert.equal(inbound.length, 3)
    assert.equal(outbound.length, 3)
    for (const l of inbound) {
      assert.equal(l.type, 'request')
      assert.equal(l.method, 'GET')
      assert.equal(l.path, '/reviews/0')
      assert.equal(l.response_code, 200)
      assert.equal(l.source, ID('bookinfo-productpage'))
      assert.equal(l.destination, ID('bookinfo-reviews'))
      assert.equal(l.downstream_peer_principal, ID('bookinfo-productpage'))
      assert.equal(typeof l.duration, 'number')
      assert.ok((l.bytes_sent as number) > 0)
    }
    for (const l of outbound) {
      assert.equal(l.path, '/ratings/0')
      assert.equal(l.response_code, 200)
      assert.match(String(l.upstream_cluster), /^outbound\|9080\|[^|]*\|ratings\.default\.svc\.cluster\.local$/)
      assert.equal(l.source, ID('bookinfo-reviews'))
      assert.equal(l.destination, ID('bookinfo-ratings'))
      assert.equal(l.upstream_peer_principal, ID('bookinfo-ratings'))
    }
    // each inbound request was answered after its call to ratings: the request ids pair them up
    assert.deepEqual(
      inbound.map((l) => l.request_id).sort(),
      outbound.map((l) => l.request_id).sort(),
      'reviews forwards x-request-id to ratings',
    )
  })

  test('--to keeps only the calls to that service; the readable line has what a user reads', async () => {
    const t = await tap(['reviews-v2', '--to', 'ratings', '--max', '2'])
    await load()
    await load()
    assert.equal(await t.exited, 0, t.stderr())
    const lines = t.stdout().trim().split('\n')
    assert.equal(lines.length, 2, t.stdout())
    for (const l of lines)
      assert.match(
        l,
        /^\d\d:\d\d:\d\d\.\d{3} out GET {4}200 +[\d.]+m?s \d+B→\d+B +- +ratings:9080\/ratings\/0 ns\/default\/sa\/bookinfo-reviews → ns\/default\/sa\/bookinfo-ratings$/,
      )
  })

  test('a workload nobody runs is named with the ones that exist', async () => {
    const r = await runLoom(['tap', 'reviews-v9', '--server', state.api])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /no connected proxy for reviews-v9 in namespace default; proxies there: .*reviews-v2/)
  })
})
