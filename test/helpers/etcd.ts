/**
 * A real etcd cluster for tests (Debian's `etcd-server`, /usr/bin/etcd): three members on 127.0.0.1 with OS-free
 * ports, fresh data directories, waited for until every member reports healthy, and removed by `stop()` (also when
 * the test process exits). `kill9` and `restart` are for chaos tests.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { request } from 'node:https'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'

/** The `etcd` executable on PATH (or Debian's /usr/bin/etcd), or null when it is not installed. */
export function etcdBinary(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), '/usr/bin']
  for (const dir of dirs) {
    const file = join(dir, 'etcd')
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch {
      // not here
    }
  }
  return null
}

export const ETCD_MISSING =
  'the etcd binary is not installed (Debian: apt-get install etcd-server; .ci/run installs it)'

export interface EtcdClusterOptions {
  /** members (default 3) */
  size?: number
  /**
   * client TLS: the members' certificate and key (for 127.0.0.1), the CA clients verify them with; with
   * `clientCertAuth`, clients must present a certificate signed by that CA (PEM file paths)
   */
  tls?: { ca: string; cert: string; key: string; clientCertAuth?: boolean; clientCert?: string; clientKey?: string }
}

export interface EtcdMember {
  name: string
  /** host:port of its client URL */
  endpoint: string
  peerUrl: string
  dataDir: string
  proc: ChildProcess | null
  /** what it wrote to stderr, for failure messages */
  log: string
}

export interface EtcdCluster {
  members: EtcdMember[]
  /** every member's client endpoint, as `--store etcd://` takes them */
  endpoints: string[]
  /** `etcd://a,b,c` */
  url: string
  /** SIGKILL: no shutdown, no flush */
  kill9(member: EtcdMember): Promise<void>
  /** starts a stopped member again on its data directory and ports; resolves when it reports healthy */
  restart(member: EtcdMember): Promise<void>
  /** waits until every running member reports healthy (a leader elected, reachable) */
  healthy(ms?: number): Promise<void>
  /** waits until every member runs and reports healthy (after the start) */
  ready(ms: number): Promise<void>
  stop(): Promise<void>
}

/** `/health` over TLS (fetch takes no CA of its own): true when the member says it is healthy. */
function httpsHealthy(endpoint: string, tls: NonNullable<EtcdClusterOptions['tls']>): Promise<boolean> {
  const [host, port] = endpoint.split(':') as [string, string]
  return new Promise((resolve) => {
    const req = request(
      {
        host,
        port: Number(port),
        path: '/health',
        // no SNI for an IP address (RFC 6066); the certificate is still checked against the IP
        servername: '',
        ca: readFileSync(tls.ca),
        ...(tls.clientCert !== undefined
          ? { cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey ?? '') }
          : {}),
        timeout: 1000,
      },
      (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d))
        res.on('end', () => resolve(res.statusCode === 200 && body.includes('"health":"true"')))
      },
    )
    req.on('error', () => resolve(false))
    req.on('timeout', () => req.destroy())
    req.end()
  })
}

/** An OS-free port: bound to port 0, then closed (the member binds it a moment later; a clash is retried). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

/** Go's name of this machine's architecture, for ETCD_UNSUPPORTED_ARCH (etcd 3.4 refuses anything but amd64 without it). */
function goArch(): string | null {
  const map: Record<string, string> = { arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', ia32: '386' }
  return process.arch === 'x64' ? null : (map[process.arch] ?? process.arch)
}

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL')
})

/** Starts a 3-member cluster; retries with other ports when one was taken between choosing it and binding it. */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const binary = etcdBinary()
  if (binary === null) throw new Error(ETCD_MISSING)
  let lastError: unknown = null
  for (let attempt = 0; attempt < 3; attempt++) {
    const cluster = await launch(binary, options.size ?? 3, options.tls)
    try {
      await cluster.ready(20_000)
      return cluster
    } catch (err) {
      lastError = err
      const clash = cluster.members.some((m) => /address already in use/.test(m.log))
      await cluster.stop()
      if (!clash) break
    }
  }
  throw lastError
}

async function launch(binary: string, size: number, tls: EtcdClusterOptions['tls']): Promise<EtcdCluster> {
  const scheme = tls === undefined ? 'http' : 'https'
  const tlsArgs =
    tls === undefined
      ? []
      : [
          '--cert-file',
          tls.cert,
          '--key-file',
          tls.key,
          '--trusted-ca-file',
          tls.ca,
          ...(tls.clientCertAuth === true ? ['--client-cert-auth'] : []),
        ]
  const token = `loom-test-${process.pid}-${Date.now()}`
  const members: EtcdMember[] = []
  for (let i = 0; i < size; i++) {
    const client = await freePort()
    const peer = await freePort()
    members.push({
      name: `m${i}`,
      endpoint: `127.0.0.1:${client}`,
      peerUrl: `http://127.0.0.1:${peer}`,
      dataDir: mkdtempSync(join(tmpdir(), `loom-etcd-m${i}-`)),
      proc: null,
      log: '',
    })
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',')
  const arch = goArch()
  const start = (m: EtcdMember) => {
    const proc = spawn(
      binary,
      [
        '--name',
        m.name,
        '--data-dir',
        m.dataDir,
        '--listen-client-urls',
        `${scheme}://${m.endpoint}`,
        '--advertise-client-urls',
        `${scheme}://${m.endpoint}`,
        ...tlsArgs,
        '--listen-peer-urls',
        m.peerUrl,
        '--initial-advertise-peer-urls',
        m.peerUrl,
        '--initial-cluster',
        initialCluster,
        '--initial-cluster-token',
        token,
        '--initial-cluster-state',
        'new',
        // a lost leader is replaced within about a second, not the default's few
        '--heartbeat-interval',
        '50',
        '--election-timeout',
        '500',
        '--logger',
        'zap',
        '--log-level',
        'warn',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, ...(arch !== null ? { ETCD_UNSUPPORTED_ARCH: arch } : {}) },
      },
    )
    m.proc = proc
    live.add(proc)
    proc.stderr!.on('data', (d: Buffer) => {
      m.log = (m.log + d).slice(-20_000)
    })
    proc.once('exit', () => {
      live.delete(proc)
      if (m.proc === proc) m.proc = null
    })
  }
  for (const m of members) start(m)

  const memberHealthy = async (m: EtcdMember): Promise<boolean> => {
    if (tls !== undefined) return httpsHealthy(m.endpoint, tls)
    try {
      const res = await fetch(`http://${m.endpoint}/health`, { signal: AbortSignal.timeout(1000) })
      const body = (await res.json()) as { health?: string }
      return res.ok && body.health === 'true'
    } catch {
      return false
    }
  }
  /** `all`: every target must run (it was just started); else the running ones must be healthy */
  const waitHealthy = async (targets: EtcdMember[], ms: number, all: boolean) => {
    const deadline = Date.now() + ms
    for (;;) {
      const running = targets.filter((m) => m.proc !== null)
      const exited = targets.find((m) => m.proc === null)
      if (all && exited !== undefined) throw new Error(`etcd member ${exited.name} exited:\n${exited.log}`)
      const ok = await Promise.all(running.map(memberHealthy))
      if (running.length > 0 && ok.every((x) => x)) return
      if (Date.now() > deadline) {
        const sick = running.filter((_, i) => !ok[i]).map((m) => `${m.name} (${m.endpoint}):\n${m.log}`)
        throw new Error(`etcd did not become healthy in ${ms} ms:\n${sick.join('\n')}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const stopMember = (m: EtcdMember, signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      const proc = m.proc
      if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return resolve()
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
      proc.once('exit', () => {
        clearTimeout(t)
        resolve()
      })
      proc.kill(signal)
    })

  const endpoints = members.map((m) => m.endpoint)
  return {
    members,
    endpoints,
    url: `etcd://${endpoints.join(',')}`,
    kill9: (m) => stopMember(m, 'SIGKILL'),
    async restart(m) {
      if (m.proc !== null) throw new Error(`etcd member ${m.name} is running`)
      start(m)
      await waitHealthy([m], 20_000, true)
    },
    healthy: (ms = 10_000) => waitHealthy(members, ms, false),
    ready: (ms) => waitHealthy(members, ms, true),
    async stop() {
      // the data goes too, so nothing needs a clean shutdown (a member stopping gracefully first hands on its
      // leadership, seconds when the others are stopping as well)
      await Promise.all(members.map((m) => stopMember(m, 'SIGKILL')))
      for (const m of members) rmSync(m.dataDir, { recursive: true, force: true })
    },
  }
}
