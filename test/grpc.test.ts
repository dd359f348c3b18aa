/**
 * gRPC through a real `loom proxy` (HTTP/2 in, HTTP/2 out): a real grpc-js server behind a cluster with
 * http2_protocol_options, and a real grpc-js client in front. Statuses, messages and metadata must survive the trip,
 * including trailers after data and trailers-only error responses; a raw node:http2 client checks the wire fields.
 */
import assert from 'node:assert/strict'
import * as http2 from 'node:http2'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { adminAddress, hcm, listener, ROOT, type RunningProxy, startProxy, staticCluster } from './helpers/proxy.js'

interface EchoRequest {
  message: string
}
interface StreamRequest {
  count: number
  fail_after?: number
  prefix?: string
}
interface EchoReply {
  message: string
  index: number
}

interface EchoClient extends grpc.Client {
  Unary(req: EchoRequest, md: grpc.Metadata, cb: grpc.requestCallback<EchoReply>): grpc.ClientUnaryCall
  ServerStream(req: StreamRequest, md?: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<EchoReply>
  ClientStream(md: grpc.Metadata, cb: grpc.requestCallback<EchoReply>): grpc.ClientWritableStream<EchoRequest>
  Bidi(md?: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientDuplexStream<EchoRequest, EchoReply>
}

const def = protoLoader.loadSync(join(ROOT, 'test', 'fixtures', 'echo.proto'), { defaults: true, keepCase: true })
const pkg = grpc.loadPackageDefinition(def) as unknown as {
  loom: { test: { Echo: grpc.ServiceClientConstructor } }
}
const Echo = pkg.loom.test.Echo

/** Copies x-user and x-trace-bin from the request metadata into `into`, under an `echo-` prefix. */
function echoMetadata(from: grpc.Metadata, into: grpc.Metadata): grpc.Metadata {
  for (const v of from.get('x-user')) into.add('echo-x-user', v)
  for (const v of from.get('x-trace-bin')) into.add('echo-x-trace-bin', v)
  return into
}

const service: grpc.UntypedServiceImplementation = {
  Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) {
    const msg = call.request.message
    if (msg.startsWith('missing')) {
      // no initial metadata first: grpc-js answers with a trailers-only response (headers with END_STREAM)
      cb({ code: grpc.status.NOT_FOUND, details: `no such thing: ${msg}` })
      return
    }
    call.sendMetadata(echoMetadata(call.metadata, new grpc.Metadata()))
    const trailer = echoMetadata(call.metadata, new grpc.Metadata())
    trailer.set('x-trailer', 'unary-done')
    cb(null, { message: `echo: ${msg}`, index: 0 }, trailer)
  },
  ServerStream(call: grpc.ServerWritableStream<StreamRequest, EchoReply>) {
    const { count, fail_after: failAfter, prefix } = call.request
    for (let i = 0; i < count; i++) {
      if (failAfter !== undefined && failAfter > 0 && i === failAfter) {
        call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `stopped after ${failAfter}` })
        return
      }
      call.write({ message: `${prefix ?? ''}${i}`, index: i })
    }
    const trailer = new grpc.Metadata()
    trailer.set('x-sent', String(count))
    call.end(trailer)
  },
  ClientStream(call: grpc.ServerReadableStream<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) {
    const got: string[] = []
    call.on('data', (m: EchoRequest) => got.push(m.message))
    call.on('end', () => cb(null, { message: got.join(','), index: got.length }))
  },
  Bidi(call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) {
    let i = 0
    call.on('data', (m: EchoRequest) => call.write({ message: `re: ${m.message}`, index: i++ }))
    call.on('end', () => call.end())
  },
}

let server: grpc.Server
let proxy: RunningProxy
let client: EchoClient

before(async () => {
  server = new grpc.Server()
  server.addService(Echo.service, service)
  const backendPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  )
  proxy = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener(
          'grpc',
          hcm({
            name: 'grpc',
            virtual_hosts: [
              {
                name: 'all',
                domains: ['*'],
                routes: [{ match: { prefix: '/loom.test.Echo/' }, route: { cluster: 'echo' } }],
              },
            ],
          }),
        ),
      ],
      clusters: [
        staticCluster('echo', [backendPort], {
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
        }),
      ],
    },
  })
  client = new Echo(`127.0.0.1:${proxy.ports.grpc}`, grpc.credentials.createInsecure()) as unknown as EchoClient
})
after(async () => {
  client?.close()
  await proxy?.stop()
  server?.forceShutdown()
})

const deadline = () => Date.now() + 5000

function unary(req: EchoRequest, md = new grpc.Metadata()) {
  return new Promise<{ reply: EchoReply; headers: grpc.Metadata; status: grpc.StatusObject }>((resolve, reject) => {
    let headers = new grpc.Metadata()
    let reply: EchoReply | undefined
    let status: grpc.StatusObject | undefined
    const done = () => {
      if (reply !== undefined && status !== undefined) resolve({ reply, headers, status })
    }
    const call = client.Unary(req, md, (err, r) => {
      if (err) return reject(err)
      reply = r
      done()
    })
    call.on('metadata', (m: grpc.Metadata) => (headers = m))
    call.on('status', (s: grpc.StatusObject) => {
      status = s
      done()
    })
  })
}

describe('gRPC with grpc-js client and server', { timeout: 8000 }, () => {
  test('unary call', async () => {
    const { reply, status } = await unary({ message: 'hello' })
    assert.equal(reply.message, 'echo: hello')
    assert.equal(status.code, grpc.status.OK)
  })

  test('metadata round trip: request metadata reaches the server; headers and trailers come back', async () => {
    const md = new grpc.Metadata()
    md.set('x-user', 'alice')
    const bin = Buffer.from([0, 1, 2, 250, 251, 255])
    md.set('x-trace-bin', bin)
    const { headers, status } = await unary({ message: 'md' }, md)
    assert.deepEqual(headers.get('echo-x-user'), ['alice'])
    assert.deepEqual(headers.get('echo-x-trace-bin'), [bin])
    assert.deepEqual(status.metadata.get('x-trailer'), ['unary-done'])
    assert.deepEqual(status.metadata.get('echo-x-user'), ['alice'])
    assert.deepEqual(status.metadata.get('echo-x-trace-bin'), [bin])
  })

  test('error status with message (trailers-only response)', async () => {
    const err = await unary({ message: 'missing-widget' }).then(
      () => assert.fail('the call must fail'),
      (e: grpc.ServiceError) => e,
    )
    assert.equal(err.code, grpc.status.NOT_FOUND)
    assert.equal(err.details, 'no such thing: missing-widget')
  })

  test('server streaming: 100 messages in order, then trailers', async () => {
    const call = client.ServerStream({ count: 100, prefix: 'm' }, new grpc.Metadata(), { deadline: deadline() })
    const got: EchoReply[] = []
    call.on('data', (r: EchoReply) => got.push(r))
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve))
    assert.equal(status.code, grpc.status.OK)
    assert.equal(got.length, 100)
    got.forEach((r, i) => {
      assert.equal(r.index, i)
      assert.equal(r.message, `m${i}`)
    })
    assert.deepEqual(status.metadata.get('x-sent'), ['100'])
  })

  test('server streaming that fails midway: messages, then the error in trailers', async () => {
    const call = client.ServerStream({ count: 10, fail_after: 3 }, new grpc.Metadata(), { deadline: deadline() })
    const got: EchoReply[] = []
    let err: grpc.ServiceError | null = null
    call.on('data', (r: EchoReply) => got.push(r))
    call.on('error', (e: grpc.ServiceError) => (err = e))
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve))
    assert.equal(got.length, 3)
    assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED)
    assert.equal(status.details, 'stopped after 3')
    assert.equal((err as grpc.ServiceError | null)?.code, grpc.status.RESOURCE_EXHAUSTED)
  })

  test('client streaming', async () => {
    const reply = await new Promise<EchoReply>((resolve, reject) => {
      const call = client.ClientStream(new grpc.Metadata(), (err, r) => (err ? reject(err) : resolve(r!)))
      for (let i = 0; i < 50; i++) call.write({ message: `c${i}` })
      call.end()
    })
    assert.equal(reply.index, 50)
    assert.equal(reply.message, Array.from({ length: 50 }, (_, i) => `c${i}`).join(','))
  })

  test('bidirectional streaming: each reply follows its request', async () => {
    const call = client.Bidi(new grpc.Metadata(), { deadline: deadline() })
    const replies: EchoReply[] = []
    // ping-pong: the next message is written only after the reply to the previous one arrived
    await new Promise<void>((resolve, reject) => {
      call.on('error', reject)
      call.on('data', (r: EchoReply) => {
        replies.push(r)
        if (replies.length < 20) call.write({ message: `p${replies.length}` })
        else call.end()
      })
      call.on('status', (s: grpc.StatusObject) =>
        s.code === grpc.status.OK ? resolve() : reject(new Error(s.details)),
      )
      call.write({ message: 'p0' })
    })
    assert.equal(replies.length, 20)
    for (const [i, r] of replies.entries()) assert.equal(r.message, `re: p${i}`)
  })

  test('100 concurrent unary calls', async () => {
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => unary({ message: `n${i}` })))
    for (const [i, r] of results.entries()) assert.equal(r.reply.message, `echo: n${i}`)
  })
})

/** A gRPC message frame: compression flag, 4-byte length, protobuf bytes. */
function frame(message: Buffer): Buffer {
  const h = Buffer.alloc(5)
  h.writeUInt32BE(message.length, 1)
  return Buffer.concat([h, message])
}

/** protobuf: a length-delimited field (wire type 2) holding a short string. */
function pbString(field: number, s: string): Buffer {
  const b = Buffer.from(s)
  assert.ok(b.length < 128)
  return Buffer.concat([Buffer.from([(field << 3) | 2, b.length]), b])
}

function rawCall(path: string, body: Buffer) {
  return new Promise<{
    headers: http2.IncomingHttpHeaders
    headersEnded: boolean
    data: Buffer
    trailers: http2.IncomingHttpHeaders | null
  }>((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${proxy.ports.grpc}`)
    session.on('error', reject)
    const req = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
    })
    let headers: http2.IncomingHttpHeaders = {}
    let headersEnded = false
    let trailers: http2.IncomingHttpHeaders | null = null
    const chunks: Buffer[] = []
    req.on('response', (h, flags) => {
      headers = h
      headersEnded = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0
    })
    req.on('trailers', (t) => (trailers = t))
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', reject)
    req.on('close', () => {
      session.close()
      resolve({ headers, headersEnded, data: Buffer.concat(chunks), trailers })
    })
    req.end(frame(body))
  })
}

describe('gRPC status on the wire (raw HTTP/2 client)', { timeout: 8000 }, () => {
  test('trailers-only error: grpc-status and grpc-message in the response headers, with END_STREAM', async () => {
    const r = await rawCall('/loom.test.Echo/Unary', pbString(1, 'missing-raw'))
    assert.equal(r.headers[':status'], 200)
    assert.equal(r.headersEnded, true)
    assert.equal(r.headers['grpc-status'], String(grpc.status.NOT_FOUND))
    assert.equal(decodeURIComponent(String(r.headers['grpc-message'])), 'no such thing: missing-raw')
    assert.equal(r.data.length, 0)
  })

  test('error after data: grpc-status and grpc-message arrive as HTTP/2 trailers', async () => {
    // StreamRequest { count: 5, fail_after: 2 }
    const r = await rawCall('/loom.test.Echo/ServerStream', Buffer.from([0x08, 5, 0x10, 2]))
    assert.equal(r.headers[':status'], 200)
    assert.equal(r.headers['content-type'], 'application/grpc+proto')
    assert.equal(r.headersEnded, false)
    assert.ok(r.trailers !== null, 'trailers were received')
    assert.equal(r.trailers['grpc-status'], String(grpc.status.RESOURCE_EXHAUSTED))
    assert.equal(decodeURIComponent(String(r.trailers['grpc-message'])), 'stopped after 2')
    // two message frames came before the trailers
    let n = 0
    for (let off = 0; off < r.data.length; off += 5 + r.data.readUInt32BE(off + 1)) n++
    assert.equal(n, 2)
  })

  test('success: grpc-status 0 in trailers after the reply', async () => {
    const r = await rawCall('/loom.test.Echo/Unary', pbString(1, 'raw'))
    assert.equal(r.trailers?.['grpc-status'], '0')
    assert.equal(r.trailers?.['x-trailer'], 'unary-done')
    assert.ok(r.data.includes(Buffer.from('echo: raw')))
  })
})
