/** The httpbin example (dist/examples/httpbin/httpbin.js) as a real process, answering as httpbin does. */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import * as http from 'node:http'
import { fileURLToPath } from 'node:url'
import { after, before, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { freePort } from '../src/runtime/ports.js'

const APP = fileURLToPath(new URL('../examples/httpbin/httpbin.js', import.meta.url))

let port = 0
let proc: ChildProcess

before(async () => {
  port = await freePort()
  proc = spawn(process.execPath, [APP], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' })
  await eventually(async () => (await request('GET', '/')).status === 200, 10_000, 'httpbin to listen')
})
after(() => proc?.kill())

function request(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (text += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

test('/headers: the request headers under httpbin names, repeated ones joined', async () => {
  const r = await request('GET', '/headers', {
    'x-b3-traceid': 'abc',
    'X-Forwarded-Client-Cert': 'By=a;URI=b',
    host: 'httpbin.foo:8000',
  })
  assert.equal(r.status, 200)
  const { headers } = JSON.parse(r.body) as { headers: Record<string, string> }
  assert.equal(headers.Host, 'httpbin.foo:8000')
  assert.equal(headers['X-B3-Traceid'], 'abc')
  assert.equal(headers['X-Forwarded-Client-Cert'], 'By=a;URI=b')
})

test('/ip, /user-agent, /get', async () => {
  assert.deepEqual(JSON.parse((await request('GET', '/ip')).body), { origin: '127.0.0.1' })
  assert.deepEqual(JSON.parse((await request('GET', '/ip', { 'x-forwarded-for': '10.1.2.3, 10.0.0.1' })).body), {
    origin: '10.1.2.3',
  })
  assert.deepEqual(JSON.parse((await request('GET', '/user-agent', { 'user-agent': 'curl/8' })).body), {
    'user-agent': 'curl/8',
  })
  const get = JSON.parse((await request('GET', '/get?a=1&a=2&b=x', { host: 'h' })).body)
  assert.deepEqual(get.args, { a: ['1', '2'], b: 'x' })
  assert.equal(get.url, 'http://h/get?a=1&a=2&b=x')
})

test('/anything echoes method, body and JSON; /status answers the code; unknown paths 404', async () => {
  const r = await request('POST', '/anything/x?q=1', { 'content-type': 'application/json' }, '{"k":1}')
  const body = JSON.parse(r.body)
  assert.equal(body.method, 'POST')
  assert.equal(body.data, '{"k":1}')
  assert.deepEqual(body.json, { k: 1 })
  assert.deepEqual(body.args, { q: '1' })
  for (const code of [200, 418, 503]) assert.equal((await request('GET', `/status/${code}`)).status, code)
  assert.ok([201, 202].includes((await request('DELETE', '/status/201,202')).status))
  assert.equal((await request('GET', '/status/99')).status, 400)
  assert.equal((await request('GET', '/nope')).status, 404)
})
