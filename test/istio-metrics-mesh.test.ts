/**
 * Istio's TCP and gRPC metrics on a `loom up` mesh (test/fixtures/up-telemetry): bytes and connections through a
 * TCP workload's inbound sidecar, plain text and from the client's sidecar over mTLS with Istio's TCP metadata
 * exchange (both reporters naming the other side's workload), and gRPC calls from a client's sidecar to a gRPC
 * workload's sidecar over mTLS, with message counts and grpc-status, checked against the traffic sent.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { eventually } from './helpers/control.js'
import { SA, type Sample, scrape as scrapeAdmin, sum } from './helpers/istio-metrics.js'
import { readMesh, type UpMesh, workload } from './helpers/istio-task.js'
import { ROOT } from './helpers/proxy.js'
import { freePort } from './helpers/servers.js'
import { type RunningUp, startUp } from './helpers/up.js'

interface EchoClient extends grpc.Client {
  Unary(req: { message: string }, cb: grpc.requestCallback<{ message: string }>): grpc.ClientUnaryCall
  ServerStream(req: { count: number; prefix?: string }): grpc.ClientReadableStream<{ message: string }>
}

const def = protoLoader.loadSync(join(ROOT, 'test', 'fixtures', 'echo.proto'), { defaults: true, keepCase: true })
const Echo = (grpc.loadPackageDefinition(def) as unknown as { loom: { test: { Echo: grpc.ServiceClientConstructor } } })
  .loom.test.Echo

const FIXTURE = join(ROOT, 'test', 'fixtures', 'up-telemetry')

/**
 * The fixture with its TCP service port (9000: tcp-echo's, and the client's Sidecar egress listener on 127.0.0.1)
 * replaced by `port`, in a new directory; the gRPC workload keeps the fixture's directory as its working directory.
 */
function fixtureWithTcpPort(port: number): string {
  const text = readFileSync(join(FIXTURE, 'mesh.yaml'), 'utf8')
  const out = text
    .replace('port: 9000,', `port: ${port},`)
    .replace('number: 9000,', `number: ${port},`)
    .replace(
      'command: [node, grpc-echo.cjs]',
      `workingDir: ${JSON.stringify(FIXTURE)}\n  command: [node, grpc-echo.cjs]`,
    )
  assert.equal(out.split(String(port)).length, 3, 'the port in the service and the Sidecar')
  const dir = mkdtempSync(join(tmpdir(), 'loom-up-telemetry-'))
  writeFileSync(join(dir, 'mesh.yaml'), out)
  return dir
}

/** One TCP connection to 127.0.0.1:`port`: writes `payload`, half-closes once it is all echoed; resolves with the bytes read. */
function echo(port: number, payload: Buffer): Promise<number> {
  return new Promise<number>((resolve, reject) => {
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
}

describe('Istio TCP and gRPC metrics on a loom up mesh', { timeout: 240_000 }, () => {
  let up: RunningUp
  let mesh: UpMesh
  let tcpPort: number
  const adminOf = new Map<string, number>()
  const scrape = (name: string): Promise<Sample[]> => scrapeAdmin(`127.0.0.1:${adminOf.get(name)}`)

  before(async () => {
    tcpPort = await freePort()
    up = await startUp(fixtureWithTcpPort(tcpPort), 120_000)
    mesh = readMesh(up.dataDir)
    for (const w of mesh.workloads as unknown as { name: string; adminPort: number }[]) adminOf.set(w.name, w.adminPort)
  })
  after(async () => {
    await up?.stop()
  })

  test('TCP: bytes each way, one connection opened and closed, on the destination sidecar', async () => {
    const port = workload(mesh, 'tcp-echo-v1', 'default').inbound[String(tcpPort)]!
    const payload = Buffer.alloc(4000, 'x')
    assert.equal(await echo(port, payload), payload.length)
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

  test("TCP through the client's sidecar over mTLS: both reporters carry the other workload, the exact bytes", async () => {
    const src = {
      reporter: 'source',
      source_workload: 'client-v1',
      source_canonical_service: 'client',
      source_canonical_revision: 'v1',
      source_workload_namespace: 'default',
      source_principal: SA('client'),
      source_app: 'client',
      source_version: 'v1',
      destination_workload: 'tcp-echo-v1',
      destination_workload_namespace: 'default',
      destination_principal: SA('tcp-echo'),
      destination_app: 'tcp-echo',
      destination_version: 'v1',
      destination_service: 'tcp-echo.default.svc.cluster.local',
      destination_service_name: 'tcp-echo',
      destination_service_namespace: 'default',
      destination_canonical_service: 'tcp-echo',
      destination_canonical_revision: 'v1',
      request_protocol: 'tcp',
      response_code: '0',
      connection_security_policy: 'unknown',
    }
    const dst = { ...src, reporter: 'destination', connection_security_policy: 'mutual_tls' }
    const counts = (m: Sample[], labels: Record<string, string>) => ({
      opened: sum(m, 'istio_tcp_connections_opened_total', labels),
      closed: sum(m, 'istio_tcp_connections_closed_total', labels),
      received: sum(m, 'istio_tcp_received_bytes_total', labels),
      sent: sum(m, 'istio_tcp_sent_bytes_total', labels),
    })
    // the egress listener and tcp-echo's endpoint come with the control plane's pushes: warm up until one echo
    // gets through, then until both sidecars have counted it closed
    const warm = Buffer.from('warm-up')
    await eventually(
      async () => (await echo(tcpPort, warm).catch(() => 0)) === warm.length,
      30_000,
      'the egress listener',
    )
    const settled = async () => {
      const a = counts(await scrape('client-v1'), src)
      const b = counts(await scrape('tcp-echo-v1'), dst)
      return a.opened > 0 && a.opened === a.closed && b.opened === a.opened && b.closed === b.opened
    }
    await eventually(settled, 15_000, 'the warm-up counted closed on both sidecars')
    const baseSrc = counts(await scrape('client-v1'), src)
    const baseDst = counts(await scrape('tcp-echo-v1'), dst)

    const payload = Buffer.alloc(6000, 't')
    assert.equal(await echo(tcpPort, payload), payload.length)
    await eventually(
      async () =>
        counts(await scrape('client-v1'), src).closed === baseSrc.closed + 1 &&
        counts(await scrape('tcp-echo-v1'), dst).closed === baseDst.closed + 1,
      15_000,
      'both sidecars count the connection closed',
    )
    for (const [proxy, labels, base] of [
      ['client-v1', src, baseSrc],
      ['tcp-echo-v1', dst, baseDst],
    ] as const) {
      const now = counts(await scrape(proxy), labels)
      assert.deepEqual(
        {
          opened: now.opened - base.opened,
          closed: now.closed - base.closed,
          received: now.received - base.received,
          sent: now.sent - base.sent,
        },
        { opened: 1, closed: 1, received: 6000, sent: 6000 },
        labels.reporter,
      )
    }
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
