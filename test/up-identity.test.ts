/** `loom up` gives every sidecar its workload identity: a bootstrap token per workload, a certificate per sidecar. */
import assert from 'node:assert/strict'
import { readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { startUp } from './helpers/up.js'

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
  const up = await startUp('up-identity', 120_000)
  t.after(() => up.stop())
  const dataDir = up.dataDir
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
