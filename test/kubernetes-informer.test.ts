/**
 * The informer on its own against the fake API server (test/helpers/fake-kube-apiserver.ts): a 410 given as the
 * watch request's answer rather than as an event, and a stream the server ends at `timeoutSeconds`, which is
 * watched again from the last version without a re-list.
 */
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { KubeClient } from '../src/control/kubernetes/client.js'
import { Informer } from '../src/control/kubernetes/informer.js'
import { eventually } from './helpers/control.js'
import { FakeKubeApiServer } from './helpers/fake-kube-apiserver.js'

const svc = (name: string, port: number) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { ports: [{ name: 'http', port }] },
})

describe('Informer', () => {
  const api = new FakeKubeApiServer({ goneAs: 'status' })
  let client: KubeClient
  const informers: Informer[] = []

  before(async () => {
    await api.start()
    client = await KubeClient.open(api.kubeconfig)
  })
  after(async () => {
    for (const i of informers) i.stop()
    await api.close()
  })

  const names = (i: Informer) =>
    i
      .items()
      .map((o) => `${o.metadata?.name}:${(o.spec as { ports: Array<{ port: number }> }).ports[0]!.port}`)
      .sort()

  test('a 410 answer to the watch request: one re-list, and the cache is what the server has', async () => {
    api.create(svc('a', 80))
    api.create(svc('b', 80))
    let changes = 0
    const inf = new Informer(client, '/api/v1/services', () => changes++, { backoffMs: 20 })
    informers.push(inf)
    inf.start()
    await inf.synced()
    assert.deepEqual(names(inf), ['a:80', 'b:80'])
    await api.waitForWatches('services')
    api.update(svc('a', 81))
    await eventually(async () => names(inf).includes('a:81'), 5000, 'the live update')
    api.breakWatches()
    api.update(svc('b', 82))
    api.delete('Service', 'v1', 'default', 'a')
    api.create(svc('c', 83))
    api.compact()
    await eventually(async () => names(inf).join() === 'b:82,c:83', 5000, 'the state after the re-list')
    assert.equal(inf.stats.gone, 1)
    assert.equal(inf.stats.lists, 2)
    assert.equal(inf.stats.failures, 1)
    assert.equal(inf.resourceVersion, String(api.revision))
    assert.ok(changes >= 3)
  })

  test('a stream the server ends is watched again from its last version, without a list', async () => {
    const inf = new Informer(client, '/api/v1/services', () => {}, { watchTimeoutSeconds: 1 })
    informers.push(inf)
    inf.start()
    await inf.synced()
    const watches = api.counts.watches
    // the server ends the first watch after a second; the next one starts from the version it had reached
    await eventually(async () => inf.stats.watches >= 2 && api.openWatches('services') >= 2, 5000, 'a second watch')
    api.update(svc('c', 84))
    await eventually(async () => names(inf).includes('c:84'), 5000, 'the update on the new watch')
    assert.equal(inf.stats.lists, 1)
    assert.equal(inf.stats.failures, 0)
    assert.equal(inf.stats.gone, 0)
    const resumed = api.requests.filter((r) => r.includes('watch=1')).slice(-1)[0]!
    assert.match(resumed, new RegExp(`resourceVersion=${Number(inf.resourceVersion) - 1}&`))
    assert.ok(api.counts.watches > watches)
  })

  test('a collection the server does not serve (a CRD not installed) is taken as empty: the start does not wait for it', async () => {
    const inf = new Informer(client, '/apis/example.dev/v1/widgets', () => {}, { backoffMs: 20 })
    informers.push(inf)
    inf.start()
    await inf.synced()
    assert.deepEqual(inf.items(), [])
    assert.match(inf.lastError, /404/)
    assert.equal(inf.stats.failures, 1)
  })

  test("in a pod: the service account's token and CA, the API server from KUBERNETES_SERVICE_HOST and _PORT", async () => {
    const root = mkdtempSync(join(tmpdir(), 'loom-pod-'))
    const dir = join(root, 'var/run/secrets/kubernetes.io/serviceaccount')
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'token'), api.token)
    writeFileSync(join(dir, 'ca.crt'), api.caPem)
    writeFileSync(join(dir, 'namespace'), 'loom-system')
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT }
    process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1'
    process.env.KUBERNETES_SERVICE_PORT = new URL(api.url).port
    try {
      const inCluster = await KubeClient.open(undefined, root)
      assert.equal(inCluster.server, api.url)
      const unauthorized = api.counts.unauthorized
      const list = await inCluster.request<{ items: unknown[] }>('GET', '/api/v1/services')
      assert.ok(list.items.length >= 2)
      assert.equal(api.counts.unauthorized, unauthorized, 'the token was sent')
      writeFileSync(join(dir, 'token'), 'wrong-token')
      await assert.rejects(
        (await KubeClient.open(undefined, root)).request('GET', '/api/v1/services'),
        /401 Unauthorized/,
      )
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', saved.host],
        ['KUBERNETES_SERVICE_PORT', saved.port],
      ] as const)
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
    }
  })
})
