import assert from 'node:assert/strict'
import { test } from 'node:test'
import { headStart, headTake, put, putCrlf, putField, preencodeField } from './wire.js'

function head(fields: [string, string][]): string {
  headStart()
  put('GET / HTTP/1.1\r\n')
  for (const [n, v] of fields) putField(n, v)
  putCrlf()
  return headTake().toString('latin1')
}

const expected = (fields: [string, string][]): string =>
  `GET / HTTP/1.1\r\n${fields.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`

test('a pre-encoded field is written as it would be without, beside fields that are not', () => {
  const long = 'v'.repeat(120)
  const other = 'w'.repeat(120)
  const fields: [string, string][] = [
    ['host', 'a'],
    ['x-pre', long],
    // same value under another name, another value under that name: written from their strings
    ['x-other', long],
    ['x-pre', other],
    ['x-pre', long],
  ]
  const before = head(fields)
  preencodeField('x-pre', long)
  preencodeField('x-pre', long)
  const after = head(fields)
  assert.equal(after, expected(fields))
  assert.equal(after, before)
})

test('pre-encoded fields larger than the scratch buffer, and more of them than are kept', () => {
  const big = 'b'.repeat(20_000)
  preencodeField('x-big', big)
  const values = Array.from({ length: 12 }, (_, i) => `${i}`.padEnd(60, 'x'))
  for (const v of values) preencodeField('x-many', v)
  const fields: [string, string][] = [['x-big', big], ...values.map((v): [string, string] => ['x-many', v])]
  assert.equal(head(fields), expected(fields))
  // a short value is not kept, and is written as usual
  preencodeField('x-short', 'abc')
  assert.equal(head([['x-short', 'abc']]), expected([['x-short', 'abc']]))
})
