/** `loom up` gives every sidecar its workload identity: a bootstrap token per workload, a certificate per sidecar. */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { LOOM, ROOT, runLoom } from './helpers/proxy.js'

interface UpWorkload {
  name: string
  namespace: string
  adminPort: number
  spiffeId?: string | null
  identityTokenFile?: string | null
}

test('loom up: each sidecar gets the certificate of its workload service account, with no user step', {
  timeout: 180_000,
}, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'loom-up-id-'))
  const proc = spawn(
    process.execPath,
    [
      LOOM,
      'up',
      '-f',
      join(ROOT, 'test', 'fixtures', 'up-identity'),
      '--data-dir',
      dataDir,
      '--api-port',
      '0',
      '--xds-port',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const reap = () => proc.kill('SIGKILL')
  process.once('exit', reap)
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d) => (out += d))
  proc.stderr!.on('data', (d) => (err += d))
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  t.after(async () => {
    await runLoom(['down', '--data-dir', dataDir], 30_000)
    await exited
    process.off('exit', reap)
  })
  await eventually(async () => out.includes('{"msg":"up"'), 120_000, `loom up:\n${err}`)
  const state = JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as { workloads: UpWorkload[] }
  const want: Record<string, string> = {
    reviews: 'spiffe://cluster.local/ns/shop/sa/bookinfo-reviews',
    plain: 'spiffe://cluster.local/ns/default/sa/default',
  }
  assert.equal(state.workloads.length, 2)
  for (const w of state.workloads) {
    assert.equal(w.spiffeId, want[w.name])
    const file = w.identityTokenFile!
    assert.equal(statSync(file).mode & 0o777, 0o600, 'the token file is for the sidecar only')
    assert.equal(statSync(dirname(file)).mode & 0o777, 0o700)
    let id: { spiffe_id?: string } | null = null
    await eventually(
      async () => {
        const body = (await (await fetch(`http://127.0.0.1:${w.adminPort}/certs`)).json()) as {
          identity?: { spiffe_id?: string } | null
        }
        id = body.identity ?? null
        return id !== null
      },
      30_000,
      `the certificate of ${w.name}'s sidecar`,
    )
    assert.equal(id!.spiffe_id, want[w.name])
  }
})
