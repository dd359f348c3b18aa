import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { compileFullMatch, compileRewrite } from './regex.js'

function full(pattern: string) {
  const r = compileFullMatch(pattern)
  if (!r.ok) throw new Error(r.error)
  return r.value
}

describe('compileFullMatch', () => {
  const cases: { name: string; pattern: string; input: string; want: boolean }[] = [
    { name: 'whole input matches', pattern: '/re/[0-9]+', input: '/re/123', want: true },
    { name: 'a substring is not enough', pattern: '/re/[0-9]+', input: '/re/123/x', want: false },
    { name: 'nor is a prefix of the pattern', pattern: 'abc', input: 'ab', want: false },
    { name: 'alternation is anchored as a whole (left)', pattern: 'a|bc', input: 'a', want: true },
    { name: 'alternation is anchored as a whole (right)', pattern: 'a|bc', input: 'bc', want: true },
    { name: 'alternation does not match a concatenation', pattern: 'a|bc', input: 'abc', want: false },
    { name: 'dollar does not match before a trailing newline', pattern: 'a', input: 'a\n', want: false },
    { name: 'inline case-insensitive flag', pattern: '(?i)abc', input: 'ABC', want: true },
    { name: 'RE2 named groups', pattern: '(?P<id>[0-9]+)', input: '42', want: true },
    { name: 'unicode classes', pattern: '\\pL+', input: 'café', want: true },
    { name: 'quoted literal with a slash', pattern: '\\Qa/b.c\\E', input: 'a/b.c', want: true },
    { name: 'quoted literal is literal', pattern: '\\Qa/b.c\\E', input: 'a/bxc', want: false },
    { name: 'escaped slash', pattern: 'a\\/b', input: 'a/b', want: true },
    { name: 'empty pattern matches only empty input', pattern: '', input: '', want: true },
    { name: 'empty pattern rejects other input', pattern: '', input: 'x', want: false },
  ]
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(full(c.pattern).test(c.input), c.want)
    })
  }

  const bad: { name: string; pattern: string; reason: RegExp }[] = [
    { name: 'lookbehind', pattern: '(?<=x)a', reason: /invalid perl operator/ },
    { name: 'lookahead', pattern: 'a(?=b)', reason: /invalid perl operator|missing argument/ },
    { name: 'backreference', pattern: '(a)\\1', reason: /invalid escape/ },
    { name: 'stray parenthesis cannot escape anchoring', pattern: 'a)|(b', reason: /unexpected \)/ },
    { name: 'JS-only \\u escape', pattern: '\\u0041', reason: /invalid escape/ },
    { name: 'repetition too large', pattern: 'a{1001}', reason: /repetition/ },
    { name: 'trailing backslash', pattern: 'a\\', reason: /trailing/ },
  ]
  for (const c of bad) {
    test(`rejects ${c.name}`, () => {
      const r = compileFullMatch(c.pattern)
      assert.equal(r.ok, false)
      if (!r.ok) assert.match(r.error, c.reason)
    })
  }
})

describe('compileRewrite', () => {
  const cases: { name: string; pattern: string; sub: string; input: string; want: string }[] = [
    {
      name: 'groups reordered',
      pattern: '^/service/([^/]+)(/.*)$',
      sub: '\\2/instance/\\1',
      input: '/service/foo/v1/api',
      want: '/v1/api/instance/foo',
    },
    {
      name: 'every match replaced',
      pattern: 'one',
      sub: 'two',
      input: '/xxx/one/yyy/one/zzz',
      want: '/xxx/two/yyy/two/zzz',
    },
    {
      name: 'non-greedy whole-input pattern replaces once',
      pattern: '^(.*?)one(.*)$',
      sub: '\\1two\\2',
      input: '/xxx/one/yyy/one/zzz',
      want: '/xxx/two/yyy/one/zzz',
    },
    { name: 'no match leaves input', pattern: 'nope', sub: 'x', input: '/a/b', want: '/a/b' },
    { name: 'empty matches as RE2::GlobalReplace', pattern: 'x*', sub: '-', input: '/ab', want: '-/-a-b-' },
    { name: 'empty match after a match is skipped', pattern: 'x*', sub: '-', input: 'xa', want: '-a-' },
    { name: '\\0 is the whole match', pattern: '[0-9]+', sub: '<\\0>', input: '/a/12/b/3', want: '/a/<12>/b/<3>' },
    { name: '\\\\ is a backslash', pattern: '/', sub: '\\\\', input: '/a/b', want: '\\a\\b' },
    { name: 'dollar signs are literal', pattern: 'a', sub: '$1$&', input: 'ba', want: 'b$1$&' },
    { name: 'non-ASCII input', pattern: 'é', sub: 'e', input: '/café/é', want: '/cafe/e' },
    { name: 'astral characters stay whole', pattern: 'x*', sub: '.', input: '😀', want: '.😀.' },
    { name: 'positions after astral characters', pattern: 'a', sub: 'b', input: '😀a😀a', want: '😀b😀b' },
    { name: 'groups around astral characters', pattern: '(😀)(a)', sub: '\\2\\1', input: 'x😀ay😀', want: 'xa😀y😀' },
    { name: 'unmatched optional group is empty', pattern: '(a)|(b)', sub: '[\\1\\2]', input: 'ab', want: '[a][b]' },
    { name: 'caret only at the start', pattern: '^/', sub: '', input: '/a/b', want: 'a/b' },
  ]
  for (const c of cases) {
    test(c.name, () => {
      const r = compileRewrite(c.pattern, c.sub)
      assert.ok(r.ok, r.ok ? '' : r.error)
      assert.equal(r.value.replaceAll(c.input), c.want)
    })
  }

  const bad: { name: string; pattern: string; sub: string; field: 'pattern' | 'substitution' }[] = [
    { name: 'bad pattern', pattern: '(?<=a)', sub: 'x', field: 'pattern' },
    { name: 'group beyond the pattern', pattern: '(a)', sub: '\\2', field: 'substitution' },
    { name: 'group with none in the pattern', pattern: 'a', sub: '\\1', field: 'substitution' },
    { name: 'unknown escape', pattern: 'a', sub: '\\n', field: 'substitution' },
    { name: 'trailing backslash', pattern: 'a', sub: 'x\\', field: 'substitution' },
  ]
  for (const c of bad) {
    test(`rejects ${c.name}`, () => {
      const r = compileRewrite(c.pattern, c.sub)
      assert.equal(r.ok, false)
      if (!r.ok) assert.equal(r.field, c.field)
    })
  }
})
