/**
 * Proxyless gRPC end to end: a real @grpc/grpc-js-xds client (a child process, see fixtures/proxyless-client.ts) gets
 * its configuration from a real `loom control` and its calls follow a VirtualService (header match, 70/30 weights)
 * and DestinationRule subsets to real grpc-js echo servers registered as workloads of `echo`; a changed
 * VirtualService reaches the same, still connected, client; `loom proxy-status` shows the gRPC node SYNCED.
 */
import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { type Control, eventually, startControl } from './helpers/control.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const FIXTURES = join(ROOT, 'test', 'fixtures')
const HOST = 'echo.default.svc.cluster.local'
const SERVICE_PORT = 7070
const NODE_ID = 'sidecar~127.0.0.1~echo-client-1.default~default.svc.cluster.local'
const CANARY = { 'x-canary': 'yes' }

// === echo servers ===

const echoDef = protoLoader.loadSync(join(FIXTURES, 'echo.proto'), { keepCase: true })
const echoPkg = grpc.loadPackageDefinition(echoDef) as unknown as {
  loom: { test: { Echo: grpc.ServiceClientConstructor } }
}

interface EchoServer {
  version: string
  index: number
  port: number
  server: grpc.Server
}

/** A grpc-js server whose Unary replies with its version (message) and its replica number (index). */
async function echoServer(version: string, index: number): Promise<EchoServer> {
  const server = new grpc.Server()
  server.addService(echoPkg.loom.test.Echo.service, {
    Unary(_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) {
      cb(null, { message: version, index })
    },
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  )
  return { version, index, port, server }
}

async function register(cp: Control, e: EchoServer): Promise<void> {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
    method: 'POST',
    body: JSON.stringify({
      name: `echo-${e.version}-${e.index}`,
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'grpc', number: e.port, servicePort: SERVICE_PORT }],
      labels: { app: 'echo', version: e.version },
      ttlSeconds: 600,
    }),
  })
  assert.equal(res.status, 200, await res.text())
}

// === the proxyless client ===

interface Counts {
  versions: Record<string, number>
  servers: Record<string, number>
  errors: Record<string, number>
  lastError: string
}

interface ProxylessClient {
  /** `calls` calls with `headers`; a probe stops at its first error and waits at most 1 s per call (else 5 s) */
  run(calls: number, headers?: Record<string, string>, probe?: boolean): Promise<Counts>
  stderr(): string
  stop(): Promise<void>
}

/**
 * Starts the fixture client with a bootstrap pointing at `xds` (host:port) and naming the node `id` with `metadata`;
 * it stays connected until stop().
 */
function startClient(
  xds: string,
  target: string,
  id = NODE_ID,
  metadata: Record<string, string> = { GENERATOR: 'grpc', NAMESPACE: 'default' },
): ProxylessClient {
  const bootstrap = {
    xds_servers: [{ server_uri: xds, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    node: { id, cluster: 'echo-client', locality: {}, metadata },
  }
  const script = join(ROOT, 'dist', 'test', 'fixtures', 'proxyless-client.js')
  const p: ChildProcessWithoutNullStreams = spawn(process.execPath, [script, target], {
    env: { ...process.env, LOOM_PROXYLESS_FIXTURE: '1', GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap) },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const reap = () => p.kill('SIGKILL')
  process.once('exit', reap)
  p.once('exit', () => process.off('exit', reap))
  let err = ''
  p.stderr.on('data', (d) => (err += d))
  const waiting: { resolve: (c: Counts) => void; reject: (e: Error) => void }[] = []
  createInterface({ input: p.stdout }).on('line', (line) => {
    const w = waiting.shift()
    if (w === undefined) return
    try {
      w.resolve(JSON.parse(line) as Counts)
    } catch {
      w.reject(new Error(`bad output from the client: ${line}`))
    }
  })
  p.on('exit', (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`the grpc-js-xds client exited with ${code}: ${err}`))
  })
  return {
    run(calls, headers = {}, probe = false) {
      return new Promise((resolve, reject) => {
        if (p.exitCode !== null || p.signalCode !== null) return reject(new Error(`the client has exited: ${err}`))
        waiting.push({ resolve, reject })
        p.stdin.write(`${JSON.stringify({ calls, headers, deadlineMs: probe ? 1000 : 5000, stopOnError: probe })}\n`)
      })
    },
    stderr: () => err,
    stop() {
      return new Promise((resolve) => {
        if (p.exitCode !== null || p.signalCode !== null) return resolve()
        const t = setTimeout(() => p.kill('SIGKILL'), 3000)
        p.once('exit', () => {
          clearTimeout(t)
          resolve()
        })
        p.stdin.end()
      })
    },
  }
}

// === helpers ===

interface NodeStatus {
  nodeId: string
  perType: { typeUrl: string; state: string; nackError?: string }[]
}

/** The client's node in `loom proxy-status -o json`, or (`api`, cheaper to poll) in the API call behind it. */
async function nodeStatus(cp: Control, via: 'cli' | 'api' = 'api'): Promise<NodeStatus | undefined> {
  let nodes: NodeStatus[]
  if (via === 'cli') {
    const r = await cp.loom(['proxy-status', '-o', 'json'])
    assert.equal(r.code, 0, r.stderr)
    nodes = JSON.parse(r.stdout) as NodeStatus[]
  } else {
    nodes = (await (await fetch(`http://${cp.api}/api/v1/proxy-status`)).json()) as NodeStatus[]
  }
  return nodes.find((n) => n.nodeId === NODE_ID)
}

function synced(s: NodeStatus | undefined): boolean {
  return s !== undefined && s.perType.length === 4 && s.perType.every((t) => t.state === 'SYNCED')
}

/** Resolves once `calls` calls (with `headers`) all succeed and all reach `version`. */
async function until(client: ProxylessClient, version: string, headers: Record<string, string> = {}, calls = 10) {
  let last: Counts | undefined
  await eventually(
    async () => {
      last = await client.run(calls, headers, true)
      return Object.keys(last.errors).length === 0 && (last.versions[version] ?? 0) === calls
    },
    // the first wait includes the client's own start: xDS connection and name resolution (slow on a busy machine)
    20000,
    `all calls to ${version}`,
  ).catch((e: Error) => {
    throw new Error(`${e.message}; last: ${JSON.stringify(last)}; client stderr: ${client.stderr()}`)
  })
}

// === tests ===

describe('proxyless gRPC (@grpc/grpc-js-xds) configured by loom control', () => {
  let cp: Control
  let client: ProxylessClient
  const servers: EchoServer[] = []

  before(async () => {
    cp = await startControl()
    servers.push(await echoServer('v1', 0), await echoServer('v1', 1), await echoServer('v2', 0))
    for (const s of servers) await register(cp, s)
    const r = await cp.loom(['apply', '-f', join(FIXTURES, 'proxyless-echo.yaml')])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /destinationrules\/echo created/)
    assert.match(r.stdout, /virtualservices\/echo created/)
    client = startClient(cp.xds, `xds:///${HOST}:${SERVICE_PORT}`)
  })
  after(async () => {
    await client?.stop()
    await cp?.stop()
    if (cp !== undefined) rmSync(cp.dataDir, { recursive: true, force: true })
    for (const s of servers) s.server.forceShutdown()
  })

  test('the header match sends every call with x-canary: yes to v2', async () => {
    await until(client, 'v2', CANARY)
    const r = await client.run(100, CANARY)
    assert.deepEqual(r.errors, {}, r.lastError)
    assert.deepEqual(r.versions, { v2: 100 })
    assert.deepEqual(r.servers, { 'v2#0': 100 })
  })

  test('without the header, calls split 70/30 between the v1 and v2 subsets, round robin within v1', async (t) => {
    const n = 300
    const r = await client.run(n)
    assert.deepEqual(r.errors, {}, r.lastError)
    const v1 = r.versions.v1 ?? 0
    const v2 = r.versions.v2 ?? 0
    assert.equal(v1 + v2, n, JSON.stringify(r.versions))
    // 70% of 300 is 210 with a standard deviation of about 8: ±35 is more than 4 of them
    assert.ok(Math.abs(v1 - 210) <= 35, `v1 ${v1} of ${n}`)
    // the subset keeps its endpoints apart: v1 calls reach both v1 replicas, and only them
    const a = r.servers['v1#0'] ?? 0
    const b = r.servers['v1#1'] ?? 0
    assert.equal(a + b, v1)
    assert.ok(Math.abs(a - b) <= 2, `round robin over the v1 replicas: ${a} / ${b}`)
    t.diagnostic(`split over ${n} calls: v1=${v1} (${a} + ${b}) v2=${v2}`)
  })

  test('loom proxy-status shows the gRPC node SYNCED on every type while it is connected', async () => {
    await eventually(async () => synced(await nodeStatus(cp)), 10_000, 'the gRPC node SYNCED')
    const s = await nodeStatus(cp, 'cli')
    assert.ok(synced(s), JSON.stringify(s))
    const table = await cp.loom(['proxy-status'])
    assert.equal(table.code, 0, table.stderr)
    const row = table.stdout.split('\n').find((l) => l.startsWith(NODE_ID))
    assert.match(row ?? '', /SYNCED\s+SYNCED\s+SYNCED\s+SYNCED$/, table.stdout)
  })

  test('a changed VirtualService (everything to v1) reaches the connected client', async () => {
    const r = await cp.loom(['apply', '-f', join(FIXTURES, 'proxyless-echo-v1.yaml')])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /virtualservices\/echo configured/)
    // under the old route a canary call always went to v2 (a plain one went to v1 70% of the time, so ten of them in
    // a row prove nothing): canary calls reaching v1 mean the new route is in
    await until(client, 'v1', CANARY)
    const plain = await client.run(100)
    assert.deepEqual(plain.errors, {}, plain.lastError)
    assert.deepEqual(plain.versions, { v1: 100 })
    const canary = await client.run(100, CANARY)
    assert.deepEqual(canary.errors, {}, canary.lastError)
    assert.deepEqual(canary.versions, { v1: 100 }, 'the header rule is gone')
    // the client ACKed the new configuration
    await eventually(async () => synced(await nodeStatus(cp)), 10_000, 'the gRPC node SYNCED after the change')
  })

  test('a client without GENERATOR metadata is known by its gRPC user agent, and may dial the short name', async () => {
    const other = startClient(cp.xds, `xds:///echo:${SERVICE_PORT}`, 'echo-client-2', { NAMESPACE: 'default' })
    try {
      await until(other, 'v1')
      const r = await other.run(20, CANARY)
      assert.deepEqual(r.errors, {}, r.lastError)
      assert.deepEqual(r.versions, { v1: 20 })
    } finally {
      await other.stop()
    }
  })

  test('deleting the VirtualService sends calls to every endpoint of the service again', async () => {
    const r = await cp.loom(['delete', 'vs', 'echo'])
    assert.equal(r.code, 0, r.stderr)
    let last: Counts | undefined
    await eventually(
      async () => {
        last = await client.run(12, {}, true)
        return Object.keys(last.errors).length === 0 && Object.keys(last.servers).length === 3
      },
      8000,
      'calls to all three servers',
    ).catch((e: Error) => {
      throw new Error(`${e.message}; last: ${JSON.stringify(last)}`)
    })
    const all = await client.run(30)
    assert.deepEqual(all.errors, {}, all.lastError)
    assert.deepEqual(Object.keys(all.servers).sort(), ['v1#0', 'v1#1', 'v2#0'])
    for (const n of Object.values(all.servers)) assert.ok(Math.abs(n - 10) <= 2, `round robin: ${JSON.stringify(all)}`)
  })
})
