/**
 * Istio's TCP and gRPC metrics on a `loom up` mesh (test/fixtures/up-telemetry): bytes and connections through a
 * TCP workload's inbound sidecar, and gRPC calls from a client's sidecar to a gRPC workload's sidecar over mTLS,
 * with message counts and grpc-status, checked against the traffic sent.
 */
import assert from 'node:assert/strict'
import * as net from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { eventually } from './helpers/control.js'
import { readMesh, type UpMesh, workload } from './helpers/istio-task.js'
import { ROOT } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

interface EchoClient extends grpc.Client {
  Unary(req: { message: string }, cb: grpc.requestCallback<{ message: string }>): grpc.ClientUnaryCall
  ServerStream(req: { count: number; prefix?: string }): grpc.ClientReadableStream<{ message: string }>
}

const def = protoLoader.loadSync(join(ROOT, 'test', 'fixtures', 'echo.proto'), { defaults: true, keepCase: true })
const Echo = (grpc.loadPackageDefinition(def) as unknown as { loom: { test: { Echo: grpc.ServiceClientConstructor } } })
  .loom.test.Echo

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

function parseProm(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)$/.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    for (const l of m[2]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

function sum(m: Sample[], name: string, match: Record<string, string>): number {
  let n = 0
  for (const s of m) if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) n += s.value
  return n
}

const SA = (sa: string) => `spiffe://cluster.local/ns/default/sa/${sa}`

describe('Istio TCP and gRPC metrics on a loom up mesh', { timeout: 240_000 }, () => {
  let up: RunningUp
  let mesh: UpMesh
  const adminOf = new Map<string, number>()
  const scrape = async (name: string) =>
    parseProm(await (await fetch(`http://127.0.0.1:${adminOf.get(name)}/stats/prometheus`)).text())

  before(async () => {
    up = await startUp('up-telemetry', 120_000)
    mesh = readMesh(up.dataDir)
    for (const w of mesh.workloads as unknown as { name: string; adminPort: number }[]) adminOf.set(w.name, w.adminPort)
  })
  after(async () => {
    await up?.stop()
  })

  test('TCP: bytes each way, one connection opened and closed, on the destination sidecar', async () => {
    const port = workload(mesh, 'tcp-echo-v1', 'default').inbound['9000']!
    const payload = Buffer.alloc(4000, 'x')
    const echoed = await new Promise<number>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1')
      let got = 0
      c.on('data', (d) => {
        got += d.length
        if (got >= payload.length) c.end()
      })
      c.on('error', reject)
      c.on('close', () => resolve(got))
      c.write(payload)
    })
    assert.equal(echoed, payload.length)
    const labels = {
      reporter: 'destination',
      source_workload: 'unknown',
      source_principal: 'unknown',
      destination_workload: 'tcp-echo-v1',
      destination_workload_namespace: 'default',
      destination_app: 'tcp-echo',
      destination_version: 'v1',
      destination_principal: SA('tcp-echo'),
      destination_service: 'tcp-echo.default.svc.cluster.local',
      destination_service_name: 'tcp-echo',
      destination_service_namespace: 'default',
      request_protocol: 'tcp',
      response_code: '0',
      connection_security_policy: 'none',
    }
    // closed (and its last bytes) are recorded when both sides of the proxied connection have closed
    await eventually(
      async () => sum(await scrape('tcp-echo-v1'), 'istio_tcp_connections_closed_total', labels) === 1,
      15_000,
      'the closed connection',
    )
    const m = await scrape('tcp-echo-v1')
    assert.equal(sum(m, 'istio_tcp_connections_opened_total', labels), 1)
    assert.equal(sum(m, 'istio_tcp_received_bytes_total', labels), payload.length)
    assert.equal(sum(m, 'istio_tcp_sent_bytes_total', labels), payload.length)
  })

  test('gRPC: calls, messages and grpc-status by reporter, over mTLS', async () => {
    const client = workload(mesh, 'client-v1', 'default')
    // the client's sidecar is its gRPC proxy: the channel dials it and names the service in :authority
    const echo = new Echo(`127.0.0.1:${client.outboundPort}`, grpc.credentials.createInsecure(), {
      'grpc.default_authority': 'grpc-echo:9090',
    }) as unknown as EchoClient
    const unary = (message: string) =>
      new Promise<grpc.ServiceError | null>((resolve) => echo.Unary({ message }, (err) => resolve(err)))
    await eventually(async () => (await unary('warm-up')) === null, 30_000, 'the gRPC route')
    const base = await scrape('client-v1')
    const baseDest = await scrape('grpc-echo-v1')
    for (let i = 0; i < 3; i++) assert.equal(await unary(`m${i}`), null)
    const failed = await unary('missing one')
    assert.equal(failed?.code, grpc.status.NOT_FOUND)
    const replies = await new Promise<number>((resolve, reject) => {
      let n = 0
      const call = echo.ServerStream({ count: 5, prefix: 's' })
      call.on('data', () => n++)
      call.on('error', reject)
      call.on('end', () => resolve(n))
    })
    assert.equal(replies, 5)
    echo.close()

    const src = {
      reporter: 'source',
      source_workload: 'client-v1',
      source_principal: SA('client'),
      destination_workload: 'grpc-echo-v1',
      destination_service: 'grpc-echo.default.svc.cluster.local',
      destination_principal: SA('grpc-echo'),
      request_protocol: 'grpc',
      response_code: '200',
    }
    const dst = {
      ...src,
      reporter: 'destination',
      connection_security_policy: 'mutual_tls',
    }
    await eventually(
      async () =>
        sum(await scrape('grpc-echo-v1'), 'istio_requests_total', dst) - sum(baseDest, 'istio_requests_total', dst) ===
        5,
      15_000,
      'the destination counts five calls',
    )
    const m = await scrape('client-v1')
    const d = await scrape('grpc-echo-v1')
    for (const [now, was, labels] of [
      [m, base, src],
      [d, baseDest, dst],
    ] as const) {
      const delta = (name: string, extra: Record<string, string>) =>
        sum(now, name, { ...labels, ...extra }) - sum(was, name, { ...labels, ...extra })
      assert.equal(delta('istio_requests_total', { grpc_response_status: '0' }), 4, labels.reporter)
      assert.equal(delta('istio_requests_total', { grpc_response_status: '5' }), 1, labels.reporter)
      // three unary calls and a stream: one request message each; 3 + 5 replies; the failed call has none
      assert.equal(delta('istio_request_messages_total', { grpc_response_status: '0' }), 4, labels.reporter)
      assert.equal(delta('istio_response_messages_total', { grpc_response_status: '0' }), 8, labels.reporter)
      assert.equal(delta('istio_request_messages_total', { grpc_response_status: '5' }), 1, labels.reporter)
      assert.equal(delta('istio_response_messages_total', { grpc_response_status: '5' }), 0, labels.reporter)
      assert.equal(delta('istio_request_duration_milliseconds_count', {}), 5, labels.reporter)
    }
  })
})
