/**
 * The network RBAC filter on its own: decisions and counters per connection, the rules a connection cannot answer
 * refused with their path, and the filter chain's order (RBAC filters, then one terminal filter) in the schema.
 */
import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { FilterChain, type NetworkRbac, TypeUrls } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { StatsStore } from '../stats/stats.js'
import { NetworkRbacFilter } from './network.js'

const sock = (remoteAddress: string, localPort = 9000) =>
  ({ remoteAddress, remotePort: 40000, localAddress: '127.0.0.1', localPort }) as unknown as Socket

function filter(cfg: Omit<NetworkRbac, '@type'>, store = new StatsStore()) {
  const issues: ConfigIssue[] = []
  const f = new NetworkRbacFilter('rbac', { '@type': TypeUrls.networkRbac, ...cfg }, 'f', issues, store)
  return { f, issues, store }
}

const count = (store: StatsStore, name: string) => new Map(store.entries()).get(name)

describe('network RBAC filter', () => {
  it('ALLOW by remote_ip (the peer on a connection): counts allowed and denied under <stat_prefix>rbac.', () => {
    const { f, issues, store } = filter({
      stat_prefix: 'tcp.',
      rules: {
        policies: {
          lan: {
            permissions: [{ any: true }],
            principals: [{ remote_ip: { address_prefix: '10.0.0.0', prefix_len: 8 } }],
          },
        },
      },
    })
    assert.deepEqual(issues, [])
    assert.equal(f.check(sock('10.1.1.1'), 'l'), null)
    assert.equal(f.check(sock('::ffff:10.2.2.2'), 'l'), null)
    assert.equal(f.check(sock('192.0.2.1'), 'l'), 'rbac_access_denied_matched_policy[none]')
    assert.equal(count(store, 'tcp.rbac.allowed'), 2)
    assert.equal(count(store, 'tcp.rbac.denied'), 1)
    assert.equal(count(store, 'tcp.rbac.shadow_allowed'), 0)
  })

  it('DENY names the policy that matched; shadow rules are counted with their prefix, never enforced', () => {
    const { f, store } = filter({
      stat_prefix: 'p.',
      rules: {
        action: 'DENY',
        policies: { 'no-9001': { permissions: [{ destination_port: 9001 }], principals: [{ any: true }] } },
      },
      shadow_rules: {
        action: 'DENY',
        policies: { all: { permissions: [{ any: true }], principals: [{ any: true }] } },
      },
      shadow_rules_stat_prefix: 'dry_',
    })
    assert.equal(f.check(sock('10.0.0.1', 9001), 'l'), 'rbac_access_denied_matched_policy[no-9001]')
    assert.equal(f.check(sock('10.0.0.1', 9000), 'l'), null)
    assert.equal(count(store, 'p.rbac.dry_shadow_denied'), 2)
    assert.equal(count(store, 'p.rbac.denied'), 1)
  })

  it('LOG rules admit everything and count logged / not_logged; no rules: nothing enforced', () => {
    const { f, store } = filter({
      stat_prefix: 'l.',
      rules: {
        action: 'LOG',
        policies: { p: { permissions: [{ destination_port: 1 }], principals: [{ any: true }] } },
      },
    })
    assert.equal(f.check(sock('10.0.0.1', 1), 'l'), null)
    assert.equal(f.check(sock('10.0.0.1', 2), 'l'), null)
    assert.equal(count(store, 'l.rbac.logged'), 1)
    assert.equal(count(store, 'l.rbac.not_logged'), 1)
    assert.equal(filter({ stat_prefix: 'n.' }).f.check(sock('10.0.0.1'), 'l'), null)
  })

  it('header and url_path read HTTP requests: refused with their field path', () => {
    const { issues } = filter({
      stat_prefix: 'x.',
      rules: {
        policies: {
          p: {
            permissions: [{ and_rules: { rules: [{ url_path: { path: { exact: '/' } } }] } }],
            principals: [{ header: { name: 'x', present_match: true } }],
          },
        },
      },
    })
    assert.deepEqual(
      issues.map((i) => i.path),
      [
        'f.rules.policies["p"].permissions[0].and_rules.rules[0].url_path',
        'f.rules.policies["p"].principals[0].header',
      ],
    )
    assert.match(issues[0]!.message, /network RBAC filter sees connections only/)
  })

  it('the chain: network RBAC filters first, one terminal filter last', () => {
    const rbac = { name: 'r', typed_config: { '@type': TypeUrls.networkRbac, stat_prefix: 'r.' } }
    const tcp = { name: 't', typed_config: { '@type': TypeUrls.tcpProxy, stat_prefix: 't', cluster: 'c' } }
    const ok = (filters: unknown[]) => v.safeParse(FilterChain, { filters }).success
    assert.equal(ok([rbac, rbac, tcp]), true)
    assert.equal(ok([tcp]), true)
    assert.equal(ok([rbac]), false)
    assert.equal(ok([tcp, rbac]), false)
    assert.equal(ok([tcp, tcp]), false)
    assert.equal(ok([]), false)
  })
})
