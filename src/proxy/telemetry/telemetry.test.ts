import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { describe, it } from 'node:test'
import { GrpcFrameCounter } from '../http/filters/istio-stats/istio-stats.js'
import { decodePeerMetadata, decodeStruct, encodeOwnMetadata, encodeStruct, peerFromHeader } from './exchange.js'
import { IstioMetrics, LABEL_NAMES, serviceOfHost, UNKNOWN_SERVICE, UNKNOWN_WORKLOAD } from './metrics.js'
import { hostOfClusterName, serviceOfAuthority } from './service.js'
import { LocalWorkload, podOfNodeId, workloadMetadata } from './workload.js'

const NODE = {
  id: 'sidecar~10.0.0.7~reviews-v2-5d8b7c9f-x2x.default~default.svc.cluster.local',
  metadata: {
    WORKLOAD_NAME: 'reviews-v2',
    NAMESPACE: 'default',
    LABELS: { app: 'reviews', version: 'v2', 'security.istio.io/tlsMode': 'istio' },
  },
}

describe('workload metadata', () => {
  it('comes from node metadata, with Istio defaults', () => {
    const w = new LocalWorkload(NODE).meta
    assert.equal(w.workload, 'reviews-v2')
    assert.equal(w.namespace, 'default')
    assert.equal(w.app, 'reviews')
    assert.equal(w.version, 'v2')
    assert.equal(w.canonicalService, 'reviews')
    assert.equal(w.canonicalRevision, 'v2')
    assert.equal(w.cluster, 'Kubernetes')
    assert.equal(w.pod, 'reviews-v2-5d8b7c9f-x2x')
  })

  it('falls back to the pod and namespace of the node id, canonical labels win over app/version', () => {
    const w = new LocalWorkload({
      id: 'router~127.0.0.1~ingress.istio-system~istio-system.svc.cluster.local',
      metadata: {
        CLUSTER_ID: 'east',
        LABELS: 'istio=ingressgateway,service.istio.io/canonical-name=edge,service.istio.io/canonical-revision=r7',
      },
    }).meta
    assert.equal(w.workload, 'ingress')
    assert.equal(w.namespace, 'istio-system')
    assert.equal(w.app, 'unknown')
    assert.equal(w.canonicalService, 'edge')
    assert.equal(w.canonicalRevision, 'r7')
    assert.equal(w.cluster, 'east')
    assert.deepEqual(podOfNodeId('nonsense'), null)
    assert.equal(workloadMetadata({}).workload, 'unknown')
    assert.equal(workloadMetadata({ labels: { app: 'a' } }).canonicalRevision, 'latest')
  })

  it('has no principal without a certificate', () => {
    assert.equal(new LocalWorkload(NODE).principal, 'unknown')
  })
})

describe('metadata exchange', () => {
  it('encodes a google.protobuf.Struct as protobuf does (known bytes) and decodes every Value kind', () => {
    // {"a": "b"}: field 1 (entry) { key "a", value { string_value "b" } }
    assert.deepEqual(encodeStruct({ a: 'b' }), [0x0a, 0x08, 0x0a, 0x01, 0x61, 0x12, 0x03, 0x1a, 0x01, 0x62])
    const all = { s: 'x', n: 2.5, t: true, z: null, l: ['a', { k: 'v' }], o: { p: 'q' } }
    assert.deepEqual(decodeStruct(Buffer.from(encodeStruct(all))), all)
    assert.throws(() => decodeStruct(Buffer.from([0x0a, 0x20, 0x0a])))
  })

  it("round-trips the proxy's own metadata; the id header is the node id", () => {
    const own = encodeOwnMetadata(new LocalWorkload(NODE))
    assert.equal(own.id, NODE.id)
    const peer = decodePeerMetadata(own.metadata, own.id)!
    assert.equal(peer.workload, 'reviews-v2')
    assert.equal(peer.namespace, 'default')
    assert.equal(peer.version, 'v2')
    assert.equal(peer.pod, 'reviews-v2-5d8b7c9f-x2x')
    assert.equal(peer.labels['security.istio.io/tlsMode'], 'istio')
  })

  it('decodes a value once: the same object for the same header value; garbage is null', () => {
    const own = encodeOwnMetadata(new LocalWorkload(NODE))
    const a = peerFromHeader(own.metadata, own.id)
    assert.ok(a !== null)
    assert.equal(peerFromHeader(own.metadata, own.id), a)
    assert.equal(peerFromHeader('%%% not base64 protobuf', undefined), null)
    // alternating peers: each value keeps its own object (a copy of the value, not the same string, too)
    const other = encodeOwnMetadata(
      new LocalWorkload({ id: 'sidecar~10.0.0.2~ratings-v1-0.prod~prod.svc', metadata: {} }),
    )
    const b = peerFromHeader(other.metadata, other.id)
    assert.equal(b?.namespace, 'prod')
    assert.equal(peerFromHeader(own.metadata, own.id), a)
    assert.equal(peerFromHeader(`${other.metadata} `.trimEnd(), other.id), b)
    assert.equal(peerFromHeader(own.metadata, own.id), a)
  })
})

describe('services', () => {
  it('from cluster names, hosts and authorities', () => {
    assert.equal(
      hostOfClusterName('outbound|9080|v1|reviews.default.svc.cluster.local'),
      'reviews.default.svc.cluster.local',
    )
    assert.equal(hostOfClusterName('inbound|9080||'), null)
    assert.deepEqual(serviceOfHost('reviews.default.svc.cluster.local'), {
      host: 'reviews.default.svc.cluster.local',
      name: 'reviews',
      namespace: 'default',
    })
    assert.deepEqual(serviceOfHost('api.example.com'), {
      host: 'api.example.com',
      name: 'api.example.com',
      namespace: 'unknown',
    })
    assert.equal(serviceOfAuthority('reviews:9080', 'default').host, 'reviews.default.svc.cluster.local')
    assert.equal(serviceOfAuthority('reviews.prod', 'default').host, 'reviews.prod.svc.cluster.local')
    assert.equal(serviceOfAuthority('Reviews.prod.svc:80', 'default').host, 'reviews.prod.svc.cluster.local')
    assert.equal(serviceOfAuthority('', 'default'), UNKNOWN_SERVICE)
  })
})

describe('Istio metrics', () => {
  const own = new LocalWorkload(NODE).meta
  const row = (m: IstioMetrics) =>
    m.row({
      reporter: 'destination',
      source: UNKNOWN_WORKLOAD,
      sourcePrincipal: 'spiffe://cluster.local/ns/default/sa/a"b',
      destination: own,
      destinationPrincipal: 'unknown',
      service: serviceOfHost('reviews.default.svc.cluster.local'),
      security: 'mutual_tls',
    })

  it('renders counters and histograms with # TYPE once, every label in order, values escaped', () => {
    const m = new IstioMetrics()
    const r = row(m)
    assert.equal(row(m), r, 'the same labels give the same row')
    const ok = r.http(200, '')
    assert.equal(r.http(200, ''), ok)
    const unavailable = r.http(503, '')
    assert.notEqual(unavailable, ok)
    assert.equal(r.http(200, ''), ok)
    assert.equal(r.http(503, ''), unavailable)
    ok.requests += 2
    ok.duration.record(3)
    ok.duration.record(700)
    ok.responseBytes.record(1500)
    const nr = r.http(404, 'NR')
    nr.requests++
    const g = r.grpc(200, '0', '')
    assert.equal(r.grpc(200, '0', ''), g)
    const g14 = r.grpc(200, '14', '')
    assert.notEqual(g14, g)
    assert.notEqual(r.grpc(200, '14', 'UF'), g14)
    assert.equal(r.grpc(200, '0', ''), g)
    assert.equal(r.grpc(200, '14', ''), g14)
    g.requests++
    g.requestMessages = 3
    g.responseMessages = 4
    const t = r.tcp()
    t.opened++
    t.receivedBytes += 10
    const out: string[] = []
    m.renderPrometheus(out)
    const text = out.join('\n')
    for (const name of [
      'istio_requests_total counter',
      'istio_request_duration_milliseconds histogram',
      'istio_request_bytes histogram',
      'istio_response_bytes histogram',
      'istio_request_messages_total counter',
      'istio_response_messages_total counter',
      'istio_tcp_sent_bytes_total counter',
      'istio_tcp_received_bytes_total counter',
      'istio_tcp_connections_opened_total counter',
      'istio_tcp_connections_closed_total counter',
    ])
      assert.equal(text.split('\n').filter((l) => l === `# TYPE ${name}`).length, 1, name)
    const first = out.find((l) => l.startsWith('istio_requests_total{'))!
    const names = [...first.matchAll(/(\w+)="/g)].map((x) => x[1])
    assert.deepEqual(names, [...LABEL_NAMES])
    assert.match(first, /source_principal="spiffe:\/\/cluster.local\/ns\/default\/sa\/a\\"b"/)
    assert.match(
      first,
      /response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls"\} 2$/,
    )
    assert.ok(out.some((l) => /response_code="404",grpc_response_status="",response_flags="NR",.*\} 1$/.test(l)))
    assert.ok(
      out.some((l) =>
        /^istio_request_messages_total\{.*request_protocol="grpc",response_code="200",grpc_response_status="0".*\} 3$/.test(
          l,
        ),
      ),
    )
    assert.ok(
      out.some((l) => /^istio_tcp_received_bytes_total\{.*request_protocol="tcp",response_code="0".*\} 10$/.test(l)),
    )
    // histogram: cumulative buckets, +Inf = count, sum
    const buckets = out.filter(
      (l) =>
        l.startsWith('istio_request_duration_milliseconds_bucket{') &&
        l.includes('response_code="200",grpc_response_status="",'),
    )
    const at = (le: string) =>
      Number(
        buckets
          .find((l) => l.includes(`le="${le}"`))!
          .split(' ')
          .pop(),
      )
    assert.equal(at('1'), 0)
    assert.equal(at('5'), 1)
    assert.equal(at('500'), 1)
    assert.equal(at('1000'), 2)
    assert.equal(at('+Inf'), 2)
    assert.ok(
      out.some((l) =>
        /^istio_request_duration_milliseconds_sum\{.*response_code="200",grpc_response_status="",.*\} 703$/.test(l),
      ),
    )
  })

  it('an empty registry renders nothing', () => {
    const out: string[] = []
    new IstioMetrics().renderPrometheus(out)
    assert.deepEqual(out, [])
  })
})

describe('gRPC message counting', () => {
  const frame = (n: number) => Buffer.concat([Buffer.from([0, 0, 0, 0, n]), Buffer.alloc(n, 7)])

  it('counts length-prefixed messages across any chunking', () => {
    const wire = Buffer.concat([frame(3), frame(0), frame(300 % 256), frame(1)])
    for (const size of [1, 2, 5, 7, wire.length]) {
      const c = new GrpcFrameCounter()
      for (let i = 0; i < wire.length; i += size) c.push(wire.subarray(i, i + size))
      assert.equal(c.messages, 4, `chunks of ${size}`)
    }
    const big = new GrpcFrameCounter()
    const body = Buffer.concat([Buffer.from([0, 0, 1, 0, 0]), Buffer.alloc(65536), frame(2)])
    big.push(body)
    assert.equal(big.messages, 2)
  })
})
