/**
 * The embedded store: every write is in the data directory's write-ahead log, fdatasync'ed, before it is
 * acknowledged, applied in memory or seen by a watcher; reads are from memory. A kill -9 (or power loss) at any moment
 * loses no acknowledged write and leaves a directory that opens cleanly.
 *
 * The data directory:
 *   wal.log       records (wal.ts: [length u32 LE][crc32 u32 LE][JSON]), one per group commit:
 *                 {"txns":[{"revision":7,"ops":[{"op":"put","resource":{...}},{"op":"delete","key":"kind/ns/name"}]}]}
 *                 A transaction (put, putAll, delete) is never split across records; revisions increase by one.
 *   snapshot.db   one record: {"format":1,"revision":R,"resources":[...]}, the whole state at revision R
 *   snapshot.tmp  a snapshot being written; removed on open
 *   LOCK          the pid of the process that has the directory open
 *
 * Compaction, once the log outgrows both `compactBytes` and the last snapshot: write snapshot.tmp, fsync it, rename it
 * to snapshot.db, fsync the directory, then truncate the log to zero and fsync it. A crash in between leaves records
 * at or below the snapshot's revision in the log, which open skips.
 *
 * Open: remove snapshot.tmp, load snapshot.db, replay the log's transactions after its revision. A bad record at the
 * end of the log (a write torn by a crash, never acknowledged) is cut off and the cut fsync'ed; a bad record followed
 * by a valid one, a bad snapshot, or a revision out of sequence refuses to open with StoreCorruptionError (the file
 * and byte offset). If a write or an fsync fails, the store refuses further writes until it is reopened.
 */
import { type FileHandle, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import type { Resource } from '../../api/resource.js'
import { BaseStore, type StoreOptions, type Transaction, type TxnOp } from './base-store.js'
import { encodeRecord, readSingleRecord, StoreCorruptionError, scanRecords } from './wal.js'

export { MemoryStore } from './memory-store.js'
export { StoreCompactedError, StoreConflictError } from './store.js'
export { StoreCorruptionError } from './wal.js'
export type { StoreOptions }

export const WAL_FILE = 'wal.log'
export const SNAPSHOT_FILE = 'snapshot.db'
export const SNAPSHOT_TMP_FILE = 'snapshot.tmp'
export const LOCK_FILE = 'LOCK'
const SNAPSHOT_FORMAT = 1
const DEFAULT_COMPACT_BYTES = 16 * 1024 * 1024

export interface FileStoreOptions extends StoreOptions {
  /** compact the log into a snapshot once it is larger than this and than the last snapshot (default 16 MiB) */
  compactBytes?: number
}

/** What open() found. */
export interface Recovery {
  /** the revision of the snapshot loaded (0: none) */
  snapshotRevision: number
  /** log transactions replayed after it */
  replayed: number
  /** bytes of a torn record cut off the end of the log */
  truncatedBytes: number
}

export class FileStore extends BaseStore {
  recovery: Readonly<Recovery> = { snapshotRevision: 0, replayed: 0, truncatedBytes: 0 }

  private constructor(
    /** the data directory (absolute) */
    readonly dir: string,
    private readonly wal: FileHandle,
    private walSize: number,
    private snapshotSize: number,
    private readonly compactBytes: number,
    private readonly unlock: () => Promise<void>,
    options: StoreOptions,
  ) {
    super(options)
  }

  /** Opens (creating it if needed) and recovers the store in `dir`. One process at a time: the directory is locked. */
  static async open(dir: string, options: FileStoreOptions = {}): Promise<FileStore> {
    dir = resolve(dir)
    const compactBytes = options.compactBytes ?? DEFAULT_COMPACT_BYTES
    if (!Number.isSafeInteger(compactBytes) || compactBytes < 1) {
      throw new RangeError(`compactBytes must be a positive integer: ${compactBytes}`)
    }
    await makeDir(dir)
    const unlock = await lock(dir)
    let wal: FileHandle | undefined
    try {
      await rm(join(dir, SNAPSHOT_TMP_FILE), { force: true })
      const snapshotPath = join(dir, SNAPSHOT_FILE)
      const snapshot = await readSnapshot(snapshotPath)
      const walPath = join(dir, WAL_FILE)
      wal = await openLog(walPath)
      const buf = await wal.readFile()
      const { records, end } = scanRecords(buf, walPath)
      const store = new FileStore(dir, wal, end, snapshot.bytes, compactBytes, unlock, options)
      store.load(snapshot.revision, snapshot.resources)
      let replayed = 0
      for (const { offset, body } of records) {
        for (const txn of parseLogRecord(body, walPath, offset)) {
          if (txn.revision <= snapshot.revision) continue
          try {
            store.apply(txn)
          } catch (e) {
            throw new StoreCorruptionError(walPath, offset, (e as Error).message)
          }
          replayed++
        }
      }
      if (end < buf.length) {
        await wal.truncate(end)
        await wal.sync()
      }
      store.recovery = { snapshotRevision: snapshot.revision, replayed, truncatedBytes: buf.length - end }
      return store
    } catch (e) {
      await wal?.close()
      await unlock()
      throw e
    }
  }

  /** Writes a snapshot and empties the log now (it also happens on its own as the log grows). */
  compact(): Promise<void> {
    return this.exclusive(() => this.snapshot())
  }

  protected override async persist(txns: Transaction[]): Promise<void> {
    const record = encodeRecord(JSON.stringify({ txns }))
    await writeAll(this.wal, record, this.walSize)
    await this.wal.datasync()
    this.walSize += record.length
  }

  protected override async afterCommit(): Promise<void> {
    if (this.walSize >= this.compactBytes && this.walSize >= this.snapshotSize) await this.snapshot()
  }

  protected override async release(): Promise<void> {
    await this.wal.close()
    await this.unlock()
  }

  private async snapshot(): Promise<void> {
    try {
      const body = JSON.stringify({
        format: SNAPSHOT_FORMAT,
        revision: this.revision,
        resources: [...this.resources()],
      })
      const record = encodeRecord(body)
      const tmp = join(this.dir, SNAPSHOT_TMP_FILE)
      const fh = await open(tmp, 'w')
      try {
        await writeAll(fh, record, 0)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await rename(tmp, join(this.dir, SNAPSHOT_FILE))
      await syncDir(this.dir)
      await this.wal.truncate(0)
      await this.wal.sync()
      this.walSize = 0
      this.snapshotSize = record.length
    } catch (e) {
      throw this.fail('compaction failed', e)
    }
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done)
    done += bytesWritten
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** mkdir -p, then fsync the parent of each directory it created so they survive a crash. */
async function makeDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true })
  if (first === undefined) return
  for (let d = dir; d !== dirname(d); d = dirname(d)) {
    await syncDir(dirname(d))
    if (d === resolve(first)) break
  }
}

async function openLog(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r+')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
  const fh = await open(path, 'wx+')
  await syncDir(dirname(path))
  return fh
}

/** Takes the directory's LOCK file, replacing it when the process that wrote it is gone. */
async function lock(dir: string): Promise<() => Promise<void>> {
  const path = join(dir, LOCK_FILE)
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx' })
      return () => rm(path, { force: true })
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10)
    if (attempt > 0 || (holder > 0 && isAlive(holder))) {
      const who = holder === process.pid ? 'this process' : `process ${Number.isNaN(holder) ? '?' : holder}`
      throw new Error(
        `${dir} is already open in ${who} (${path}); a data directory can be opened by one store at a time`,
      )
    }
    await rm(path, { force: true })
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

interface Snapshot {
  revision: number
  resources: Resource[]
  bytes: number
}

async function readSnapshot(path: string): Promise<Snapshot> {
  let buf: Buffer
  try {
    buf = await readFile(path)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { revision: 0, resources: [], bytes: 0 }
    throw e
  }
  const body = readSingleRecord(buf, path)
  const bad = (problem: string) => new StoreCorruptionError(path, 0, problem)
  const s = parseJson(body, () => bad('the snapshot is not JSON')) as Record<string, unknown>
  if (typeof s !== 'object' || s === null || s.format !== SNAPSHOT_FORMAT) {
    throw bad(`not a snapshot of format ${SNAPSHOT_FORMAT}`)
  }
  if (!isRevision(s.revision)) throw bad('the snapshot has no valid revision')
  if (!Array.isArray(s.resources) || !s.resources.every(isResource)) throw bad('the snapshot has an invalid resource')
  return { revision: s.revision, resources: s.resources, bytes: buf.length }
}

function parseLogRecord(body: Buffer, file: string, offset: number): Transaction[] {
  const bad = (problem: string) => new StoreCorruptionError(file, offset, problem)
  const r = parseJson(body, () => bad('the record is not JSON')) as { txns?: unknown }
  if (typeof r !== 'object' || r === null || !Array.isArray(r.txns)) throw bad('the record has no transactions')
  for (const t of r.txns as Partial<Transaction>[]) {
    if (typeof t !== 'object' || t === null || !isRevision(t.revision) || !Array.isArray(t.ops)) {
      throw bad('invalid transaction')
    }
    if (!t.ops.every(isOp)) throw bad(`invalid operation in transaction ${t.revision}`)
  }
  return r.txns as Transaction[]
}

function parseJson(body: Buffer, error: () => Error): unknown {
  try {
    return JSON.parse(body.toString('utf8'))
  } catch {
    throw error()
  }
}

function isRevision(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0
}

function isOp(v: unknown): v is TxnOp {
  const op = v as Partial<Record<string, unknown>> | null
  if (typeof op !== 'object' || op === null) return false
  if (op.op === 'put') return isResource(op.resource)
  return op.op === 'delete' && typeof op.key === 'string'
}

function isResource(v: unknown): v is Resource {
  const r = v as Partial<Resource> | null
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.kind === 'string' &&
    typeof r.metadata === 'object' &&
    r.metadata !== null &&
    typeof r.metadata.name === 'string' &&
    typeof r.metadata.namespace === 'string'
  )
}
