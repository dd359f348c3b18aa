/** `loom up` of a fixture directory as a child process, for integration tests: started, waited for, stopped. */
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, isAbsolute, join } from 'node:path'
import { eventually } from './control.js'
import { LOOM, ROOT, runLoom } from './proxy.js'

export interface RunningUp {
  /** the runtime's data directory (up.json, tokens, logs) */
  readonly dataDir: string
  /** `loom down`, then waits for `loom up` to exit */
  stop(): Promise<void>
}

/**
 * Runs `loom up -f test/fixtures/<fixture>` (or `-f <fixture>` when it is an absolute path) on OS-chosen
 * control-plane ports in a fresh data directory and resolves once it reports `up` (within `timeoutMs`,
 * else rejects with its stderr). `extraArgs` go to `loom up` (`--mesh-config <file>`). A test process that dies takes
 * it along.
 */
export async function startUp(fixture: string, timeoutMs: number, extraArgs: string[] = []): Promise<RunningUp> {
  const dir = isAbsolute(fixture) ? fixture : join(ROOT, 'test', 'fixtures', fixture)
  const dataDir = mkdtempSync(join(tmpdir(), `loom-${basename(fixture)}-`))
  const args = [LOOM, 'up', '-f', dir, '--data-dir', dataDir, ...extraArgs]
  const proc = spawn(process.execPath, [...args, '--api-port', '0', '--xds-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const reap = () => proc.kill('SIGKILL')
  process.once('exit', reap)
  let out = ''
  let err = ''
  proc.stdout!.on('data', (d) => (out += d))
  proc.stderr!.on('data', (d) => (err += d))
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  const stop = async () => {
    await runLoom(['down', '--data-dir', dataDir], 30_000)
    await exited
    process.off('exit', reap)
  }
  try {
    await eventually(async () => out.includes('{"msg":"up"'), timeoutMs, `loom up:\n${err}`)
  } catch (e) {
    await stop()
    throw e
  }
  return { dataDir, stop }
}
