/**
 * HTTP/1 head serialization without intermediate strings.
 *
 * A head is written byte by byte into one module-wide scratch buffer (serialization never yields, so one buffer is
 * enough) and copied out once, with room behind it for the first body bytes when the caller has them at hand: a
 * response head and a small body then leave in a single write instead of a corked writev.
 *
 * Names and values are latin1 strings that the parser or the config validation already restricted to legal header
 * bytes; like Buffer.from(s, 'latin1'), a code unit above 0xff keeps its low byte.
 *
 * A field that a filter adds to many messages with one long value (Istio's metadata exchange headers) can be
 * pre-encoded (`preencodeField`): its `name: value\r\n` is then copied in as bytes, one copy instead of a string
 * write, when a head carries that name with that value.
 */
import { Buffer } from 'node:buffer'
import { STATUS_CODES } from 'node:http'

let scratch = Buffer.allocUnsafeSlow(8 * 1024)
let len = 0

/** Status lines by code, built on first use. */
const statusLines: (Buffer | undefined)[] = []

function grow(need: number): void {
  let size = scratch.length * 2
  while (size < need) size *= 2
  const b = Buffer.allocUnsafeSlow(size)
  scratch.copy(b, 0, 0, len)
  scratch = b
}

export function headStart(): void {
  len = 0
}

export function put(s: string): void {
  const n = s.length
  if (len + n > scratch.length) grow(len + n)
  if (n > 48) {
    len += scratch.write(s, len, n, 'latin1')
    return
  }
  const b = scratch
  let o = len
  for (let i = 0; i < n; i++) b[o++] = s.charCodeAt(i)
  len = o
}

/** Values shorter than this are written as they come: a pre-encoded field would not pay for its lookup. */
const PREENCODED_MIN = 49
/** At most this many pre-encoded fields (one per distinct value a config version adds); the oldest goes first. */
const PREENCODED_MAX = 8

interface Preencoded {
  readonly name: string
  readonly value: string
  /** `name: value\r\n` */
  readonly bytes: Buffer
}

const preencoded: Preencoded[] = []

/**
 * Keeps the bytes of field `name: value` (name lower case) for every head written after: for a field that is set
 * with the same long value on many messages. Idempotent; a value too short to gain is ignored.
 */
export function preencodeField(name: string, value: string): void {
  if (value.length < PREENCODED_MIN) return
  for (const p of preencoded) if (p.name === name && p.value === value) return
  if (preencoded.length === PREENCODED_MAX) preencoded.shift()
  preencoded.push({ name, value, bytes: Buffer.from(`${name}: ${value}\r\n`, 'latin1') })
}

/** `name: value\r\n` */
export function putField(name: string, value: string): void {
  if (value.length >= PREENCODED_MIN && preencoded.length !== 0) {
    for (let i = 0; i < preencoded.length; i++) {
      const p = preencoded[i]!
      if (p.value === value && p.name === name) {
        const b = p.bytes
        if (len + b.length > scratch.length) grow(len + b.length)
        scratch.set(b, len)
        len += b.length
        return
      }
    }
  }
  put(name)
  if (len + 2 > scratch.length) grow(len + 2)
  scratch[len++] = 0x3a
  scratch[len++] = 0x20
  put(value)
  putCrlf()
}

export function putCrlf(): void {
  if (len + 2 > scratch.length) grow(len + 2)
  scratch[len++] = 0x0d
  scratch[len++] = 0x0a
}

function putBytes(b: Buffer): void {
  if (len + b.length > scratch.length) grow(len + b.length)
  len += b.copy(scratch, len)
}

/** `HTTP/1.1 <status> <reason>\r\n` */
export function putStatusLine(status: number): void {
  let line = statusLines[status]
  if (line === undefined) {
    line = Buffer.from(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`, 'latin1')
    if (status >= 100 && status < 600) statusLines[status] = line
  }
  putBytes(line)
}

/** A new buffer holding the head followed by `room` uninitialized bytes for the caller to fill. */
export function headTake(room = 0): Buffer {
  const b = Buffer.allocUnsafe(len + room)
  scratch.copy(b, 0, 0, len)
  return b
}

/** `head`, then `body` framed as one chunk when `chunked` (and the last chunk when `last`), in one buffer. */
export function joinHeadAndBody(head: Buffer, body: Buffer, chunked: boolean, last: boolean): Buffer {
  if (!chunked) {
    const out = Buffer.allocUnsafe(head.length + body.length)
    head.copy(out, 0)
    body.copy(out, head.length)
    return out
  }
  const size = `${body.length.toString(16)}\r\n`
  const tail = last ? 7 : 2 // "\r\n0\r\n\r\n" or "\r\n"
  const out = Buffer.allocUnsafe(head.length + size.length + body.length + tail)
  let o = head.copy(out, 0)
  o += out.write(size, o, 'latin1')
  o += body.copy(out, o)
  out.write(last ? '\r\n0\r\n\r\n' : '\r\n', o, 'latin1')
  return out
}
