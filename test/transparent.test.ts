/**
 * `loom up --transparent`: Bookinfo with every workload in a network namespace of its own and its traffic captured
 * by iptables, no HTTP_PROXY. The product page works through the gateway; a routing rule applies as in HTTP-proxy
 * mode; a plain TCP client and a TLS client inside a namespace reach servers outside the mesh by IP through the
 * sidecar (its PassthroughCluster counts them); an application's port is not reachable from the root namespace;
 * `loom down` removes namespaces, veths, the bridge and the hosts files, and so does a `loom down` after a
 * `loom up` killed with SIGKILL. Needs root, ip and iptables (CI runs as root); skipped otherwise, saying why.
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tls from 'node:tls'
import { after, before, describe, test } from 'node:test'
import { netNames } from '../src/runtime/netns.js'
import type { UpState } from '../src/runtime/up.js'
import { eventually } from './helpers/control.js'
import { ROOT, runLoom, stat } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const MESH = join(ROOT, 'examples', 'bookinfo', 'mesh')
const NET = join(ROOT, 'examples', 'bookinfo', 'networking')

function missing(): string | null {
  if (process.platform !== 'linux') return 'transparent mode needs Linux'
  if (process.getuid?.() !== 0) return 'transparent mode needs root (CI runs as root)'
  for (const cmd of ['ip', 'iptables', 'iptables-restore', 'setpriv'])
    if (spawnSync(cmd, ['--version'], { stdio: 'ignore' }).error !== undefined) return `${cmd} is not installed`
  return null
}
const skip = missing()
if (skip !== null) process.stderr.write(`# transparent.test: skipped: ${skip}\n`)

const REVIEWS_V2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: { host: reviews, subset: v2 }
`

function versionOf(html: string): string {
  if (html.includes('text-red-500')) return 'v3'
  if (html.includes('text-black-500')) return 'v2'
  if (html.includes('Reviewer1')) return 'v1'
  return 'error'
}

/** Runs `node -e script` inside network namespace `ns`; resolves with its stdout (rejects on a non-zero exit). */
function inNamespace(ns: string, script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000)
    p.on('close', (code) => {
      clearTimeout(t)
      if (code === 0) resolve(out.trim())
      else reject(new Error(`in ${ns}: exit ${code}: ${err}`))
    })
  })
}

function listen(server: net.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port))
  })
}

/** What the mesh of `dataDir` made that is still there: namespaces, links (veths, bridge), hosts files. */
function leftovers(dataDir: string): string[] {
  const { bridge, nsPrefix, vethPrefix } = netNames(dataDir)
  const nss = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(nsPrefix))
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '')
    .filter((n) => n === bridge || n.startsWith(vethPrefix))
  const hosts = nss.length === 0 && existsSync('/etc/netns') ? [] : nss.filter((n) => existsSync(`/etc/netns/${n}`))
  return [...nss, ...links, ...hosts]
}

describe('loom up --transparent', { skip: skip ?? false, timeout: 240_000 }, () => {
  let up: RunningUp
  let state: UpState
  let page: string
  const tmp = mkdtempSync(join(tmpdir(), 'loom-transparent-'))

  before(async () => {
    up = await startUp(MESH, 150_000, ['--transparent', '--gateway-port', '0'])
    state = JSON.parse(readFileSync(join(up.dataDir, 'up.json'), 'utf8')) as UpState
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
  })
  after(async () => {
    await up?.stop()
    rmSync(tmp, { recursive: true, force: true })
  })

  const workload = (name: string) => state.workloads.find((w) => w.name === name)!

  test('each workload has a namespace and an address of its own; applications have no proxy setting', () => {
    const addresses = new Set(state.workloads.map((w) => w.address))
    assert.equal(addresses.size, state.workloads.length)
    for (const w of state.workloads) {
      assert.match(w.address ?? '', /^10\.255\.\d+\.\d+$/)
      assert.ok(w.netns !== undefined && existsSync(`/run/netns/${w.netns}`), `${w.name}: namespace ${w.netns}`)
      const env = readFileSync(`/proc/${w.appPid}/environ`, 'latin1').split('\0')
      assert.ok(!env.some((e) => /^HTTP_PROXY=./i.test(e)), `${w.name} has an HTTP_PROXY`)
      // the sidecar runs as its own user (the capture rules let its connections out)
      const uid = readFileSync(`/proc/${w.sidecarPid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)?.[1]
      assert.equal(uid, '1337')
      // the application has no capabilities: it cannot change its capture rules nor become the sidecar's user
      const caps = readFileSync(`/proc/${w.appPid}/status`, 'utf8').match(/^CapBnd:\s+(\w+)/m)?.[1]
      assert.equal(caps, '0000000000000000')
    }
  })

  test('the product page works through the gateway, every service called by name', async () => {
    await eventually(
      async () => {
        const html = await (await fetch(page)).text()
        return html.includes('Reviewer1') && !html.includes('Error fetching')
      },
      30_000,
      'the product page with details and reviews',
    )
  })

  test('a routing rule applies: reviews v2 only, black stars on every page', async () => {
    const loom = (args: string[]) => runLoom([...args, '--server', state.api])
    assert.equal((await loom(['apply', '-f', join(NET, 'destination-rule-all.yaml')])).code, 0)
    const file = join(tmp, 'reviews-v2.yaml')
    writeFileSync(file, REVIEWS_V2)
    assert.equal((await loom(['apply', '-f', file])).code, 0)
    await eventually(
      async () => {
        for (let i = 0; i < 10; i++) if (versionOf(await (await fetch(page)).text()) !== 'v2') return false
        return true
      },
      30_000,
      'ten pages in a row from reviews v2',
    )
  })

  test('HTTP/1 and HTTP/2 (prior knowledge) by service name from inside a namespace, with no proxy setting', async () => {
    const w = workload('productpage-v1')
    const admin = `${w.address}:${w.adminPort}`
    const before = await stat(admin, 'listener.0.0.0.0_9080.downstream_cx_total')
    const h1 = await inNamespace(
      w.netns!,
      "fetch('http://details:9080/details/0').then(async (r) => console.log(r.status, await r.text()), (e) => { console.error(e); process.exit(1) })",
    )
    assert.match(h1, /^200 .*"author"/)
    const h2 = await inNamespace(
      w.netns!,
      "const c=require('node:http2').connect('http://reviews.default.svc.cluster.local:9080');c.on('error',(e)=>{console.error(e);process.exit(1)});" +
        "const r=c.request({':path':'/reviews/0'});let b='';r.on('response',(h)=>{b+=h[':status']+' '});r.on('data',(d)=>{b+=d});" +
        "r.on('end',()=>{console.log(b);c.close()});r.end()",
    )
    assert.match(h2, /^200 .*"reviews"/)
    // both were captured and sniffed by the sidecar's listener for port 9080
    assert.equal(await stat(admin, 'listener.0.0.0.0_9080.downstream_cx_total'), before + 2)
  })

  test('plain TCP and TLS from inside a namespace reach servers outside the mesh through the sidecar', async () => {
    const w = workload('details-v1')
    const admin = `${w.address}:${w.adminPort}`
    // the root namespace as the workloads see it: the bridge's address
    const host = w.address!.replace(/\.\d+$/, '.1')
    const echo = net.createServer((s) => s.pipe(s))
    const echoPort = await listen(echo, host)
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=outside.example',
        '-keyout',
        join(tmp, 'key.pem'),
        '-out',
        join(tmp, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    )
    const secure = tls.createServer(
      { key: readFileSync(join(tmp, 'key.pem')), cert: readFileSync(join(tmp, 'cert.pem')) },
      (s) => s.on('data', (d: Buffer) => s.end(`tls:${d}:${s.servername}`)),
    )
    const tlsPort = await listen(secure, host)
    try {
      const before = await stat(admin, 'cluster.PassthroughCluster.upstream_cx_total')
      const tcp = await inNamespace(
        w.netns!,
        `const s=require('node:net').connect(${echoPort},'${host}',()=>s.write('ping'));s.on('data',(d)=>{console.log(String(d));s.destroy()})`,
      )
      assert.equal(tcp, 'ping')
      const secured = await inNamespace(
        w.netns!,
        `const s=require('node:tls').connect({host:'${host}',port:${tlsPort},servername:'outside.example',rejectUnauthorized:false},()=>s.write('hello'));` +
          `s.on('data',(d)=>{console.log(String(d)+' '+s.getPeerCertificate().subject.CN);s.destroy()})`,
      )
      assert.equal(secured, 'tls:hello:outside.example outside.example')
      // both went through the sidecar, to where they were going
      await eventually(
        async () => (await stat(admin, 'cluster.PassthroughCluster.upstream_cx_total')) >= before + 2,
        5000,
        'two passthrough connections counted by the sidecar',
      )
    } finally {
      echo.close()
      secure.close()
    }
  })

  test("an application's port is not reachable from the root namespace; its service port is, through the sidecar", async () => {
    const w = workload('details-v1')
    const admin = `${w.address}:${w.adminPort}`
    const blackholed = await stat(admin, 'tcp.BlackHoleCluster.downstream_cx_total')
    const answer = await new Promise<string>((resolve) => {
      const s = net.connect(w.appPort, w.address!)
      let got = ''
      s.on('connect', () => s.write(`GET /health HTTP/1.1\r\nhost: x\r\n\r\n`))
      s.on('data', (d) => (got += d))
      s.on('error', () => {})
      s.on('close', () => resolve(got))
    })
    assert.equal(answer, '', 'the application answered without its sidecar')
    assert.equal(await stat(admin, 'tcp.BlackHoleCluster.downstream_cx_total'), blackholed + 1)
    const r = await fetch(`http://${w.address}:9080/health`)
    assert.equal(r.status, 200)
    assert.match(await r.text(), /Details is healthy/)
  })

  test('loom down removes the namespaces, veths, bridge and hosts files', async () => {
    assert.ok(leftovers(up.dataDir).length > 0)
    await up.stop()
    assert.deepEqual(leftovers(up.dataDir), [])
  })
})

describe('loom up --transparent killed with SIGKILL', { skip: skip ?? false, timeout: 150_000 }, () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'loom-transparent-kill-'))
  const started: ReturnType<typeof spawn>[] = []
  /** `loom up --transparent` of a one-workload mesh; resolves with it once up, and its stderr so far */
  const upHello = async (): Promise<{ proc: ReturnType<typeof spawn>; err: () => string }> => {
    const proc = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'loom.js'),
        'up',
        '-f',
        join(ROOT, 'test', 'fixtures', 'up-hello'),
        '--data-dir',
        dataDir,
        '--transparent',
        '--api-port',
        '0',
        '--xds-port',
        '0',
        '--gateway-port',
        '0',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    started.push(proc)
    let out = ''
    let err = ''
    proc.stdout!.on('data', (d) => (out += d))
    proc.stderr!.on('data', (d) => (err += d))
    await eventually(async () => out.includes('{"msg":"up"'), 90_000, 'loom up').catch((e: Error) => {
      throw new Error(`${e.message}; its output:\n${err}`)
    })
    return { proc, err: () => err }
  }
  /**
   * SIGKILL to `loom up`, then waits until its own processes (control plane, gateway, sidecar) have stopped by
   * themselves, as they do when it dies, and are reaped: the next loom up could not open the control plane's store
   * before.
   */
  const kill = async (proc: ReturnType<typeof spawn>) => {
    const state = JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as UpState
    const own = (state.processes ?? []).filter((p) => p.role !== 'app' && p.pid !== null).map((p) => p.pid!)
    proc.kill('SIGKILL')
    if (proc.exitCode === null && proc.signalCode === null) await new Promise((r) => proc.once('exit', r))
    // until reaped: the store's lock counts a zombie as its holder
    const running = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    await eventually(async () => !own.some(running), 20_000, "the killed loom up's own processes to stop")
  }
  after(async () => {
    for (const p of started) p.kill('SIGKILL')
    await runLoom(['down', '--data-dir', dataDir], 30_000).catch(() => {})
    rmSync(dataDir, { recursive: true, force: true })
  })

  test('the next loom up, and loom down, remove the network a killed loom up left', async () => {
    const first = await upHello()
    assert.ok(leftovers(dataDir).length >= 3, 'a namespace, its veth and the bridge')
    await kill(first.proc)
    const left = leftovers(dataDir)
    assert.ok(left.length >= 3, 'the network outlives a killed loom up')
    // the next loom up on the data dir removes it before it makes its own
    const second = await upHello()
    assert.match(second.err(), /removed the network a loom up that did not stop left \(.*loom-/)
    await kill(second.proc)
    assert.ok(leftovers(dataDir).length >= 3)
    const down = await runLoom(['down', '--data-dir', dataDir], 30_000)
    assert.equal(down.code, 0, down.stderr)
    assert.deepEqual(leftovers(dataDir), [])
  })
})
