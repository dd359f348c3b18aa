import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GCProfiler } from 'node:v8'
import {
  mergeSlashes,
  normalizePath,
  PATH_OK,
  PATH_REDIRECT,
  PATH_REJECT,
  type PathNormalizationConfig,
  PathNormalizer,
  unescapeSlashes,
} from './path-normalize.js'

/** What the path becomes: the new path, 'reject' (400) or 'redirect <location>' (307). */
function run(cfg: PathNormalizationConfig, path: string): string {
  const n = PathNormalizer.compile(cfg)
  if (n === null) return path
  const v = n.apply(path)
  if (v === PATH_REJECT) return 'reject'
  if (v === PATH_REDIRECT) return `redirect ${n.path}`
  assert.equal(v, PATH_OK)
  return n.path
}

const NORMALIZE: PathNormalizationConfig = { normalize_path: true }
// Istio's mesh-wide settings, as its translator sets the connection manager
const NONE: PathNormalizationConfig = { normalize_path: false, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' }
const BASE: PathNormalizationConfig = { normalize_path: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' }
const MERGE: PathNormalizationConfig = { ...BASE, merge_slashes: true }
const DECODE_AND_MERGE: PathNormalizationConfig = {
  normalize_path: true,
  merge_slashes: true,
  path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD',
}

function table(cfg: PathNormalizationConfig, cases: [string, string][]): void {
  for (const [input, want] of cases) assert.equal(run(cfg, input), want, `${JSON.stringify(cfg)} ${input}`)
}

test('Envoy defaults normalize nothing: no normalizer is compiled', () => {
  assert.equal(PathNormalizer.compile({}), null)
  assert.equal(PathNormalizer.compile({ path_with_escaped_slashes_action: 'IMPLEMENTATION_SPECIFIC_DEFAULT' }), null)
  assert.equal(PathNormalizer.compile(NONE), null)
  assert.notEqual(PathNormalizer.compile({ merge_slashes: true }), null)
  assert.notEqual(PathNormalizer.compile({ path_with_escaped_slashes_action: 'REJECT_REQUEST' }), null)
})

test('normalize_path: Envoy path utility vectors', () => {
  table(NORMALIZE, [
    ['/xyz', '/xyz'],
    ['/x/y/z', '/x/y/z'],
    ['/a/b/../c', '/a/c'],
    ['/a/b/./c', '/a/b/c'],
    ['/a/b/../../../../c', '/c'],
    ['/a/..\\c', '/c'],
    ['/%c0%af', '/%c0%af'],
    ['/%5c%25', '/%5c%25'],
    ['/a/b/%2E%2E/c', '/a/c'],
    ['/a/b/%2E./c', '/a/c'],
    ['/a/b/%2E/c', '/a/b/c'],
    ['/../a/b', '/a/b'],
    ['/./a/b', '/a/b'],
    ['/A/B/C', '/A/B/C'],
    ['/a/b/%2e%2e/c', '/a/c'],
    ['/a/%2F%2f/c', '/a/%2F%2f/c'],
    ['/xyz/.%00../abc', 'reject'],
    ['/xyz/%00.%00./abc', 'reject'],
    ['/xyz/AAAAA%%0000/abc', 'reject'],
  ])
})

test('normalize_path: dot segments, every spelling, and the root clamp', () => {
  table(NORMALIZE, [
    ['/', '/'],
    ['/.', '/'],
    ['/..', '/'],
    ['/a/.', '/a/'],
    ['/a/..', '/'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/a//..', '/a/'],
    ['/x/../admin/x', '/admin/x'],
    ['/./admin/x', '/admin/x'],
    ['/../../../admin', '/admin'],
    ['/%2e/admin', '/admin'],
    ['/%2E/admin', '/admin'],
    ['/%2e%2e/admin', '/admin'],
    ['/%2e%2E/admin', '/admin'],
    ['/%2E%2e/admin', '/admin'],
    ['/x/.%2e/admin', '/admin'],
    ['/x/%2e./admin', '/admin'],
    ['/x/%2e%2e', '/'],
    ['/x/y/%2e%2e', '/x/'],
    ['/x/..\\admin', '/admin'],
    ['/x\\..\\admin', '/admin'],
    // not dot segments
    ['/.a', '/.a'],
    ['/a.', '/a.'],
    ['/...', '/...'],
    ['/.../admin', '/.../admin'],
    ['/..../admin', '/..../admin'],
    ['/..;/admin', '/..;/admin'],
    ['/a..b/c', '/a..b/c'],
    ['/static/app.min.js', '/static/app.min.js'],
    ['/x%2e%2e/admin', '/x../admin'],
  ])
})

test('normalize_path: unreserved escapes are decoded, others kept as written, raw specials encoded', () => {
  table(NORMALIZE, [
    ['/%61dmin/x', '/admin/x'],
    ['/%41DMIN', '/ADMIN'],
    ['/a%2Db%5Fc%7Ed%7e', '/a-b_c~d~'],
    ['/%30%39', '/09'],
    ['/a%20b', '/a%20b'],
    ['/a%3fb', '/a%3fb'],
    ['/a%3Fb', '/a%3Fb'],
    ['/a%2fb', '/a%2fb'],
    ['/a%5Cb', '/a%5Cb'],
    ['/a%7cb', '/a%7cb'],
    ['/%c0%2e%c0%2e/admin', '/%c0.%c0./admin'],
    // a `%` that begins no escape is kept; one that decoding would turn into an escape becomes %25
    ['/a%zz', '/a%zz'],
    ['/a%', '/a%'],
    ['/a%4', '/a%4'],
    ['/%%30%30', '/%2500'],
    ['/%%36%31', '/%2561'],
    ['/%%361', '/%2561'],
    // raw characters a URI cannot hold are encoded (uppercase hex: Loom wrote them)
    ['/a|b', '/a%7Cb'],
    ['/a"b<c>d', '/a%22b%3Cc%3Ed'],
    ['/a^b`c{d}', '/a%5Eb%60c%7Bd%7D'],
    ['/caf\u00e9', '/caf%E9'],
    ['/a b', '/a%20b'],
    ['/a#b', '/a%23b'],
    // a NUL cannot be normalized
    ['/admin%00', 'reject'],
    ['/a\u0000b', 'reject'],
    // case is not normalized
    ['/Admin', '/Admin'],
  ])
})

test('the query is kept byte for byte', () => {
  table(DECODE_AND_MERGE, [
    ['/a//b/../c?x=%2F&y=//../%2e%61', '/a/c?x=%2F&y=//../%2e%61'],
    ['/%2e%2e/admin?next=%2fadmin%2F..', '/admin?next=%2fadmin%2F..'],
    ['/a?', '/a?'],
    ['/a/..?q', '/?q'],
    ['/a/.?q', '/a/?q'],
    ['/a%2?x', '/a%2?x'],
    ['/ok?%00', '/ok?%00'],
  ])
  table({ merge_slashes: true }, [['/a//b?c=//d', '/a/b?c=//d']])
})

test('merge_slashes', () => {
  table({ merge_slashes: true }, [
    ['/a', '/a'],
    ['//a/b/c', '/a/b/c'],
    ['/a//b/c', '/a/b/c'],
    ['/a/b/c//', '/a/b/c/'],
    ['/a///b/c', '/a/b/c'],
    ['/a////b/c', '/a/b/c'],
    ['/a//b?a=///c', '/a/b?a=///c'],
    ['/a//b?', '/a/b?'],
    ['//a/?b', '/a/?b'],
    ['//', '/'],
    ['//admin/x', '/admin/x'],
    // without normalize_path nothing else changes
    ['/a/../b', '/a/../b'],
    ['/a\\\\b', '/a\\\\b'],
    ['/a/%2f/b', '/a/%2f/b'],
  ])
  assert.equal(mergeSlashes('/a/b'), '/a/b')
  assert.equal(mergeSlashes('a//b'), 'a/b')
})

test('Istio pathNormalization: the paths its integration test expects per setting', () => {
  const cases: [string, string, string, string, string][] = [
    // input, NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES
    ['/', '/', '/', '/', '/'],
    ['/app/', '/app/', '/app/', '/app/', '/app/'],
    ['/app/../admin', '/app/../admin', '/admin', '/admin', '/admin'],
    ['/app', '/app', '/app', '/app', '/app'],
    ['/app//', '/app//', '/app//', '/app/', '/app/'],
    ['/app/%2f', '/app/%2f', '/app/%2f', '/app/%2f', '/app/'],
    ['/app%2f/', '/app%2f/', '/app%2f/', '/app%2f/', '/app/'],
    ['/xyz%30..//abc', '/xyz%30..//abc', '/xyz0..//abc', '/xyz0../abc', '/xyz0../abc'],
    ['/app/%2E./admin', '/app/%2E./admin', '/admin', '/admin', '/admin'],
    ['/app\\admin', '/app\\admin', '/app/admin', '/app/admin', '/app/admin'],
    ['/app/\\/\\/\\admin', '/app/\\/\\/\\admin', '/app//////admin', '/app/admin', '/app/admin'],
    [
      '/%2Fapp%5cadmin%5Cabc',
      '/%2Fapp%5cadmin%5Cabc',
      '/%2Fapp%5cadmin%5Cabc',
      '/%2Fapp%5cadmin%5Cabc',
      '/app/admin/abc',
    ],
    [
      '/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc',
      '/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc',
      '/%5Capp%2f%5c%2F..%2fadmin%5c/abc',
      '/%5Capp%2f%5c%2F..%2fadmin%5c/abc',
      '/app/admin/abc',
    ],
    ['/app//../admin', '/app//../admin', '/app/admin', '/app/admin', '/app/admin'],
    ['/app//../../admin', '/app//../../admin', '/admin', '/admin', '/admin'],
  ]
  for (const [input, none, base, merge, decode] of cases) {
    assert.equal(run(NONE, input), none, `NONE ${input}`)
    assert.equal(run(BASE, input), base, `BASE ${input}`)
    assert.equal(run(MERGE, input), merge, `MERGE_SLASHES ${input}`)
    assert.equal(run(DECODE_AND_MERGE, input), decode, `DECODE_AND_MERGE_SLASHES ${input}`)
  }
  table(DECODE_AND_MERGE, [
    ['/%c0%2e%c0%2e/admin', '/%c0.%c0./admin'],
    ['/%c0%2fadmin', '/%c0/admin'],
    // never decoded twice, never other encodings
    ['/0x2e0x2e/admin', '/0x2e0x2e/admin'],
    ['/%252e%252e/admin', '/%252e%252e/admin'],
    ['/%252e%252e%252fadmin', '/%252e%252e%252fadmin'],
    ['/%25c0%25afadmin', '/%25c0%25afadmin'],
    ['/%c0%ae%c0%ae/admin', '/%c0%ae%c0%ae/admin'],
    ['/admin;a=b/xyz', '/admin;a=b/xyz'],
    ['/admin,a=b/xyz', '/admin,a=b/xyz'],
    ['/;/admin', '/;/admin'],
    ['/ADMIN', '/ADMIN'],
    ['/admin%00', 'reject'],
  ])
})

test('Istio DECODE_AND_MERGE_SLASHES: every escape %01 to %ff after /admin', () => {
  for (let i = 1; i <= 0xff; i++) {
    const hex = i.toString(16).padStart(2, '0')
    const input = `/admin%${hex}`
    const ch = String.fromCharCode(i)
    let want = input
    if (/[A-Za-z0-9\-._~]/.test(ch)) want = `/admin${ch}`
    else if (i === 0x2f || i === 0x5c) want = '/admin/'
    assert.equal(run(DECODE_AND_MERGE, input), want, input)
    // the uppercase spelling is kept as written too
    const upper = `/admin%${hex.toUpperCase()}`
    assert.equal(run(DECODE_AND_MERGE, upper), want === input ? upper : want, upper)
  }
})

test('path_with_escaped_slashes_action: each action on %2F, %2f, %5C, %5c', () => {
  for (const esc of ['%2F', '%2f', '%5C', '%5c']) {
    const input = `/admin${esc}x?q=${esc}`
    const slash = esc.startsWith('%2') ? '/' : '\\'
    assert.equal(run({ path_with_escaped_slashes_action: 'KEEP_UNCHANGED' }, input), input)
    assert.equal(run({ path_with_escaped_slashes_action: 'REJECT_REQUEST' }, input), 'reject')
    assert.equal(run({ path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD' }, input), `/admin${slash}x?q=${esc}`)
    assert.equal(
      run({ path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT' }, input),
      `redirect /admin${slash}x?q=${esc}`,
    )
    // with normalize_path a decoded backslash is a slash too
    assert.equal(
      run({ normalize_path: true, path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD' }, input),
      `/admin/x?q=${esc}`,
    )
    assert.equal(
      run({ normalize_path: true, path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT' }, input),
      `redirect /admin/x?q=${esc}`,
    )
  }
  // Envoy's integration vector: unescape and redirect without normalize_path
  assert.equal(
    run({ path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT' }, '/private%2f../%2e%5Cpublic'),
    'redirect /private/../%2e\\public',
  )
  // the redirect goes to the fully normalized path
  assert.equal(
    run({ ...DECODE_AND_MERGE, path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT' }, '/x%2F..%2f/admin'),
    'redirect /admin',
  )
  // no escaped slash: no redirect, no rejection
  assert.equal(run({ path_with_escaped_slashes_action: 'REJECT_REQUEST' }, '/a/b%20c?x=%2F'), '/a/b%20c?x=%2F')
  assert.equal(run({ path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT' }, '/a/b'), '/a/b')
  // a query's escaped slashes are not the path's
  assert.equal(run({ path_with_escaped_slashes_action: 'REJECT_REQUEST' }, '/a?%2f'), '/a?%2f')
  assert.equal(unescapeSlashes('/a%2'), '/a%2')
})

test('the authorization bypass spellings of /admin all become /admin', () => {
  for (const p of [
    '//admin/x',
    '/./admin/x',
    '/%61dmin/x',
    '/x/../admin/x',
    '/%2e/admin/x',
    '/x/%2e%2e/admin/x',
    '/x/%2E%2e/admin/x',
    '/x\\..\\admin/x',
    '///admin/x',
    '/.//admin/x',
    '/x/..//admin/x',
  ])
    assert.equal(run(MERGE, p), '/admin/x', p)
  for (const p of ['/%2fadmin/x', '/%2Fadmin/x', '/%5cadmin/x', '/%5Cadmin/x', '/x/..%2fadmin/x'])
    assert.equal(run(DECODE_AND_MERGE, p), '/admin/x', p)
})

test('paths that are not origin-form are left alone', () => {
  assert.equal(run(DECODE_AND_MERGE, '*'), '*')
  assert.equal(run(DECODE_AND_MERGE, 'example.com:443'), 'example.com:443')
  assert.equal(run(DECODE_AND_MERGE, ''), '')
})

/** A deterministic generator of paths made of the characters that matter. */
function* randomPaths(count: number): Generator<string> {
  const alphabet = [
    '/',
    '/',
    '.',
    '.',
    'a',
    'B',
    '%',
    '2',
    'e',
    'E',
    'f',
    'F',
    '5',
    'c',
    'C',
    '\\',
    '?',
    '0',
    '%2e',
    '%2F',
    '%5c',
    '%61',
    '%00',
    '%%',
    '|',
    '\u00e9',
    '~',
  ]
  let seed = 12345
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  for (let k = 0; k < count; k++) {
    let p = '/'
    const len = rnd(12)
    for (let i = 0; i < len; i++) p += alphabet[rnd(alphabet.length)]
    yield p
  }
}

test('the fast scan says "no change" only when the steps change nothing', () => {
  const configs: PathNormalizationConfig[] = [
    NORMALIZE,
    BASE,
    MERGE,
    DECODE_AND_MERGE,
    { merge_slashes: true },
    { path_with_escaped_slashes_action: 'REJECT_REQUEST' },
    { path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT', normalize_path: true },
  ]
  for (const cfg of configs) {
    const n = PathNormalizer.compile(cfg)!
    let fast = 0
    for (const p of randomPaths(20000)) {
      if (n.needsWork(p)) continue
      fast++
      const q = p.indexOf('?')
      let part = q < 0 ? p : p.slice(0, q)
      if (n.unescape) assert.equal(unescapeSlashes(part), part, `${JSON.stringify(cfg)} ${p}`)
      if (n.normalize) {
        const r = normalizePath(part)
        assert.equal(r, part, `${JSON.stringify(cfg)} ${p}`)
        part = r!
      }
      if (n.merge) assert.equal(mergeSlashes(part), part, `${JSON.stringify(cfg)} ${p}`)
    }
    assert.ok(fast > 1000, `${JSON.stringify(cfg)}: only ${fast} paths took the fast path`)
  }
})

test('normalizing is idempotent', () => {
  const n = PathNormalizer.compile(DECODE_AND_MERGE)!
  for (const p of randomPaths(20000)) {
    if (n.apply(p) !== PATH_OK) continue
    const once = n.path
    assert.equal(n.apply(once), PATH_OK, once)
    assert.equal(n.path, once, `${p} → ${once}`)
  }
})

test('a path that needs no change allocates nothing: no scavenge in a million normalizations', () => {
  const n = PathNormalizer.compile(DECODE_AND_MERGE)!
  const paths = [
    '/api/v1/users/1234/orders?include=items&page=2',
    '/static/js/app.3f2a1b.min.js',
    '/reviews/0',
    '/a%20b/%C3%A9t%C3%A9/x?q=%2F',
    '/productpage?u=normal',
  ]
  for (const p of paths) assert.equal(n.apply(p), PATH_OK)
  const profiler = new GCProfiler()
  profiler.start()
  let same = 0
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < 1_000_000; i++) {
    const p = paths[i % paths.length]!
    n.apply(p)
    if (n.path === p) same++
  }
  const ns = Number(process.hrtime.bigint() - t0)
  const gcs = profiler.stop().statistics.filter((s) => s.gcType === 'Scavenge')
  assert.equal(same, 1_000_000)
  assert.equal(gcs.length, 0, `${gcs.length} scavenges: the fast path allocates`)
  // for the record (not asserted: the machine is shared)
  console.log(`# ${(ns / 1_000_000).toFixed(1)} ns per normalized-path check (avg ${paths.length} paths)`)
})
