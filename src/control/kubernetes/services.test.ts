import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { KubeObject } from './client.js'
import { kubePortProtocol, kubeServices } from './services.js'

const service = (name: string, spec: Record<string, unknown>, namespace = 'default'): KubeObject => ({
  metadata: { name, namespace },
  spec,
})
const slice = (svc: string, endpoints: unknown[], ports: unknown[], name = `${svc}-x`): KubeObject => ({
  metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  endpoints,
  ports,
})

describe('kubePortProtocol', () => {
  test("Istio's order: UDP, appProtocol, the name's prefix, else undeclared", () => {
    assert.equal(kubePortProtocol({ name: 'http', protocol: 'UDP' }), 'UDP')
    assert.equal(kubePortProtocol({ name: 'tcp-x', appProtocol: 'http' }), 'HTTP')
    assert.equal(kubePortProtocol({ name: 'x', appProtocol: 'kubernetes.io/h2c' }), 'HTTP2')
    assert.equal(kubePortProtocol({ name: 'x', appProtocol: 'kubernetes.io/ws' }), 'HTTP')
    assert.equal(kubePortProtocol({ name: 'x', appProtocol: 'grpc' }), 'GRPC')
    assert.equal(kubePortProtocol({ name: 'grpc-web-ui' }), 'GRPC-WEB')
    assert.equal(kubePortProtocol({ name: 'http2-api' }), 'HTTP2')
    assert.equal(kubePortProtocol({ name: 'tls' }), 'TLS')
    assert.equal(kubePortProtocol({ name: 'mongo-db' }), 'MONGO')
    assert.equal(kubePortProtocol({ name: 'web' }), '')
    assert.equal(kubePortProtocol({}), '')
  })
})

describe('kubeServices', () => {
  test('ExternalName: DNS to the external name, MESH_EXTERNAL', () => {
    const [s] = kubeServices({
      services: [
        service('db', { type: 'ExternalName', externalName: 'db.example.com', ports: [{ name: 'tcp', port: 5432 }] }),
      ],
      endpointSlices: [],
      pods: [],
      nodes: [],
    })
    assert.equal(s!.resolution, 'DNS')
    assert.equal(s!.location, 'MESH_EXTERNAL')
    assert.deepEqual(
      s!.endpoints.map((e) => [e.address, e.port]),
      [['db.example.com', 5432]],
    )
  })

  test('readiness: missing means ready; not ready but serving is kept unhealthy; neither is left out', () => {
    const [s] = kubeServices({
      services: [service('a', { clusterIP: '10.0.0.1', ports: [{ port: 80 }] })],
      endpointSlices: [
        slice(
          'a',
          [
            { addresses: ['10.1.0.1'] },
            { addresses: ['10.1.0.2'], conditions: { ready: false, serving: true, terminating: true } },
            { addresses: ['10.1.0.3'], conditions: { ready: false, serving: false } },
          ],
          [{ port: 8080 }],
        ),
      ],
      pods: [],
      nodes: [],
    })
    assert.deepEqual(
      s!.endpoints.map((e) => [e.address, e.servicePort, e.port, e.healthy]),
      [
        ['10.1.0.1', 80, 8080, true],
        ['10.1.0.2', 80, 8080, false],
      ],
    )
  })

  test('two slices of one service add up; FQDN slices, other services and terminating namespaces are not read', () => {
    const all = kubeServices({
      services: [
        service('a', { ports: [{ name: 'http', port: 80 }] }),
        service('gone', { ports: [{ name: 'http', port: 80 }] }, 'old'),
      ],
      endpointSlices: [
        slice('a', [{ addresses: ['10.1.0.1'] }], [{ name: 'http', port: 8080 }], 'a-1'),
        slice('a', [{ addresses: ['10.1.0.2'] }], [{ name: 'http', port: 8081 }], 'a-2'),
        { ...slice('a', [{ addresses: ['x.example'] }], [{ name: 'http', port: 80 }], 'a-3'), addressType: 'FQDN' },
        slice('b', [{ addresses: ['10.1.0.9'] }], [{ name: 'http', port: 80 }]),
      ],
      pods: [],
      nodes: [],
      namespaces: [{ metadata: { name: 'old' }, status: { phase: 'Terminating' } }],
    })
    assert.deepEqual(
      all.map((s) => s.hostname),
      ['a.default.svc.cluster.local'],
    )
    assert.deepEqual(
      all[0]!.endpoints.map((e) => `${e.address}:${e.port} ${e.source}`),
      ['10.1.0.1:8080 EndpointSlice/default/a-1', '10.1.0.2:8081 EndpointSlice/default/a-2'],
    )
  })

  test('a slice port of another name serves no service port; locality without a zone label is the region', () => {
    const [s] = kubeServices(
      {
        services: [service('a', { ports: [{ name: 'http', port: 80 }] })],
        endpointSlices: [
          slice(
            'a',
            [{ addresses: ['10.1.0.1'], nodeName: 'n1', targetRef: { kind: 'Pod', name: 'p1' } }],
            [
              { name: 'metrics', port: 9090 },
              { name: 'http', port: 8080 },
            ],
          ),
        ],
        pods: [
          {
            metadata: { name: 'p1', namespace: 'default', labels: { app: 'a' } },
            spec: { serviceAccountName: 'sa-a' },
          },
        ],
        nodes: [{ metadata: { name: 'n1', labels: { 'topology.kubernetes.io/region': 'eu' } } }],
      },
      'corp.example',
    )
    assert.equal(s!.hostname, 'a.default.svc.corp.example')
    assert.deepEqual(s!.endpoints, [
      {
        address: '10.1.0.1',
        servicePort: 80,
        port: 8080,
        labels: { app: 'a' },
        serviceAccount: 'sa-a',
        locality: 'eu',
        weight: 1,
        healthy: true,
        source: 'Pod/default/p1',
      },
    ])
  })
})
