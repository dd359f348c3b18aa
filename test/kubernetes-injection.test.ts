/**
 * The sidecar injection webhook of `loom control --kubernetes --injection-webhook`: AdmissionReview v1 requests over
 * HTTPS (the certificate checked against the control plane's trust bundle, for the webhook Service's name), the
 * namespace's label read from the Namespace cache of the fake API server (test/helpers/fake-kube-apiserver.ts).
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import yaml from 'js-yaml'
import { type Control, eventually, startControl } from './helpers/control.js'
import { FakeKubeApiServer, type KObj } from './helpers/fake-kube-apiserver.js'
import { ROOT } from './helpers/proxy.js'

const HOST = 'loom-control.loom-system.svc'

/** RFC 6902 `add`, the only operation the webhook sends (written here, not taken from the code under test). */
function applyPatch(doc: KObj, ops: Array<{ op: string; path: string; value: unknown }>): KObj {
  const out = structuredClone(doc)
  for (const { op, path, value } of ops) {
    assert.equal(op, 'add')
    const keys = path
      .split('/')
      .slice(1)
      .map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'))
    const last = keys.pop()!
    let at: KObj = out
    for (const k of keys) at = at[k]
    if (Array.isArray(at)) {
      if (last === '-') at.push(value)
      else at.splice(Number(last), 0, value)
    } else {
      assert.ok(!(last in at) || typeof at[last] !== 'object', `add over an existing ${path}`)
      at[last] = value
    }
  }
  return out
}

describe('the sidecar injection webhook', () => {
  const api = new FakeKubeApiServer()
  let cp: Control
  let address: string
  // reviews-v1's pod, from its Deployment's template in Istio's bookinfo.yaml
  const deployments = (
    yaml.loadAll(readFileSync(join(ROOT, 'test/fixtures/kubernetes/bookinfo.yaml'), 'utf8')) as KObj[]
  ).filter((d) => d?.kind === 'Deployment')
  const template = deployments.find((d) => d.metadata.name === 'reviews-v1')!.spec.template
  const pod = (extra: KObj = {}): KObj => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'reviews-v1-', ...structuredClone(template.metadata), ...extra.metadata },
    spec: { ...structuredClone(template.spec), ...extra.spec },
  })

  const review = async (namespace: string, object: KObj) => {
    const body = JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid: `uid-${Math.random()}`,
        kind: { group: '', version: 'v1', kind: 'Pod' },
        operation: 'CREATE',
        namespace,
        object,
      },
    })
    const [host, port] = address.split(':') as [string, string]
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(
        {
          host,
          port: Number(port),
          method: 'POST',
          path: '/inject?timeout=10s',
          servername: HOST,
          ca: readFileSync(join(cp.dataDir, 'ca', 'trust-bundle.pem')),
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          let t = ''
          res.on('data', (c) => (t += c))
          res.on('end', () => resolve(t))
        },
      )
      req.on('error', reject)
      req.end(body)
    })
    const answer = JSON.parse(text) as {
      kind: string
      response: { uid: string; allowed: boolean; patchType?: string; patch?: string }
    }
    assert.equal(answer.kind, 'AdmissionReview')
    assert.equal(answer.response.uid, JSON.parse(body).request.uid)
    assert.equal(answer.response.allowed, true)
    return answer.response.patch === undefined
      ? null
      : (JSON.parse(Buffer.from(answer.response.patch, 'base64').toString('utf8')) as Array<{
          op: string
          path: string
          value: unknown
        }>)
  }

  before(async () => {
    await api.start()
    api.create({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'default', labels: { 'istio-injection': 'enabled' } },
    })
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'plain' } })
    cp = await startControl(undefined, 0, [
      '--kubeconfig',
      api.kubeconfig,
      '--injection-webhook',
      '127.0.0.1:0',
      '--injection-host',
      HOST,
      '--injection-image',
      'registry.example/loom:0.1.0',
      '--injection-xds',
      `${HOST}:15010`,
    ])
    address = String(cp.ready.injection_webhook)
  })
  after(async () => {
    await cp?.stop()
    await api.close()
  })

  test('a pod of a labelled namespace gets the iptables step and loom proxy as a native sidecar', async () => {
    const patch = await review('default', pod())
    assert.ok(patch !== null)
    const out = applyPatch(pod(), patch)
    assert.deepEqual(
      out.spec.initContainers.map((c: KObj) => c.name),
      ['loom-init', 'loom-proxy'],
    )
    const [init, proxy] = out.spec.initContainers
    assert.equal(init.image, 'registry.example/loom:0.1.0')
    assert.deepEqual(init.securityContext.capabilities.add, ['NET_ADMIN', 'NET_RAW'])
    assert.match(init.command[2], /--uid-owner 1337 -j RETURN/)
    assert.match(init.command[2], /REDIRECT --to-ports 15001/)
    assert.equal(proxy.restartPolicy, 'Always')
    assert.equal(proxy.securityContext.runAsUser, 1337)
    const args: string[] = proxy.args
    assert.equal(args[0], 'proxy')
    assert.equal(args[args.indexOf('--xds') + 1], `${HOST}:15010`)
    assert.equal(args[args.indexOf('--labels') + 1], 'app=reviews,version=v1')
    assert.ok(args.includes('SERVICE_ACCOUNT=bookinfo-reviews'))
    assert.ok(args.includes('NAMESPACE=default'))
    assert.deepEqual(out.spec.containers, template.spec.containers, 'the app containers are untouched')
    assert.equal(out.metadata.labels['security.istio.io/tlsMode'], 'istio')
    assert.equal(out.metadata.labels.app, 'reviews')
    assert.ok(out.spec.volumes.some((v: KObj) => v.name === 'loom-ca'))
    assert.ok(out.spec.volumes.some((v: KObj) => v.name === 'wlp-output'))
    assert.ok(out.metadata.annotations['sidecar.loom.dev/status'] !== undefined)
  })

  test('the sidecar goes before the init containers of the pod containers; opted-out and injected pods are left alone', async () => {
    const withInit = pod({ spec: { initContainers: [{ name: 'migrate', image: 'app:1' }] } })
    const out = applyPatch(withInit, (await review('default', withInit))!)
    assert.deepEqual(
      out.spec.initContainers.map((c: KObj) => c.name),
      ['loom-init', 'loom-proxy', 'migrate'],
    )
    const optOut = pod({ metadata: { annotations: { 'sidecar.istio.io/inject': 'false' } } })
    assert.equal(await review('default', optOut), null)
    assert.equal(await review('default', out), null, 'a pod that has loom-proxy already')
  })

  test('a namespace without the label gets nothing, until it is labelled', async () => {
    assert.equal(await review('plain', pod()), null)
    assert.equal(await review('unknown', pod()), null)
    api.update({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'plain', labels: { 'loom-injection': 'enabled' } },
    })
    await eventually(async () => (await review('plain', pod())) !== null, 10000, 'the label seen')
  })
})
