/**
 * HTTP/1.1 request smuggling and framing: each hostile input is sent on a raw socket to a real `loom proxy` in
 * front of a real backend. Every case must get the expected status, the connection must be closed, and nothing may
 * reach the backend.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { after, before, describe, test } from 'node:test'
import {
  adminAddress,
  hcm,
  listener,
  type RunningProxy,
  simpleBootstrap,
  startProxy,
  stat,
  staticCluster,
} from './helpers/proxy.js'
import { type Backend, rawExchange, startBackend } from './helpers/servers.js'

let backend: Backend
let proxy: RunningProxy
let port: number

before(async () => {
  backend = await startBackend()
  proxy = await startProxy(simpleBootstrap([staticCluster('backend', [backend.port])]))
  port = proxy.ports.http!
})
after(async () => {
  await proxy.stop()
  await backend.close()
})

const H = 'Host: a.example\r\n'
const big = 'x'.repeat(70 * 1024)

/** [name, raw request, expected status] */
const rejected: [string, string, number][] = [
  ['CL then TE', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE then CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`, 400],
  [
    'CL and TE, odd case',
    `POST / HTTP/1.1\r\n${H}content-LENGTH: 5\r\ntransfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n`,
    400,
  ],
  [
    'CL: 0 with a chunked body hiding a request',
    `POST / HTTP/1.1\r\n${H}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n22\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n`,
    400,
  ],
  ['TE xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE chunked, identity', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`, 400],
  ['TE identity', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\nContent-Length: 1\r\n\r\nx`, 400],
  ['TE gzip, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 400],
  [
    'two TE lines',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    400,
  ],
  ['TE through obs-fold', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE with a vertical tab', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE in HTTP/1.0', `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
  ['two differing CL', `POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx`, 400],
  ['CL list with differing values', `POST / HTTP/1.1\r\n${H}Content-Length: 1, 2\r\n\r\nxx`, 400],
  ['CL with a sign', `POST / HTTP/1.1\r\n${H}Content-Length: +2\r\n\r\nxx`, 400],
  ['CL in hex', `POST / HTTP/1.1\r\n${H}Content-Length: 0x2\r\n\r\nxx`, 400],
  ['CL empty', `POST / HTTP/1.1\r\n${H}Content-Length: \r\n\r\n`, 400],
  ['CL too large', `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\n`, 400],
  ['space before colon', `GET / HTTP/1.1\r\n${H}Content-Length : 0\r\n\r\n`, 400],
  ['whitespace before the first header', `GET / HTTP/1.1\r\n ${H}\r\n`, 400],
  ['obs-fold in a header value', `GET / HTTP/1.1\r\n${H}X-A: 1\r\n\t2\r\n\r\n`, 400],
  ['bare CR in a header value', `GET / HTTP/1.1\r\n${H}X-A: 1\r2\r\n\r\n`, 400],
  ['bare LF line endings', `GET / HTTP/1.1\n${H.replace('\r', '')}\n`, 400],
  ['NUL in a header value', `GET / HTTP/1.1\r\n${H}X-A: 1\x002\r\n\r\n`, 400],
  [
    'chunk extension ending in bare LF',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;ext\nx\r\n0\r\n\r\n`,
    400,
  ],
  [
    'chunk size overflow',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n`,
    400,
  ],
  ['missing CRLF after chunk data', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nxy0\r\n\r\n`, 400],
  ['chunk size with a sign', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n`, 400],
  [
    'Content-Length in trailers',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nContent-Length: 5\r\n\r\n`,
    400,
  ],
  ['duplicate Host', `GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`, 400],
  ['missing Host in HTTP/1.1', 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n', 400],
  ['Host with userinfo', 'GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n', 400],
  ['absolute-form with userinfo', `GET http://user@a.example/ HTTP/1.1\r\n${H}\r\n`, 400],
  ['space in the method', `GE T / HTTP/1.1\r\n${H}\r\n`, 400],
  ['control character in the target', `GET /a\x01b HTTP/1.1\r\n${H}\r\n`, 400],
  ['HTTP/1.2', `GET / HTTP/1.2\r\n${H}\r\n`, 505],
  ['HTTP/2.0 on an HTTP/1 connection', `GET / HTTP/2.0\r\n${H}\r\n`, 400],
  ['oversized headers', `GET / HTTP/1.1\r\n${H}X-Big: ${big}\r\n\r\n`, 431],
  ['too many headers', `GET / HTTP/1.1\r\n${H}${'X-A: 1\r\n'.repeat(101)}\r\n`, 431],
]

describe('HTTP/1.1 smuggling and framing are rejected before reaching the upstream', () => {
  for (const [name, raw, status] of rejected) {
    test(name, async () => {
      const before = backend.requests.length
      const r = await rawExchange(port, raw)
      assert.match(
        r.text,
        new RegExp(`^HTTP/1\\.1 ${status} `),
        `response was: ${JSON.stringify(r.text.slice(0, 200))}`,
      )
      assert.match(r.text, /x-loom-reason: \w+/)
      assert.ok(r.closed, 'the connection must be closed')
      assert.equal(backend.requests.length, before, 'nothing may reach the backend')
    })
  }
})

describe('well-formed edge cases are served', () => {
  test('equal CL list is accepted', async () => {
    const r = await rawExchange(port, `POST /eq HTTP/1.1\r\n${H}Content-Length: 2, 2\r\nConnection: close\r\n\r\nab`)
    assert.match(r.text, /^HTTP\/1\.1 200 /)
    assert.equal(backend.requests.at(-1)?.body, 'ab')
  })

  test('absolute-form target routes on its own authority, not on Host', async () => {
    const r = await rawExchange(
      port,
      'GET http://b.example/abs?q=1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
    )
    assert.match(r.text, /^HTTP\/1\.1 200 /)
    const seen = backend.requests.at(-1)!
    assert.equal(seen.url, '/abs?q=1')
    assert.equal(seen.headers.host, 'b.example')
  })

  test('chunked body with trailers is forwarded', async () => {
    const r = await rawExchange(
      port,
      `POST /chunked HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n`,
    )
    assert.match(r.text, /^HTTP\/1\.1 200 /)
    assert.equal(backend.requests.at(-1)?.body, 'abcde')
  })

  test('pipelined requests are answered in order, one at a time', async () => {
    const reqs = ['/p1', '/p2', '/p3'].map((p) => `GET ${p} HTTP/1.1\r\n${H}\r\n`).join('')
    const r = await rawExchange(port, `${reqs}GET /p4 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)
    const urls = [...r.text.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1])
    assert.deepEqual(urls, ['/p1', '/p2', '/p3', '/p4'])
    assert.equal((r.text.match(/HTTP\/1\.1 200 /g) ?? []).length, 4)
  })

  test('a bad request after a good pipelined one does not leak into it', async () => {
    const r = await rawExchange(port, `GET /good HTTP/1.1\r\n${H}\r\nGET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`)
    assert.match(r.text, /^HTTP\/1\.1 200 /)
    assert.match(r.text, /HTTP\/1\.1 400 /)
    assert.ok(r.closed)
  })

  test('HTTP/1.0 without keep-alive gets its response and a close', async () => {
    const r = await rawExchange(port, 'GET /ten HTTP/1.0\r\n\r\n')
    assert.match(r.text, /^HTTP\/1\.1 200 /)
    assert.ok(r.closed)
  })

  test('Expect: 100-continue gets an interim response from the proxy', async () => {
    const r = await rawExchange(
      port,
      `POST /cont HTTP/1.1\r\n${H}Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nok`,
    )
    assert.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
    assert.equal(backend.requests.at(-1)?.body, 'ok')
  })
})

describe('a client that does not read its responses', () => {
  test('stops being read once its responses fill the socket, and is served in full once it reads', async () => {
    const body = 'r'.repeat(4096)
    const p = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'http',
            hcm({
              name: 'local',
              virtual_hosts: [
                {
                  name: 'all',
                  domains: ['*'],
                  routes: [{ match: { prefix: '/' }, direct_response: { status: 200, body: { inline_string: body } } }],
                },
              ],
            }),
          ),
        ],
      },
    })
    const N = 12_000 // 48 MB of responses: far more than the kernel's socket buffers hold
    const sock = net.connect(p.ports.http!, '127.0.0.1')
    try {
      await once(sock, 'connect')
      sock.pause()
      sock.write(`GET /x HTTP/1.1\r\n${H}\r\n`.repeat(N))
      // the proxy answers until its output backs up, then takes no more requests: wait for the count to settle
      let last = -1
      let same = 0
      while (same < 5) {
        await new Promise((r) => setTimeout(r, 100))
        const n = await stat(p.admin, 'http.ingress.downstream_rq_total')
        same = n === last ? same + 1 : 0
        last = n
      }
      assert.ok(last > 0 && last < N / 2, `requests taken while the client read nothing: ${last} of ${N}`)
      // reading resumes the connection: every response arrives, whole and in order
      let seen = 0
      let text = ''
      sock.setEncoding('latin1')
      sock.resume()
      for await (const chunk of sock) {
        text += chunk
        let i = text.indexOf('\r\n\r\n')
        while (i !== -1 && text.length >= i + 4 + body.length) {
          assert.match(text, /^HTTP\/1\.1 200 /)
          assert.equal(text.slice(i + 4, i + 4 + body.length), body)
          text = text.slice(i + 4 + body.length)
          seen++
          i = text.indexOf('\r\n\r\n')
        }
        if (seen === N) break
      }
      assert.equal(seen, N)
    } finally {
      sock.destroy()
      await p.stop()
    }
  })
})
