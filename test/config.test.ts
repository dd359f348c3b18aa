/**
 * Bad config: `loom validate` / `loom proxy` reject it before anything listens, naming the file, the field path and
 * the problem.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { HCM, ROUTER, runLoom, TCP, writeTemp } from './helpers/proxy.js'

function boot(listeners: unknown[], clusters: unknown[]): unknown {
  return { static_resources: { listeners, clusters } }
}
const l = (filter: unknown, extra: Record<string, unknown> = {}) => ({
  name: 'l',
  address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
  filter_chains: [{ filters: [filter] }],
  ...extra,
})
const hcmF = (routes: unknown[], extra: Record<string, unknown> = {}) => ({
  name: 'envoy.filters.network.http_connection_manager',
  typed_config: {
    '@type': HCM,
    stat_prefix: 's',
    route_config: { virtual_hosts: [{ name: 'v', domains: ['*'], routes }] },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
    ...extra,
  },
})
const cluster = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  type: 'STATIC',
  load_assignment: {
    cluster_name: name,
    endpoints: [
      { lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 1 } } } }] },
    ],
  },
  ...extra,
})
const route = (c = 'a') => ({ match: { prefix: '/' }, route: { cluster: c } })

const cases: [string, unknown, RegExp][] = [
  [
    'unknown field, with its full path',
    boot([l(hcmF([route()]))], [cluster('a', { lb_polcy: 'ROUND_ROBIN' })]),
    /static_resources\.clusters\[0\]\.lb_polcy: unknown field/,
  ],
  [
    'wrong type deep in an endpoint',
    boot(
      [l(hcmF([route()]))],
      [
        {
          name: 'a',
          type: 'STATIC',
          load_assignment: {
            cluster_name: 'a',
            endpoints: [
              {
                lb_endpoints: [
                  { endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 'eighty' } } } },
                ],
              },
            ],
          },
        },
      ],
    ),
    /static_resources\.clusters\[0\]\.load_assignment\.endpoints\[0\]\.lb_endpoints\[0\]\.endpoint\.address\.socket_address\.port_value/,
  ],
  [
    'route to an unknown cluster',
    boot([l(hcmF([route('nope')]))], [cluster('a')]),
    /route\.cluster: unknown cluster "nope"/,
  ],
  [
    'unsupported network filter extension',
    boot(
      [
        l({
          name: 'envoy.filters.network.redis_proxy',
          typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy' },
        }),
      ],
      [],
    ),
    /filters\[0\]\.typed_config\["@type"\]|filters\[0\]\.typed_config\.@type/,
  ],
  [
    'unsupported HTTP filter',
    boot(
      [
        l(
          hcmF([route()], {
            http_filters: [
              {
                name: 'envoy.filters.http.lua',
                typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua' },
              },
            ],
          }),
        ),
      ],
      [cluster('a')],
    ),
    /http_filters\[0\]\.typed_config/,
  ],
  [
    'a regex RE2 cannot run (backreference)',
    boot([l(hcmF([{ match: { safe_regex: { regex: '(a)\\1' } }, route: { cluster: 'a' } }]))], [cluster('a')]),
    /routes\[0\]\.match\.safe_regex/,
  ],
  [
    'both prefix and path in a match',
    boot([l(hcmF([{ match: { prefix: '/', path: '/a' }, route: { cluster: 'a' } }]))], [cluster('a')]),
    /routes\[0\]\.match: only one of/,
  ],
  [
    'bad duration',
    boot([l(hcmF([{ match: { prefix: '/' }, route: { cluster: 'a', timeout: '5 seconds' } }]))], [cluster('a')]),
    /route\.timeout: must be a duration/,
  ],
  [
    'STATIC cluster with a hostname',
    boot(
      [],
      [
        {
          name: 'a',
          type: 'STATIC',
          load_assignment: {
            cluster_name: 'a',
            endpoints: [
              {
                lb_endpoints: [
                  { endpoint: { address: { socket_address: { address: 'example.com', port_value: 80 } } } },
                ],
              },
            ],
          },
        },
      ],
    ),
    /static_resources\.clusters\[0\]\.load_assignment/,
  ],
  [
    'duplicate cluster names',
    boot([], [cluster('a'), cluster('a')]),
    /static_resources\.clusters\[1\]\.name: duplicate cluster name/,
  ],
  [
    'unsupported cluster type',
    boot([], [cluster('a', { type: 'LOGICAL_DNS' })]),
    /static_resources\.clusters\[0\]\.type/,
  ],
  [
    'EDS cluster without a control plane',
    boot([], [cluster('a', { type: 'EDS' })]),
    /static_resources\.clusters\[0\]\.type: an EDS cluster needs a control plane/,
  ],
  [
    'tcp proxy to an unknown cluster',
    boot([l({ name: 'tcp', typed_config: { '@type': TCP, stat_prefix: 't', cluster: 'zz' } })], []),
    /typed_config\.cluster: unknown cluster "zz"/,
  ],
  [
    'unsupported top-level section',
    { static_resources: {}, dynamic_resources: {} },
    /dynamic_resources: unknown field/,
  ],
]

describe('invalid bootstraps are rejected with the file and field path', () => {
  for (const [name, doc, expected] of cases) {
    test(name, async () => {
      const file = writeTemp('bad.json', JSON.stringify(doc))
      const r = await runLoom(['validate', '-c', file])
      assert.equal(r.code, 1, r.stdout + r.stderr)
      assert.ok(r.stderr.includes(file), `stderr names the file: ${r.stderr}`)
      assert.match(r.stderr, expected)
    })
  }

  test('YAML syntax errors name the file', async () => {
    const file = writeTemp('bad.yaml', 'static_resources:\n  listeners: [\n')
    const r = await runLoom(['validate', '-c', file])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /bad\.yaml: invalid configuration/)
    assert.match(r.stderr, /YAML/)
  })

  test('a missing file is a clear error', async () => {
    const r = await runLoom(['proxy', '-c', '/nonexistent/loom.yaml'])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /\/nonexistent\/loom\.yaml: cannot read/)
  })

  test('every problem is reported at once', async () => {
    const file = writeTemp(
      'bad.json',
      JSON.stringify(boot([l(hcmF([route('x'), route('y')]))], [cluster('a'), cluster('a')])),
    )
    const r = await runLoom(['validate', '-c', file])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /clusters\[1\]\.name: duplicate/)
    assert.match(r.stderr, /unknown cluster "x"/)
    assert.match(r.stderr, /unknown cluster "y"/)
  })

  test('a valid bootstrap validates', async () => {
    const file = writeTemp('ok.json', JSON.stringify(boot([l(hcmF([route()]))], [cluster('a')])))
    const r = await runLoom(['validate', '-c', file])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /OK/)
  })

  test('--help explains the command', async () => {
    const r = await runLoom(['proxy', '--help'])
    assert.equal(r.code, 0)
    assert.match(r.stdout, /Usage: loom proxy -c/)
  })
})
