/** Test harness for the control plane: `loom control` and `loom proxy --xds` as real processes. */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LOOM, runLoom } from './proxy.js'

export interface Proc {
  proc: ChildProcess
  stderr: () => string
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

/** Spawns `loom <args>` and resolves with the JSON of its log line whose msg is `readyMsg`. */
export async function spawnLoom(
  args: string[],
  readyMsg = 'ready',
  env: NodeJS.ProcessEnv = {},
): Promise<Proc & { ready: Record<string, unknown> }> {
  const proc = spawn(process.execPath, [LOOM, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
  const reap = () => proc.kill('SIGKILL')
  process.once('exit', reap)
  proc.once('exit', () => process.off('exit', reap))
  let err = ''
  proc.stdout!.resume()
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`loom ${args[0]} did not become ready:\n${err}`)), 15000)
    proc.stderr!.on('data', (d: Buffer) => {
      err += d
      for (const line of err.split('\n')) {
        if (!line.includes(`"msg":"${readyMsg}"`)) continue
        clearTimeout(t)
        resolve(JSON.parse(line) as Record<string, unknown>)
        return
      }
    })
    proc.on('exit', (code) => {
      clearTimeout(t)
      reject(new Error(`loom ${args[0]} exited with ${code}:\n${err}`))
    })
  })
  return {
    proc,
    ready,
    stderr: () => err,
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      return new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode)
        const t = setTimeout(() => proc.kill('SIGKILL'), 8000)
        proc.once('exit', (code) => {
          clearTimeout(t)
          resolve(code)
        })
        proc.kill(signal)
      })
    },
  }
}

export interface Control extends Proc {
  /** the JSON of its `ready` log line */
  ready: Record<string, unknown>
  api: string
  xds: string
  dataDir: string
  loom(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>
}

/**
 * `loom control` on OS-chosen ports. Its xDS port is plain text unless `extra` says otherwise (`--xds-tls on`):
 * most tests dial it without TLS; the TLS of the control plane is tested on its own (control-tls.test.ts).
 */
export async function startControl(
  dataDir = mkdtempSync(join(tmpdir(), 'loom-cp-')),
  xdsPort = 0,
  extra: string[] = [],
): Promise<Control> {
  const tls = extra.includes('--xds-tls') ? [] : ['--xds-tls', 'off']
  const p = await spawnLoom([
    'control',
    '--data-dir',
    dataDir,
    '--api',
    '127.0.0.1:0',
    '--xds',
    `127.0.0.1:${xdsPort}`,
    ...tls,
    ...extra,
  ])
  const api = String(p.ready.api)
  return {
    ...p,
    api,
    xds: String(p.ready.xds),
    dataDir,
    loom: (args: string[]) => runLoom([...args, '--server', api]),
  }
}

/** A sidecar on xDS; `outbound` is the port of its outbound HTTP listener. */
export async function startSidecar(
  xds: string,
  labels: Record<string, string>,
  outbound: number,
  extra: string[] = [],
): Promise<Proc & { admin: string }> {
  const p = await spawnLoom([
    'proxy',
    '--xds',
    xds,
    '--admin',
    '127.0.0.1:0',
    '--labels',
    Object.entries(labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
    '--metadata',
    `OUTBOUND_PORT=${outbound}`,
    ...extra,
  ])
  return { ...p, admin: String(p.ready.admin) }
}

/** Polls `fn` until it returns true (config propagation is asynchronous); fails after `ms`. */
export async function eventually(fn: () => Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await fn().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** A bootstrap token for a workload identity (`loom token create`); throws when the CLI refuses. */
export async function bootstrapToken(cp: Control, namespace: string, serviceAccount: string, ttl = '1h') {
  const r = await cp.loom([
    'token',
    'create',
    '--namespace',
    namespace,
    '--service-account',
    serviceAccount,
    '--ttl',
    ttl,
  ])
  if (r.code !== 0) throw new Error(`loom token create: ${r.stderr}`)
  return r.stdout.trim()
}

/** `bootstrapToken` in a file of its own (mode 0600), for `loom proxy --identity-token-file`; returns its path. */
export async function tokenFile(cp: Control, namespace: string, serviceAccount: string): Promise<string> {
  const file = join(mkdtempSync(join(tmpdir(), 'loom-token-')), 'token')
  writeFileSync(file, `${await bootstrapToken(cp, namespace, serviceAccount)}\n`, { mode: 0o600 })
  return file
}
