import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  ChunkedDecoder,
  DEFAULT_LIMITS,
  findHeadEnd,
  HttpParseError,
  hasToken,
  parseRequestHead,
  parseResponseHead,
} from './parse.js'

function req(text: string, limits = DEFAULT_LIMITS) {
  const buf = Buffer.from(text, 'latin1')
  const end = findHeadEnd(buf, 0, 0, limits)
  assert.notEqual(end, -1, 'head end found')
  return parseRequestHead(buf, 0, end, limits)
}

function fails(fn: () => unknown, status: number, reason: string) {
  assert.throws(fn, (e: unknown) => e instanceof HttpParseError && e.status === status && e.reason === reason)
}

describe('request head', () => {
  test('origin form with query, headers lower-cased, OWS trimmed', () => {
    const h = req('GET /a/b?c=d HTTP/1.1\r\nHost: Example.COM:8080\r\nX-Thing:  v a l  \r\n\r\n')
    assert.equal(h.method, 'GET')
    assert.equal(h.path, '/a/b?c=d')
    assert.equal(h.authority, 'example.com:8080')
    assert.equal(h.headers.get('x-thing'), 'v a l')
    assert.equal(h.keepAlive, true)
    assert.equal(h.contentLength, -1)
  })

  test('the head says when it has no x-forwarded-client-cert, whatever the case it was sent in', () => {
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nX-Thing: 1\r\n\r\n').headers.xfccAbsent, true)
    for (const name of ['x-forwarded-client-cert', 'X-Forwarded-Client-Cert']) {
      const h = req(`GET / HTTP/1.1\r\nHost: a\r\n${name}: By=x\r\n\r\n`).headers
      assert.equal(h.xfccAbsent, false, name)
      assert.equal(h.get('x-forwarded-client-cert'), 'By=x')
    }
  })

  test('HTTP/1.0 defaults to close, keep-alive opts in', () => {
    assert.equal(req('GET / HTTP/1.0\r\n\r\n').keepAlive, false)
    assert.equal(req('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').keepAlive, true)
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').keepAlive, false)
  })

  test('upgrade needs Connection: upgrade', () => {
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n').upgrade, null)
    assert.equal(
      req('GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n').upgrade,
      'websocket',
    )
  })

  test('absolute form: authority from the URI', () => {
    const h = req('GET http://B.example:81 HTTP/1.1\r\nHost: a\r\n\r\n')
    assert.equal(h.authority, 'b.example:81')
    assert.equal(h.path, '/')
  })

  test('OPTIONS * is allowed, GET * is not', () => {
    assert.equal(req('OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n').path, '*')
    fails(() => req('GET * HTTP/1.1\r\nHost: a\r\n\r\n'), 400, 'invalid_target')
  })

  test('obs-text is allowed in values and kept byte for byte', () => {
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\n\r\n').headers.get('x'), 'caf\xe9')
  })

  test('DEL in a value is rejected', () => {
    fails(() => req('GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n'), 400, 'invalid_header_value')
  })

  test('header count limit: N passes, N+1 is 431', () => {
    const limits = { maxHeadBytes: 60 * 1024, maxHeaders: 5 }
    const n = (k: number) => `GET / HTTP/1.1\r\nHost: a\r\n${'X: 1\r\n'.repeat(k - 1)}\r\n`
    assert.equal(req(n(5), limits).headers.size, 5)
    fails(() => req(n(6), limits), 431, 'too_many_headers')
  })

  test('head size limit: exactly the limit passes, one byte more is 431', () => {
    const head = 'GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n'
    const limits = { maxHeadBytes: 100, maxHeaders: 100 }
    const pad = 'v'.repeat(100 - head.length)
    assert.ok(req(head.replace('X: ', `X: ${pad}`), limits))
    const over = Buffer.from(head.replace('X: ', `X: ${pad}v`), 'latin1')
    fails(() => findHeadEnd(over, 0, 0, limits), 431, 'headers_too_large')
  })

  test('an incomplete head asks for more bytes, and is found when the rest arrives', () => {
    const a = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r')
    assert.equal(findHeadEnd(a, 0, 0, DEFAULT_LIMITS), -1)
    const b = Buffer.concat([a, Buffer.from('\n')])
    assert.equal(findHeadEnd(b, 0, a.length - 3, DEFAULT_LIMITS), b.length)
  })

  test('the head end is the first CR LF CR LF, wherever it falls (against a plain search)', () => {
    // bytes drawn from the pattern's own alphabet plus a letter, so near-misses are common; LF only after CR, since
    // a bare LF before the end is an error
    let seed = 7
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed % n
    }
    const limits = { maxHeadBytes: 1000, maxHeaders: 100 }
    for (let round = 0; round < 3000; round++) {
      const parts: string[] = []
      const n = 1 + rand(40)
      for (let i = 0; i < n; i++) parts.push(['a', 'bc', '\r\n', '\r', 'defg'][rand(5)]!)
      const text = parts.join('')
      const withEnd = `${text}\r\n\r\n${parts.slice(0, rand(4)).join('')}`
      const buf = Buffer.from(withEnd, 'latin1')
      const expected = withEnd.indexOf('\r\n\r\n') + 4
      for (const start of [0, 1]) {
        if (start > expected - 4) continue
        const from = start + rand(Math.max(1, expected - 4 - start))
        assert.equal(findHeadEnd(buf, start, from, limits), expected, JSON.stringify({ withEnd, start, from }))
      }
      // cut short of the end: more bytes are needed
      assert.equal(findHeadEnd(buf.subarray(0, expected - 1), 0, 0, limits), -1, JSON.stringify(withEnd))
    }
  })

  test('every known header name is recognised, in lower and canonical case, and others are lower-cased', () => {
    const names = ['grpc-status', 'cache-control', 'x-envoy-upstream-service-time', 'te', 'via', 'host']
    const head = names.map((n) => `${n.replace(/(^|-)([a-z])/g, (_m, d, c) => d + c.toUpperCase())}: 1\r\n`).join('')
    const r = req(`GET / HTTP/1.1\r\n${head}X-Custom-Thing: 2\r\nCONTENT-LENGTH: 0\r\n\r\n`)
    assert.deepEqual(
      r.headers.list.filter((_, i) => i % 2 === 0),
      [...names, 'x-custom-thing', 'content-length'],
    )
  })

  test('a bare LF in an incomplete head fails at once; in a complete one the parser names it', () => {
    fails(() => findHeadEnd(Buffer.from('GET / HTTP/1.1\nHost: a\n'), 0, 0, DEFAULT_LIMITS), 400, 'bare_lf')
    fails(() => req('GET / HTTP/1.1\r\nHost: a\r\nX: 1\nY: 2\r\n\r\n'), 400, 'bare_lf')
    fails(() => req('GET / HTTP/1.1\r\nHost: a\r\nX\n: 2\r\n\r\n'), 400, 'bare_lf')
  })
})

describe('response head', () => {
  test('status, reason, framing', () => {
    const b = Buffer.from('HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n')
    const h = parseResponseHead(b, 0, b.length, DEFAULT_LIMITS)
    assert.equal(h.status, 404)
    assert.equal(h.reason, 'Not Found')
    assert.equal(h.contentLength, 3)
  })

  test('empty reason phrase is fine', () => {
    const b = Buffer.from('HTTP/1.1 200 \r\n\r\n')
    assert.equal(parseResponseHead(b, 0, b.length, DEFAULT_LIMITS).status, 200)
  })

  test('CL and TE together is an error', () => {
    const b = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n')
    fails(() => parseResponseHead(b, 0, b.length, DEFAULT_LIMITS), 400, 'content_length_and_chunked')
  })
})

describe('chunked decoder', () => {
  const body = '4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT'

  function decodeInPieces(text: string, step: number) {
    const d = new ChunkedDecoder()
    const out: Buffer[] = []
    const all = Buffer.from(text, 'latin1')
    let rest = Buffer.alloc(0)
    for (let i = 0; i < all.length && !d.done; i += step) {
      const piece = Buffer.concat([rest, all.subarray(i, i + step)])
      const off = d.execute(piece, 0, out)
      rest = piece.subarray(off)
      if (d.done) rest = Buffer.concat([rest, all.subarray(i + step)])
    }
    return { data: Buffer.concat(out).toString('latin1'), d, rest: rest.toString('latin1') }
  }

  for (const step of [1, 2, 3, 7, 1000]) {
    test(`decodes split every ${step} bytes, stops at the end of the message`, () => {
      const { data, d, rest } = decodeInPieces(body, step)
      assert.equal(data, 'Wikipedia in\r\n\r\nchunks.')
      assert.ok(d.done)
      assert.equal(d.trailers?.get('x-trailer'), 'yes')
      assert.equal(rest, 'NEXT')
    })
  }

  test('no trailers', () => {
    const { data, d, rest } = decodeInPieces('3\r\nabc\r\n0\r\n\r\nX', 1)
    assert.equal(data, 'abc')
    assert.ok(d.done)
    assert.equal(rest, 'X')
  })

  const bad: [string, string][] = [
    ['z\r\n', 'invalid_chunk_size'],
    ['1 \r\nx\r\n', 'invalid_chunk_size'],
    ['1;a\nx\r\n', 'invalid_chunk_extension'],
    ['1\rx', 'bare_cr'],
    ['1\r\nxy', 'missing_chunk_crlf'],
    ['1000000000000\r\n', 'chunk_size_overflow'],
    [`1;${'e'.repeat(5000)}\r\n`, 'chunk_extension_too_large'],
    ['0\r\nTransfer-Encoding: chunked\r\n\r\n', 'forbidden_trailer'],
    ['0\r\nX: 1\nY: 2\r\n\r\n', 'bare_lf'],
  ]
  for (const [text, reason] of bad) {
    test(`rejects ${JSON.stringify(text.slice(0, 30))}`, () => {
      fails(() => new ChunkedDecoder().execute(Buffer.from(text, 'latin1'), 0, []), 400, reason)
    })
  }
})

describe('header names and tokens', () => {
  test('names are lower-cased whether common or not, in any case', () => {
    const h = req(
      'GET / HTTP/1.1\r\nHOST: a\r\nUser-Agent: u\r\naccept: *\r\nX-Request-ID: r\r\nX-Custom-Thing: c\r\nHost2: x\r\n\r\n',
    )
    assert.deepEqual(h.headers.list, [
      'host',
      'a',
      'user-agent',
      'u',
      'accept',
      '*',
      'x-request-id',
      'r',
      'x-custom-thing',
      'c',
      'host2',
      'x',
    ])
  })

  test('a known name is matched only in full', () => {
    const h = req('GET / HTTP/1.1\r\nHost: a\r\nDatex: 1\r\nDat: 2\r\n\r\n')
    assert.equal(h.headers.get('datex'), '1')
    assert.equal(h.headers.get('dat'), '2')
    assert.equal(h.headers.get('date'), undefined)
  })

  test('Connection tokens are found only as whole list members', () => {
    assert.equal(hasToken('close', 'close'), true)
    assert.equal(hasToken('keep-alive, close', 'close'), true)
    assert.equal(hasToken('close ,upgrade', 'close'), true)
    assert.equal(hasToken('foo,\tclose\t,bar', 'close'), true)
    assert.equal(hasToken('closed', 'close'), false)
    assert.equal(hasToken('xclose, enclose', 'close'), false)
    assert.equal(hasToken('keep-alive', 'close'), false)
    assert.equal(hasToken('', 'close'), false)
  })
})
