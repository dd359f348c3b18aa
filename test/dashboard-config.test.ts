/**
 * The dashboard's Config page in a real browser: the Bookinfo demo's resources by kind with their status, a
 * VirtualService applied by the CLI appearing with its YAML and its `loom analyze` finding, and changes from the
 * page's editor: refused by `loom up`'s control plane (no token file: the dashboard is read-only) and by a read token,
 * applied with a write token on a `loom control --api-token-file` — and `loom get` shows what the page wrote.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readState, type UpState } from '../src/runtime/up.js'
import { type Browser, launchBrowser } from './helpers/browser.js'
import { type Control, startControl } from './helpers/control.js'
import { ROOT, runLoom } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const REVIEWS_V1 = join(ROOT, 'examples', 'bookinfo', 'networking', 'virtual-service-reviews-v1.yaml')
const WRITE = 'w-5d1e7c3a9b0f2e4d6c8a'
const READ = 'r-9c7e5a3b1d0f8e6c4a2b'

/** Chrome reports every 4xx answer of a fetch on the console: the refusals and the invalid edit here are expected. */
const unexpected = (errors: string[]) =>
  errors.filter((e) => !/Failed to load resource: the server responded with a status of (401|403|422)/.test(e))

describe('the Config page', { timeout: 150_000 }, () => {
  let up: RunningUp
  let state: UpState
  let cp: Control
  let browser: Browser
  const loom = async (args: string[], server = state.api) => {
    const r = await runLoom([...args, '--server', server], 30_000)
    assert.equal(r.code, 0, `loom ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  /** the editor's text (a textarea's value, which its text content does not follow) includes `text` */
  const editorHas = (text: string) =>
    browser.page.waitForFunction(
      (t) => (document.querySelector('[data-testid=editor]') as HTMLTextAreaElement | null)?.value.includes(t),
      text,
    )
  const vsSpec = async (name: string, server = state.api) =>
    (JSON.parse(await loom(['get', 'vs', name, '-o', 'json'], server)) as { spec: unknown }).spec

  before(async () => {
    const tokens = join(mkdtempSync(join(tmpdir(), 'loom-tokens-')), 'tokens')
    writeFileSync(tokens, `${WRITE} write\n${READ} read\n`)
    chmodSync(tokens, 0o600)
    ;[up, cp, browser] = await Promise.all([
      startUp(BOOKINFO, 120_000, ['--gateway-port', '0']),
      startControl(undefined, 0, ['--api-token-file', tokens]),
      launchBrowser(),
    ])
    state = readState(up.dataDir)!
  })

  after(async () => {
    await browser?.close()
    await Promise.all([cp?.stop(), up?.stop()])
  })

  test("lists the demo's resources by kind, valid, with every proxy's acceptance; the filter narrows it", async () => {
    const { page } = browser
    await page.goto(`http://${state.api}/dashboard/#/config`)
    const vs = page.locator('[data-testid=resource-row][data-key="VirtualService/default/bookinfo"]')
    // the first reading of a machine under load can be slow: more than playwright's default 30 s
    await vs.waitFor({ timeout: 60_000 })
    assert.equal(await vs.locator('td').nth(2).textContent(), '*')
    assert.equal(await vs.getByTestId('resource-status').textContent(), 'valid')
    const gw = page.locator('[data-testid=resource-row][data-key="Gateway/default/bookinfo-gateway"]')
    assert.equal(await gw.locator('td').nth(2).textContent(), 'istio=ingressgateway')
    const stored = (await (await fetch(`http://${state.api}/api/v1/resources`)).json()) as { items: unknown[] }
    assert.equal(await page.getByTestId('config-count').textContent(), `${stored.items.length} resources`)
    assert.deepEqual(
      await page.getByTestId('config-kind').evaluateAll((s) => s.map((e) => e.getAttribute('data-kind'))),
      ['Gateway', 'VirtualService'],
    )
    // six sidecars and the gateway, every one of them ACKed what it was sent
    await page
      .getByTestId('proxies-accepted')
      .filter({ hasText: 'every proxy (7) accepted the config' })
      .waitFor({ timeout: 60_000 })
    await page.getByTestId('config-filter').fill('ingressgateway')
    assert.equal(await page.getByTestId('resource-row').count(), 1)
    await page.getByTestId('config-filter').fill('no-such-thing')
    await page.getByTestId('config-empty').filter({ hasText: 'Nothing matches' }).waitFor()
    await page.getByTestId('config-filter').fill('')
    await page.getByTestId('resource-row').nth(1).waitFor()
  })

  test('a VirtualService the CLI applies appears, with its YAML and what loom analyze finds in it', async () => {
    const { page } = browser
    await loom(['apply', '-f', REVIEWS_V1])
    // the page reads again every 5 s: no reload
    const row = page.locator('[data-testid=resource-row][data-key="VirtualService/default/reviews"]')
    await row.waitFor({ timeout: 30_000 })
    // the demo has no DestinationRule: subset v1 is not defined
    assert.equal(await row.getByTestId('resource-status').textContent(), 'valid · analyze: 1 error')
    await browser.screenshot('dashboard-config')
    await row.getByRole('link', { name: 'reviews' }).click()
    const yaml = page.getByTestId('resource-yaml')
    await yaml.filter({ hasText: 'subset: v1' }).waitFor()
    const text = (await yaml.textContent()) ?? ''
    assert.match(text, /^kind: VirtualService$/m)
    assert.match(text, /^ {2}hosts:\n {4}- reviews$/m)
    assert.match(text, /destination:\n\s+host: reviews\n\s+subset: v1/)
    const finding = page.getByTestId('resource-warnings').getByTestId('diagnostic')
    assert.equal(await finding.count(), 1)
    assert.equal(
      await finding.textContent(),
      'Error spec.http[0].route[0].destination.subset: subset v1 of reviews.default.svc.cluster.local is not defined by any DestinationRule',
    )
    await browser.screenshot('dashboard-resource')
  })

  test("from the page, loom up's control plane refuses a change: the dashboard is read-only without a token file", async () => {
    const { page } = browser
    // no token: the editor is read-only and says why
    await page.getByTestId('read-only').filter({ hasText: 'read-only: enter an API token with write access' }).waitFor()
    assert.equal(await page.getByTestId('editor').getAttribute('readonly'), '')
    assert.equal(await page.getByTestId('apply').isDisabled(), true)
    // what the page would send, from the page: the server refuses it (the page's state is only a hint)
    const direct = await page.evaluate(
      async (body) => {
        const r = await fetch('/api/v1/apply', { method: 'POST', body })
        return { status: r.status, body: (await r.json()) as { error: { message: string } } }
      },
      await page.getByTestId('editor').inputValue(),
    )
    assert.equal(direct.status, 403)
    assert.match(direct.body.error.message, /^the dashboard is read-only: start loom control with --api-token-file/)
    // any token enables the editor here; the control plane, which has no token file, still refuses
    await page.getByTestId('token-input').fill('a-token-this-control-plane-has-no-file-for')
    await page.getByTestId('token-save').click()
    const editor = page.getByTestId('editor')
    await editor.fill((await editor.inputValue()).replace('subset: v1', 'subset: v3'))
    await page.getByTestId('dry-run').click()
    // a dry run writes nothing, so it is not refused: it shows what would be written
    await page.getByTestId('dry-run-done').waitFor()
    assert.equal(await page.getByTestId('apply-results').textContent(), 'VirtualService default/reviews configured')
    await page.getByTestId('apply').click()
    const refused = page.getByTestId('apply-refused')
    await refused.waitFor()
    assert.match((await refused.textContent()) ?? '', /^Apply refused \(403\): the dashboard is read-only/)
    assert.deepEqual(await vsSpec('reviews'), {
      hosts: ['reviews'],
      http: [{ route: [{ destination: { host: 'reviews', subset: 'v1' } }] }],
    })
    assert.deepEqual(unexpected(browser.errors), [])
  })

  test('with a token file: a read token is refused, a write token entered on the page applies the edit', async () => {
    const { page } = browser
    await runLoom(['apply', '-f', REVIEWS_V1, '--server', cp.api, '--token', WRITE]).then((r) =>
      assert.equal(r.code, 0, r.stderr),
    )
    await page.goto(`http://${cp.api}/dashboard/#/config/VirtualService/default/reviews`)
    const editor = page.getByTestId('editor')
    await editorHas('subset: v1')
    assert.match(await editor.inputValue(), /resourceVersion: '\d+'/)
    // another origin (another port): no token from the other tab's control plane
    await page.getByTestId('read-only').waitFor()
    const tryApply = async (token: string) => {
      await page.getByTestId('token-input').fill(token)
      await page.getByTestId('token-save').click()
      await editor.fill((await editor.inputValue()).replace(/subset: v\d/, 'subset: v2'))
      await page.getByTestId('dry-run').click()
      await page.getByTestId('dry-run-done').waitFor()
      await page.getByTestId('apply').click()
    }
    await tryApply(READ)
    const refused = page.getByTestId('apply-refused')
    await refused.waitFor()
    assert.equal(
      await refused.textContent(),
      'Apply refused (403): the API token has read access only: this change needs a token with write access',
    )
    assert.deepEqual((await vsSpec('reviews', cp.api)) as unknown, {
      hosts: ['reviews'],
      http: [{ route: [{ destination: { host: 'reviews', subset: 'v1' } }] }],
    })
    await page.getByTestId('token-forget').click()
    // an invalid edit: the dry run names the document and the field, and Apply stays off
    await page.getByTestId('token-input').fill(WRITE)
    await page.getByTestId('token-save').click()
    const valid = await editor.inputValue()
    await editor.fill(valid.replace(/( +)host: reviews\n/, '$1host: reviews\n$1port: { number: eighty }\n'))
    await page.getByTestId('dry-run').click()
    const invalid = page.getByTestId('apply-error')
    await invalid.waitFor()
    assert.equal(
      await invalid.textContent(),
      'document 0 (VirtualService reviews): spec.http[0].route[0].destination.port.number: wrong type: Expected number but received "eighty"',
    )
    assert.equal(await page.getByTestId('apply').isDisabled(), true)
    await editor.fill(valid)
    await page.getByTestId('token-forget').click()
    await tryApply(WRITE)
    await page.getByTestId('applied').waitFor()
    assert.match(
      (await page.getByTestId('apply-results').textContent()) ?? '',
      /^VirtualService default\/reviews configured \(resourceVersion \d+\)$/,
    )
    assert.deepEqual(await vsSpec('reviews', cp.api), {
      hosts: ['reviews'],
      http: [{ route: [{ destination: { host: 'reviews', subset: 'v2' } }] }],
    })
    // the page shows the stored change, and the editor holds it at its new resourceVersion
    await page.getByTestId('resource-yaml').filter({ hasText: 'subset: v2' }).waitFor()
    await editorHas('subset: v2')
    assert.deepEqual(unexpected(browser.errors), [])
  })
})
