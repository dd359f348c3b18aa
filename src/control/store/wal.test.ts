/**
 * Log record framing: the documented byte layout, torn tails (short header, length past the end, bad checksum,
 * zero fill, garbage) and corruption followed by a valid record.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { crc32 } from 'node:zlib'
import { encodeRecord, readSingleRecord, StoreCorruptionError, scanRecords } from './wal.js'

const log = (...records: Buffer[]) => Buffer.concat(records)

test('a record is [length u32 LE][crc32 of length bytes and body, u32 LE][body]', () => {
  const rec = encodeRecord('{"a":"é"}')
  const body = Buffer.from('{"a":"é"}')
  assert.equal(rec.readUInt32LE(0), body.length)
  assert.equal(rec.readUInt32LE(4), crc32(body, crc32(rec.subarray(0, 4))))
  assert.deepEqual(rec.subarray(8), body)
  assert.equal(crc32('123456789'), 0xcbf43926, 'IEEE CRC-32')
})

test('scanRecords returns every record with its offset', () => {
  const a = encodeRecord('{"n":1}')
  const b = encodeRecord('{"n":22}')
  const { records, end } = scanRecords(log(a, b), 'wal.log')
  assert.deepEqual(
    records.map((r) => [r.offset, r.body.toString()]),
    [
      [0, '{"n":1}'],
      [a.length, '{"n":22}'],
    ],
  )
  assert.equal(end, a.length + b.length)
  assert.deepEqual(scanRecords(Buffer.alloc(0), 'wal.log'), { records: [], end: 0 })
})

test('a torn tail ends the valid prefix', () => {
  const a = encodeRecord('{"n":1}')
  const b = encodeRecord(`{"n":"${'x'.repeat(5000)}"}`)
  const badCrc = Buffer.from(b)
  badCrc.writeUInt8(badCrc.readUInt8(b.length - 3) ^ 0xff, b.length - 3)
  const tails: [string, Buffer][] = [
    ['short header', b.subarray(0, 5)],
    ['length past the end', b.subarray(0, b.length - 1)],
    ['bad checksum of the last record', badCrc],
    ['zero fill', Buffer.alloc(8192)],
    ['garbage', Buffer.from('\x07garbage bytes {"not":"a record"} more garbage')],
    ['header of zeros then a partial body', log(Buffer.alloc(8), b.subarray(8, 2000))],
  ]
  for (const [what, tail] of tails) {
    const { records, end } = scanRecords(log(a, tail), 'wal.log')
    assert.equal(records.length, 1, what)
    assert.equal(end, a.length, what)
  }
})

test('a bad record followed by a valid one is corruption, named by file and offset', () => {
  const a = encodeRecord('{"n":1}')
  const b = Buffer.from(encodeRecord('{"n":2}'))
  const c = encodeRecord('{"n":3}')
  b.writeUInt8(b.readUInt8(10) ^ 0x01, 10)
  assert.throws(
    () => scanRecords(log(a, b, c), '/data/wal.log'),
    (e: Error) =>
      e instanceof StoreCorruptionError &&
      e.file === '/data/wal.log' &&
      e.offset === a.length &&
      e.message.startsWith(`/data/wal.log: corrupt at byte offset ${a.length}: `) &&
      e.message.includes(`valid one at ${a.length + b.length}`),
  )
  const lengthFlipped = Buffer.from(encodeRecord('{"n":2}'))
  lengthFlipped[0] = 0xff
  assert.throws(() => scanRecords(log(a, lengthFlipped, c), 'wal.log'), StoreCorruptionError)
})

test('readSingleRecord wants exactly one valid record', () => {
  const a = encodeRecord('{"n":1}')
  assert.equal(readSingleRecord(a, 'snapshot.db').toString(), '{"n":1}')
  assert.throws(() => readSingleRecord(log(a, Buffer.from('x')), 'snapshot.db'), /unexpected bytes after the record/)
  assert.throws(() => readSingleRecord(a.subarray(0, a.length - 1), 'snapshot.db'), StoreCorruptionError)
  assert.throws(() => readSingleRecord(Buffer.alloc(0), 'snapshot.db'), StoreCorruptionError)
})
