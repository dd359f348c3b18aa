/**
 * API tokens on a real `loom control --api-token-file`: the CLI's changes need a write token (--token or
 * LOOM_API_TOKEN), a read token is refused, reads stay open, the file is read again on SIGHUP, and a token file
 * others can read stops the control plane from starting.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type Control, spawnLoom, startControl } from './helpers/control.js'
import { LOOM, writeTemp } from './helpers/proxy.js'

const WRITE = 'w-3f1c9a7e5b2d4c6a8e0f'
const READ = 'r-7a2b4c6d8e0f1a3b5c7d'

const VS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: { host: reviews }
`

function tokenFile(text: string, mode = 0o600): string {
  const file = join(mkdtempSync(join(tmpdir(), 'loom-tokens-')), 'tokens')
  writeFileSync(file, text)
  chmodSync(file, mode)
  return file
}

/** `loom <args>` with extra environment variables. */
function loomEnv(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [LOOM, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d) => (stdout += d))
    p.stderr.on('data', (d) => (stderr += d))
    p.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

let cp: Control
let file: string
const vsFile = writeTemp('vs.yaml', VS)

before(async () => {
  file = tokenFile(`# operators\n${WRITE} write\n${READ} read # dashboards\n`)
  cp = await startControl(undefined, 0, ['--api-token-file', file])
})

after(async () => {
  await cp?.stop()
})

test('the ready line counts the tokens and shows none of them', () => {
  assert.deepEqual(cp.ready.api_tokens, { read: 1, write: 1 })
  assert.ok(!cp.stderr().includes(WRITE) && !cp.stderr().includes(READ))
})

test('the CLI: a change needs a write token; a read token is refused; reads need none', async () => {
  const none = await cp.loom(['apply', '-f', vsFile])
  assert.equal(none.code, 1)
  assert.match(none.stderr, /needs an API token with write access.*--token or LOOM_API_TOKEN/)
  const read = await cp.loom(['apply', '-f', vsFile, '--token', READ])
  assert.equal(read.code, 1)
  assert.match(read.stderr, /read access only/)
  const wrong = await cp.loom(['apply', '-f', vsFile, '--token', 'x'.repeat(20)])
  assert.match(wrong.stderr, /not valid/)
  assert.match((await cp.loom(['get', 'vs'])).stderr, /No VirtualService resources found/)
  // a dry run writes nothing: no token needed
  const dry = await cp.loom(['apply', '-f', vsFile, '--dry-run'])
  assert.equal(dry.code, 0, dry.stderr)
  assert.match(dry.stdout, /virtualservices\/reviews created \(dry run\)/)
  const ok = await loomEnv(['apply', '-f', vsFile, '--server', cp.api], { LOOM_API_TOKEN: WRITE })
  assert.equal(ok.code, 0, ok.stderr)
  assert.match(ok.stdout, /virtualservices\/reviews created/)
  const got = await cp.loom(['get', 'vs', 'reviews', '-o', 'json'])
  assert.equal(got.code, 0, got.stderr)
  assert.deepEqual(JSON.parse(got.stdout).spec.hosts, ['reviews'])
  const del = await cp.loom(['delete', 'vs', 'reviews', '--token', READ])
  assert.equal(del.code, 1)
  assert.match(del.stderr, /deleting VirtualService default\/reviews: the API token has read access only/)
  assert.equal((await cp.loom(['get', 'vs', 'reviews'])).code, 0)
})

test('the API: 401 with a Bearer challenge, 403 for a read token; the token file guards every change', async () => {
  const post = (path: string, headers: Record<string, string> = {}, body = '{}') =>
    fetch(`http://${cp.api}${path}`, { method: 'POST', headers, body })
  const anon = await post('/api/v1/apply')
  assert.equal(anon.status, 401)
  assert.equal(anon.headers.get('www-authenticate'), 'Bearer realm="loom"')
  assert.equal((await post('/api/v1/ca/rotate', { authorization: `Bearer ${READ}` })).status, 403)
  assert.equal((await post('/api/v1/workloads', { authorization: `Basic ${WRITE}` })).status, 401)
  assert.equal((await fetch(`http://${cp.api}/api/v1/resources/vs/default/reviews`, { method: 'DELETE' })).status, 401)
  // explain and analyze only read
  const analyzed = await post('/api/v1/analyze', {}, '')
  assert.equal(analyzed.status, 200)
  assert.deepEqual(Object.keys((await analyzed.json()) as object), ['diagnostics'])
  assert.equal((await fetch(`http://${cp.api}/api/v1/resources`)).status, 200)
})

test('SIGHUP reads the file again', async () => {
  writeFileSync(file, `${WRITE} write\n${READ} write\n`)
  const reloaded = new Promise<void>((resolve) => {
    const onData = () => {
      if (!/"msg":"API tokens reloaded".*"reason":"SIGHUP"/.test(cp.stderr())) return
      cp.proc.stderr!.off('data', onData)
      resolve()
    }
    cp.proc.stderr!.on('data', onData)
    onData()
  })
  cp.proc.kill('SIGHUP')
  await reloaded
  const r = await cp.loom(['delete', 'vs', 'reviews', '--token', READ])
  assert.equal(r.code, 0, r.stderr)
})

test('a token file other users can read stops loom control from starting, saying why', async () => {
  const open = tokenFile(`${WRITE} write\n`, 0o644)
  await assert.rejects(
    spawnLoom([
      'control',
      '--data-dir',
      mkdtempSync(join(tmpdir(), 'loom-cp-')),
      '--api',
      '127.0.0.1:0',
      '--xds',
      '127.0.0.1:0',
      '--api-token-file',
      open,
    ]),
    (err: Error) => {
      assert.match(err.message, /exited with 2/)
      assert.match(err.message, /--api-token-file: .*readable or writable by other users \(mode 0644\); run chmod 600/)
      assert.ok(!err.message.includes(WRITE))
      return true
    },
  )
})
