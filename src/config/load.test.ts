import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigError } from '../core/errors.js'
import { parseBootstrap } from './load.js'

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'

function issues(b: unknown): string[] {
  try {
    parseBootstrap(JSON.stringify(b), 'b.json')
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`)
    throw err
  }
  return []
}

describe('bootstrap: schema errors and checks across the document in one pass', () => {
  it('a wrong type and an unknown field, with a duplicate cluster and a route to a missing cluster', () => {
    const got = issues({
      static_resources: {
        listeners: [
          {
            name: 'http',
            address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
            filter_chains: [
              {
                filters: [
                  {
                    name: 'hcm',
                    typed_config: {
                      '@type': HCM,
                      stat_prefix: 'in',
                      route_config: {
                        virtual_hosts: [
                          {
                            name: 'all',
                            domains: ['*'],
                            routes: [{ match: { prefix: '/' }, route: { cluster: 'nope', timeout: 5 } }],
                          },
                        ],
                      },
                      http_filters: [{ name: 'router', typed_config: { '@type': ROUTER } }],
                    },
                  },
                ],
              },
            ],
          },
        ],
        clusters: [
          { name: 'backend', connect_timeout: '1s', typo: 1 },
          { name: 'backend', connect_timeout: '1s' },
        ],
      },
    })
    const route =
      'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route'
    assert.deepEqual(got, [
      `${route}.timeout: wrong type: Expected string but received 5`,
      'static_resources.clusters[0].typo: unknown field (not supported by Loom, or misspelt)',
      'static_resources.clusters[1].name: duplicate cluster name "backend"',
      `${route}.cluster: unknown cluster "nope"`,
    ])
  })

  it('the checks read a document the schema rejects without throwing', () => {
    const got = issues({ static_resources: { listeners: 'x', clusters: [null, 5, { name: 7 }] } })
    assert.ok(got.length > 0)
    assert.ok(got.every((l) => !l.includes('TypeError')))
  })
})

describe('bootstrap: load balancer extensions', () => {
  const withCluster = (extra: Record<string, unknown>) => ({
    static_resources: {
      clusters: [
        {
          name: 'c',
          type: 'STATIC',
          load_assignment: {
            cluster_name: 'c',
            endpoints: [
              {
                lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 1 } } } }],
              },
            ],
          },
          ...extra,
        },
      ],
    },
  })
  it('slow_start_config and the PeakEwma extension are accepted', () => {
    assert.deepEqual(
      issues(
        withCluster({
          lb_policy: 'LEAST_REQUEST',
          least_request_lb_config: {
            choice_count: 2,
            slow_start_config: {
              slow_start_window: '30s',
              aggression: { default_value: 2, runtime_key: 'k' },
              min_weight_percent: { value: 5 },
            },
          },
        }),
      ),
      [],
    )
    assert.deepEqual(
      issues(
        withCluster({
          load_balancing_policy: {
            policies: [
              {
                typed_extension_config: {
                  name: 'peak',
                  typed_config: { '@type': 'type.googleapis.com/loom.config.lb.v1.PeakEwma', decay_time: '5s' },
                },
              },
            ],
          },
        }),
      ),
      [],
    )
  })
  it('an unknown policy type, a bad percent and an empty list are errors with their paths', () => {
    const at = 'static_resources.clusters[0]'
    const got = issues(
      withCluster({
        round_robin_lb_config: { slow_start_config: { min_weight_percent: { value: 150 } } },
        load_balancing_policy: {
          policies: [{ typed_extension_config: { name: 'x', typed_config: { '@type': 'type.googleapis.com/my.Lb' } } }],
        },
      }),
    )
    assert.ok(
      got.some((g) => g.startsWith(`${at}.round_robin_lb_config.slow_start_config.min_weight_percent.value:`)),
      got.join('\n'),
    )
    assert.ok(
      got.some((g) =>
        g.startsWith(`${at}.load_balancing_policy.policies[0].typed_extension_config.typed_config["@type"]:`),
      ),
      got.join('\n'),
    )
    const empty = issues(withCluster({ load_balancing_policy: { policies: [] } }))
    assert.deepEqual(empty, [`${at}.load_balancing_policy.policies: must list at least one policy`])
  })
})
