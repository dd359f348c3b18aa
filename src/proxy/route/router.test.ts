import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import type { HeaderMatcher, QueryParameterMatcher, Route, RouteConfiguration } from '../../config/envoy.js'
import { Headers } from '../http/headers.js'
import { type CompiledRoute, compileRouteConfig, type RequestView, RouteConfigError } from './router.js'
import { hashString } from './hash.js'

function req(authority: string, path: string, headers: [string, string][] = [], method = 'GET'): RequestView {
  return { authority, path, method, headers: new Headers(headers.flat()) }
}

/** One catch-all virtual host with the given routes. */
function single(routes: Route[], extra: Partial<RouteConfiguration> = {}) {
  return compileRouteConfig({ name: 'test', virtual_hosts: [{ name: 'vh', domains: ['*'], routes }], ...extra })
}

function route(cfg: ReturnType<typeof single>, r: RequestView): CompiledRoute {
  const m = cfg.match(r)
  assert.ok(m !== null, `no route for ${r.authority}${r.path}`)
  return m
}

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof RouteConfigError, `expected RouteConfigError, got ${String(err)}`)
    assert.equal(err.code, 'LOOM_ERR_CONFIG_INVALID')
    return err.issues
  }
  assert.fail('expected compileRouteConfig to throw')
}

const direct = (status: number) => ({ direct_response: { status } })

describe('virtual host selection', () => {
  const cfg = compileRouteConfig({
    name: 'domains',
    virtual_hosts: [
      { name: 'exact', domains: ['www.foo.com', 'Foo.com:8080'] },
      { name: 'suffix', domains: ['*.foo.com'] },
      { name: 'long-suffix', domains: ['*-bar.foo.com'] },
      { name: 'aa', domains: ['*.aa.com'] },
      { name: 'bb', domains: ['*.bb.com'] },
      { name: 'prefix', domains: ['foo.*'] },
      { name: 'long-prefix', domains: ['foo.bar.*'] },
      { name: 'default', domains: ['*'] },
    ],
  })
  const cases: [string, string, string | null][] = [
    ['exact domain', 'www.foo.com', 'exact'],
    ['domains are case-insensitive', 'WWW.Foo.COM', 'exact'],
    ['a domain may carry a port', 'foo.com:8080', 'exact'],
    ['the port is part of the match', 'www.foo.com:8080', 'default'],
    ['a domain without port does not match with another port', 'foo.com:9090', 'prefix'],
    ['exact beats a matching suffix wildcard', 'www.foo.com', 'exact'],
    ['suffix wildcard', 'a.foo.com', 'suffix'],
    ['longest suffix wins', 'baz-bar.foo.com', 'long-suffix'],
    ['a wildcard does not match the empty string', '-bar.foo.com', 'suffix'],
    ['suffix wildcard needs something before it', '.foo.com', 'default'],
    ['same-length suffixes are told apart (1)', 'x.aa.com', 'aa'],
    ['same-length suffixes are told apart (2)', 'x.bb.com', 'bb'],
    ['suffix beats prefix', 'foo.foo.com', 'suffix'],
    ['prefix wildcard', 'foo.org', 'prefix'],
    ['longest prefix wins', 'foo.bar.baz', 'long-prefix'],
    ['prefix wildcard needs something after it', 'foo.', 'default'],
    ['anything else goes to *', 'other.net', 'default'],
    ['empty authority goes to *', '', 'default'],
  ]
  for (const [name, authority, want] of cases) {
    test(name, () => assert.equal(cfg.virtualHostFor(authority), want))
  }

  test('no * and no match means no route', () => {
    const c = compileRouteConfig({
      virtual_hosts: [{ name: 'a', domains: ['a.com'], routes: [{ match: { prefix: '/' }, ...direct(200) }] }],
    })
    assert.equal(c.match(req('b.com', '/')), null)
    assert.equal(c.match(req('A.COM', '/'))?.name, 'a/0')
  })
  test('only * selects for every authority', () => {
    const c = single([{ match: { prefix: '/' }, ...direct(200) }])
    assert.equal(c.match(req('anything:1', '/x'))?.vhostName, 'vh')
  })
  test('no virtual hosts at all', () => {
    assert.equal(compileRouteConfig({}).match(req('a', '/')), null)
  })
})

describe('path matching', () => {
  const cfg = single([
    { name: 'prefix', match: { prefix: '/api/' }, ...direct(200) },
    { name: 'exact', match: { path: '/exact' }, ...direct(200) },
    { name: 'exact-ci', match: { path: '/CaseI', case_sensitive: false }, ...direct(200) },
    { name: 'prefix-ci', match: { prefix: '/Pre', case_sensitive: false }, ...direct(200) },
    { name: 'separated', match: { path_separated_prefix: '/sep' }, ...direct(200) },
    { name: 'regex', match: { safe_regex: { regex: '/re/[0-9]+' } }, ...direct(200) },
    { name: 'case', match: { prefix: '/Case' }, ...direct(200) },
    { name: 'query-prefix', match: { prefix: '/q?x' }, ...direct(200) },
    { name: 'separated-ci', match: { path_separated_prefix: '/Svc', case_sensitive: false }, ...direct(200) },
  ])
  const cases: [string, string, string | null][] = [
    ['prefix', '/api/users', 'prefix'],
    ['prefix with query', '/api/?a=1', 'prefix'],
    ['prefix needs the whole prefix', '/api', null],
    ['exact path', '/exact', 'exact'],
    ['exact path ignores the query', '/exact?x=1', 'exact'],
    ['exact path ignores the fragment', '/exact#top', 'exact'],
    ['exact path is not a prefix', '/exactly', null],
    ['exact path: trailing slash differs', '/exact/', null],
    ['case-insensitive exact', '/casei', 'exact-ci'],
    ['case-insensitive exact with query', '/CASEI?x', 'exact-ci'],
    ['case-insensitive prefix', '/PRE/x', 'prefix-ci'],
    ['case-insensitive prefix (lower)', '/pre', 'prefix-ci'],
    ['separated prefix alone', '/sep', 'separated'],
    ['separated prefix with slash', '/sep/', 'separated'],
    ['separated prefix with more', '/sep/a/b', 'separated'],
    ['separated prefix with query', '/sep?x=1', 'separated'],
    ['separated prefix is not a plain prefix', '/separate', null],
    ['separated prefix, case-insensitive', '/SVC/x', 'separated-ci'],
    ['regex full match', '/re/123', 'regex'],
    ['regex ignores the query', '/re/123?x=abc', 'regex'],
    ['regex must match the whole path', '/re/123/x', null],
    ['regex rejects non-digits', '/re/12a', null],
    ['case-sensitive by default', '/Case/x', 'case'],
    ['case-sensitive rejects other case', '/case/x', null],
    ['a prefix cannot reach into the query', '/q?x=1', null],
  ]
  for (const [name, path, want] of cases) {
    test(name, () => assert.equal(cfg.match(req('h', path))?.name ?? null, want))
  }

  test('first matching route wins', () => {
    const c = single([
      { name: 'a', match: { prefix: '/a' }, ...direct(200) },
      { name: 'ab', match: { prefix: '/ab' }, ...direct(200) },
    ])
    assert.equal(c.match(req('h', '/abc'))?.name, 'a')
  })
  test('empty prefix matches everything', () => {
    const c = single([{ name: 'all', match: { prefix: '' }, ...direct(200) }])
    assert.equal(c.match(req('h', '/whatever?x'))?.name, 'all')
  })
  test('unnamed routes are <vhost>/<index>', () => {
    const c = single([
      { match: { prefix: '/a' }, ...direct(200) },
      { name: '', match: { prefix: '/' }, ...direct(200) },
    ])
    assert.equal(c.match(req('h', '/a'))?.name, 'vh/0')
    assert.equal(c.match(req('h', '/b'))?.name, 'vh/1')
  })
})

describe('header matchers', () => {
  const cases: { name: string; m: HeaderMatcher; h: [string, string][]; want: boolean }[] = [
    { name: 'exact_match equal', m: { name: 'x', exact_match: 'a' }, h: [['x', 'a']], want: true },
    { name: 'exact_match different', m: { name: 'x', exact_match: 'a' }, h: [['x', 'b']], want: false },
    { name: 'exact_match missing header', m: { name: 'x', exact_match: 'a' }, h: [], want: false },
    { name: 'empty exact_match means present', m: { name: 'x', exact_match: '' }, h: [['x', 'zzz']], want: true },
    { name: 'empty exact_match, header missing', m: { name: 'x', exact_match: '' }, h: [], want: false },
    { name: 'prefix_match', m: { name: 'x', prefix_match: 'ab' }, h: [['x', 'abcd']], want: true },
    { name: 'prefix_match no', m: { name: 'x', prefix_match: 'ab' }, h: [['x', 'xabcd']], want: false },
    { name: 'suffix_match', m: { name: 'x', suffix_match: 'cd' }, h: [['x', 'abcd']], want: true },
    { name: 'suffix_match no', m: { name: 'x', suffix_match: 'cd' }, h: [['x', 'abcdx']], want: false },
    { name: 'contains_match', m: { name: 'x', contains_match: 'abcd' }, h: [['x', 'xyzabcdpqr']], want: true },
    { name: 'contains_match no', m: { name: 'x', contains_match: 'abcd' }, h: [['x', 'xyzbcdpqr']], want: false },
    {
      name: 'safe_regex_match full',
      m: { name: 'x', safe_regex_match: { regex: '\\d{3}' } },
      h: [['x', '123']],
      want: true,
    },
    {
      name: 'safe_regex_match is a full match',
      m: { name: 'x', safe_regex_match: { regex: '\\d{3}' } },
      h: [['x', '1234']],
      want: false,
    },
    { name: 'range inside', m: { name: 'x', range_match: { start: -10, end: 0 } }, h: [['x', '-1']], want: true },
    {
      name: 'range start inclusive',
      m: { name: 'x', range_match: { start: -10, end: 0 } },
      h: [['x', '-10']],
      want: true,
    },
    {
      name: 'range end exclusive',
      m: { name: 'x', range_match: { start: -10, end: 0 } },
      h: [['x', '0']],
      want: false,
    },
    {
      name: 'range: not a number',
      m: { name: 'x', range_match: { start: 0, end: 10 } },
      h: [['x', 'abc']],
      want: false,
    },
    { name: 'range: float', m: { name: 'x', range_match: { start: 0, end: 20 } }, h: [['x', '10.9']], want: false },
    {
      name: 'range: partial integer',
      m: { name: 'x', range_match: { start: -10, end: 0 } },
      h: [['x', '-1x']],
      want: false,
    },
    { name: 'range: plus sign', m: { name: 'x', range_match: { start: 0, end: 10 } }, h: [['x', '+5']], want: true },
    {
      name: 'range: int64 beyond double precision',
      m: { name: 'x', range_match: { start: 0, end: 10000000000000000 } },
      h: [['x', '9999999999999999']],
      want: true,
    },
    {
      name: 'range: beyond int64',
      m: { name: 'x', range_match: { start: -1, end: 10 } },
      h: [['x', '99999999999999999999']],
      want: false,
    },
    { name: 'present_match true, present', m: { name: 'x', present_match: true }, h: [['x', '']], want: true },
    { name: 'present_match true, absent', m: { name: 'x', present_match: true }, h: [], want: false },
    { name: 'present_match false, absent', m: { name: 'x', present_match: false }, h: [], want: true },
    { name: 'present_match false, present', m: { name: 'x', present_match: false }, h: [['x', 'a']], want: false },
    { name: 'no specifier means present', m: { name: 'x' }, h: [['x', 'a']], want: true },
    { name: 'no specifier, absent', m: { name: 'x' }, h: [], want: false },
    {
      name: 'string_match exact ignore_case',
      m: { name: 'x', string_match: { exact: 'AbC', ignore_case: true } },
      h: [['x', 'aBc']],
      want: true,
    },
    {
      name: 'string_match exact is case-sensitive by default',
      m: { name: 'x', string_match: { exact: 'AbC' } },
      h: [['x', 'aBc']],
      want: false,
    },
    {
      name: 'string_match prefix ignore_case',
      m: { name: 'x', string_match: { prefix: 'BEAR', ignore_case: true } },
      h: [['x', 'bearer t']],
      want: true,
    },
    {
      name: 'string_match suffix ignore_case',
      m: { name: 'x', string_match: { suffix: '.COM', ignore_case: true } },
      h: [['x', 'a.com']],
      want: true,
    },
    {
      name: 'string_match contains ignore_case',
      m: { name: 'x', string_match: { contains: 'MID', ignore_case: true } },
      h: [['x', 'a-mid-b']],
      want: true,
    },
    {
      name: 'string_match safe_regex',
      m: { name: 'x', string_match: { safe_regex: { regex: 'v[0-9]+' } } },
      h: [['x', 'v12']],
      want: true,
    },
    {
      name: 'invert: regex mismatch matches',
      m: { name: 'x', safe_regex_match: { regex: '\\d{3}' }, invert_match: true },
      h: [['x', '1234']],
      want: true,
    },
    {
      name: 'invert: range match does not match',
      m: { name: 'x', range_match: { start: -10, end: 0 }, invert_match: true },
      h: [['x', '-1']],
      want: false,
    },
    {
      name: 'invert: a missing header still fails a value matcher',
      m: { name: 'x', range_match: { start: 0, end: 10 }, invert_match: true },
      h: [],
      want: false,
    },
    {
      name: 'invert: present_match true with the header absent matches',
      m: { name: 'x', present_match: true, invert_match: true },
      h: [],
      want: true,
    },
    {
      name: 'invert: present_match true with the header present fails',
      m: { name: 'x', present_match: true, invert_match: true },
      h: [['x', 'a']],
      want: false,
    },
    {
      name: 'treat_missing_header_as_empty: empty regex matches a missing header',
      m: { name: 'x', string_match: { safe_regex: { regex: '^$' } }, treat_missing_header_as_empty: true },
      h: [],
      want: true,
    },
    {
      name: 'treat_missing_header_as_empty off: missing header fails',
      m: { name: 'x', string_match: { safe_regex: { regex: '^$' } } },
      h: [],
      want: false,
    },
    {
      name: 'treat_missing_header_as_empty with invert and range',
      m: { name: 'x', range_match: { start: 0, end: 10 }, invert_match: true, treat_missing_header_as_empty: true },
      h: [],
      want: true,
    },
    {
      name: 'several values are comma-joined',
      m: { name: 'x', exact_match: 'a,b' },
      h: [
        ['x', 'a'],
        ['x', 'b'],
      ],
      want: true,
    },
    {
      name: 'several values: the first alone fails',
      m: { name: 'x', exact_match: 'a' },
      h: [
        ['x', 'a'],
        ['x', 'b'],
      ],
      want: false,
    },
    { name: 'configured name is lower-cased', m: { name: 'X-Foo', exact_match: 'a' }, h: [['x-foo', 'a']], want: true },
    { name: ':method', m: { name: ':method', string_match: { exact: 'POST' } }, h: [], want: true },
    { name: ':authority', m: { name: ':authority', exact_match: 'h:1' }, h: [], want: true },
    { name: 'host is the authority', m: { name: 'host', exact_match: 'h:1' }, h: [], want: true },
    { name: ':path is the full target', m: { name: ':path', prefix_match: '/p?' }, h: [], want: true },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const cfg = single([{ name: 'hit', match: { prefix: '/', headers: [c.m] }, ...direct(200) }])
      assert.equal(cfg.match(req('h:1', '/p?q', c.h, 'POST')) !== null, c.want)
    })
  }

  test('every header matcher must match', () => {
    const cfg = single([
      {
        match: {
          prefix: '/',
          headers: [
            { name: 'a', exact_match: '1' },
            { name: 'b', exact_match: '2' },
          ],
        },
        ...direct(200),
      },
    ])
    assert.notEqual(
      cfg.match(
        req('h', '/', [
          ['a', '1'],
          ['b', '2'],
        ]),
      ),
      null,
    )
    assert.equal(
      cfg.match(
        req('h', '/', [
          ['a', '1'],
          ['b', '3'],
        ]),
      ),
      null,
    )
  })
})

describe('query parameter matchers', () => {
  const cases: { name: string; m: QueryParameterMatcher; path: string; want: boolean }[] = [
    {
      name: 'exact on the decoded value',
      m: { name: 'q', string_match: { exact: 'a b' } },
      path: '/?q=a%20b',
      want: true,
    },
    { name: 'plus is not a space', m: { name: 'q', string_match: { exact: 'a+b' } }, path: '/?q=a+b', want: true },
    { name: 'exact mismatch', m: { name: 'q', string_match: { exact: 'x' } }, path: '/?q=y', want: false },
    {
      name: 'only the first value counts',
      m: { name: 'q', string_match: { exact: '2' } },
      path: '/?q=1&q=2',
      want: false,
    },
    { name: 'first value', m: { name: 'q', string_match: { exact: '1' } }, path: '/?q=1&q=2', want: true },
    {
      name: 'missing parameter fails string_match',
      m: { name: 'q', string_match: { exact: '' } },
      path: '/?x=1',
      want: false,
    },
    { name: 'empty value', m: { name: 'q', string_match: { exact: '' } }, path: '/?q=', want: true },
    { name: 'present_match true', m: { name: 'debug', present_match: true }, path: '/?debug', want: true },
    { name: 'present_match true, absent', m: { name: 'debug', present_match: true }, path: '/?x=1', want: false },
    { name: 'present_match false, absent', m: { name: 'debug', present_match: false }, path: '/?x=1', want: true },
    { name: 'present_match false, no query', m: { name: 'debug', present_match: false }, path: '/', want: true },
    {
      name: 'present_match false, present',
      m: { name: 'debug', present_match: false },
      path: '/?debug=1',
      want: false,
    },
    { name: 'decoded names', m: { name: 'a b', present_match: true }, path: '/?a%20b=1', want: true },
    {
      name: 'prefix ignore_case',
      m: { name: 'v', string_match: { prefix: 'BETA', ignore_case: true } },
      path: '/?v=beta-2',
      want: true,
    },
    {
      name: 'regex',
      m: { name: 'id', string_match: { safe_regex: { regex: '[0-9]+' } } },
      path: '/?id=42',
      want: true,
    },
    { name: 'fragment excluded', m: { name: 'q', string_match: { exact: '1' } }, path: '/?q=1#frag', want: true },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const cfg = single([{ match: { prefix: '/', query_parameters: [c.m] }, ...direct(200) }])
      assert.equal(cfg.match(req('h', c.path)) !== null, c.want)
    })
  }

  test('the query is parsed once and shared by routes', () => {
    const cfg = single([
      {
        name: 'a',
        match: { prefix: '/', query_parameters: [{ name: 'v', string_match: { exact: '1' } }] },
        ...direct(200),
      },
      {
        name: 'b',
        match: { prefix: '/', query_parameters: [{ name: 'v', string_match: { exact: '2' } }] },
        ...direct(200),
      },
    ])
    assert.equal(cfg.match(req('h', '/?v=2'))?.name, 'b')
    assert.equal(cfg.match(req('h', '/?v=1'))?.name, 'a')
    assert.equal(cfg.match(req('h', '/?v=3')), null)
  })
})

describe('grpc match', () => {
  const cfg = single([{ name: 'grpc', match: { prefix: '/', grpc: {} }, ...direct(200) }])
  const cases: [string, string | null, boolean][] = [
    ['application/grpc', 'application/grpc', true],
    ['application/grpc+proto', 'application/grpc+proto', true],
    ['grpc-web is not gRPC', 'application/grpc-web', false],
    ['json', 'application/json', false],
    ['no content-type', null, false],
  ]
  for (const [name, ct, want] of cases) {
    test(name, () => {
      const h: [string, string][] = ct === null ? [] : [['content-type', ct]]
      assert.equal(cfg.match(req('h', '/svc/M', h)) !== null, want)
    })
  }
})

describe('cluster routes', () => {
  test('fixed cluster', () => {
    const r = route(single([{ match: { prefix: '/' }, route: { cluster: 'c1' } }]), req('h', '/'))
    assert.equal(r.kind, 'cluster')
    assert.equal(r.pickCluster(), 'c1')
  })

  test('weighted clusters follow their weights (10k picks)', () => {
    const cfg = single([
      {
        match: { prefix: '/' },
        route: {
          weighted_clusters: {
            clusters: [
              { name: 'a', weight: 70 },
              { name: 'b', weight: 20 },
              { name: 'c', weight: 10 },
              { name: 'never', weight: 0 },
            ],
          },
        },
      },
    ])
    const r = route(cfg, req('h', '/'))
    const counts = new Map<string, number>()
    const n = 10_000
    for (let i = 0; i < n; i++) {
      const c = r.pickCluster()
      counts.set(c, (counts.get(c) ?? 0) + 1)
    }
    for (const [name, share] of [
      ['a', 0.7],
      ['b', 0.2],
      ['c', 0.1],
    ] as const) {
      const got = (counts.get(name) ?? 0) / n
      assert.ok(Math.abs(got - share) < 0.03, `${name}: ${got} vs ${share}`)
    }
    assert.equal(counts.get('never'), undefined)
  })

  test('weights are relative to their sum when total_weight is absent', () => {
    const r = route(
      single([{ match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'only', weight: 3 }] } } }]),
      req('h', '/'),
    )
    for (let i = 0; i < 100; i++) assert.equal(r.pickCluster(), 'only')
  })

  test('clusterNames lists every cluster a route can send to', () => {
    const cfg = single([
      { match: { prefix: '/a' }, route: { cluster: 'fixed' } },
      {
        match: { prefix: '/b' },
        route: {
          weighted_clusters: {
            clusters: [
              { name: 'w1', weight: 1 },
              { name: 'w0', weight: 0 },
            ],
            total_weight: 1,
          },
        },
      },
      { match: { prefix: '/c' }, redirect: { host_redirect: 'x' } },
    ])
    assert.deepEqual([...cfg.clusterNames()].sort(), ['fixed', 'w0', 'w1'])
  })

  test('timeouts', () => {
    const cfg = single([
      { name: 'default', match: { prefix: '/d' }, route: { cluster: 'c' } },
      { name: 'none', match: { prefix: '/n' }, route: { cluster: 'c', timeout: '0s', idle_timeout: '30s' } },
      { name: 'set', match: { prefix: '/s' }, route: { cluster: 'c', timeout: '1.5s' } },
    ])
    const d = route(cfg, req('h', '/d'))
    assert.equal(d.timeoutMs, 15_000)
    assert.equal(d.idleTimeoutMs, -1, 'unset: the connection manager decides')
    const n = route(cfg, req('h', '/n'))
    assert.equal(n.timeoutMs, 0)
    assert.equal(n.idleTimeoutMs, 30_000)
    assert.equal(route(cfg, req('h', '/s')).timeoutMs, 1500)
  })

  test('host rewrites', () => {
    const cfg = single([
      { name: 'lit', match: { prefix: '/l' }, route: { cluster: 'c', host_rewrite_literal: 'up.internal' } },
      { name: 'auto', match: { prefix: '/a' }, route: { cluster: 'c', auto_host_rewrite: true } },
    ])
    const lit = route(cfg, req('h', '/l'))
    assert.equal(lit.hostRewrite, 'up.internal')
    assert.equal(lit.autoHostRewrite, false)
    const auto = route(cfg, req('h', '/a'))
    assert.equal(auto.hostRewrite, null)
    assert.equal(auto.autoHostRewrite, true)
  })

  test('pickCluster on a redirect route throws', () => {
    const r = route(single([{ match: { prefix: '/' }, redirect: { https_redirect: true } }]), req('h', '/'))
    assert.throws(() => r.pickCluster())
  })
})

describe('path rewrites', () => {
  const cases: { name: string; r: Route; path: string; want: string }[] = [
    {
      name: 'prefix_rewrite keeps the query',
      r: { match: { prefix: '/api/' }, route: { cluster: 'c', prefix_rewrite: '/v2/' } },
      path: '/api/users?x=1',
      want: '/v2/users?x=1',
    },
    {
      name: 'prefix_rewrite on a case-insensitive prefix',
      r: { match: { prefix: '/api/', case_sensitive: false }, route: { cluster: 'c', prefix_rewrite: '/v2/' } },
      path: '/API/x',
      want: '/v2/x',
    },
    {
      name: 'prefix_rewrite on an exact path',
      r: { match: { path: '/old' }, route: { cluster: 'c', prefix_rewrite: '/new' } },
      path: '/old?x=1',
      want: '/new?x=1',
    },
    {
      name: 'prefix_rewrite on a path-separated prefix',
      r: { match: { path_separated_prefix: '/svc' }, route: { cluster: 'c', prefix_rewrite: '/backend' } },
      path: '/svc/a?b=1',
      want: '/backend/a?b=1',
    },
    {
      name: 'prefix_rewrite on a regex route replaces the whole path',
      r: { match: { safe_regex: { regex: '/r/.*' } }, route: { cluster: 'c', prefix_rewrite: '/x' } },
      path: '/r/abc?q=1',
      want: '/x?q=1',
    },
    {
      name: 'regex_rewrite with groups keeps the query',
      r: {
        match: { prefix: '/service/' },
        route: {
          cluster: 'c',
          regex_rewrite: { pattern: { regex: '^/service/([^/]+)(/.*)$' }, substitution: '\\2/instance/\\1' },
        },
      },
      path: '/service/foo/v1/api?x=1',
      want: '/v1/api/instance/foo?x=1',
    },
    {
      name: 'regex_rewrite does not touch the query',
      r: {
        match: { prefix: '/' },
        route: { cluster: 'c', regex_rewrite: { pattern: { regex: 'one' }, substitution: 'two' } },
      },
      path: '/one/one?one=one',
      want: '/two/two?one=one',
    },
    {
      name: 'no rewrite returns the path',
      r: { match: { prefix: '/' }, route: { cluster: 'c' } },
      path: '/a?b',
      want: '/a?b',
    },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = route(single([c.r]), req('h', c.path))
      assert.equal(r.rewritePath(c.path), c.want)
    })
  }
  test('without a rewrite the very same string comes back', () => {
    const r = route(single([{ match: { prefix: '/' }, route: { cluster: 'c' } }]), req('h', '/'))
    const p = '/x?y'
    assert.equal(r.rewritePath(p), p)
  })
})

describe('redirects', () => {
  const cases: {
    name: string
    r: Route
    authority: string
    path: string
    scheme: 'http' | 'https'
    status?: number
    location: string
  }[] = [
    {
      name: 'https_redirect',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true } },
      authority: 'foo.com',
      path: '/a?b=1',
      scheme: 'http',
      location: 'https://foo.com/a?b=1',
    },
    {
      name: 'https_redirect drops the old default port',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true } },
      authority: 'foo.com:80',
      path: '/a',
      scheme: 'http',
      location: 'https://foo.com/a',
    },
    {
      name: 'https_redirect keeps a non-default port',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true } },
      authority: 'foo.com:8080',
      path: '/a',
      scheme: 'http',
      location: 'https://foo.com:8080/a',
    },
    {
      name: 'the port is kept when the scheme does not change',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true } },
      authority: 'foo.com:443',
      path: '/a',
      scheme: 'https',
      location: 'https://foo.com:443/a',
    },
    {
      name: 'scheme_redirect to http drops :443',
      r: { match: { prefix: '/' }, redirect: { scheme_redirect: 'http' } },
      authority: 'foo.com:443',
      path: '/a',
      scheme: 'https',
      location: 'http://foo.com/a',
    },
    {
      name: 'IPv6 authority',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true } },
      authority: '[::1]:80',
      path: '/a',
      scheme: 'http',
      location: 'https://[::1]/a',
    },
    {
      name: 'IPv6 authority without port',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true } },
      authority: '[::1]',
      path: '/a',
      scheme: 'http',
      location: 'https://[::1]/a',
    },
    {
      name: 'host_redirect',
      r: { match: { prefix: '/' }, redirect: { host_redirect: 'bar.com' } },
      authority: 'foo.com:8080',
      path: '/a?b',
      scheme: 'http',
      location: 'http://bar.com/a?b',
    },
    {
      name: 'port_redirect replaces the request port',
      r: { match: { prefix: '/' }, redirect: { port_redirect: 8443 } },
      authority: 'foo.com:80',
      path: '/a',
      scheme: 'http',
      location: 'http://foo.com:8443/a',
    },
    {
      name: 'port_redirect replaces a port in host_redirect',
      r: { match: { prefix: '/' }, redirect: { host_redirect: 'bar.com:9', port_redirect: 8443 } },
      authority: 'foo.com',
      path: '/a',
      scheme: 'https',
      location: 'https://bar.com:8443/a',
    },
    {
      name: 'path_redirect keeps the query',
      r: { match: { path: '/old-path-1' }, redirect: { path_redirect: '/new-path-1' } },
      authority: 'h',
      path: '/old-path-1?bar=1',
      scheme: 'http',
      location: 'http://h/new-path-1?bar=1',
    },
    {
      name: 'path_redirect with strip_query',
      r: { match: { path: '/old-path-2' }, redirect: { path_redirect: '/new-path-2', strip_query: true } },
      authority: 'h',
      path: '/old-path-2?bar=1',
      scheme: 'http',
      location: 'http://h/new-path-2',
    },
    {
      name: 'a query in path_redirect wins and is not stripped',
      r: { match: { path: '/old-path-3' }, redirect: { path_redirect: '/new-path-3?foo=1', strip_query: true } },
      authority: 'h',
      path: '/old-path-3?bar=1',
      scheme: 'http',
      location: 'http://h/new-path-3?foo=1',
    },
    {
      name: 'path_redirect gets a leading slash',
      r: { match: { prefix: '/' }, redirect: { path_redirect: 'new' } },
      authority: 'h',
      path: '/x',
      scheme: 'http',
      location: 'http://h/new',
    },
    {
      name: 'prefix_rewrite',
      r: { match: { prefix: '/old/' }, redirect: { prefix_rewrite: '/new/' } },
      authority: 'h',
      path: '/old/a?x=1',
      scheme: 'http',
      location: 'http://h/new/a?x=1',
    },
    {
      name: 'prefix_rewrite with strip_query',
      r: { match: { prefix: '/old/' }, redirect: { prefix_rewrite: '/new/', strip_query: true } },
      authority: 'h',
      path: '/old/a?x=1',
      scheme: 'http',
      location: 'http://h/new/a',
    },
    {
      name: 'strip_query alone',
      r: { match: { prefix: '/' }, redirect: { https_redirect: true, strip_query: true } },
      authority: 'h',
      path: '/a?x=1',
      scheme: 'http',
      location: 'https://h/a',
    },
    {
      name: 'FOUND',
      r: { match: { prefix: '/' }, redirect: { host_redirect: 'x', response_code: 'FOUND' } },
      authority: 'h',
      path: '/',
      scheme: 'http',
      status: 302,
      location: 'http://x/',
    },
    {
      name: 'SEE_OTHER',
      r: { match: { prefix: '/' }, redirect: { host_redirect: 'x', response_code: 'SEE_OTHER' } },
      authority: 'h',
      path: '/',
      scheme: 'http',
      status: 303,
      location: 'http://x/',
    },
    {
      name: 'TEMPORARY_REDIRECT',
      r: { match: { prefix: '/' }, redirect: { host_redirect: 'x', response_code: 'TEMPORARY_REDIRECT' } },
      authority: 'h',
      path: '/',
      scheme: 'http',
      status: 307,
      location: 'http://x/',
    },
    {
      name: 'PERMANENT_REDIRECT',
      r: { match: { prefix: '/' }, redirect: { host_redirect: 'x', response_code: 'PERMANENT_REDIRECT' } },
      authority: 'h',
      path: '/',
      scheme: 'http',
      status: 308,
      location: 'http://x/',
    },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = route(single([c.r]), req(c.authority, c.path))
      assert.equal(r.kind, 'redirect')
      assert.deepEqual(r.redirect(req(c.authority, c.path), c.scheme), {
        status: c.status ?? 301,
        location: c.location,
      })
    })
  }
  test('redirect() on a cluster route throws', () => {
    const r = route(single([{ match: { prefix: '/' }, route: { cluster: 'c' } }]), req('h', '/'))
    assert.throws(() => r.redirect(req('h', '/'), 'http'))
  })
})

describe('direct responses', () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-route-'))
  after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'body.txt')
  writeFileSync(file, 'from a file')

  const cases: { name: string; r: Route; status: number; body: string | null }[] = [
    { name: 'status only', r: { match: { prefix: '/' }, direct_response: { status: 204 } }, status: 204, body: null },
    {
      name: 'inline_string',
      r: { match: { prefix: '/' }, direct_response: { status: 200, body: { inline_string: 'héllo' } } },
      status: 200,
      body: 'héllo',
    },
    {
      name: 'inline_bytes is base64',
      r: { match: { prefix: '/' }, direct_response: { status: 503, body: { inline_bytes: 'b2s=' } } },
      status: 503,
      body: 'ok',
    },
    {
      name: 'filename is read at compile time',
      r: { match: { prefix: '/' }, direct_response: { status: 200, body: { filename: file } } },
      status: 200,
      body: 'from a file',
    },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = route(single([c.r]), req('h', '/'))
      assert.equal(r.kind, 'direct')
      assert.equal(r.directStatus, c.status)
      assert.equal(r.directBody?.toString('utf8') ?? null, c.body)
    })
  }

  const bad: {
    name: string
    body: { inline_string?: string; inline_bytes?: string; filename?: string }
    at: string
  }[] = [
    { name: 'unreadable file', body: { filename: join(dir, 'missing') }, at: 'body.filename' },
    { name: 'bad base64', body: { inline_bytes: 'not base64!' }, at: 'body.inline_bytes' },
    { name: 'body over 4096 bytes', body: { inline_string: 'x'.repeat(4097) }, at: 'body' },
  ]
  for (const c of bad) {
    test(`rejects ${c.name}`, () => {
      const issues = issuesOf(() =>
        single([{ match: { prefix: '/' }, direct_response: { status: 200, body: c.body } }]),
      )
      assert.deepEqual(
        issues.map((i) => i.path),
        [`virtual_hosts[0].routes[0].direct_response.${c.at}`],
      )
    })
  }
})

describe('header mutations', () => {
  const add = (key: string, value: string, more: object = {}) => ({ header: { key, value }, ...more })

  function layered(level: 'request' | 'response') {
    const a = `${level}_headers_to_add` as const
    return compileRouteConfig({
      [a]: [add('x-order', 'global'), add('x-win', 'global', { append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' })],
      virtual_hosts: [
        {
          name: 'vh',
          domains: ['*'],
          [a]: [add('x-order', 'vhost'), add('x-win', 'vhost', { append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' })],
          routes: [
            {
              match: { prefix: '/' },
              [a]: [add('x-order', 'route'), add('x-win', 'route', { append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' })],
              route: {
                weighted_clusters: {
                  clusters: [
                    {
                      name: 'c1',
                      weight: 1,
                      [a]: [
                        add('x-order', 'cluster'),
                        add('x-win', 'cluster', { append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }),
                      ],
                    },
                    { name: 'c2', weight: 0 },
                  ],
                },
              },
            },
          ],
        },
      ],
    })
  }

  test('request levels: weighted cluster, route, virtual host, route configuration', () => {
    const r = route(layered('request'), req('h', '/'))
    const h = new Headers()
    r.applyRequestHeaders(h, 'c1')
    assert.deepEqual(h.getAll('x-order'), ['cluster', 'route', 'vhost', 'global'])
    // the least specific level is applied last, so its overwrite wins
    assert.deepEqual(h.getAll('x-win'), ['global'])
  })
  test('request levels without the weighted cluster entry', () => {
    const r = route(layered('request'), req('h', '/'))
    const h = new Headers()
    r.applyRequestHeaders(h, 'c2')
    assert.deepEqual(h.getAll('x-order'), ['route', 'vhost', 'global'])
  })
  test('response levels in the same order', () => {
    const r = route(layered('response'), req('h', '/'))
    const h = new Headers()
    r.applyResponseHeaders(h, 'c1')
    assert.deepEqual(h.getAll('x-order'), ['cluster', 'route', 'vhost', 'global'])
    const h2 = new Headers()
    r.applyResponseHeaders(h2)
    assert.deepEqual(h2.getAll('x-order'), ['route', 'vhost', 'global'])
  })

  const cases: {
    name: string
    add?: object[]
    remove?: string[]
    before: [string, string][]
    after: [string, string][]
  }[] = [
    {
      name: 'default appends',
      add: [add('x', 'new')],
      before: [['x', 'old']],
      after: [
        ['x', 'old'],
        ['x', 'new'],
      ],
    },
    {
      name: 'append: true appends',
      add: [add('x', 'new', { append: true })],
      before: [['x', 'old']],
      after: [
        ['x', 'old'],
        ['x', 'new'],
      ],
    },
    {
      name: 'append: false overwrites',
      add: [add('x', 'new', { append: false })],
      before: [
        ['x', 'a'],
        ['x', 'b'],
      ],
      after: [['x', 'new']],
    },
    {
      name: 'OVERWRITE_IF_EXISTS_OR_ADD adds when absent',
      add: [add('x', 'new', { append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' })],
      before: [],
      after: [['x', 'new']],
    },
    {
      name: 'ADD_IF_ABSENT keeps an existing header',
      add: [add('x', 'new', { append_action: 'ADD_IF_ABSENT' })],
      before: [['x', 'old']],
      after: [['x', 'old']],
    },
    {
      name: 'ADD_IF_ABSENT adds a missing header',
      add: [add('x', 'new', { append_action: 'ADD_IF_ABSENT' })],
      before: [['y', '1']],
      after: [
        ['y', '1'],
        ['x', 'new'],
      ],
    },
    {
      name: 'OVERWRITE_IF_EXISTS replaces an existing header',
      add: [add('x', 'new', { append_action: 'OVERWRITE_IF_EXISTS' })],
      before: [['x', 'old']],
      after: [['x', 'new']],
    },
    {
      name: 'OVERWRITE_IF_EXISTS ignores a missing header',
      add: [add('x', 'new', { append_action: 'OVERWRITE_IF_EXISTS' })],
      before: [],
      after: [],
    },
    {
      name: 'decisions use the headers before this level adds',
      add: [add('x', '1', { append_action: 'ADD_IF_ABSENT' }), add('x', '2', { append_action: 'ADD_IF_ABSENT' })],
      before: [],
      after: [
        ['x', '1'],
        ['x', '2'],
      ],
    },
    {
      name: 'overwrites happen before appends',
      add: [add('x', 'appended'), add('x', 'set', { append: false })],
      before: [['x', 'old']],
      after: [
        ['x', 'set'],
        ['x', 'appended'],
      ],
    },
    {
      name: 'removal happens before adding',
      add: [add('x', 'new')],
      remove: ['x'],
      before: [['x', 'old']],
      after: [['x', 'new']],
    },
    {
      name: 'remove only',
      remove: ['X-Gone'],
      before: [
        ['x-gone', '1'],
        ['k', '2'],
      ],
      after: [['k', '2']],
    },
    { name: 'empty values are dropped', add: [add('x', '')], before: [], after: [] },
    {
      name: 'keep_empty_value keeps them',
      add: [add('x', '', { keep_empty_value: true })],
      before: [],
      after: [['x', '']],
    },
    { name: '%% is a literal %', add: [add('x', '100%%')], before: [], after: [['x', '100%']] },
    { name: 'names are lower-cased', add: [add('X-Up', 'v')], before: [], after: [['x-up', 'v']] },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = route(
        single([
          {
            match: { prefix: '/' },
            route: { cluster: 'c' },
            ...(c.add !== undefined ? { request_headers_to_add: c.add as never } : {}),
            ...(c.remove !== undefined ? { request_headers_to_remove: c.remove } : {}),
          },
        ]),
        req('h', '/'),
      )
      const h = new Headers(c.before.flat())
      r.applyRequestHeaders(h, 'c')
      assert.deepEqual(h.list, c.after.flat())
    })
  }
})

/**
 * Expected hashes are literals: FNV-1a (32 bit) of the key, finalised with murmur3's fmix32, both checked against
 * their published vectors in hash.test.ts; combined policies are rotate-left-1-xor, as Envoy combines them.
 */
describe('hash policies', () => {
  function hashRoute(policies: object[]) {
    return route(
      single([{ match: { prefix: '/' }, route: { cluster: 'c', hash_policy: policies as never } }]),
      req('h', '/'),
    )
  }
  const byHeader = hashRoute([{ header: { header_name: 'X-User' } }])

  test('no policy: hasHashPolicy false and no hash', () => {
    const r = route(single([{ match: { prefix: '/' }, route: { cluster: 'c' } }]), req('h', '/'))
    assert.equal(r.hasHashPolicy, false)
    assert.equal(r.hash(req('h', '/'), '10.0.0.1'), undefined)
  })
  test('same input, same hash', () => {
    assert.equal(byHeader.hasHashPolicy, true)
    const a = byHeader.hash(req('h', '/', [['x-user', 'alice']]), '1.1.1.1')
    const b = byHeader.hash(req('h2', '/other', [['x-user', 'alice']]), '2.2.2.2')
    assert.equal(typeof a, 'number')
    assert.equal(a, b)
    assert.ok(a! >= 0 && a! <= 0xffffffff && Number.isInteger(a))
  })
  test('different header value, different hash', () => {
    assert.notEqual(
      byHeader.hash(req('h', '/', [['x-user', 'alice']]), ''),
      byHeader.hash(req('h', '/', [['x-user', 'bob']]), ''),
    )
  })
  test('missing header: no hash', () => {
    assert.equal(byHeader.hash(req('h', '/'), '1.1.1.1'), undefined)
  })
  test('several header values hash the same in any order', () => {
    assert.equal(
      byHeader.hash(
        req('h', '/', [
          ['x-user', 'a'],
          ['x-user', 'b'],
        ]),
        '',
      ),
      byHeader.hash(
        req('h', '/', [
          ['x-user', 'b'],
          ['x-user', 'a'],
        ]),
        '',
      ),
    )
  })
  test('source ip', () => {
    const r = hashRoute([{ connection_properties: { source_ip: true } }])
    assert.equal(r.hash(req('h', '/'), '10.0.0.1'), 0xaebc85ae)
    assert.notEqual(r.hash(req('h', '/'), '10.0.0.1'), r.hash(req('h', '/'), '10.0.0.2'))
    assert.equal(r.hash(req('h', '/'), ''), undefined)
  })
  test('source_ip: false produces nothing', () => {
    const r = hashRoute([{ connection_properties: { source_ip: false } }])
    assert.equal(r.hash(req('h', '/'), '10.0.0.1'), undefined)
  })
  test('query parameter', () => {
    const r = hashRoute([{ query_parameter: { name: 'session' } }])
    assert.equal(r.hash(req('h', '/?session=s1&x=2'), ''), 0x7a3836e9)
    assert.equal(r.hash(req('h', '/?x=2'), ''), undefined)
  })
  test('cookie', () => {
    const r = hashRoute([{ cookie: { name: 'sid' } }])
    const cookie: [string, string][] = [['cookie', 'a=1; sid="abc"; b=2']]
    assert.equal(r.hash(req('h', '/', cookie), ''), 0x1cc93dbc)
    assert.equal(
      r.hash(
        req('h', '/', [
          ['cookie', 'a=1'],
          ['cookie', 'sid=abc'],
        ]),
        '',
      ),
      0x1cc93dbc,
    )
    assert.equal(r.hash(req('h', '/', [['cookie', 'xsid=abc']]), ''), undefined)
    assert.deepEqual(r.cookiesToSet(req('h', '/'), '1.2.3.4'), [])
  })
  test('cookie with ttl is generated when missing', () => {
    const r = hashRoute([{ cookie: { name: 'sid', ttl: '60s', path: '/' } }])
    const out = r.cookiesToSet(req('h', '/'), '1.2.3.4')
    assert.equal(out.length, 1)
    const c = out[0]!
    assert.equal(c.setCookie, `sid="${c.value}"; Max-Age=60; Path=/; HttpOnly`)
    assert.equal(r.hash(req('h', '/'), '1.2.3.4'), hashString(c.value))
    // once the client sends it back, nothing is generated and the hash is stable
    assert.equal(r.hash(req('h', '/', [['cookie', `sid=${c.value}`]]), '9.9.9.9'), hashString(c.value))
    assert.deepEqual(r.cookiesToSet(req('h', '/', [['cookie', `sid=${c.value}`]]), '9.9.9.9'), [])
  })
  test('policies combine by rotate-and-xor', () => {
    const r = hashRoute([{ header: { header_name: 'a' } }, { header: { header_name: 'b' } }])
    const got = r.hash(
      req('h', '/', [
        ['a', '1'],
        ['b', '2'],
      ]),
      '',
    )
    assert.equal(got, 0x96f0ae41)
    assert.notEqual(got, 0x551f758f)
    // a policy without a value is skipped
    assert.equal(r.hash(req('h', '/', [['b', '2']]), ''), 0x3cce455f)
  })
  test('a terminal policy with a value stops the walk', () => {
    const r = hashRoute([{ header: { header_name: 'a' }, terminal: true }, { header: { header_name: 'b' } }])
    assert.equal(
      r.hash(
        req('h', '/', [
          ['a', '1'],
          ['b', '2'],
        ]),
        '',
      ),
      0x551f758f,
    )
    assert.equal(
      r.hash(
        req('h', '/', [
          ['a', '1'],
          ['b', '3'],
        ]),
        '',
      ),
      0x551f758f,
    )
  })
  test('a terminal policy without a value does not stop the walk', () => {
    const r = hashRoute([{ header: { header_name: 'a' }, terminal: true }, { header: { header_name: 'b' } }])
    assert.equal(r.hash(req('h', '/', [['b', '2']]), ''), 0x3cce455f)
  })
  test('identical policies do not cancel out', () => {
    const r = hashRoute([{ header: { header_name: 'a' } }, { header: { header_name: 'a' } }])
    assert.notEqual(r.hash(req('h', '/', [['a', '1']]), ''), 0)
  })
})

describe('compile errors', () => {
  const vh = (name: string, domains: string[], routes: Route[] = []) => ({ name, domains, routes })
  const cases: { name: string; cfg: RouteConfiguration; paths: string[]; message?: RegExp }[] = [
    {
      name: 'lookbehind in a path regex',
      cfg: {
        virtual_hosts: [
          vh('a', ['a']),
          vh('b', ['b'], [{ match: { safe_regex: { regex: '(?<=x)y' } }, ...direct(200) }]),
        ],
      },
      paths: ['virtual_hosts[1].routes[0].match.safe_regex.regex'],
      message: /RE2/,
    },
    {
      name: 'backreference in a header regex',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/', headers: [{ name: 'x', safe_regex_match: { regex: '(a)\\1' } }] },
                ...direct(200),
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex'],
    },
    {
      name: 'bad regex in a header string_match',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/', headers: [{ name: 'x', string_match: { safe_regex: { regex: '(' } } }] },
                ...direct(200),
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].match.headers[0].string_match.safe_regex.regex'],
    },
    {
      name: 'bad regex in a query matcher',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: {
                  prefix: '/',
                  query_parameters: [{ name: 'q', string_match: { safe_regex: { regex: 'a(?!b)' } } }],
                },
                ...direct(200),
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].match.query_parameters[0].string_match.safe_regex.regex'],
    },
    {
      name: 'bad regex_rewrite pattern',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/' },
                route: { cluster: 'c', regex_rewrite: { pattern: { regex: '(?<=a)' }, substitution: 'x' } },
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex'],
    },
    {
      name: 'regex_rewrite substitution referring to a missing group',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/' },
                route: { cluster: 'c', regex_rewrite: { pattern: { regex: '(a)' }, substitution: '\\2' } },
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.regex_rewrite.substitution'],
    },
    {
      name: 'duplicate domain across virtual hosts (case-insensitive)',
      cfg: { virtual_hosts: [vh('a', ['foo.com']), vh('b', ['FOO.com'])] },
      paths: ['virtual_hosts[1].domains[0]'],
      message: /duplicate domain/,
    },
    {
      name: 'duplicate wildcard domain',
      cfg: { virtual_hosts: [vh('a', ['*.foo.com', '*.foo.com'])] },
      paths: ['virtual_hosts[0].domains[1]'],
    },
    {
      name: 'two * virtual hosts',
      cfg: { virtual_hosts: [vh('a', ['*']), vh('b', ['*'])] },
      paths: ['virtual_hosts[1].domains[0]'],
      message: /only one virtual host/,
    },
    {
      name: 'more than one * in a domain',
      cfg: { virtual_hosts: [vh('a', ['*.foo.*'])] },
      paths: ['virtual_hosts[0].domains[0]'],
      message: /more than one/,
    },
    {
      name: '* in the middle of a domain',
      cfg: { virtual_hosts: [vh('a', ['foo.*.com'])] },
      paths: ['virtual_hosts[0].domains[0]'],
    },
    {
      name: 'whitespace in a domain',
      cfg: { virtual_hosts: [vh('a', ['foo .com'])] },
      paths: ['virtual_hosts[0].domains[0]'],
    },
    {
      name: 'duplicate virtual host names',
      cfg: { virtual_hosts: [vh('a', ['a']), vh('a', ['b'])] },
      paths: ['virtual_hosts[1].name'],
    },
    {
      name: 'path_separated_prefix ending in /',
      cfg: { virtual_hosts: [vh('a', ['*'], [{ match: { path_separated_prefix: '/api/' }, ...direct(200) }])] },
      paths: ['virtual_hosts[0].routes[0].match.path_separated_prefix'],
    },
    {
      name: 'weights not adding up to total_weight',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/' },
                route: {
                  weighted_clusters: {
                    clusters: [
                      { name: 'x', weight: 30 },
                      { name: 'y', weight: 30 },
                    ],
                    total_weight: 100,
                  },
                },
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.weighted_clusters.total_weight'],
    },
    {
      name: 'all weights zero',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [{ match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'x', weight: 0 }] } } }],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.weighted_clusters'],
    },
    {
      name: 'a cluster listed twice',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/' },
                route: {
                  weighted_clusters: {
                    clusters: [
                      { name: 'x', weight: 1 },
                      { name: 'x', weight: 1 },
                    ],
                  },
                },
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.weighted_clusters.clusters[1].name'],
    },
    {
      name: 'https_redirect and scheme_redirect',
      cfg: {
        virtual_hosts: [
          vh('a', ['*'], [{ match: { prefix: '/' }, redirect: { https_redirect: true, scheme_redirect: 'http' } }]),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].redirect'],
    },
    {
      name: 'path_redirect and prefix_rewrite',
      cfg: {
        virtual_hosts: [
          vh('a', ['*'], [{ match: { prefix: '/' }, redirect: { path_redirect: '/a', prefix_rewrite: '/b' } }]),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].redirect'],
    },
    {
      name: 'CRLF in host_redirect',
      cfg: { virtual_hosts: [vh('a', ['*'], [{ match: { prefix: '/' }, redirect: { host_redirect: 'a\r\nb' } }])] },
      paths: ['virtual_hosts[0].routes[0].redirect.host_redirect', 'virtual_hosts[0].routes[0].redirect.host_redirect'],
    },
    {
      name: 'newline in host_rewrite_literal',
      cfg: {
        virtual_hosts: [
          vh('a', ['*'], [{ match: { prefix: '/' }, route: { cluster: 'c', host_rewrite_literal: 'a\nb' } }]),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.host_rewrite_literal'],
    },
    {
      name: 'adding a pseudo-header',
      cfg: { request_headers_to_add: [{ header: { key: ':path', value: '/x' } }], virtual_hosts: [] },
      paths: ['request_headers_to_add[0].header.key'],
    },
    {
      name: 'removing host',
      cfg: { virtual_hosts: [{ name: 'a', domains: ['*'], request_headers_to_remove: ['Host'] }] },
      paths: ['virtual_hosts[0].request_headers_to_remove[0]'],
    },
    {
      name: 'a %VAR% substitution',
      cfg: {
        virtual_hosts: [
          vh(
            'a',
            ['*'],
            [
              {
                match: { prefix: '/' },
                route: { cluster: 'c' },
                response_headers_to_add: [{ header: { key: 'x', value: '%DOWNSTREAM_REMOTE_ADDRESS%' } }],
              },
            ],
          ),
        ],
      },
      paths: ['virtual_hosts[0].routes[0].response_headers_to_add[0].header.value'],
      message: /not supported/,
    },
    {
      name: 'a lone %',
      cfg: {
        virtual_hosts: [
          {
            name: 'a',
            domains: ['*'],
            routes: [
              {
                match: { prefix: '/' },
                route: {
                  weighted_clusters: {
                    clusters: [
                      { name: 'c', weight: 1, request_headers_to_add: [{ header: { key: 'x', value: '50%' } }] },
                    ],
                  },
                },
              },
            ],
          },
        ],
      },
      paths: ['virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].request_headers_to_add[0].header.value'],
    },
    {
      name: 'append with a conflicting append_action',
      cfg: {
        virtual_hosts: [
          {
            name: 'a',
            domains: ['*'],
            response_headers_to_add: [
              { header: { key: 'x', value: 'v' }, append: true, append_action: 'ADD_IF_ABSENT' },
            ],
          },
        ],
      },
      paths: ['virtual_hosts[0].response_headers_to_add[0].append'],
    },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const issues = issuesOf(() => compileRouteConfig(c.cfg))
      assert.deepEqual(
        issues.map((i) => i.path),
        c.paths,
        JSON.stringify(issues),
      )
      if (c.message !== undefined) assert.match(issues[0]!.message, c.message)
    })
  }

  test('every issue is reported at once, with the config name in the message', () => {
    try {
      compileRouteConfig({
        name: 'main',
        virtual_hosts: [
          vh('a', ['x.com', '*'], [{ match: { safe_regex: { regex: '(' } }, ...direct(200) }]),
          vh('b', ['x.com', '*']),
        ],
      })
      assert.fail('expected an error')
    } catch (err) {
      assert.ok(err instanceof RouteConfigError)
      assert.equal(err.issues.length, 3)
      assert.match(err.message, /route configuration "main" is invalid/)
      assert.match(err.message, /virtual_hosts\[0\]\.routes\[0\]\.match\.safe_regex\.regex/)
    }
  })
})
