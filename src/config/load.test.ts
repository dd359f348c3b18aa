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
