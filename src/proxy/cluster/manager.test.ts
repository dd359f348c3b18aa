import assert from 'node:assert/strict'
import type { LookupAddress } from 'node:dns'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Cluster } from '../../config/envoy.js'
import { ErrorCodes } from '../../core/errors.js'
import type { DnsLookup } from './dns.js'
import { resolveAddresses } from './dns.js'
import { ClusterConfigError } from './errors.js'
import type { HostPool } from './host.js'
import { ClusterManager } from './manager.js'

function endpoint(address: string, port = 80) {
  return { endpoint: { address: { socket_address: { address, port_value: port } } } }
}

function staticCluster(name: string, ...addresses: string[]): Cluster {
  return {
    name,
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: addresses.map((a) => endpoint(a)) }] },
  }
}

function dnsCluster(name: string, host: string, extra: Partial<Cluster> = {}): Cluster {
  return {
    name,
    type: 'STRICT_DNS',
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [endpoint(host, 8080)] }] },
    ...extra,
  }
}

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof ClusterConfigError, String(err))
    assert.equal(err.code, ErrorCodes.CONFIG_INVALID)
    return err.issues
  }
  assert.fail('expected a ClusterConfigError')
}

function errno(code: string): Error {
  return Object.assign(new Error(`lookup failed: ${code}`), { code })
}

/** A scripted resolver: answers in turn from `script` (the last answer repeats), counting calls. */
function scripted(script: (LookupAddress[] | Error)[]) {
  let i = 0
  const calls: { name: string; family: number }[] = []
  const lookup: DnsLookup = async (name, options) => {
    calls.push({ name, family: options.family })
    const answer = script[Math.min(i++, script.length - 1)]!
    if (answer instanceof Error) throw answer
    return answer
  }
  return { lookup, calls }
}

const v4 = (...addresses: string[]): LookupAddress[] => addresses.map((address) => ({ address, family: 4 }))

test('get, has, all, size', () => {
  const m = new ClusterManager([staticCluster('a', '10.0.0.1'), staticCluster('b', '10.0.0.2')])
  assert.equal(m.get('a')!.name, 'a')
  assert.equal(m.get('nope'), undefined)
  assert.equal(m.has('b'), true)
  assert.deepEqual(
    [...m.all()].map((c) => c.name),
    ['a', 'b'],
  )
  assert.equal(m.size, 2)
})

test('config errors carry paths relative to the clusters array', () => {
  const issues = issuesOf(
    () =>
      new ClusterManager([
        staticCluster('a', '10.0.0.1'),
        staticCluster('a', '10.0.0.2'),
        { name: 'no-endpoints' },
        staticCluster('names', '10.0.0.1', 'backend.local'),
        {
          ...staticCluster('ring', '10.0.0.1'),
          ring_hash_lb_config: { minimum_ring_size: 4096, maximum_ring_size: 1024 },
        },
        { ...staticCluster('maglev', '10.0.0.1'), lb_policy: 'MAGLEV', maglev_lb_config: { table_size: 65536 } },
        staticCluster('dup', '10.0.0.1', '10.0.0.1'),
        { ...staticCluster('zero', '10.0.0.1'), connect_timeout: '0s' },
        dnsCluster('bad-name', 'not a name!'),
        {
          name: 'port0',
          load_assignment: { cluster_name: 'port0', endpoints: [{ lb_endpoints: [endpoint('10.0.0.1', 0)] }] },
        },
      ]),
  )
  const byPath = new Map(issues.map((i) => [i.path, i.message]))
  assert.deepEqual(
    issues.map((i) => i.path),
    [
      '[1].name',
      '[2].load_assignment',
      '[3].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address',
      '[4].ring_hash_lb_config.minimum_ring_size',
      '[5].maglev_lb_config.table_size',
      '[6].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address',
      '[7].connect_timeout',
      '[8].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address',
      '[9].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value',
    ],
  )
  assert.match(byPath.get('[1].name')!, /duplicate cluster name "a" \(also at \[0\]\)/)
  assert.match(
    byPath.get('[3].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address')!,
    /STRICT_DNS/,
  )
  assert.match(byPath.get('[5].maglev_lb_config.table_size')!, /prime/)
  assert.match(
    byPath.get('[6].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address')!,
    /duplicate endpoint 10\.0\.0\.1:80/,
  )
})

test('more config checks: both protocol option places, maglev maximum, TLS files', () => {
  const ext = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
  const issues = issuesOf(
    () =>
      new ClusterManager([
        {
          ...staticCluster('both', '10.0.0.1'),
          http2_protocol_options: {},
          max_requests_per_connection: 1,
          typed_extension_protocol_options: {
            [ext]: {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
              common_http_protocol_options: { max_requests_per_connection: 2 },
            },
          },
        },
        { ...staticCluster('big', '10.0.0.1'), lb_policy: 'MAGLEV', maglev_lb_config: { table_size: 5000017 } },
        {
          ...staticCluster('tls', '10.0.0.1'),
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
              common_tls_context: {
                tls_certificates: [
                  { certificate_chain: { filename: '/nonexistent/cert.pem' }, private_key: { inline_string: 'x' } },
                ],
              },
            },
          },
        },
      ]),
  )
  assert.deepEqual(
    issues.map((i) => i.path),
    [
      '[0].http2_protocol_options',
      '[0].max_requests_per_connection',
      '[1].maglev_lb_config.table_size',
      '[2].transport_socket.typed_config.common_tls_context.tls_certificates[0].certificate_chain.filename',
    ],
  )
  assert.match(issues[3]!.message, /cannot read \/nonexistent\/cert\.pem/)
})

test('STRICT_DNS: localhost resolves (real resolver) to 127.0.0.1 with the endpoint port', async () => {
  const m = new ClusterManager([dnsCluster('local', 'localhost', { dns_lookup_family: 'V4_ONLY' })])
  const c = m.get('local')!
  assert.equal(c.hosts().length, 0)
  assert.equal(c.chooseHost(undefined), null)
  await m.start()
  m.stop()
  const hosts = c.hosts()
  assert.ok(hosts.length >= 1)
  assert.equal(hosts[0]!.address, '127.0.0.1')
  assert.equal(hosts[0]!.port, 8080)
  assert.equal(hosts[0]!.hostname, 'localhost')
  assert.equal(c.chooseHost(undefined)!.key, '127.0.0.1:8080')
})

test('STRICT_DNS: a failed first resolution leaves no hosts and is retried on dns_refresh_rate', async () => {
  const { lookup, calls } = scripted([errno('EAI_AGAIN'), v4('10.1.0.1', '10.1.0.2')])
  const m = new ClusterManager(
    [dnsCluster('d', 'api.internal', { dns_refresh_rate: '0.02s', dns_lookup_family: 'V4_ONLY' })],
    {
      dnsLookup: lookup,
    },
  )
  await m.start()
  const c = m.get('d')!
  assert.equal(c.hosts().length, 0)
  for (let i = 0; i < 100 && c.hosts().length === 0; i++) await sleep(5)
  m.stop()
  assert.deepEqual(
    c.hosts().map((h) => h.key),
    ['10.1.0.1:8080', '10.1.0.2:8080'],
  )
  assert.equal(c.hosts()[0]!.hostname, 'api.internal')
  assert.deepEqual(calls[0], { name: 'api.internal', family: 4 })
})

/** Waits until `calls` has `n` entries and the answer has been applied. */
async function afterCall(calls: unknown[], n: number): Promise<void> {
  for (let i = 0; i < 2000 && calls.length < n; i++) await sleep(1)
  assert.ok(calls.length >= n, `only ${calls.length} lookups`)
  await new Promise((resolve) => setImmediate(resolve))
}

test('STRICT_DNS refreshes keep host identity, drain removed hosts, keep hosts on failure, drop them on NXDOMAIN', async () => {
  const { lookup, calls } = scripted([
    v4('10.1.0.1', '10.1.0.2'),
    v4('10.1.0.2', '10.1.0.3'),
    errno('ESERVFAIL'),
    errno('ENOTFOUND'),
  ])
  const m = new ClusterManager(
    [dnsCluster('d', 'api.internal', { dns_refresh_rate: '0.03s', dns_lookup_family: 'V4_ONLY' })],
    {
      dnsLookup: lookup,
    },
  )
  const c = m.get('d')!
  const keys = () => c.hosts().map((h) => h.key)
  await m.start()
  assert.deepEqual(keys(), ['10.1.0.1:8080', '10.1.0.2:8080'])
  const [one, two] = c.hosts()
  const drained: string[] = []
  const pool = (key: string): HostPool => ({ drain: () => drained.push(key), close: () => {} })
  one!.pool = pool(one!.key)
  two!.pool = pool(two!.key)

  await afterCall(calls, 2)
  assert.deepEqual(keys(), ['10.1.0.2:8080', '10.1.0.3:8080'])
  assert.equal(c.hosts()[0], two)
  assert.deepEqual(drained, ['10.1.0.1:8080'])

  await afterCall(calls, 3)
  assert.deepEqual(keys(), ['10.1.0.2:8080', '10.1.0.3:8080'])

  await afterCall(calls, 4)
  m.stop()
  assert.deepEqual(keys(), [])
  assert.deepEqual(drained, ['10.1.0.1:8080', '10.1.0.2:8080'])
  assert.equal(c.chooseHost(undefined), null)

  const n = calls.length
  await sleep(100)
  assert.ok(calls.length <= n + 1, 'stop() ends the refreshes')
})

test("STRICT_DNS with respect_dns_ttl refreshes on the records' TTL", async () => {
  const { lookup, calls } = scripted([v4('10.1.0.1')])
  const m = new ClusterManager(
    [dnsCluster('d', 'api.internal', { dns_refresh_rate: '3600s', respect_dns_ttl: true })],
    {
      dnsLookup: lookup,
      dnsTtlLookup: async () => 1,
    },
  )
  await m.start()
  // The refresh comes after the 1s TTL, not the hour of dns_refresh_rate.
  const first = calls.length
  await afterCall(calls, first + 1)
  m.stop()
  assert.equal(m.get('d')!.hosts()[0]!.key, '10.1.0.1:8080')
})

test('dns_lookup_family: AUTO prefers IPv6 and falls back to IPv4; V4_PREFERRED the other way round', async () => {
  const answers: Record<number, LookupAddress[] | Error> = {
    4: v4('10.0.0.1'),
    6: errno('ENOTFOUND'),
  }
  const lookup: DnsLookup = async (_name, { family }) => {
    const a = answers[family]!
    if (a instanceof Error) throw a
    return a
  }
  assert.deepEqual(await resolveAddresses(lookup, 'x', 'AUTO'), ['10.0.0.1'])
  assert.deepEqual(await resolveAddresses(lookup, 'x', 'V4_PREFERRED'), ['10.0.0.1'])
  assert.deepEqual(await resolveAddresses(lookup, 'x', 'V6_ONLY'), [])
  answers[6] = [{ address: '2001:db8::1', family: 6 }]
  assert.deepEqual(await resolveAddresses(lookup, 'x', 'AUTO'), ['2001:db8::1'])
  assert.deepEqual(await resolveAddresses(lookup, 'x', 'V4_PREFERRED'), ['10.0.0.1'])
  answers[4] = errno('ENODATA')
  assert.deepEqual(await resolveAddresses(lookup, 'x', 'V4_PREFERRED'), ['2001:db8::1'])
  answers[4] = errno('ETIMEOUT')
  await assert.rejects(resolveAddresses(lookup, 'x', 'V4_ONLY'), /ETIMEOUT/)
})
