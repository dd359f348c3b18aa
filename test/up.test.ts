/**
 * `loom up` starting and stopping, as a user runs it: a Workload that cannot start fails `loom up` at once with the
 * reason, and every way of stopping (a failure during start-up, SIGTERM, `loom down` while it is still starting,
 * SIGKILL of `loom up` itself followed by `loom down`) leaves no process it started running, checked by pid. Also:
 * `loom status` lists gateways with their ports and config sync state.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { LOOM, ROOT, runLoom } from './helpers/proxy.js'

const FIXTURES = join(ROOT, 'test', 'fixtures')

interface Up {
  proc: ChildProcess
  dataDir: string
  startedAt: number
  stderr: () => string
  stdout: () => string
  /** resolves when `loom up` has exited: its code and when */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>
}

function startUp(fixture: string): Up {
  const dataDir = mkdtempSync(join(tmpdir(), 'loom-up-'))
  const proc = spawn(
    process.execPath,
    [
      LOOM,
      'up',
      '-f',
      join(FIXTURES, fixture),
      '--data-dir',
      dataDir,
      '--api-port',
      '0',
      '--xds-port',
      '0',
      '--gateway-port',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const reap = () => proc.kill('SIGKILL')
  process.once('exit', reap)
  let err = ''
  let out = ''
  proc.stderr!.on('data', (d) => (err += d))
  proc.stdout!.on('data', (d) => (out += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    proc.once('exit', (code, signal) => {
      process.off('exit', reap)
      resolve({ code, signal, at: Date.now() })
    }),
  )
  return { proc, dataDir, startedAt: Date.now(), stderr: () => err, stdout: () => out, exited }
}

/** Running, and not a zombie. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** Every running process that belongs to the mesh of `dataDir` (its environment names it), whoever started it. */
function meshProcesses(dataDir: string): number[] {
  const out: number[] = []
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    try {
      if (readFileSync(`/proc/${e}/environ`, 'latin1').split('\0').includes(`LOOM_MESH=${dataDir}`)) {
        if (alive(Number(e))) out.push(Number(e))
      }
    } catch {
      // gone, or not ours
    }
  }
  return out
}

/** The pids `loom up` printed: `(pid N)`, `app pid N`, `sidecar pid N`. */
function printedPids(stderr: string): number[] {
  return [...stderr.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]))
}

interface UpJson {
  pid: number
  phase: string
  processes?: { name: string; role: string; pid: number | null }[]
  workloads: { name: string; sidecar?: boolean; adminPort: number }[]
}

function upJson(dataDir: string): UpJson | null {
  try {
    return JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as UpJson
  } catch {
    return null
  }
}

/** Waits until `loom up` is starting the application (its pid is in up.json) and returns every pid listed. */
async function untilAppStarted(up: Up): Promise<number[]> {
  let pids: number[] = []
  await eventually(
    async () => {
      const s = upJson(up.dataDir)
      const ps = s?.processes ?? []
      pids = ps.map((p) => p.pid).filter((p): p is number => p !== null)
      return ps.some((p) => p.role === 'app' && p.pid !== null)
    },
    60_000,
    `the application to be started:\n${up.stderr()}`,
  )
  assert.equal(upJson(up.dataDir)!.phase, 'starting')
  return pids
}

function assertNothingLeft(up: Up, pids: number[]): void {
  assert.ok(pids.length > 0, 'some pids to check')
  const left = pids.filter(alive)
  assert.deepEqual(left, [], `processes left running: ${left.join(', ')}\n${up.stderr()}`)
  assert.deepEqual(meshProcesses(up.dataDir), [], 'no process of the mesh is left')
  assert.equal(existsSync(join(up.dataDir, 'up.json')), false, 'up.json is removed')
}

describe('loom up: failures to start and stops', { timeout: 300_000 }, () => {
  test('a Workload whose command does not exist fails loom up at once, naming spawn ENOENT, and leaves nothing running', async (t) => {
    const up = startUp('up-missing-command')
    let failedAt = 0
    up.proc.stderr!.on('data', () => {
      if (failedAt === 0 && up.stderr().includes('failed:')) failedAt = Date.now()
    })
    const { code, at } = await up.exited
    const err = up.stderr()
    assert.equal(code, 1, err)
    assert.match(err, /failed: workload web could not be started: spawn loom-test-no-such-command ENOENT/)
    assert.doesNotMatch(err, /timed out/)
    // the control plane, the gateway and the sidecar had started (and are named with their pids as they are
    // stopped); the application never did
    const stopping = /stopping (control \(pid \d+\).*)/.exec(err)
    assert.ok(stopping !== null, err)
    assert.match(stopping[1]!, /ingressgateway \(pid \d+\)/)
    assert.match(stopping[1]!, /web\.sidecar \(pid \d+\)/)
    assertNothingLeft(up, printedPids(err))
    t.diagnostic(
      `failed after ${((failedAt - up.startedAt) / 1000).toFixed(1)} s, everything stopped ${((at - failedAt) / 1000).toFixed(1)} s later`,
    )
  })

  test('a Workload that exits before it listens fails loom up with its exit code and last log lines', async () => {
    const up = startUp('up-early-exit')
    const { code } = await up.exited
    const err = up.stderr()
    assert.equal(code, 1, err)
    assert.match(err, /workload web exited with code 3 during start-up/)
    assert.match(err, /web: cannot read config\.json/)
    assertNothingLeft(up, printedPids(err))
  })

  test('SIGTERM during start-up stops every process started so far', async () => {
    const up = startUp('up-slow-start')
    const pids = await untilAppStarted(up)
    assert.ok(pids.length >= 4, `control plane, gateway, sidecar, application: ${pids.join(', ')}`)
    // the application (a shell) has started a child of its own: it is stopped too
    await eventually(async () => meshProcesses(up.dataDir).length > pids.length, 20_000, "the application's child")
    up.proc.kill('SIGTERM')
    const { code } = await up.exited
    assert.equal(code, 0, up.stderr())
    assertNothingLeft(up, pids)
  })

  test('loom down works while loom up is still starting', async () => {
    const up = startUp('up-slow-start')
    const pids = await untilAppStarted(up)
    const down = await runLoom(['down', '--data-dir', up.dataDir], 60_000)
    assert.equal(down.code, 0, down.stderr)
    assert.match(down.stdout, /mesh stopped/)
    await up.exited
    assertNothingLeft(up, pids)
  })

  test('loom status lists gateways with their ports and sync state; a second loom up refuses; after SIGKILL of loom up, its Loom processes stop by themselves and loom down stops the application', async (t) => {
    const up = startUp('up-hello')
    await eventually(async () => up.stdout().includes('{"msg":"up"'), 90_000, `loom up:\n${up.stderr()}`)
    const state = upJson(up.dataDir)!
    const status = await runLoom(['status', '--data-dir', up.dataDir])
    assert.equal(status.code, 0, status.stderr)
    const gw = /^ingressgateway\s+running \((\d+)\)\s+(\S+)\s+80→(\d+), admin (\d+)$/m.exec(status.stdout)
    assert.ok(gw !== null, status.stdout)
    assert.match(status.stdout, /^GATEWAY\s+PROXY\s+CONFIG\s+PORTS$/m)
    await eventually(
      async () => /^ingressgateway\s.*\sSYNCED\s/m.test((await runLoom(['status', '--data-dir', up.dataDir])).stdout),
      15_000,
      'the gateway to be SYNCED',
    )
    const json = JSON.parse((await runLoom(['status', '--data-dir', up.dataDir, '-o', 'json'])).stdout) as {
      gatewayStatus: { gateway: string; proxy: string; sync: string; ports: string }[]
    }
    assert.equal(json.gatewayStatus.length, 1)
    assert.equal(json.gatewayStatus[0]!.gateway, 'ingressgateway')
    assert.equal(json.gatewayStatus[0]!.sync, 'SYNCED')
    const res = await fetch(`http://127.0.0.1:${gw[3]}/`)
    assert.equal(await res.text(), 'hello')
    // Prometheus' targets: the gateway's and the sidecar's admin endpoints
    const targetsFile = join(up.dataDir, 'prometheus', 'targets.json')
    const targets = () =>
      (JSON.parse(readFileSync(targetsFile, 'utf8')) as { targets: string[]; labels: Record<string, string> }[]).map(
        (g) => `${g.labels.kind} ${g.labels.workload} ${g.targets.join(',')}`,
      )
    const sidecar = state.workloads.find((w) => w.sidecar !== false)!
    assert.deepEqual(targets(), [
      `gateway ingressgateway 127.0.0.1:${gw[4]}`,
      `sidecar ${sidecar.name} 127.0.0.1:${sidecar.adminPort}`,
    ])

    // a second loom up on the same data dir refuses, and leaves the running mesh alone
    const second = await runLoom(['up', '-f', join(FIXTURES, 'up-hello'), '--data-dir', up.dataDir], 30_000)
    assert.equal(second.code, 1, second.stderr)
    assert.match(second.stderr, /a mesh is already running from .* \(loom up pid \d+\)/)
    assert.equal(upJson(up.dataDir)?.pid, state.pid)
    assert.equal(targets().length, 2, 'the refused loom up leaves the targets alone')

    // SIGKILL: loom up cannot stop anything
    const procs = state.processes!
    const pid = (role: string) => procs.find((p) => p.role === role)!.pid!
    up.proc.kill('SIGKILL')
    const { at } = await up.exited
    const loomPids = procs.filter((p) => p.role !== 'app').map((p) => p.pid!)
    assert.equal(loomPids.length, 3, 'control plane, gateway, sidecar')
    await eventually(async () => loomPids.every((p) => !alive(p)), 20_000, 'the Loom processes to stop')
    t.diagnostic(`the control plane, gateway and sidecar were gone ${Date.now() - at} ms after loom up was killed`)
    assert.ok(alive(pid('app')), 'the application does not watch loom up')
    const down = await runLoom(['down', '--data-dir', up.dataDir], 30_000)
    assert.equal(down.code, 0, down.stderr)
    assert.match(down.stdout, new RegExp(`stopped 1 process\\(es\\) it left \\(pids ${pid('app')}\\)`))
    assert.deepEqual(targets(), [], 'nothing left to scrape')
    assertNothingLeft(
      up,
      procs.map((p) => p.pid!),
    )
  })
})
