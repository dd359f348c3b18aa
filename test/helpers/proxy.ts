/**
 * Test harness: runs `loom proxy` as a real process from a generated bootstrap, with every port chosen by the OS,
 * and learns the bound addresses from its `ready` log line.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const LOOM = join(ROOT, 'bin', 'loom.js')

const T = 'type.googleapis.com/'
export const HCM = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`
export const ROUTER = `${T}envoy.extensions.filters.http.router.v3.Router`
export const TCP = `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`

export interface RunningProxy {
  proc: ChildProcess
  admin: string
  /** bound port per listener name */
  ports: Record<string, number>
  stderr: () => string
  stdout: () => string
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export function writeTemp(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'loom-test-'))
  const file = join(dir, name)
  writeFileSync(file, text)
  return file
}

/** Runs `loom <args>` to completion. */
export function runLoom(
  args: string[],
  timeoutMs = 20000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [LOOM, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d) => (stdout += d))
    p.stderr.on('data', (d) => (stderr += d))
    const t = setTimeout(() => {
      p.kill('SIGKILL')
      reject(new Error(`loom ${args.join(' ')} timed out`))
    }, timeoutMs)
    p.on('close', (code) => {
      clearTimeout(t)
      resolve({ code, stdout, stderr })
    })
  })
}

/** Starts a proxy from a bootstrap object (written as JSON) and waits until it is ready. */
export async function startProxy(bootstrap: unknown, extraArgs: string[] = []): Promise<RunningProxy> {
  const file = writeTemp('bootstrap.json', JSON.stringify(bootstrap, null, 2))
  const proc = spawn(process.execPath, [LOOM, 'proxy', '-c', file, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] })
  // never outlive the test process, even when the runner kills it before `after` hooks run
  const reap = () => proc.kill('SIGKILL')
  process.once('exit', reap)
  proc.once('exit', () => process.off('exit', reap))
  let err = ''
  let out = ''
  proc.stdout!.on('data', (d) => (out += d))
  const ready = await new Promise<{ admin: string; listeners: string[] }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`proxy did not become ready:\n${err}`)), 15000)
    proc.stderr!.on('data', (d: Buffer) => {
      err += d
      for (const line of err.split('\n')) {
        if (!line.includes('"msg":"ready"')) continue
        clearTimeout(t)
        resolve(JSON.parse(line) as { admin: string; listeners: string[] })
        return
      }
    })
    proc.on('exit', (code) => {
      clearTimeout(t)
      reject(new Error(`proxy exited with ${code} before ready:\n${err}`))
    })
  })
  const ports: Record<string, number> = {}
  const res = await fetch(`http://${ready.admin}/listeners?format=json`)
  const body = (await res.json()) as {
    listener_statuses: { name: string; local_address: { socket_address: { port_value: number } } }[]
  }
  for (const l of body.listener_statuses) ports[l.name] = l.local_address.socket_address.port_value
  return {
    proc,
    admin: ready.admin,
    ports,
    stderr: () => err,
    stdout: () => out,
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      return new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve(proc.exitCode)
        const t = setTimeout(() => proc.kill('SIGKILL'), 10000)
        proc.once('exit', (code) => {
          clearTimeout(t)
          resolve(code)
        })
        proc.kill(signal)
      })
    },
  }
}

export function adminAddress(): { socket_address: { address: string; port_value: number } } {
  return { socket_address: { address: '127.0.0.1', port_value: 0 } }
}

export function listener(name: string, filter: unknown, extra: Record<string, unknown> = {}): unknown {
  return {
    name,
    address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
    filter_chains: [{ filters: [filter], ...extra }],
  }
}

export function hcm(routeConfig: unknown, extra: Record<string, unknown> = {}): unknown {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': HCM,
      stat_prefix: 'ingress',
      route_config: routeConfig,
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
      ...extra,
    },
  }
}

export function staticCluster(name: string, ports: number[], extra: Record<string, unknown> = {}): unknown {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: ports.map((port) => ({
            endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } },
          })),
        },
      ],
    },
    ...extra,
  }
}

/** A single-route front proxy: every request to `cluster`. */
export function simpleBootstrap(
  clusters: unknown[],
  routeExtra: Record<string, unknown> = {},
  hcmExtra: Record<string, unknown> = {},
): unknown {
  return {
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener(
          'http',
          hcm(
            {
              name: 'local',
              virtual_hosts: [
                {
                  name: 'all',
                  domains: ['*'],
                  routes: [{ match: { prefix: '/' }, route: { cluster: 'backend', ...routeExtra } }],
                },
              ],
            },
            hcmExtra,
          ),
        ),
      ],
      clusters,
    },
  }
}

/** One counter or gauge from the admin endpoint's /stats text; NaN when absent. */
export async function stat(admin: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${admin}/stats`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name}: `))
  return line === undefined ? Number.NaN : Number(line.split(': ')[1])
}

/**
 * Polls a counter until two reads `intervalMs` apart agree (no event says when a byte count stops growing), and
 * returns that value.
 */
export async function settledStat(admin: string, name: string, intervalMs = 150): Promise<number> {
  let last = -1
  let now = await stat(admin, name)
  while (now !== last) {
    last = now
    await new Promise((r) => setTimeout(r, intervalMs))
    now = await stat(admin, name)
  }
  return now
}

/**
 * A bootstrap with one HTTP listener (`http`, stat prefix `ingress`) whose route configuration has
 * `virtualHosts`, whose connection manager runs `filters` and then the router, and one static cluster `be` on `port`.
 */
export function filterBootstrap(port: number, virtualHosts: unknown[], filters: unknown[]): unknown {
  return {
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener('http', {
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': HCM,
            stat_prefix: 'ingress',
            route_config: { virtual_hosts: virtualHosts },
            http_filters: [...filters, { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
          },
        }),
      ],
      clusters: [staticCluster('be', [port])],
    },
  }
}
