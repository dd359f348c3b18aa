/**
 * Hand-written HTTP/2 frames over node:net, for the hostile inputs node:http2 refuses to send: frame builders, a
 * literal-only HPACK encoder, and a client that records every frame the server sends (and reads `:status`).
 */
import * as net from 'node:net'

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')

export const T = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const

export const F = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const

/** RFC 9113 §7 error codes. */
export const E = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  ENHANCE_YOUR_CALM: 11,
} as const

const EMPTY = Buffer.alloc(0)

export function frame(type: number, flags: number, stream: number, payload: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(9 + payload.length)
  b.writeUIntBE(payload.length, 0, 3)
  b[3] = type
  b[4] = flags
  b.writeUInt32BE(stream & 0x7fffffff, 5)
  payload.copy(b, 9)
  return b
}

/** An HPACK integer with an `n`-bit prefix; `first` holds the representation's flag bits. */
function hpackInt(value: number, n: number, first: number): number[] {
  const max = (1 << n) - 1
  if (value < max) return [first | value]
  const out = [first | max]
  let v = value - max
  while (v >= 128) {
    out.push((v % 128) + 128)
    v = Math.floor(v / 128)
  }
  out.push(v)
  return out
}

function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1')
  return Buffer.concat([Buffer.from(hpackInt(bytes.length, 7, 0)), bytes])
}

/** A header block of literals without indexing and without Huffman coding: any name or value goes out as given. */
export function hpack(headers: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = []
  for (const [name, value] of headers) parts.push(Buffer.from([0x00]), hpackString(name), hpackString(value))
  return Buffer.concat(parts)
}

export function requestHeaders(
  path = '/',
  extra: readonly [string, string][] = [],
  method = 'GET',
): [string, string][] {
  return [[':method', method], [':scheme', 'http'], [':authority', 'adversarial.test'], [':path', path], ...extra]
}

export function headersFrame(
  stream: number,
  headers: readonly (readonly [string, string])[],
  opts: { endStream?: boolean; endHeaders?: boolean } = {},
): Buffer {
  const flags = (opts.endStream === false ? 0 : F.END_STREAM) | (opts.endHeaders === false ? 0 : F.END_HEADERS)
  return frame(T.HEADERS, flags, stream, hpack(headers))
}

export function settings(entries: readonly (readonly [number, number])[] = []): Buffer {
  const p = Buffer.alloc(entries.length * 6)
  entries.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6)
    p.writeUInt32BE(v, i * 6 + 2)
  })
  return frame(T.SETTINGS, 0, 0, p)
}

export const SETTINGS_ACK = frame(T.SETTINGS, F.ACK, 0)

export function ping(n = 0): Buffer {
  const p = Buffer.alloc(8)
  p.writeUInt32BE(n >>> 0, 4)
  return frame(T.PING, 0, 0, p)
}

export function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4)
  p.writeUInt32BE(code)
  return frame(T.RST_STREAM, 0, stream, p)
}

export function windowUpdate(stream: number, increment: number): Buffer {
  const p = Buffer.alloc(4)
  p.writeUInt32BE(increment >>> 0)
  return frame(T.WINDOW_UPDATE, 0, stream, p)
}

export function goaway(lastStream: number, code: number): Buffer {
  const p = Buffer.alloc(8)
  p.writeUInt32BE(lastStream, 0)
  p.writeUInt32BE(code, 4)
  return frame(T.GOAWAY, 0, 0, p)
}

export function dataFrame(stream: number, payload: Buffer, endStream = false): Buffer {
  return frame(T.DATA, endStream ? F.END_STREAM : 0, stream, payload)
}

export interface Frame {
  type: number
  flags: number
  stream: number
  payload: Buffer
}

const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 }

/** Huffman codes of the ten digits (RFC 7541 Appendix B): enough to read any `:status`. */
function huffmanDigits(b: Buffer): string {
  let bits = ''
  for (const x of b) bits += x.toString(2).padStart(8, '0')
  let out = ''
  let i = 0
  while (i + 5 <= bits.length) {
    const five = Number.parseInt(bits.slice(i, i + 5), 2)
    if (five <= 2) {
      out += String(five)
      i += 5
      continue
    }
    if (i + 6 > bits.length) break
    const six = Number.parseInt(bits.slice(i, i + 6), 2)
    if (six >= 0x19 && six <= 0x1f) {
      out += String(six - 0x19 + 3)
      i += 6
      continue
    }
    break
  }
  return out
}

function readInt(b: Buffer, pos: number, n: number): [number, number] {
  const max = (1 << n) - 1
  let v = b[pos]! & max
  pos++
  if (v < max) return [v, pos]
  let m = 0
  while (true) {
    const x = b[pos++]!
    v += (x & 0x7f) * 2 ** m
    m += 7
    if ((x & 0x80) === 0) return [v, pos]
  }
}

/**
 * `:status` of a response header block (the first field, as RFC 9113 §8.3 requires). The client announces a
 * header table size of 0, so the server never refers to its dynamic table.
 */
export function statusOf(block: Buffer): number {
  let pos = 0
  while ((block[pos]! & 0xe0) === 0x20) pos = readInt(block, pos, 5)[1] // table size updates
  const first = block[pos]!
  if (first & 0x80) return STATIC_STATUS[readInt(block, pos, 7)[0]] ?? -1
  const [nameIndex, p2] = readInt(block, pos, first & 0x40 ? 6 : 4)
  if (STATIC_STATUS[nameIndex] === undefined) return -1
  const huffman = (block[p2]! & 0x80) !== 0
  const [len, p3] = readInt(block, p2, 7)
  const raw = block.subarray(p3, p3 + len)
  return Number(huffman ? huffmanDigits(raw) : raw.toString('latin1'))
}

/**
 * A raw HTTP/2 client: sends the preface and a SETTINGS frame (header table size 0), acknowledges the server's
 * SETTINGS and PINGs, and keeps every frame it receives.
 */
export class RawH2 {
  readonly socket: net.Socket
  readonly frames: Frame[] = []
  closed = false
  private buf: Buffer = EMPTY
  private waiters: (() => void)[] = []
  private pendingHeaders = new Map<number, Buffer>()
  /** `:status` per stream, once its response HEADERS (and CONTINUATIONs) have arrived */
  readonly status = new Map<number, number>()
  readonly bodyBytes = new Map<number, number>()
  autoAck = true

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.on('data', (d: Buffer) => this.onData(d))
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.wake()
    })
  }

  static connect(port: number, opts: { settings?: readonly (readonly [number, number])[] } = {}): Promise<RawH2> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('error', reject)
      s.once('connect', () => {
        s.off('error', reject)
        const c = new RawH2(s)
        s.write(Buffer.concat([PREFACE, settings([[1, 0], ...(opts.settings ?? [])])]))
        resolve(c)
      })
    })
  }

  write(b: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return false
    return this.socket.write(b)
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3)
      if (this.buf.length < 9 + len) break
      const f: Frame = {
        type: this.buf[3]!,
        flags: this.buf[4]!,
        stream: this.buf.readUInt32BE(5) & 0x7fffffff,
        payload: Buffer.from(this.buf.subarray(9, 9 + len)),
      }
      this.buf = this.buf.subarray(9 + len)
      this.onFrame(f)
    }
    this.wake()
  }

  private onFrame(f: Frame): void {
    this.frames.push(f)
    if (f.type === T.SETTINGS && (f.flags & F.ACK) === 0 && this.autoAck) this.write(SETTINGS_ACK)
    if (f.type === T.PING && (f.flags & F.ACK) === 0 && this.autoAck) this.write(frame(T.PING, F.ACK, 0, f.payload))
    if (f.type === T.DATA) this.bodyBytes.set(f.stream, (this.bodyBytes.get(f.stream) ?? 0) + f.payload.length)
    if (f.type === T.HEADERS || f.type === T.CONTINUATION) {
      const block = Buffer.concat([this.pendingHeaders.get(f.stream) ?? EMPTY, f.payload])
      if (f.flags & F.END_HEADERS) {
        this.pendingHeaders.delete(f.stream)
        if (!this.status.has(f.stream)) this.status.set(f.stream, statusOf(block))
      } else this.pendingHeaders.set(f.stream, block)
    }
  }

  /** Resolves once `pred` holds (checked on every frame and on close), or false after `timeoutMs`. */
  until(pred: () => boolean, timeoutMs = 5000): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        if (pred()) {
          clearTimeout(t)
          resolve(true)
        } else if (this.closed) {
          clearTimeout(t)
          resolve(pred())
        } else this.waiters.push(check)
      }
      const t = setTimeout(() => resolve(pred()), timeoutMs)
      check()
    })
  }

  /** The error code of the first GOAWAY received, or undefined. */
  get goawayCode(): number | undefined {
    const g = this.frames.find((f) => f.type === T.GOAWAY)
    return g === undefined ? undefined : g.payload.readUInt32BE(4)
  }

  rstCode(stream: number): number | undefined {
    const r = this.frames.find((f) => f.type === T.RST_STREAM && f.stream === stream)
    return r === undefined ? undefined : r.payload.readUInt32BE(0)
  }

  /** Waits for a response status, a RST_STREAM on the stream, a GOAWAY or the close. */
  async outcome(stream: number, timeoutMs = 5000): Promise<{ status?: number; rst?: number; goaway?: number }> {
    await this.until(
      () => this.status.has(stream) || this.rstCode(stream) !== undefined || this.goawayCode !== undefined,
      timeoutMs,
    )
    return { status: this.status.get(stream), rst: this.rstCode(stream), goaway: this.goawayCode }
  }

  destroy(): void {
    this.socket.destroy()
  }
}
