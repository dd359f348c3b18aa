/**
 * Live root rotation on a running mesh: a real `loom control` (xDS over TLS), two real sidecars with certificates
 * of its CA, mTLS between them (STRICT, and one request per connection, so every request is a new handshake under
 * the certificates and roots of the moment), steady load through them, and `loom control rotate-root --server`
 * mid-run. No request may fail; afterwards both sidecars' certificates are of the new root and the old root has
 * left their trust bundle (ROOTCA).
 */
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as tls from 'node:tls'
import { type Control, eventually, type Proc, spawnLoom, startControl } from './helpers/control.js'
import { runLoom } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const HOST = 'server.default.svc.cluster.local'
const TTL_S = 6
const OVERLAP_S = 8
/** leaves are back-dated this much (ca.ts BACKDATE_MS) */
const BACKDATE_MS = 5 * 60_000

const MESH = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: server, namespace: default }
spec:
  selector: { matchLabels: { app: server } }
  mtls: { mode: STRICT }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: server, namespace: default }
spec:
  host: ${HOST}
  trafficPolicy:
    connectionPool: { http: { maxRequestsPerConnection: 1 } }
`

interface CertsBody {
  certificates: { ca_cert: { serial_number: string }[]; cert_chain: { serial_number: string; valid_from: string }[] }[]
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: '/', headers: { host: `${HOST}:80` }, agent: false },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      },
    )
    req.setTimeout(5000, () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

/** The certificate a sidecar's inbound port serves (the handshake stops before its client certificate check). */
function servedLeaf(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'x' }, () => {
      const c = s.getPeerX509Certificate()
      s.destroy()
      if (c === undefined) reject(new Error('no certificate'))
      else resolve(c)
    })
    s.on('error', reject)
  })
}

describe('live root rotation', { timeout: 240_000 }, () => {
  let cp: Control
  let bundle: string
  let backend: Backend
  const procs: Proc[] = []
  let clientAdmin = ''
  let serverAdmin = ''
  let outbound = 0
  let inbound = 0
  const loom = (args: string[]) => runLoom([...args, '--server', cp.api])

  async function sidecar(name: string, args: string[]): Promise<string> {
    const r = await loom(['token', 'create', '--service-account', name])
    assert.equal(r.code, 0, r.stderr)
    const file = join(mkdtempSync(join(tmpdir(), 'loom-rot-')), 'token')
    writeFileSync(file, r.stdout, { mode: 0o600 })
    const p = await spawnLoom([
      'proxy',
      '--xds',
      cp.xds,
      '--xds-ca',
      bundle,
      '--node',
      `sidecar~127.0.0.1~${name}.default~default.svc.cluster.local`,
      '--labels',
      `app=${name}`,
      '--service-account',
      name,
      '--admin',
      '127.0.0.1:0',
      '--identity-token-file',
      file,
      ...args,
    ])
    procs.push(p)
    return String(p.ready.admin)
  }

  const certs = async (admin: string) => (await (await fetch(`http://${admin}/certs`)).json()) as CertsBody
  const roots = async (admin: string) => (await certs(admin)).certificates[0]?.ca_cert.map((c) => c.serial_number) ?? []

  before(async () => {
    cp = await startControl(undefined, 0, [
      '--xds-tls',
      'on',
      '--cert-ttl',
      `${TTL_S}s`,
      '--ca-rotation-overlap',
      `${OVERLAP_S}s`,
    ])
    bundle = String(cp.ready.trust_bundle)
    backend = await startBackend()
    const applied = await loom(['apply', '-f', writeMesh()])
    assert.equal(applied.code, 0, applied.stderr)
    inbound = await freePort()
    outbound = await freePort()
    const reg = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'server',
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: inbound, servicePort: 80 }],
        labels: { app: 'server', 'security.istio.io/tlsMode': 'istio' },
        serviceAccount: 'server',
        ttlSeconds: 600,
      }),
    })
    assert.equal(reg.status, 200, await reg.text())
    serverAdmin = await sidecar('server', [
      '--metadata',
      'INBOUND_ADDRESS=127.0.0.1',
      '--metadata',
      `INBOUND_PORTS=80:${inbound}`,
      '--metadata',
      `APP_PORTS=80:${backend.port}`,
    ])
    clientAdmin = await sidecar('client', ['--metadata', `OUTBOUND_PORT=${outbound}`])
    await eventually(
      async () => {
        try {
          return (await get(outbound)) === 200
        } catch {
          return false
        }
      },
      20_000,
      'mTLS from client to server',
    )
  })
  after(async () => {
    for (const p of procs.reverse()) await p.stop()
    await cp?.stop()
    await backend?.close()
  })

  function writeMesh(): string {
    const f = join(mkdtempSync(join(tmpdir(), 'loom-rot-')), 'mesh.yaml')
    writeFileSync(f, MESH)
    return f
  }

  test('rotating the root under load fails no request; afterwards only the new root is trusted', async (t) => {
    const before = (await (await fetch(`http://${cp.api}/api/v1/ca`)).json()) as {
      trustBundle: { serialNumber: string; fingerprint256: string }[]
    }
    assert.equal(before.trustBundle.length, 1)
    const oldRoot = before.trustBundle[0]!.serialNumber
    assert.deepEqual(await roots(clientAdmin), [oldRoot])

    // steady load: two loops, one request per connection end to end
    let stop = false
    let ok = 0
    const failures: string[] = []
    const loop = async () => {
      while (!stop) {
        try {
          const s = await get(outbound)
          if (s === 200) ok++
          else failures.push(`HTTP ${s}`)
        } catch (err) {
          failures.push(String(err))
        }
      }
    }
    const loops = [loop(), loop()]
    await eventually(async () => ok >= 20, 10_000, 'load before the rotation')
    const atRotate = ok

    const r = await runLoom([
      'control',
      'rotate-root',
      '--server',
      cp.api,
      '--propagation',
      '4s',
      '--ca-rotation-overlap',
      `${OVERLAP_S}s`,
    ])
    assert.equal(r.code, 0, r.stderr)
    const ca = (await (await fetch(`http://${cp.api}/api/v1/ca`)).json()) as {
      trustBundle: { serialNumber: string; signingFrom?: string }[]
    }
    const next = ca.trustBundle.find((b) => b.serialNumber !== oldRoot)!
    assert.ok(next.signingFrom !== undefined, 'the next root is trusted, not signing yet')
    const signingFrom = Date.parse(next.signingFrom!)
    const newRoot = next.serialNumber
    // 1. both sidecars are pushed the bundle of both roots (SDS ROOTCA) before any leaf of the new one exists
    await eventually(
      async () =>
        (await roots(clientAdmin)).length === 2 && (await roots(serverAdmin)).length === 2 && Date.now() < signingFrom,
      4000,
      'both roots at both sidecars before the new root signs',
    )
    // 2. both renew to leaves of the new root
    const newRootPem = readFileSync(bundle, 'utf8')
    await eventually(
      async () => {
        for (const admin of [clientAdmin, serverAdmin]) {
          const leaf = (await certs(admin)).certificates[0]?.cert_chain[0]
          if (leaf === undefined || Date.parse(leaf.valid_from) + BACKDATE_MS < signingFrom) return false
        }
        return true
      },
      TTL_S * 1000 * 3,
      'leaves of the new root at both sidecars',
    )
    const served = await servedLeaf(inbound)
    const newRootCert = new X509Certificate(
      newRootPem
        .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!
        .find((p) => new X509Certificate(p).serialNumber.toLowerCase() === newRoot)!,
    )
    assert.equal(served.verify(newRootCert.publicKey), true, "the server sidecar's leaf chains to the new root")
    // 3. the old root leaves both bundles after the overlap
    await eventually(
      async () =>
        JSON.stringify(await roots(clientAdmin)) === JSON.stringify([newRoot]) &&
        JSON.stringify(await roots(serverAdmin)) === JSON.stringify([newRoot]),
      (OVERLAP_S + 6) * 1000,
      'the old root gone from ROOTCA',
    )
    const afterOverlap = ok
    await eventually(async () => ok >= afterOverlap + 20, 10_000, 'load after the rotation')
    stop = true
    await Promise.all(loops)
    t.diagnostic(`${ok} requests (${ok - atRotate} during and after the rotation), ${failures.length} failed`)
    assert.deepEqual(failures, [], 'no request failed')
    assert.ok(ok - atRotate >= 50, `${ok - atRotate} requests during the rotation`)
    const trusted = readFileSync(bundle, 'utf8').match(/BEGIN CERTIFICATE/g)?.length
    assert.equal(trusted, 1, 'the trust bundle file holds the new root alone')
  })

  test('after the rotation, proxies started with the old root reconnect to the control plane by the new one', async () => {
    // their --xds-ca file holds the old root only: the new server certificate verifies by the ROOTCA they were pushed
    const { dataDir, xds } = cp
    await cp.stop()
    cp = await startControl(dataDir, Number(xds.slice(xds.lastIndexOf(':') + 1)), [
      '--xds-tls',
      'on',
      '--cert-ttl',
      `${TTL_S}s`,
      '--ca-rotation-overlap',
      `${OVERLAP_S}s`,
    ])
    await eventually(
      async () => {
        const r = await loom(['proxy-status', '-o', 'json'])
        return r.code === 0 && (JSON.parse(r.stdout) as unknown[]).length === 2
      },
      60_000,
      'both sidecars connected again',
    )
    // certificates of a few seconds may have run out while the control plane was down: they are renewed now
    await eventually(async () => (await get(outbound)) === 200, 30_000, 'mTLS from client to server again')
  })
})
