/**
 * The dashboard's shell in a real browser (Debian's chromium through playwright-core) against a real `loom control`:
 * the page loads with its security headers and no console error, the pages are reachable from the top bar, and the
 * API refuses what a hostile page could try (another site's POST, a rebound Host name) while the CLI is unaffected.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import { type Browser, launchBrowser } from './helpers/browser.js'
import { type Control, startControl } from './helpers/control.js'

let cp: Control
let browser: Browser

before(async () => {
  cp = await startControl()
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await cp?.stop()
})

test('the dashboard is served with its security headers, and / leads to it', async () => {
  const r = await fetch(`http://${cp.api}/`, { redirect: 'manual' })
  assert.equal(r.status, 302)
  assert.equal(r.headers.get('location'), '/dashboard/')
  const page = await fetch(`http://${cp.api}/dashboard/`)
  assert.equal(page.status, 200)
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/)
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/)
  assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/)
  assert.equal(page.headers.get('x-frame-options'), 'DENY')
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff')
  const js = await fetch(`http://${cp.api}/dashboard/app.js`)
  assert.equal(js.status, 200)
  assert.match(js.headers.get('content-type') ?? '', /^text\/javascript/)
  assert.equal((await fetch(`http://${cp.api}/dashboard/../api/v1/services`)).status, 200) // normalized by URL
  assert.equal((await fetch(`http://${cp.api}/dashboard/nope.js`)).status, 404)
})

test('every page of the top bar opens in the browser without an error', async () => {
  const { page } = browser
  await page.goto(`http://${cp.api}/dashboard/`)
  await page.getByTestId('status').filter({ hasText: 'control plane up' }).waitFor()
  for (const name of ['Graph', 'Services', 'Config', 'Proxies', 'Live']) {
    await page.getByRole('link', { name, exact: true }).click()
    // the click's hashchange is handled in a task of its own: until the link is marked, the last page still stands
    await page
      .locator('nav a.active')
      .filter({ hasText: new RegExp(`^${name}$`) })
      .waitFor()
    await page.locator('main h1').first().waitFor()
    assert.equal(await page.locator('nav a.active').count(), 1)
  }
  await page.goto(`http://${cp.api}/dashboard/#/no/such/page`)
  await page.getByRole('heading', { name: 'Not found' }).waitFor()
  assert.deepEqual(browser.errors, [])
})

test("another site's page cannot change the mesh, and a rebound host name is refused", async () => {
  const manifest =
    'apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\n' +
    'spec: {hosts: [x.example.com], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}]}\n'
  // a page of another origin (another port on loopback) posts to the API from the real browser
  const other = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' })
    res.end('<!doctype html><title>other site</title>')
  })
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r))
  try {
    const { page } = browser
    await page.goto(`http://127.0.0.1:${(other.address() as AddressInfo).port}/`)
    const status = await page.evaluate(
      async ([url, body]) => {
        try {
          const r = await fetch(url!, { method: 'POST', body, headers: { 'content-type': 'text/plain' } })
          return r.status
        } catch {
          return -1 // refused by CORS after the server answered
        }
      },
      [`http://${cp.api}/api/v1/apply`, manifest],
    )
    assert.ok(status === -1 || status === 403, `status ${status}`)
  } finally {
    other.close()
  }
  const foreign = await fetch(`http://${cp.api}/api/v1/apply`, {
    method: 'POST',
    headers: { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
    body: manifest,
  })
  assert.equal(foreign.status, 403)
  assert.match(((await foreign.json()) as { error: { message: string } }).error.message, /another origin/)
  // DNS rebinding: the browser's request names the attacker's host
  const rebound = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const [host, port] = cp.api.split(':')
    http
      .get(
        {
          host,
          port,
          path: '/api/v1/services',
          headers: { host: 'attacker.example', 'sec-fetch-site': 'same-origin' },
        },
        (res) => {
          let body = ''
          res.on('data', (d) => (body += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        },
      )
      .on('error', reject)
  })
  assert.equal(rebound.status, 403)
  assert.match(rebound.body, /not this control plane/)
  // nothing was written; the CLI (neither header) is unaffected
  const got = await cp.loom(['get', 'serviceentry', '-o', 'json'])
  assert.equal(got.code, 0, got.stderr)
  assert.doesNotMatch(got.stdout, /x\.example\.com/)
})
