import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseInt64 } from './matchers.js'
import {
  asciiLower,
  containsIgnoreCase,
  endsWithIgnoreCase,
  equalsIgnoreCase,
  parseQuery,
  pathEnd,
  percentDecode,
  startsWithIgnoreCase,
} from './strings.js'

describe('ASCII case helpers', () => {
  test('asciiLower returns the same string when already lower', () => {
    const s = 'www.foo.com:8080'
    assert.equal(asciiLower(s), s)
  })
  test('asciiLower folds only A-Z', () => {
    assert.equal(asciiLower('WwW.FÖÖ.Com'), 'www.fÖÖ.com')
  })
  const cases: { name: string; fn: (s: string, l: string) => boolean; s: string; lower: string; want: boolean }[] = [
    { name: 'startsWith: match', fn: startsWithIgnoreCase, s: '/API/x', lower: '/api', want: true },
    { name: 'startsWith: too short', fn: startsWithIgnoreCase, s: '/AP', lower: '/api', want: false },
    { name: 'equals: match', fn: equalsIgnoreCase, s: 'GeT', lower: 'get', want: true },
    { name: 'equals: longer', fn: equalsIgnoreCase, s: 'GeTs', lower: 'get', want: false },
    { name: 'endsWith: match', fn: endsWithIgnoreCase, s: 'x.FOO', lower: '.foo', want: true },
    { name: 'endsWith: no', fn: endsWithIgnoreCase, s: 'x.FOX', lower: '.foo', want: false },
    { name: 'contains: middle', fn: containsIgnoreCase, s: 'xxABcdyy', lower: 'abcd', want: true },
    { name: 'contains: absent', fn: containsIgnoreCase, s: 'xxABcyy', lower: 'abcd', want: false },
    { name: 'contains: empty needle', fn: containsIgnoreCase, s: 'x', lower: '', want: true },
  ]
  for (const c of cases) test(c.name, () => assert.equal(c.fn(c.s, c.lower), c.want))
})

describe('pathEnd', () => {
  const cases: [string, string, number][] = [
    ['no query', '/a/b', 4],
    ['query', '/a?b', 2],
    ['fragment', '/a#b?c', 2],
    ['empty', '', 0],
  ]
  for (const [name, target, want] of cases) test(name, () => assert.equal(pathEnd(target), want))
})

describe('percentDecode', () => {
  const cases: [string, string, string][] = [
    ['plain text is returned as is', 'abc', 'abc'],
    ['%20 is a space', 'a%20b', 'a b'],
    ['+ is kept', 'a+b', 'a+b'],
    ['UTF-8 sequences', 'caf%C3%A9', 'café'],
    ['malformed escapes are kept', 'a%zzb%4', 'a%zzb%4'],
    ['valid escapes next to malformed ones', '%41%zz', 'A%zz'],
    ['invalid UTF-8 becomes U+FFFD', '%ff', '\ufffd'],
    ['non-ASCII kept next to a malformed escape', 'é%', 'é%'],
  ]
  for (const [name, input, want] of cases) test(name, () => assert.equal(percentDecode(input), want))
})

describe('parseQuery', () => {
  const cases: [string, string, [string, string][]][] = [
    ['no query', '/a', []],
    ['first value wins', '/a?x=1&x=2', [['x', '1']]],
    [
      'name without value',
      '/a?debug&y=',
      [
        ['debug', ''],
        ['y', ''],
      ],
    ],
    ['names and values are decoded', '/a?a%20b=c%2Fd', [['a b', 'c/d']]],
    ['value may contain =', '/a?x=a=b', [['x', 'a=b']]],
    ['fragment is not part of the query', '/a?x=1#y=2', [['x', '1']]],
    ['empty segments are skipped', '/a?&&x=1&', [['x', '1']]],
  ]
  for (const [name, target, want] of cases) test(name, () => assert.deepEqual([...parseQuery(target)], want))
})

describe('parseInt64', () => {
  const cases: [string, string, number | bigint | null][] = [
    ['positive', '42', 42],
    ['negative', '-10', -10],
    ['explicit plus', '+7', 7],
    ['empty', '', null],
    ['sign only', '-', null],
    ['float', '10.9', null],
    ['trailing junk', '-1somestring', null],
    ['leading space', ' 1', null],
    ['long values are bigints', '9999999999999999', 9999999999999999n],
    ['int64 max', '9223372036854775807', 9223372036854775807n],
    ['beyond int64', '9223372036854775808', null],
    ['int64 min', '-9223372036854775808', -9223372036854775808n],
  ]
  for (const [name, input, want] of cases) test(name, () => assert.equal(parseInt64(input), want))
})
