/**
 * Record framing for the file store's write-ahead log and snapshot. A record is
 *
 *   [length u32 LE][crc32 u32 LE][body: `length` bytes of UTF-8 JSON]
 *
 * where the CRC-32 (IEEE, zlib's) covers the four length bytes and then the body, so a zero-filled header is invalid.
 * The log is a sequence of records, each written by one write() and made durable by one fdatasync() before any of its
 * writes is acknowledged, so only the last record can be torn by a crash. A bad record with nothing valid after it is
 * such a torn tail (the caller truncates it); a bad record followed by a valid one is corruption.
 */
import { crc32 } from 'node:zlib'

export const RECORD_HEADER_BYTES = 8
const MAX_BODY_BYTES = 0xffff_ffff
const OPEN_BRACE = 0x7b

/** Refusal to open a data directory whose files are damaged; names the file and the byte offset. */
export class StoreCorruptionError extends Error {
  override name = 'StoreCorruptionError'
  constructor(
    readonly file: string,
    readonly offset: number,
    problem: string,
  ) {
    super(`${file}: corrupt at byte offset ${offset}: ${problem}; refusing to open (restore the data directory)`)
  }
}

export function encodeRecord(json: string): Buffer {
  const length = Buffer.byteLength(json)
  if (length > MAX_BODY_BYTES) throw new RangeError(`record of ${length} bytes is too large`)
  const buf = Buffer.allocUnsafe(RECORD_HEADER_BYTES + length)
  buf.writeUInt32LE(length, 0)
  buf.write(json, RECORD_HEADER_BYTES, 'utf8')
  buf.writeUInt32LE(checksum(buf, 0, length), 4)
  return buf
}

export interface DecodedRecord {
  offset: number
  body: Buffer
}

export interface ScanResult {
  records: DecodedRecord[]
  /** bytes of valid records from the start; anything after it is a torn tail */
  end: number
}

/** The valid records of a log; throws StoreCorruptionError when a bad record is followed by a valid one. */
export function scanRecords(buf: Buffer, file: string): ScanResult {
  const records: DecodedRecord[] = []
  let offset = 0
  while (offset < buf.length) {
    const body = recordAt(buf, offset)
    if (body === null) {
      const next = findRecord(buf, offset + 1)
      if (next !== -1) {
        throw new StoreCorruptionError(
          file,
          offset,
          `bad record (length or checksum) followed by a valid one at ${next}`,
        )
      }
      return { records, end: offset }
    }
    records.push({ offset, body })
    offset += RECORD_HEADER_BYTES + body.length
  }
  return { records, end: offset }
}

/** The single record a snapshot file must consist of. */
export function readSingleRecord(buf: Buffer, file: string): Buffer {
  const body = recordAt(buf, 0)
  if (body === null) throw new StoreCorruptionError(file, 0, 'bad record (length or checksum)')
  if (RECORD_HEADER_BYTES + body.length !== buf.length) {
    throw new StoreCorruptionError(file, RECORD_HEADER_BYTES + body.length, 'unexpected bytes after the record')
  }
  return body
}

function checksum(buf: Buffer, offset: number, length: number): number {
  const header = crc32(buf.subarray(offset, offset + 4))
  return crc32(buf.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length), header)
}

/** The body of the valid record at `offset`, or null. */
function recordAt(buf: Buffer, offset: number): Buffer | null {
  if (buf.length - offset < RECORD_HEADER_BYTES) return null
  const length = buf.readUInt32LE(offset)
  if (length === 0 || length > buf.length - offset - RECORD_HEADER_BYTES) return null
  if (checksum(buf, offset, length) !== buf.readUInt32LE(offset + 4)) return null
  return buf.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length)
}

/** The offset of the first valid record at or after `from`, or -1 (bodies are JSON objects, so start with `{`). */
function findRecord(buf: Buffer, from: number): number {
  for (let offset = from; offset + RECORD_HEADER_BYTES < buf.length; offset++) {
    if (buf[offset + RECORD_HEADER_BYTES] === OPEN_BRACE && recordAt(buf, offset) !== null) return offset
  }
  return -1
}
