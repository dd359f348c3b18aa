// A bidirectional gRPC call over node:http2 with nothing between the socket and the caller but the gRPC framing
// (a 5-byte prefix per message): what the benchmark's lean xDS clients speak. On the wire it is gRPC as any client
// sends it (POST to the method's path, `application/grpc`, `te: trailers`, the status in the trailers); what it
// leaves out is what a load generator does not need: retries, deadlines, compression, name resolution.
//
// A message equal to one of the last few this process received (the control plane sends the streams in the same
// state the same bytes) is compared frame by frame as it arrives against the one held, and handed the reading
// already made of it, without gathering its frames into one buffer; any other is gathered (one copy) and read.
import http2 from 'node:http2'

/** Decodes a message (the caller's wire-format reader), given its whole bytes. */
export type Reader = (bytes: Buffer) => unknown

/**
 * The last few messages received, with what was read of them, shared by the calls of one method in this process.
 */
export class RecentMessages {
  readonly entries: Held[] = []
  constructor(private readonly size = 4) {}

  /** The held messages of this length, newest first (a copy of the list: other calls add to it meanwhile). */
  candidates(length: number): Held[] {
    return this.entries.filter((e) => e.bytes.length === length)
  }

  add(b: Buffer, msg: unknown): unknown {
    this.entries.unshift({ bytes: b, msg })
    if (this.entries.length > this.size) this.entries.pop()
    return msg
  }
}

interface Held {
  bytes: Buffer
  msg: unknown
}

/** One HTTP/2 connection, as each proxy has its own. */
export class H2Session {
  private session: http2.ClientHttp2Session | undefined
  constructor(
    private readonly authority: string,
    private readonly window: number,
  ) {}

  /** The open session, or a new one. */
  get(): http2.ClientHttp2Session {
    const s = this.session
    if (s !== undefined && !s.closed && !s.destroyed) return s
    const fresh = http2.connect(`http://${this.authority}`, {
      settings: { initialWindowSize: this.window, enablePush: false },
    })
    fresh.on('connect', () => fresh.setLocalWindowSize(this.window))
    fresh.on('error', () => {})
    fresh.on('close', () => {
      if (this.session === fresh) this.session = undefined
    })
    this.session = fresh
    return fresh
  }

  close(): void {
    this.session?.close()
    this.session = undefined
  }
}

export interface H2CallHandlers {
  message(msg: unknown): void
  /** the call ended (the stream closed, with or without an error); called once */
  end(error?: Error): void
}

export class H2Call {
  private readonly stream: http2.ClientHttp2Stream
  private ended = false
  // the message being received
  private header = Buffer.alloc(5)
  private headerHave = 0
  private length = -1
  private have = 0
  private chunks: Buffer[] = []
  /** the held messages of its length it equals so far, the first one compared as parts arrive */
  private match: Held[] = []

  constructor(
    session: H2Session,
    path: string,
    private readonly recent: RecentMessages,
    private readonly read: Reader,
    private readonly counted: { bytes: number },
    private readonly on: H2CallHandlers,
  ) {
    this.stream = session
      .get()
      .request(
        { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' },
        { endStream: false },
      )
    this.stream.on('data', (chunk: Buffer) => this.data(chunk))
    this.stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
      const status = Number(t['grpc-status'] ?? 0)
      if (status !== 0) this.finish(new Error(`grpc-status ${status}: ${String(t['grpc-message'] ?? '')}`))
    })
    this.stream.on('response', (h: http2.IncomingHttpHeaders) => {
      const status = h['grpc-status']
      if (status !== undefined && Number(status) !== 0) this.finish(new Error(`grpc-status ${String(status)}`))
    })
    this.stream.on('error', (e: Error) => this.finish(e))
    this.stream.on('close', () => this.finish())
  }

  write(message: Buffer): void {
    if (this.ended) return
    const prefix = Buffer.allocUnsafe(5)
    prefix[0] = 0
    prefix.writeUInt32BE(message.length, 1)
    this.stream.write(prefix)
    this.stream.write(message)
  }

  cancel(): void {
    if (this.ended) return
    this.stream.close(http2.constants.NGHTTP2_CANCEL)
    this.finish()
  }

  private finish(error?: Error): void {
    if (this.ended) return
    this.ended = true
    if (!this.stream.closed) this.stream.close(http2.constants.NGHTTP2_CANCEL)
    this.on.end(error)
  }

  private data(chunk: Buffer): void {
    let off = 0
    while (off < chunk.length && !this.ended) {
      if (this.length < 0) {
        const n = Math.min(5 - this.headerHave, chunk.length - off)
        chunk.copy(this.header, this.headerHave, off, off + n)
        this.headerHave += n
        off += n
        if (this.headerHave < 5) return
        if (this.header[0] !== 0) return this.finish(new Error('compressed message: not supported'))
        this.length = this.header.readUInt32BE(1)
        this.have = 0
        this.chunks = []
        this.match = this.recent.candidates(this.length)
        if (this.length === 0) this.complete()
        continue
      }
      const n = Math.min(this.length - this.have, chunk.length - off)
      const part = n === chunk.length ? chunk : chunk.subarray(off, off + n)
      this.compare(part)
      this.chunks.push(part)
      this.have += n
      off += n
      if (this.have === this.length) this.complete()
    }
  }

  /** Narrows the held messages this one may equal with the part that arrived (at offset `have`). */
  private compare(part: Buffer): void {
    if (this.match.length === 0) return
    if (this.match[0]!.bytes.compare(part, 0, part.length, this.have, this.have + part.length) === 0) return
    // another held message of this length may still equal what arrived so far
    this.match.shift()
    while (this.match.length > 0 && !this.sameSoFar(this.match[0]!.bytes, part)) this.match.shift()
  }

  private sameSoFar(held: Buffer, part: Buffer): boolean {
    let at = 0
    for (const c of this.chunks) {
      if (held.compare(c, 0, c.length, at, at + c.length) !== 0) return false
      at += c.length
    }
    return held.compare(part, 0, part.length, at, at + part.length) === 0
  }

  private complete(): void {
    this.counted.bytes += this.length
    let msg: unknown
    if (this.match.length > 0) msg = this.match[0]!.msg
    else {
      const bytes = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.length)
      msg = this.recent.add(bytes, this.read(bytes))
    }
    this.length = -1
    this.headerHave = 0
    this.chunks = []
    this.match = []
    this.on.message(msg)
  }
}
