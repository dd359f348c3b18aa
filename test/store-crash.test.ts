/**
 * FileStore on a simulated disk that loses whatever was not synced (test/helpers/crash-fs.ts). A kill -9
 * (store-durability.test.ts) keeps the page cache, so it cannot see a missing fsync; a power loss can, and these
 * tests simulate one.
 *
 * 1. The simulated disk itself: through a crash it keeps synced data only, and a name only once its directory is synced.
 * 2. Strict crashes: after each acknowledged write and each compaction the machine crashes keeping only what was
 *    synced; the store must open with every acknowledged write. A missing fdatasync of the log, fsync of the snapshot,
 *    or fsync of the directory after creating the log or renaming the snapshot fails it.
 * 3. Seeded schedules: a PRNG seeded per schedule chooses the writes of several concurrent workers (put, putAll,
 *    delete, compare-and-set against what each last wrote; explicit and automatic compactions), the call at which the
 *    machine crashes (during recovery, a log append, a snapshot, anywhere), and what the crash keeps of the unsynced
 *    data (nothing, all, or a prefix, tearing the write it stops in; or any subset of its sectors, out of order: this
 *    is what needs the fsync after a compaction truncates the log). After each crash the store must open; every
 *    acknowledged write (its promise resolved) is there with its content and resourceVersion; a write in flight at the
 *    crash landed whole or not at all. Across the seeds, each recovery path must have been taken at least once (a torn
 *    log tail cut, a snapshot loaded, log records skipped because the snapshot had them, a half-written snapshot.tmp
 *    removed, a snapshot rename lost, a stale LOCK naming this pid, a crash during recovery...), so the test cannot pass
 *    by never reaching them.
 *
 * Replay one seed, printing each boot, recovery and crash: LOOM_STORE_CRASH_SEED=<seed> node --test
 * dist/test/store-crash.test.js. Run more seeds than the suite's: LOOM_STORE_CRASH_SEEDS=<count>.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Resource } from '../src/api/resource.js'
import { FileStore, SNAPSHOT_TMP_FILE } from '../src/control/store/file-store.js'
import { type CrashReport, CrashDisk, SimulatedCrash } from './helpers/crash-fs.js'

const DIR = '/sim/data'
const KIND = 'Durable'
const NAMESPACE = 'crash'
const SEEDS = Number(process.env.LOOM_STORE_CRASH_SEEDS ?? 40)
const REPLAY = process.env.LOOM_STORE_CRASH_SEED
const BOOTS_PER_SEED = 8
const WORKERS = 3
const KEYS_PER_WORKER = 5

/** mulberry32: a small seeded PRNG, numbers in [0, 1) */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface Spec {
  name: string
  seq: number
  pad: string
}

function specFor(name: string, seq: number, padBytes: number): Spec {
  return { name, seq, pad: String.fromCharCode(97 + (seq % 26)).repeat(padBytes) }
}

function resource(spec: Spec, resourceVersion?: string): Resource {
  return {
    apiVersion: 'loom.dev/v1',
    kind: KIND,
    metadata: { name: spec.name, namespace: NAMESPACE, ...(resourceVersion === undefined ? {} : { resourceVersion }) },
    spec,
  }
}

async function stored(store: FileStore): Promise<Map<string, Resource>> {
  return new Map((await store.list(KIND, NAMESPACE)).items.map((r) => [r.metadata.name, r]))
}

test('the simulated disk keeps through a crash only what was synced: file data, and names once the directory is', async () => {
  const disk = new CrashDisk(prng(1), ['/sim'], false)
  let fs = disk.boot()
  const syncDir = async (path: string) => {
    const d = await fs.open(path, 'r')
    await d.sync()
    await d.close()
  }
  const f = await fs.open('/sim/a', 'wx+')
  await f.write(Buffer.from('synced'), 0, 6, 0)
  await f.datasync()
  await fs.writeFile('/sim/b', 'never synced', { flag: 'wx' })
  disk.crash(true)
  assert.deepEqual(disk.list('/sim'), [], 'names whose directory was not fsynced are lost, synced data or not')
  await assert.rejects(f.write(Buffer.from('x'), 0, 1, 0), SimulatedCrash, 'a crashed boot takes no more calls')

  fs = disk.boot()
  const g = await fs.open('/sim/a', 'wx+')
  await syncDir('/sim')
  await g.write(Buffer.from('synced'), 0, 6, 0)
  await g.sync()
  await g.write(Buffer.from(' and not'), 0, 8, 6)
  await fs.writeFile('/sim/tmp', 'renamed', { flag: 'wx' })
  await fs.rename('/sim/tmp', '/sim/a')
  disk.crash(true)
  assert.deepEqual(disk.list('/sim'), ['a'])
  assert.equal(disk.peek('/sim/a')?.toString(), 'synced', 'the unsynced write and the unsynced rename are lost')

  fs = disk.boot()
  await fs.writeFile('/sim/tmp', 'renamed', { flag: 'wx' })
  const t = await fs.open('/sim/tmp', 'r+')
  await t.sync()
  await fs.rename('/sim/tmp', '/sim/a')
  await syncDir('/sim')
  disk.crash(true)
  assert.deepEqual(disk.list('/sim'), ['a'])
  assert.equal(disk.peek('/sim/a')?.toString(), 'renamed', 'a synced file renamed, then the directory synced')
})

test('a crash that keeps only synced data loses no acknowledged write (after each write and compaction)', async () => {
  const disk = new CrashDisk(prng(1), ['/sim'])
  let store = await FileStore.open(DIR, { fs: disk.boot(), compactBytes: 1 << 30 })
  const expected = new Map<string, Spec>()
  const put = (name: string, seq: number) => async () => {
    const spec = specFor(name, seq, seq * 37)
    await store.put(resource(spec))
    expected.set(name, spec)
  }
  const del = (name: string) => async () => {
    await store.delete(KIND, NAMESPACE, name)
    expected.delete(name)
  }
  const steps: [string, () => Promise<unknown>][] = [
    ['open', async () => {}],
    ['the first put (the log just created)', put('a', 1)],
    ['a second put', put('b', 2)],
    [
      'a putAll',
      async () => {
        const specs = [specFor('c', 3, 10), specFor('d', 3, 20)]
        await store.putAll(specs.map((s) => resource(s)))
        for (const s of specs) expected.set(s.name, s)
      },
    ],
    ['a delete', del('a')],
    ['the first compaction', () => store.compact()],
    ['a put after it', put('e', 4)],
    ['a put replacing one in the snapshot', put('b', 5)],
    ['a second compaction (replacing the snapshot)', () => store.compact()],
    ['a delete of a key in the snapshot', del('c')],
    ['a put after the second compaction', put('f', 6)],
  ]
  for (const [what, step] of steps) {
    await step()
    const revision = store.revision
    disk.crash(true)
    store = await FileStore.open(DIR, { fs: disk.boot(), compactBytes: 1 << 30 }).catch((e: Error) => {
      throw new Error(`after ${what}, a crash keeping only synced data leaves a store that does not open: ${e.message}`)
    })
    assert.equal(store.revision, revision, `after ${what}, a crash keeping only synced data lost revisions`)
    const got = new Map([...(await stored(store))].map(([name, r]) => [name, r.spec]))
    assert.deepEqual(got, expected, `after ${what}, a crash keeping only synced data lost acknowledged writes`)
  }
  await store.close()
})

interface Op {
  seq: number
  t: 'put' | 'putAll' | 'delete' | 'compact'
  specs: Spec[]
}

/** What a schedule went through; summed over the seeds, every counter but `acked...` must be above zero. */
interface Paths {
  /** a crash interrupted FileStore.open (recovery) */
  crashDuringOpen: number
  /** a crash tore a log append (kept a part of the write it stopped in) */
  tornLogWrite: number
  /** a crash kept a later unsynced write of a file without an earlier one */
  outOfOrderWriteBack: number
  /** open cut a torn record off the end of the log */
  tornTailCut: number
  /** open loaded a snapshot and replayed log records after it */
  snapshotAndLog: number
  /** open skipped log records the snapshot already had (a crash between the snapshot rename and the log truncation) */
  skippedLogRecords: number
  /** a crash left a snapshot.tmp (during a snapshot), which open removed */
  snapshotTmpLeft: number
  /** a crash lost a snapshot rename (between the rename and the directory fsync) */
  snapshotRenameLost: number
  /** a crash left a LOCK naming this pid (taken over by open) */
  staleLockOwnPid: number
  /** a write in flight at a crash (not acknowledged) was there after it, whole */
  unacknowledgedLanded: number
  /** a write in flight at a crash was not there after it */
  unacknowledgedLost: number
  /** the store was closed cleanly (then the machine lost power) */
  cleanClose: number
}

const newPaths = (): Paths => ({
  crashDuringOpen: 0,
  tornLogWrite: 0,
  outOfOrderWriteBack: 0,
  tornTailCut: 0,
  snapshotAndLog: 0,
  skippedLogRecords: 0,
  snapshotTmpLeft: 0,
  snapshotRenameLost: 0,
  staleLockOwnPid: 0,
  unacknowledgedLanded: 0,
  unacknowledgedLost: 0,
  cleanClose: 0,
})

async function runSchedule(
  seed: number,
  log: (line: string) => void,
): Promise<{ paths: Paths; acked: number; calls: Map<string, number> }> {
  const random = prng(seed)
  const int = (n: number) => Math.floor(random() * n)
  const disk = new CrashDisk(random, ['/sim'])
  const paths = newPaths()
  const names = Array.from({ length: WORKERS * KEYS_PER_WORKER }, (_, i) => `w${Math.floor(i / KEYS_PER_WORKER)}-k${i}`)
  /** name -> what an acknowledged (or a landed in-flight) write left there; absent: not stored */
  const expected = new Map<string, { spec: Spec; resourceVersion: string | null }>()
  /** writes in flight at a crash that no open has checked yet */
  let inFlight: Op[] = []
  let maxAcked = 0
  let acked = 0
  let seq = 0

  const noteCrash = (report: CrashReport) => {
    log(`  crash at ${report.at}: ${JSON.stringify({ files: report.files, dirs: report.dirs })}`)
    if (report.files.some((f) => f.path === `${DIR}/wal.log` && f.torn)) paths.tornLogWrite++
    if (report.files.some((f) => f.outOfOrder)) paths.outOfOrderWriteBack++
    if (report.dirs.some((d) => d.dropped.includes(`rename ${SNAPSHOT_TMP_FILE} snapshot.db`)))
      paths.snapshotRenameLost++
    if (disk.list(DIR)?.includes(SNAPSHOT_TMP_FILE)) paths.snapshotTmpLeft++
    if (disk.peek(`${DIR}/LOCK`)?.toString() === `${process.pid}\n`) paths.staleLockOwnPid++
  }

  for (let boot = 0; boot < BOOTS_PER_SEED; boot++) {
    const crashAt = random() < 0.85 ? 1 + int(150) : undefined
    const compactBytes = 1024 + int(4096)
    log(`boot ${boot}: crash at call ${crashAt ?? '-'}, compactBytes ${compactBytes}`)
    const fs = disk.boot(crashAt === undefined ? {} : { crashAt })
    let store: FileStore
    try {
      store = await FileStore.open(DIR, { fs, compactBytes })
    } catch (e) {
      if (!(e instanceof SimulatedCrash) || !disk.isDown)
        throw new Error(`open failed: ${(e as Error).message}`, { cause: e })
      paths.crashDuringOpen++
      noteCrash(disk.crashes.at(-1)!)
      continue
    }
    const { recovery } = store
    log(`  opened at revision ${store.revision}: ${JSON.stringify(recovery)}`)
    if (recovery.truncatedBytes > 0) paths.tornTailCut++
    if (recovery.snapshotRevision > 0 && recovery.replayed > 0) paths.snapshotAndLog++
    if (recovery.skipped > 0) paths.skippedLogRecords++

    // what the store has: every acknowledged write, and each write in flight at the crash whole or not at all
    assert.ok(store.revision >= maxAcked, `revision ${store.revision} < acknowledged revision ${maxAcked}`)
    const found = await stored(store)
    for (const op of inFlight) {
      const landed = op.specs.map((s) =>
        op.t === 'delete' ? !found.has(s.name) : (found.get(s.name)?.spec as Spec | undefined)?.seq === op.seq,
      )
      assert.ok(
        landed.every((l) => l === landed[0]),
        `${op.t} ${op.seq} (not acknowledged) landed in part: ${landed}`,
      )
      if (landed[0]) paths.unacknowledgedLanded++
      else paths.unacknowledgedLost++
      if (!landed[0]) continue
      for (const s of op.specs) {
        if (op.t === 'delete') expected.delete(s.name)
        else expected.set(s.name, { spec: s, resourceVersion: null })
      }
    }
    inFlight = []
    for (const name of names) {
      const want = expected.get(name)
      const got = found.get(name)
      if (want === undefined) {
        assert.equal(got, undefined, `${name} is there, but its last acknowledged write deleted it (or none made it)`)
        continue
      }
      assert.ok(got !== undefined, `${name} (acknowledged write ${want.spec.seq}) is missing`)
      assert.deepEqual(got.spec, want.spec, `${name}: content of acknowledged write ${want.spec.seq}`)
      if (want.resourceVersion !== null) assert.equal(got.metadata.resourceVersion, want.resourceVersion, name)
    }
    assert.equal(found.size, expected.size)

    // the workload, until the crash (or the end of its writes)
    const versions = new Map([...found].map(([name, r]) => [name, r.metadata.resourceVersion!]))
    const worker = async (w: number) => {
      const own = names.slice(w * KEYS_PER_WORKER, (w + 1) * KEYS_PER_WORKER)
      for (let n = 4 + int(20); n > 0; n--) {
        const r = random()
        const present = own.filter((name) => versions.has(name))
        const s = ++seq
        const pad = () => (random() < 0.1 ? 1500 + int(2500) : int(400))
        const op: Op =
          r < 0.08
            ? { seq: s, t: 'compact', specs: [] }
            : r < 0.25
              ? { seq: s, t: 'putAll', specs: own.filter(() => random() < 0.5).map((name) => specFor(name, s, pad())) }
              : r < 0.4 && present.length > 0
                ? { seq: s, t: 'delete', specs: [specFor(present[int(present.length)]!, s, 0)] }
                : { seq: s, t: 'put', specs: [specFor(own[int(own.length)]!, s, pad())] }
        if (op.t === 'putAll' && op.specs.length === 0) continue
        try {
          if (op.t === 'compact') {
            await store.compact()
            continue
          }
          if (op.t === 'put') {
            const spec = op.specs[0]!
            const rv = (await store.put(resource(spec), { expectedResourceVersion: versions.get(spec.name) ?? '' }))
              .metadata.resourceVersion!
            versions.set(spec.name, rv)
            expected.set(spec.name, { spec, resourceVersion: rv })
            maxAcked = Math.max(maxAcked, Number(rv))
          } else if (op.t === 'putAll') {
            const rs = await store.putAll(op.specs.map((spec) => resource(spec, versions.get(spec.name) ?? '')))
            const rv = rs[0]!.metadata.resourceVersion!
            for (const spec of op.specs) {
              versions.set(spec.name, rv)
              expected.set(spec.name, { spec, resourceVersion: rv })
            }
            maxAcked = Math.max(maxAcked, Number(rv))
          } else {
            const name = op.specs[0]!.name
            await store.delete(KIND, NAMESPACE, name, { expectedResourceVersion: versions.get(name)! })
            versions.delete(name)
            expected.delete(name)
          }
          acked++
        } catch (e) {
          if (!disk.isDown) throw new Error(`${op.t} ${s} failed with no crash: ${(e as Error).message}`, { cause: e })
          if (op.t !== 'compact') inFlight.push(op)
          return
        }
      }
    }
    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)))
    if (!disk.isDown && random() < 0.2) {
      try {
        await store.close()
        paths.cleanClose++
        log('  closed')
      } catch (e) {
        if (!(e instanceof SimulatedCrash)) throw e
      }
    }
    if (!disk.isDown) disk.crash()
    noteCrash(disk.crashes.at(-1)!)
  }
  return { paths, acked, calls: disk.calls }
}

test('seeded crash schedules: every acknowledged write survives, nothing half-applied, every recovery path taken', {
  timeout: 60_000,
}, async () => {
  const seeds = REPLAY !== undefined ? [Number(REPLAY)] : Array.from({ length: SEEDS }, (_, i) => i + 1)
  const total = newPaths()
  let acked = 0
  const calls = new Map<string, number>()
  for (const seed of seeds) {
    const lines: string[] = []
    const log = REPLAY !== undefined ? (line: string) => console.log(line) : (line: string) => lines.push(line)
    try {
      const result = await runSchedule(seed, log)
      acked += result.acked
      for (const [call, n] of result.calls) calls.set(call, (calls.get(call) ?? 0) + n)
      for (const k of Object.keys(total) as (keyof Paths)[]) total[k] += result.paths[k]
      if (REPLAY !== undefined)
        console.log(`seed ${seed}: ${result.acked} acknowledged writes, ${JSON.stringify(result.paths)}`)
    } catch (e) {
      const err = e as Error
      err.message =
        `seed ${seed}: ${err.message}\n(replay it: LOOM_STORE_CRASH_SEED=${seed} node --test ` +
        `dist/test/store-crash.test.js; its last boots:\n${lines.slice(-12).join('\n')})`
      throw err
    }
  }
  console.log(
    `store crash schedules: seeds ${seeds[0]}-${seeds.at(-1)} (replay one with LOOM_STORE_CRASH_SEED=<seed>), ` +
      `${acked} acknowledged writes checked; paths ${JSON.stringify(total)}; calls ${JSON.stringify(Object.fromEntries(calls))}`,
  )
  if (REPLAY !== undefined) return
  for (const [path, n] of Object.entries(total)) assert.ok(n > 0, `no schedule took this path: ${path}`)
  assert.ok(acked > 1000, `only ${acked} acknowledged writes`)
})
