/**
 * `loom demo` end to end, as a user runs it: Bookinfo's processes, each behind its own sidecar, an ingress gateway,
 * the control plane; then routing rules applied with `loom apply` change what the product page shows. Also: a
 * crashed application is restarted, and a dead sidecar is not bypassed.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type ChildProcess, spawn } from 'node:child_process'
import { eventually } from './helpers/control.js'
import { LOOM, ROOT, runLoom, writeTemp } from './helpers/proxy.js'

const NET = join(ROOT, 'examples', 'bookinfo', 'networking')
const FIXTURES = join(ROOT, 'test', 'fixtures', 'istio')

/** Istio's request-timeouts task, step 1: reviews to v2 (which calls ratings). */
const REVIEWS_V2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
`
/** Step 2: every call to ratings held 2 s. */
const RATINGS_DELAY_2S = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
`
const REVIEWS_UNAVAILABLE = 'Sorry, product reviews are currently unavailable for this book.'

type Version = 'v1' | 'v2' | 'v3' | 'error'

/** Which reviews version rendered the product page: no stars (v1), black (v2) or red (v3). */
function versionOf(html: string): Version {
  if (html.includes('text-red-500')) return 'v3'
  if (html.includes('text-black-500')) return 'v2'
  if (html.includes('Reviewer1')) return 'v1'
  return 'error'
}

describe('loom demo', { timeout: 180_000 }, () => {
  let demo: ChildProcess
  let stderr = ''
  let page: string
  let api: string
  let dataDir: string
  let cookie = ''

  const loom = (args: string[]) => runLoom([...args, '--server', api])
  const fetchPage = async (withCookie = false): Promise<{ status: number; html: string }> => {
    const r = await fetch(page, withCookie ? { headers: { cookie } } : {})
    return { status: r.status, html: await r.text() }
  }
  const versions = async (n: number, withCookie = false): Promise<Map<Version, number>> => {
    const out = new Map<Version, number>()
    for (let i = 0; i < n; i++) {
      const v = versionOf((await fetchPage(withCookie)).html)
      out.set(v, (out.get(v) ?? 0) + 1)
    }
    return out
  }

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'loom-demo-'))
    demo = spawn(process.execPath, [LOOM, 'demo', '--data-dir', dataDir, '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const reap = () => demo.kill('SIGKILL')
    process.once('exit', reap)
    demo.stderr!.on('data', (d) => (stderr += d))
  })
  after(async () => {
    if (demo.exitCode !== null) return
    const exited = new Promise((r) => demo.once('exit', r))
    demo.kill('SIGINT')
    await exited
  })

  test('starts and prints the product page URL', async () => {
    // the demo prints a JSON line with its URLs on stdout when everything is up
    const line = await new Promise<string>((resolve, reject) => {
      let out = ''
      const t = setTimeout(() => reject(new Error(`no demo line:\n${stderr}`)), 60_000)
      demo.stdout!.on('data', (d: Buffer) => {
        out += d
        const m = /\{"msg":"demo".*\}/.exec(out)
        if (m !== null) {
          clearTimeout(t)
          resolve(m[0])
        }
      })
      demo.once('exit', (code) => reject(new Error(`loom demo exited with ${code}:\n${stderr}`)))
    })
    const info = JSON.parse(line) as { productpage: string; api: string }
    page = info.productpage
    api = info.api
    await eventually(async () => (await fetchPage()).status === 200, 15_000, 'the product page')
    const r = await fetchPage()
    assert.equal(r.status, 200)
    assert.match(r.html, /<title>Simple Bookstore App<\/title>/)
    assert.match(r.html, /Reviews served by: reviews-v\d/)
  })

  test('with no routing rules, reviews answers from v1, v2 and v3', async () => {
    const seen = await versions(30)
    assert.deepEqual([...seen.keys()].sort(), ['v1', 'v2', 'v3'])
  })

  test('logging in sets the session', async () => {
    const r = await fetch(page.replace('/productpage', '/login'), {
      method: 'POST',
      body: 'username=jason&passwd=password',
      headers: { 'content-type': 'application/x-www-form-urlencoded', referer: page },
      redirect: 'manual',
    })
    assert.equal(r.status, 302)
    cookie = (r.headers.get('set-cookie') ?? '').split(';')[0]!
    assert.ok(cookie.length > 0)
    assert.match((await fetchPage(true)).html, /jason/)
  })

  test('a VirtualService pinning reviews to v1 applies to the product page', async () => {
    assert.equal((await loom(['apply', '-f', join(NET, 'destination-rule-all.yaml')])).code, 0)
    const r = await loom(['apply', '-f', join(NET, 'virtual-service-reviews-v1.yaml')])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => (await versions(6)).size === 1, 10_000, 'v1 only')
    assert.deepEqual([...(await versions(15)).keys()], ['v1'])
  })

  test('a header match sends jason to v2 and everyone else to v1', async () => {
    const r = await loom(['apply', '-f', join(NET, 'virtual-service-reviews-jason-v2.yaml')])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => versionOf((await fetchPage(true)).html) === 'v2', 10_000, 'jason → v2')
    assert.deepEqual([...(await versions(10, true)).keys()], ['v2'])
    assert.deepEqual([...(await versions(10)).keys()], ['v1'])
  })

  test('an 80/20 split is within tolerance over 500 requests', async () => {
    const r = await loom(['apply', '-f', join(NET, 'virtual-service-reviews-80-20.yaml')])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => (await versions(10)).has('v2'), 10_000, 'the split')
    const seen = await versions(500)
    const v1 = (seen.get('v1') ?? 0) / 500
    assert.deepEqual([...seen.keys()].sort(), ['v1', 'v2'])
    assert.ok(v1 > 0.74 && v1 < 0.86, `v1 share ${v1}`)
  })

  test('describe, proxy-config, status and logs show the running mesh', async () => {
    const d = await loom(['describe', 'service', 'reviews'])
    assert.equal(d.code, 0, d.stderr)
    assert.match(d.stdout, /Service: +reviews\.default\.svc\.cluster\.local/)
    assert.equal((d.stdout.match(/HEALTHY/g) ?? []).length, 3)
    assert.match(d.stdout, /subset v2 \(version=v2\): 1 endpoint\(s\), 1 healthy/)
    assert.match(d.stdout, /VirtualService default\/reviews/)
    const clusters = await runLoom(['proxy-config', 'clusters', 'productpage-v1', '--data-dir', dataDir])
    assert.equal(clusters.code, 0, clusters.stderr)
    assert.match(clusters.stdout, /outbound\|9080\|v2\|reviews\.default\.svc\.cluster\.local +EDS/)
    const routes = await runLoom(['proxy-config', 'routes', 'productpage-v1', '--data-dir', dataDir])
    assert.match(
      routes.stdout,
      /outbound\|9080\|v1\|reviews\.default\.svc\.cluster\.local 80, outbound\|9080\|v2\|reviews\.default\.svc\.cluster\.local 20/,
    )
    const eps = await runLoom(['proxy-config', 'endpoints', 'productpage-v1', '--data-dir', dataDir, '-o', 'json'])
    assert.match(eps.stdout, /"cluster_statuses"/)
    const st = await runLoom(['status', '--data-dir', dataDir])
    // six sidecars and the gateway
    assert.equal((st.stdout.match(/SYNCED/g) ?? []).length, 7, st.stdout)
    assert.match(st.stdout, /^ingressgateway\s+running \(\d+\)\s+SYNCED\s+8080→\d+, admin \d+$/m)
    const logs = await runLoom(['logs', 'productpage-v1', '--data-dir', dataDir])
    assert.match(logs.stdout, /GET \/productpage/)
  })

  test('deleting the rules restores every version', async () => {
    assert.equal((await loom(['delete', 'vs', 'reviews'])).code, 0)
    await eventually(async () => (await versions(20)).size === 3, 10_000, 'v1, v2 and v3 again')
  })

  test("Istio's request-timeouts task: a 2 s ratings delay, then a 0.5 s reviews timeout", async () => {
    const timed = async (): Promise<{ ms: number; html: string }> => {
      const t0 = performance.now()
      const { html } = await fetchPage()
      return { ms: performance.now() - t0, html }
    }
    const apply = async (...files: string[]) => {
      const r = await loom(['apply', ...files.flatMap((f) => ['-f', f])])
      assert.equal(r.code, 0, r.stderr)
    }
    const allV1 = join(FIXTURES, 'virtual-service-all-v1.yaml')
    await apply(allV1)
    await apply(writeTemp('reviews-v2.yaml', REVIEWS_V2), writeTemp('ratings-delay.yaml', RATINGS_DELAY_2S))
    // the page works (v2's black stars) but takes the 2 s delay
    await eventually(
      async () => {
        const p = await timed()
        return p.ms > 1900 && versionOf(p.html) === 'v2'
      },
      15_000,
      'reviews v2 with the 2 s ratings delay',
    )
    const slow = await timed()
    assert.equal(versionOf(slow.html), 'v2')
    assert.ok(slow.ms > 1900 && slow.ms < 3500, `${slow.ms} ms with the delay`)
    // reviews times out after 0.5 s at productpage's sidecar; productpage tries reviews twice: about 1 s
    await apply(join(FIXTURES, 'request-timeouts-reviews-timeout-0.5s.yaml'))
    await eventually(async () => (await timed()).html.includes(REVIEWS_UNAVAILABLE), 10_000, 'the reviews timeout')
    const pages = [await timed(), await timed(), await timed()]
    for (const p of pages) {
      assert.ok(p.html.includes(REVIEWS_UNAVAILABLE))
      assert.ok(p.ms > 950, `${p.ms} ms: two half-second timeouts take at least 1 s`)
    }
    const fastest = Math.min(...pages.map((p) => p.ms))
    assert.ok(fastest < 1800, `${fastest} ms with the timeout, not the 2 s delay`)
    const routes = await runLoom(['proxy-config', 'routes', 'productpage-v1', '--data-dir', dataDir, '-o', 'json'])
    assert.match(routes.stdout, /"timeout": "0\.5s"/)
    assert.equal((await loom(['delete', '-f', allV1])).code, 0)
  })

  test('a killed application is restarted and traffic recovers', async () => {
    const status = JSON.parse((await runLoom(['status', '--data-dir', dataDir, '-o', 'json'])).stdout) as {
      workloads: { name: string; appPid: number }[]
    }
    const pp = status.workloads.find((w) => w.name === 'productpage-v1')!
    process.kill(pp.appPid, 'SIGKILL')
    await eventually(async () => (await fetchPage()).status === 200, 15_000, 'the product page to come back')
    const after = JSON.parse((await runLoom(['status', '--data-dir', dataDir, '-o', 'json'])).stdout) as {
      workloads: { name: string; appPid: number }[]
    }
    assert.notEqual(after.workloads.find((w) => w.name === 'productpage-v1')!.appPid, pp.appPid)
  })

  test('a killed sidecar is not bypassed, and is restarted', async () => {
    const status = JSON.parse((await runLoom(['status', '--data-dir', dataDir, '-o', 'json'])).stdout) as {
      workloads: { name: string; sidecarPid: number }[]
    }
    const pp = status.workloads.find((w) => w.name === 'productpage-v1')!
    process.kill(pp.sidecarPid, 'SIGKILL')
    // with productpage's sidecar gone, the gateway cannot reach productpage: no path around the sidecar
    const down = await fetchPage()
    assert.notEqual(down.status, 200)
    await eventually(async () => (await fetchPage()).status === 200, 20_000, 'the sidecar to be restarted')
  })
})
