import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import * as tls from 'node:tls'
import { type Issuer, makeRoot } from '../../../control/ca/pki-fixtures.js'
import { READ_BUFFER, shareTlsReads, takeRead } from './shared-read.js'

let cert: Issuer
const servers: tls.Server[] = []

before(async () => {
  cert = await makeRoot({ name: 'CN=shared read' })
})

after(() => {
  for (const s of servers) s.close()
})

/** A TLS server calling `onSecure` with each handshaken socket; resolves to its port. */
async function server(onSecure: (s: tls.TLSSocket) => void): Promise<number> {
  const s = tls.createServer({ cert: cert.pem, key: cert.keyPem, allowHalfOpen: true }, onSecure)
  servers.push(s)
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  return (s.address() as AddressInfo).port
}

test('an accepted TLS socket after its handshake: decrypted bytes come to the callback, no data events; end still comes', async () => {
  const got: Buffer[] = []
  let dataEvents = 0
  let switched: boolean | null = null
  let endedNow = () => {}
  const ended = new Promise<void>((resolve) => {
    endedNow = resolve
  })
  const port = await server((s) => {
    switched = shareTlsReads(s, (n) => {
      got.push(takeRead(n))
      return true
    })
    s.on('data', () => dataEvents++)
    s.on('end', () => {
      s.end('bye')
      endedNow()
    })
  })
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false })
  await once(c, 'secureConnect')
  const parts = ['GET / HTTP/1.1\r\n', 'host: a\r\n', '\r\n', 'x'.repeat(40_000)]
  for (const p of parts) c.write(p)
  c.end()
  let answer = ''
  c.setEncoding('utf8')
  c.on('data', (d: string) => {
    answer += d
  })
  await ended
  await once(c, 'end')
  assert.equal(switched, true)
  assert.equal(dataEvents, 0)
  assert.equal(Buffer.concat(got).toString(), parts.join(''))
  assert.equal(answer, 'bye')
})

test('tls.connect with onread: the decrypted bytes of each record come to the callback', async () => {
  const port = await server((s) => {
    s.end('y'.repeat(50_000))
  })
  const got: Buffer[] = []
  const c = tls.connect({
    port,
    host: '127.0.0.1',
    rejectUnauthorized: false,
    onread: {
      buffer: READ_BUFFER,
      callback: (n: number) => {
        got.push(takeRead(n))
        return true
      },
    },
  } as tls.ConnectionOptions)
  let dataEvents = 0
  c.on('data', () => dataEvents++)
  await once(c, 'end')
  assert.equal(dataEvents, 0)
  assert.equal(Buffer.concat(got).toString(), 'y'.repeat(50_000))
  c.destroy()
})

test('a TLS socket already holding bytes is not switched (they would be lost)', async () => {
  let resolve: (r: { switched: boolean; rest: string }) => void = () => {}
  const result = new Promise<{ switched: boolean; rest: string }>((r) => {
    resolve = r
  })
  const port = await server((s) => {
    s.once('readable', () => {
      const switched = shareTlsReads(s, () => true)
      resolve({ switched, rest: String(s.read()) })
      s.destroy()
    })
  })
  const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false })
  c.on('error', () => {})
  await once(c, 'secureConnect')
  c.write('early')
  const r = await result
  assert.equal(r.switched, false)
  assert.equal(r.rest, 'early')
  c.destroy()
})
