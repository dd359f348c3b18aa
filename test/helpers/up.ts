/** `loom up` of a fixture directory as a child process, for integration tests: started, waited for, stopped. */
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, isAbsolute, join } from 'node:path'
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
 * else rejects with its stderr). A test process that dies takes it along. `extra`: more `loom up` flags
 * (`--gateway-port 0`: the gateway on an OS-chosen port, not the Gateway's own port when it is free, which another
 * mesh on the machine may take too).
 */
export async function startUp(fixture: string, timeoutMs: number, extra: string[] = []): Promise<RunningUp> {
  const dir = isAbsolute(fixture) ? fixture : join(ROOT, 'test', 'fixtures', fixture)
  const dataDir = mkdtempSync(join(tmpdir(), `loom-${basename(fixture)}-`))
  const args = [LOOM, 'up', '-f', dir, '--data-dir', dataDir, ...extra]
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
    // a loom up that fails to start exits, saying why on stderr: no use waiting for it then
    const deadline = Date.now() + timeoutMs
    while (!out.includes('{"msg":"up"')) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(`loom up exited (${proc.exitCode ?? proc.signalCode}) before it was up`)
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for loom up`)
      await new Promise((r) => setTimeout(r, 50))
    }
  } catch (e) {
    await stop()
    throw new Error(`${(e as Error).message}; its output:\n${err}`)
  }
  return { dataDir, stop }
}
