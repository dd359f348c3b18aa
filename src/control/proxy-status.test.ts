import assert from 'node:assert/strict'
import { test } from 'node:test'
import { makeSnapshot, SnapshotCache } from '../xds/cache.js'
import type { NodeStatus } from '../xds/server.js'
import { configDump, proxyStatusRows } from './proxy-status.js'
import type { TranslateNode } from './translate/translate.js'

const CDS = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'
const LDS = 'type.googleapis.com/envoy.config.listener.v3.Listener'

function status(nodeId: string, states: NodeStatus['perType']): NodeStatus {
  return {
    nodeId,
    connectedAt: '2026-01-01T00:00:00.000Z',
    streams: 1,
    protocol: 'delta',
    userAgent: 'loom/0.1.0',
    perType: states,
    adminAddress: '127.0.0.1:15000',
  }
}

const node = (id: string, kind: 'sidecar' | 'gateway', extra: Partial<TranslateNode> = {}): TranslateNode => ({
  id,
  kind,
  namespace: kind === 'gateway' ? 'istio-system' : 'default',
  labels: {},
  serviceAccount: kind === 'gateway' ? 'istio-ingressgateway-service-account' : 'bookinfo-reviews',
  ip: '127.0.0.1',
  generator: 'envoy',
  ...extra,
})

test('rows join the xDS state with the node: workload, kind, namespace, account, uptime, synced', () => {
  const reviews = 'sidecar~127.0.0.1~reviews-v2-5d8f9.default~default.svc.cluster.local'
  const gw = 'router~127.0.0.1~gw-pod.istio-system~istio-system.svc.cluster.local'
  const rows = proxyStatusRows(
    [
      status(reviews, [
        { typeUrl: CDS, sentVersion: 'a', ackedVersion: 'a', state: 'SYNCED' },
        { typeUrl: LDS, sentVersion: 'b', ackedVersion: 'a', state: 'STALE' },
      ]),
      status(gw, [{ typeUrl: CDS, sentVersion: 'a', ackedVersion: 'a', state: 'SYNCED' }]),
    ],
    [node(reviews, 'sidecar'), node(gw, 'gateway', { metadata: { WORKLOAD_NAME: 'ingressgateway' } })],
    Date.parse('2026-01-01T00:01:30.900Z'),
  )
  assert.deepEqual(
    rows.map((r) => [r.workload, r.kind, r.namespace, r.serviceAccount, r.uptimeSeconds, r.synced]),
    [
      ['reviews-v2-5d8f9', 'sidecar', 'default', 'bookinfo-reviews', 90, false],
      ['ingressgateway', 'gateway', 'istio-system', 'istio-ingressgateway-service-account', 90, true],
    ],
  )
  // the xDS fields pass through as they are
  assert.equal(rows[0]!.userAgent, 'loom/0.1.0')
  assert.equal(rows[0]!.perType[1]!.sentVersion, 'b')
})

test('a proxy the control plane has no node for yet, and one with no type sent, are not synced', () => {
  const id = 'sidecar~10.0.0.1~ratings-v1.default~default.svc.cluster.local'
  const [row] = proxyStatusRows([status(id, [])], [], Date.parse('2025-12-31T23:59:59Z'))
  assert.equal(row!.workload, 'ratings-v1')
  assert.equal(row!.kind, null)
  assert.equal(row!.namespace, null)
  assert.equal(row!.uptimeSeconds, 0) // a clock behind the stream's start is not a negative uptime
  assert.equal(row!.synced, false)
})

test('the config dump is what the cache holds for the node, with its versions; else a fresh build', () => {
  const cache = new SnapshotCache()
  const id = 'sidecar~127.0.0.1~ratings-v1.default~default.svc.cluster.local'
  cache.setSnapshot(id, makeSnapshot({ [CDS]: [{ name: 'outbound|9080||ratings', type: 'EDS' }] }))
  let built = 0
  const build = () => {
    built++
    return makeSnapshot({ [LDS]: [{ name: 'virtualOutbound' }] })
  }
  const dump = configDump(cache.getEntry(id), build)!
  assert.deepEqual(Object.keys(dump), [CDS])
  assert.deepEqual(dump[CDS]!.resources, [{ name: 'outbound|9080||ratings', type: 'EDS' }])
  assert.equal(dump[CDS]!.version, cache.getEntry(id)!.types.get(CDS)!.version)
  assert.equal(built, 0)
  assert.deepEqual(configDump(undefined, build)![LDS]!.resources, [{ name: 'virtualOutbound' }])
  assert.equal(
    configDump(undefined, () => null),
    null,
  )
})
