/** Which proxies a `loom tap` name selects: pods by Istio node id, deployments by prefix, admin addresses required. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { NodeStatus } from '../xds/server.js'
import { tapTargets } from './tap-proxy.js'

const node = (id: string, adminAddress: string | null = '127.0.0.1:1'): NodeStatus => ({
  nodeId: id,
  connectedAt: '',
  streams: 1,
  protocol: 'sotw',
  userAgent: null,
  perType: [],
  adminAddress,
})

const NODES = [
  node('sidecar~127.0.0.1~reviews-v2.default~default.svc.cluster.local', '127.0.0.1:2'),
  node('sidecar~10.0.0.3~reviews-v3-7d4b-x9k.default~default.svc.cluster.local', '127.0.0.1:3'),
  node('sidecar~10.0.0.4~reviews-v3-7d4b-q2w.default~default.svc.cluster.local', '127.0.0.1:4'),
  node('sidecar~10.0.0.5~reviews-v2.other~other.svc.cluster.local', '127.0.0.1:5'),
  node('router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local', '127.0.0.1:6'),
  node('sidecar~10.0.0.7~grpc-client.default~default.svc.cluster.local', null),
]

const admins = (r: ReturnType<typeof tapTargets>) => (typeof r === 'string' ? r : r.map((t) => t.adminAddress))

test('a pod by name, a deployment by its pods, gateways, namespaces', () => {
  assert.deepEqual(admins(tapTargets(NODES, 'default', 'reviews-v2')), ['127.0.0.1:2'])
  assert.deepEqual(admins(tapTargets(NODES, 'default', 'deploy/reviews-v2')), ['127.0.0.1:2'])
  assert.deepEqual(admins(tapTargets(NODES, 'other', 'reviews-v2')), ['127.0.0.1:5'])
  assert.deepEqual(admins(tapTargets(NODES, 'default', 'deploy/reviews-v3')), ['127.0.0.1:3', '127.0.0.1:4'])
  assert.deepEqual(admins(tapTargets(NODES, 'default', 'pod/reviews-v3-7d4b-q2w')), ['127.0.0.1:4'])
  assert.deepEqual(admins(tapTargets(NODES, 'istio-system', 'ingressgateway')), ['127.0.0.1:6'])
})

test('what is refused, and why', () => {
  assert.match(
    String(tapTargets(NODES, 'default', 'reviews-v9')),
    /^no connected proxy for reviews-v9 in namespace default; proxies there: grpc-client, reviews-v2, reviews-v3-7d4b-q2w, reviews-v3-7d4b-x9k$/,
  )
  assert.match(String(tapTargets(NODES, 'default', 'pod/reviews-v3')), /no connected proxy/)
  assert.match(
    String(tapTargets(NODES, 'default', 'svc/reviews')),
    /name a workload as <name>, deploy\/<name> or pod\/<name>/,
  )
  assert.match(String(tapTargets(NODES, 'default', 'grpc-client')), /did not send its admin address/)
})
