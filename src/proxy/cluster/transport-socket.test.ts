import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { Cluster, ClusterLoadAssignment } from '../../config/envoy.js'
import { TypeUrls } from '../../config/type-urls.js'
import { UpstreamCluster } from './cluster.js'
import { ClusterConfigError } from './errors.js'
import { jsonEqual } from './transport-socket.js'

const TLS = (sni: string) => ({
  name: 'envoy.transport_sockets.tls',
  typed_config: { '@type': TypeUrls.upstreamTls, sni },
})
const RAW = { name: 'envoy.transport_sockets.raw_buffer', typed_config: { '@type': TypeUrls.rawBuffer } }

function cluster(extra: Record<string, unknown>): UpstreamCluster {
  const config = v.parse(Cluster, {
    name: 'c',
    type: 'EDS',
    eds_cluster_config: { service_name: 'c' },
    ...extra,
  })
  return new UpstreamCluster(config)
}

type Md = Record<string, unknown> | undefined
function assignment(hosts: { address: string; md?: Md; localityMd?: Md }[]) {
  const filter = (md: Md) =>
    md === undefined ? {} : { metadata: { filter_metadata: { 'envoy.transport_socket_match': md } } }
  return v.parse(ClusterLoadAssignment, {
    cluster_name: 'c',
    endpoints: hosts.map((h) => ({
      ...filter(h.localityMd),
      lb_endpoints: [
        { endpoint: { address: { socket_address: { address: h.address, port_value: 80 } } }, ...filter(h.md) },
      ],
    })),
  })
}

/** the SNI of the socket each host got (`plain` for plain text) */
function sockets(c: UpstreamCluster): Record<string, string> {
  return Object.fromEntries(c.hosts().map((h) => [h.address, (h.transport.tls?.servername as string) ?? 'plain']))
}

describe('transport_socket_matches', () => {
  const istio = {
    transport_socket_matches: [
      { name: 'tlsMode-istio', match: { tlsMode: 'istio' }, transport_socket: TLS('mesh') },
      { name: 'tlsMode-disabled', match: {}, transport_socket: RAW },
    ],
  }

  it("Istio's pattern: endpoints marked tlsMode istio get mTLS, the others plain text", () => {
    const c = cluster(istio)
    c.updateFromAssignment(assignment([{ address: '10.0.0.1', md: { tlsMode: 'istio' } }, { address: '10.0.0.2' }]))
    assert.deepEqual(sockets(c), { '10.0.0.1': 'mesh', '10.0.0.2': 'plain' })
    assert.equal(c.tls, null, 'the cluster has no transport_socket of its own')
  })

  it('a restated host takes the socket of its new metadata, keeping its identity', () => {
    const c = cluster(istio)
    c.updateFromAssignment(assignment([{ address: '10.0.0.1' }]))
    const host = c.hosts()[0]!
    assert.equal(sockets(c)['10.0.0.1'], 'plain')
    c.updateFromAssignment(assignment([{ address: '10.0.0.1', md: { tlsMode: 'istio' } }]))
    assert.equal(c.hosts()[0], host)
    assert.equal(sockets(c)['10.0.0.1'], 'mesh')
  })

  it('the first match in order wins; the locality metadata is tried after the endpoint’s', () => {
    const c = cluster({
      transport_socket: TLS('default'),
      transport_socket_matches: [
        { name: 'a', match: { zone: 'a', tier: 1 }, transport_socket: TLS('a') },
        { name: 'b', match: { zone: 'a' }, transport_socket: TLS('b') },
        { name: 'nested', match: { ids: ['x', { y: true }] }, transport_socket: TLS('nested') },
      ],
    })
    c.updateFromAssignment(
      assignment([
        { address: '10.0.0.1', md: { zone: 'a', tier: 1, extra: 'ignored' } },
        { address: '10.0.0.2', md: { zone: 'a', tier: '1' } },
        { address: '10.0.0.3', md: { zone: 'z' }, localityMd: { zone: 'a' } },
        { address: '10.0.0.4', md: { ids: ['x', { y: true }] } },
        { address: '10.0.0.5', md: { ids: ['x'] } },
        { address: '10.0.0.6' },
      ]),
    )
    assert.deepEqual(sockets(c), {
      '10.0.0.1': 'a',
      '10.0.0.2': 'b',
      '10.0.0.3': 'b',
      '10.0.0.4': 'nested',
      '10.0.0.5': 'default',
      '10.0.0.6': 'default',
    })
  })

  it('without matches every host uses the cluster’s transport socket', () => {
    const c = cluster({ transport_socket: TLS('default') })
    c.updateFromAssignment(assignment([{ address: '10.0.0.1', md: { tlsMode: 'istio' } }]))
    assert.equal(c.hosts()[0]!.transport.tls, c.tls)
    assert.equal(c.tls?.servername, 'default')
  })

  it('a raw_buffer transport_socket is plain text', () => {
    const c = cluster({ transport_socket: RAW })
    assert.equal(c.tls, null)
  })

  it('names are unique; a match whose context does not compile names its path', () => {
    assert.throws(
      () =>
        cluster({
          transport_socket_matches: [
            { name: 'x', match: {}, transport_socket: RAW },
            { name: 'x', match: {}, transport_socket: RAW },
          ],
        }),
      (err: unknown) => err instanceof ClusterConfigError && /transport_socket_matches\[1\]\.name/.test(err.message),
    )
    const bad = {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': TypeUrls.upstreamTls,
        common_tls_context: {
          tls_params: { tls_minimum_protocol_version: 'TLSv1_3', tls_maximum_protocol_version: 'TLSv1_2' },
        },
      },
    }
    assert.throws(
      () => cluster({ transport_socket_matches: [{ name: 'x', transport_socket: bad }] }),
      (err: unknown) =>
        err instanceof ClusterConfigError &&
        /transport_socket_matches\[0\]\.transport_socket\.typed_config/.test(err.message),
    )
  })
})

describe('jsonEqual (Struct values)', () => {
  it('compares types, lists in order and structs by key', () => {
    assert.ok(jsonEqual({ a: [1, 'b', null] }, { a: [1, 'b', null] }))
    assert.ok(!jsonEqual(1, '1'))
    assert.ok(!jsonEqual([1, 2], [2, 1]))
    assert.ok(!jsonEqual({ a: 1 }, { a: 1, b: 2 }))
    assert.ok(!jsonEqual([], {}))
    assert.ok(!jsonEqual(null, {}))
  })
})
