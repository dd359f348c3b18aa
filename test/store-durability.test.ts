/**
 * kill -9 durability of FileStore. This file is also the writer: run with LOOM_STORE_WRITER=<dir> it opens the store
 * and writes as fast as it can from several concurrent workers (puts, putAlls and deletes, each compare-and-set
 * against what the worker last wrote), printing `B <seq> <op>` before each write and `A <seq> <revision>` once it is
 * acknowledged. The test kills it with SIGKILL at random moments (including during start-up and recovery), then opens
 * the store itself and checks that it opens cleanly, that every acknowledged write is there with its content and
 * resourceVersion, and that a write in flight at the kill landed completely or not at all; the next round continues
 * writing on the same directory.
 *
 * A kill leaves the page cache alone, so this test cannot see a missing fsync, and it seldom tears a log append (only
 * a kill inside the write call can); test/store-crash.test.ts simulates power losses for both.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { Resource } from '../src/api/resource.js'
import { FileStore } from '../src/control/store/file-store.js'

const WRITER_ENV = 'LOOM_STORE_WRITER'
const WORKERS = 4
const KEYS_PER_WORKER = 8
const KIND = 'Durable'
const NAMESPACE = 'crash'
const ROUNDS = 10

interface Op {
  t: 'put' | 'putAll' | 'delete'
  keys: string[]
}

const keyName = (worker: number, j: number) => `w${worker}-k${j}`
const allKeys = Array.from({ length: WORKERS * KEYS_PER_WORKER }, (_, i) =>
  keyName(Math.floor(i / KEYS_PER_WORKER), i % KEYS_PER_WORKER),
)

/** The spec a write of `name` with sequence number `seq` stores: sizes vary so records straddle pages. */
function specFor(name: string, seq: number): { name: string; seq: number; pad: string } {
  return { name, seq, pad: String.fromCharCode(97 + (seq % 26)).repeat((seq * 7919) % 1500) }
}

function resource(name: string, seq: number, resourceVersion?: string): Resource {
  return {
    apiVersion: 'loom.dev/v1',
    kind: KIND,
    metadata: { name, namespace: NAMESPACE, ...(resourceVersion === undefined ? {} : { resourceVersion }) },
    spec: specFor(name, seq),
  }
}

async function runWriter(dir: string, firstSeq: number): Promise<void> {
  const print = (line: string) => writeSync(1, `${line}\n`)
  const store = await FileStore.open(dir, { compactBytes: 64 * 1024 })
  const versions = new Map<string, string>()
  for (const name of allKeys) {
    const r = await store.get(KIND, NAMESPACE, name)
    if (r !== null) versions.set(name, r.metadata.resourceVersion!)
  }
  print('ready')
  let seq = firstSeq
  const worker = async (w: number) => {
    for (;;) {
      const s = seq++
      const j = s % KEYS_PER_WORKER
      const own = Array.from({ length: KEYS_PER_WORKER }, (_, i) => keyName(w, (j + i) % KEYS_PER_WORKER))
      const present = own.find((k) => versions.has(k))
      const op: Op =
        s % 10 === 0
          ? { t: 'putAll', keys: own.slice(0, 3) }
          : s % 7 === 0 && present !== undefined
            ? { t: 'delete', keys: [present] }
            : { t: 'put', keys: [own[0]!] }
      print(`B ${s} ${JSON.stringify(op)}`)
      let revision: string
      if (op.t === 'put') {
        const name = op.keys[0]!
        const r = await store.put(resource(name, s), { expectedResourceVersion: versions.get(name) ?? '' })
        revision = r.metadata.resourceVersion!
        versions.set(name, revision)
      } else if (op.t === 'putAll') {
        const rs = await store.putAll(op.keys.map((name) => resource(name, s, versions.get(name) ?? '')))
        revision = rs[0]!.metadata.resourceVersion!
        for (const name of op.keys) versions.set(name, revision)
      } else {
        const name = op.keys[0]!
        await store.delete(KIND, NAMESPACE, name, { expectedResourceVersion: versions.get(name)! })
        versions.delete(name)
        revision = '-'
      }
      print(`A ${s} ${revision}`)
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)))
}

interface RoundOutput {
  begun: Map<number, Op>
  acked: Map<number, string>
  lines: string[]
  ready: boolean
}

/** Runs the writer until it is killed `delayMs` after it is ready (or after it is spawned). */
async function writerRound(dir: string, firstSeq: number, delayMs: number, fromSpawn: boolean): Promise<RoundOutput> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, [WRITER_ENV]: dir, LOOM_STORE_WRITER_SEQ: String(firstSeq) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  let ready = false
  let timer: NodeJS.Timeout | undefined
  const kill = () => {
    timer ??= setTimeout(() => child.kill('SIGKILL'), delayMs)
  }
  if (fromSpawn) kill()
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk
    if (!ready && out.startsWith('ready\n')) {
      ready = true
      kill()
    }
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk))
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) =>
    child.on('close', (c, s) => resolve([c, s])),
  )
  clearTimeout(timer)
  assert.equal(signal, 'SIGKILL', `the writer exited by itself (code ${code}): ${err}${out.slice(-500)}`)
  const lines = out.split('\n').slice(0, -1)
  const begun = new Map<number, Op>()
  const acked = new Map<number, string>()
  for (const line of lines) {
    const [tag, seq, rest] = line.split(' ', 3) as [string, string, string]
    if (tag === 'B') begun.set(Number(seq), JSON.parse(line.slice(tag.length + seq.length + 2)) as Op)
    else if (tag === 'A') acked.set(Number(seq), rest)
  }
  return { begun, acked, lines, ready }
}

if (process.env[WRITER_ENV] !== undefined) {
  await runWriter(process.env[WRITER_ENV], Number(process.env.LOOM_STORE_WRITER_SEQ ?? 0))
} else {
  test('kill -9 at random moments loses no acknowledged write and never corrupts the store', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'loom-durability-'))
    /** what the test knows is stored: name -> { seq, resourceVersion } (absent = not stored) */
    const expected = new Map<string, { seq: number; resourceVersion: string | null }>()
    let maxAcked = 0
    let begunTotal = 0
    let ackedTotal = 0
    let landedInFlight = 0
    let compactedRounds = 0
    let tornTails = 0
    const acknowledgedRevisions = new Set<string>()
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const fromSpawn = round % 4 === 3
        const delay = fromSpawn ? 30 + Math.random() * 120 : 50 + Math.random() * 250
        const firstSeq = round * 1_000_000 + 1
        const { begun, acked } = await writerRound(dir, firstSeq, delay, fromSpawn)
        begunTotal += begun.size
        ackedTotal += acked.size
        for (const seq of [...acked.keys()].sort((a, b) => a - b)) {
          const op = begun.get(seq)!
          const rev = acked.get(seq)!
          if (rev !== '-') {
            assert.ok(!acknowledgedRevisions.has(rev), `revision ${rev} acknowledged twice`)
            acknowledgedRevisions.add(rev)
            maxAcked = Math.max(maxAcked, Number(rev))
          }
          for (const name of op.keys) {
            if (op.t === 'delete') expected.delete(name)
            else expected.set(name, { seq, resourceVersion: rev })
          }
        }

        const store = await FileStore.open(dir)
        try {
          if (store.recovery.snapshotRevision > 0) compactedRounds++
          if (store.recovery.truncatedBytes > 0) tornTails++
          assert.ok(store.revision >= maxAcked, `revision ${store.revision} < acknowledged ${maxAcked}`)
          assert.ok(store.revision <= begunTotal, `revision ${store.revision} > ${begunTotal} writes ever begun`)
          const stored = new Map((await store.list(KIND, NAMESPACE)).items.map((r) => [r.metadata.name, r]))
          // a write in flight at the kill (begun, not acknowledged) landed completely or not at all
          for (const [seq, op] of begun) {
            if (acked.has(seq)) continue
            const landed = op.keys.map((name) =>
              op.t === 'delete'
                ? !stored.has(name)
                : (stored.get(name)?.spec as { seq?: number } | undefined)?.seq === seq,
            )
            assert.ok(
              landed.every((l) => l === landed[0]),
              `${op.t} ${seq} landed partly: ${landed}`,
            )
            if (!landed[0]) continue
            landedInFlight++
            for (const name of op.keys) {
              if (op.t === 'delete') expected.delete(name)
              else expected.set(name, { seq, resourceVersion: null })
            }
          }
          for (const name of allKeys) {
            const want = expected.get(name)
            const got = stored.get(name)
            if (want === undefined) {
              assert.equal(got, undefined, `${name} should not exist after round ${round}`)
              continue
            }
            assert.ok(got !== undefined, `${name} (seq ${want.seq}) is missing after round ${round}`)
            assert.deepEqual(got.spec, specFor(name, want.seq), `${name} content after round ${round}`)
            if (want.resourceVersion !== null) assert.equal(got.metadata.resourceVersion, want.resourceVersion)
          }
          assert.equal(stored.size, expected.size)
        } finally {
          await store.close()
        }
      }
      assert.ok(ackedTotal > 200, `only ${ackedTotal} acknowledged writes in ${ROUNDS} rounds`)
      console.log(
        `durability: ${ROUNDS} kills, ${ackedTotal} acknowledged writes checked, ${landedInFlight} unacknowledged ` +
          `in-flight writes landed whole, ${compactedRounds} recoveries from a snapshot, ${tornTails} torn tails cut`,
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
}
