// The benchmark's raw gRPC call (bench/control/h2call.ts) against a real HTTP/2 server on loopback: messages split
// across DATA frames at any point are read whole; a message equal to a recent one is handed the same reading
// without being read again, one of the same length that differs anywhere is read for itself; a non-zero
// grpc-status in the trailers ends the call with an error.
import assert from 'node:assert/strict'
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { H2Call, H2Session, RecentMessages } from '../bench/control/h2call.js'

function framed(body: Buffer): Buffer {
  const h = Buffer.alloc(5)
  h.writeUInt32BE(body.length, 1)
  return Buffer.concat([h, body])
}

/** A server answering each call with `messages`, written in pieces of `piece` bytes, then `status`. */
async function server(messages: Buffer[], piece: number, status = 0): Promise<{ addr: string; close(): void }> {
  const s = http2.createServer()
  s.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(status), 'grpc-message': 'no' }))
    const all = Buffer.concat(messages.map(framed))
    const write = (at: number): void => {
      if (at >= all.length) stream.end()
      else stream.write(all.subarray(at, at + piece), () => setImmediate(() => write(at + piece)))
    }
    write(0)
  })
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  return { addr: `127.0.0.1:${(s.address() as AddressInfo).port}`, close: () => s.close() }
}

function call(
  session: H2Session,
  recent: RecentMessages,
  reads: string[],
): Promise<{ msgs: unknown[]; error?: Error }> {
  return new Promise((resolve) => {
    const msgs: unknown[] = []
    new H2Call(
      session,
      '/test.Service/Call',
      recent,
      (b) => {
        reads.push(b.toString())
        return { text: b.toString() }
      },
      { bytes: 0 },
      { message: (m) => msgs.push(m), end: (error) => resolve({ msgs, ...(error ? { error } : {}) }) },
    )
  })
}

test('messages split anywhere are read whole; an equal one is not read again, one apart is', async () => {
  // pieces of 3 bytes split the 5-byte prefixes too
  for (const [piece, size] of [
    [3, 50],
    [997, 40_000],
    [4096, 40_000],
    [100_000, 40_000],
  ] as const) {
    const a = Buffer.from(`${'x'.repeat(size)}A`)
    const b = Buffer.from(`${'x'.repeat(size)}B`) // same length, differs in the last byte
    const c = Buffer.from(`C${'x'.repeat(size)}`) // same length, differs in the first
    const srv = await server([a, a, b, c, Buffer.alloc(0)], piece)
    const session = new H2Session(srv.addr, 1 << 20)
    const recent = new RecentMessages()
    const reads: string[] = []
    try {
      const first = await call(session, recent, reads)
      const second = await call(session, recent, reads)
      assert.deepEqual(
        first.msgs.map((m) => (m as { text: string }).text),
        [a, a, b, c, Buffer.alloc(0)].map(String),
        `piece ${piece}`,
      )
      // read once each across both calls: a, b, c and the empty message
      assert.deepEqual(reads, [a, b, c, Buffer.alloc(0)].map(String), `piece ${piece}`)
      assert.equal(first.msgs[0], first.msgs[1], 'an equal message gets the same reading')
      assert.notEqual(first.msgs[0], first.msgs[2])
      for (let i = 0; i < 5; i++) assert.equal(second.msgs[i], first.msgs[i])
      assert.equal(first.error, undefined)
    } finally {
      session.close()
      srv.close()
    }
  }
})

test('a non-zero grpc-status ends the call with an error', async () => {
  const srv = await server([Buffer.from('m')], 1024, 14)
  const session = new H2Session(srv.addr, 1 << 20)
  try {
    const r = await call(session, new RecentMessages(), [])
    assert.equal(r.msgs.length, 1)
    assert.match(String(r.error?.message), /grpc-status 14/)
  } finally {
    session.close()
    srv.close()
  }
})
