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
 *   LOCK          the pid of the process that has the directory open (`<pid>\n`; not synced: after a crash it
 *                 may be gone, cut short or name this very pid, and any of these is taken over)
 *
 * Compaction, once the log outgrows both `compactBytes` and the last snapshot: write snapshot.tmp, fsync it, rename it
 * to snapshot.db, fsync the directory, then truncate the log to zero and fsync it (else the next append could reach
 * the disk before the truncation, in the middle of the old records). A crash in between leaves records at or below the
 * snapshot's revision in the log, which open skips.
 *
 * Open: remove snapshot.tmp, load snapshot.db, replay the log's transactions after its revision. A bad record at the
 * end of the log (a write torn by a crash, never acknowledged) is cut off and the cut fsync'ed; a bad record followed
 * by a valid one, a bad snapshot, or a revision out of sequence refuses to open with StoreCorruptionError (the file
 * and byte offset). If a write or an fsync fails, the store refuses further writes until it is reopened.
 *
 * Every file system call goes through `options.fs` (store-fs.ts; node:fs/promises by default), so the crash tests can
 * run the store on a simulated disk that loses whatever was not synced.
 */
import { dirname, join, resolve } from 'node:path'
import type { Resource } from '../../api/resource.js'
import { BaseStore, type StoreOptions, type Transaction, type TxnOp } from './base-store.js'
import { nodeFs, type StoreFile, type StoreFs } from './store-fs.js'
import { encodeRecord, readSingleRecord, StoreCorruptionError, scanRecords } from './wal.js'

export { MemoryStore } from './memory-store.js'
export { StoreCompactedError, StoreConflictError } from './store.js'
export { StoreCorruptionError } from './wal.js'
export type { StoreOptions }
export type { StoreFile, StoreFs }

export const WAL_FILE = 'wal.log'
export const SNAPSHOT_FILE = 'snapshot.db'
export const SNAPSHOT_TMP_FILE = 'snapshot.tmp'
export const LOCK_FILE = 'LOCK'
const SNAPSHOT_FORMAT = 1
const DEFAULT_COMPACT_BYTES = 16 * 1024 * 1024

export interface FileStoreOptions extends StoreOptions {
  /** compact the log into a snapshot once it is larger than this and than the last snapshot (default 16 MiB) */
  compactBytes?: number
  /** the file system (default node:fs/promises; the crash tests pass a simulated disk) */
  fs?: StoreFs
}

/** What open() found. */
export interface Recovery {
  /** the revision of the snapshot loaded (0: none) */
  snapshotRevision: number
  /** log transactions replayed after it */
  replayed: number
  /** log transactions skipped because the snapshot already has them (a crash between snapshot and log truncation) */
  skipped: number
  /** bytes of a torn record cut off the end of the log */
  truncatedBytes: number
}

export class FileStore extends BaseStore {
  recovery: Readonly<Recovery> = { snapshotRevision: 0, replayed: 0, skipped: 0, truncatedBytes: 0 }

  private constructor(
    /** the data directory (absolute) */
    readonly dir: string,
    private readonly fs: StoreFs,
    private readonly wal: StoreFile,
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
    const fs = options.fs ?? nodeFs
    await makeDir(fs, dir)
    const unlock = await lock(fs, dir)
    let wal: StoreFile | undefined
    try {
      await fs.rm(join(dir, SNAPSHOT_TMP_FILE), { force: true })
      const snapshotPath = join(dir, SNAPSHOT_FILE)
      const snapshot = await readSnapshot(fs, snapshotPath)
      const walPath = join(dir, WAL_FILE)
      wal = await openLog(fs, walPath)
      const buf = await wal.readFile()
      const { records, end } = scanRecords(buf, walPath)
      const store = new FileStore(dir, fs, wal, end, snapshot.bytes, compactBytes, unlock, options)
      store.load(snapshot.revision, snapshot.resources)
      let replayed = 0
      let skipped = 0
      for (const { offset, body } of records) {
        for (const txn of parseLogRecord(body, walPath, offset)) {
          if (txn.revision <= snapshot.revision) {
            skipped++
            continue
          }
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
      store.recovery = { snapshotRevision: snapshot.revision, replayed, skipped, truncatedBytes: buf.length - end }
      return store
    } catch (e) {
      // the error that failed the open is the one to report, not one from cleaning up after it
      await wal?.close().catch(() => {})
      await unlock().catch(() => {})
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
      const fh = await this.fs.open(tmp, 'w')
      try {
        await writeAll(fh, record, 0)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await this.fs.rename(tmp, join(this.dir, SNAPSHOT_FILE))
      await syncDir(this.fs, this.dir)
      await this.wal.truncate(0)
      await this.wal.sync()
      this.walSize = 0
      this.snapshotSize = record.length
    } catch (e) {
      throw this.fail('compaction failed', e)
    }
  }
}

async function writeAll(fh: StoreFile, buf: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done)
    done += bytesWritten
  }
}

async function syncDir(fs: StoreFs, dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** mkdir -p, then fsync the parent of each directory it created so they survive a crash. */
async function makeDir(fs: StoreFs, dir: string): Promise<void> {
  const first = await fs.mkdir(dir, { recursive: true })
  if (first === undefined) return
  for (let d = dir; d !== dirname(d); d = dirname(d)) {
    await syncDir(fs, dirname(d))
    if (d === resolve(first)) break
  }
}

async function openLog(fs: StoreFs, path: string): Promise<StoreFile> {
  try {
    return await fs.open(path, 'r+')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
  const fh = await fs.open(path, 'wx+')
  await syncDir(fs, dirname(path))
  return fh
}

/** The directories this process holds the LOCK of, per file system (a simulated disk is a new one after each crash). */
const held = new WeakMap<StoreFs, Set<string>>()

/**
 * Takes the directory's LOCK file, replacing it when the process that wrote it is gone. A LOCK with this process's own
 * pid that this process does not hold is stale as well: an earlier process with the same pid wrote it before a crash
 * (pid 1 of a container restarted on the same volume; any process after a reboot). So is a LOCK whose content is not
 * a whole `<pid>\n`: its write was cut short by a crash.
 */
async function lock(fs: StoreFs, dir: string): Promise<() => Promise<void>> {
  const path = join(dir, LOCK_FILE)
  let mine = held.get(fs)
  if (mine === undefined) held.set(fs, (mine = new Set()))
  if (mine.has(dir)) throw alreadyOpen(dir, path, 'this process')
  mine.add(dir)
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await fs.writeFile(path, `${process.pid}\n`, { flag: 'wx' })
        return () => {
          mine.delete(dir)
          return fs.rm(path, { force: true })
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
      }
      const content = (await fs.readFile(path).catch(() => Buffer.alloc(0))).toString('latin1')
      const holder = /^[1-9][0-9]*\n$/.test(content) ? Number.parseInt(content, 10) : 0
      if (attempt > 0 || (holder > 0 && holder !== process.pid && isAlive(holder))) {
        throw alreadyOpen(dir, path, `process ${holder || '?'}`)
      }
      await fs.rm(path, { force: true })
    }
  } catch (e) {
    mine.delete(dir)
    throw e
  }
}

function alreadyOpen(dir: string, path: string, who: string): Error {
  return new Error(`${dir} is already open in ${who} (${path}); a data directory can be opened by one store at a time`)
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

async function readSnapshot(fs: StoreFs, path: string): Promise<Snapshot> {
  let buf: Buffer
  try {
    buf = await fs.readFile(path)
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
