/**
 * A simulated disk for crash tests of FileStore: an in-memory file system (a StoreFs) that keeps what was written
 * (the page cache) apart from what was synced (the disk), and on a simulated power loss keeps only the latter plus an
 * arbitrary prefix of the rest.
 *
 * - A file's writes and truncations are durable once the file is fsync'ed or fdatasync'ed; until then they are
 *   pending. A crash mostly keeps a prefix of a file's pending operations (none, all, or some), in order, and may cut
 *   the first one it drops part way (a torn write keeps a prefix of its bytes); now and then it keeps an arbitrary
 *   subset of their 512-byte sectors instead (write-back in any order: nothing orders a file's unsynced writes and
 *   truncations, nor the sectors of one write).
 * - A directory's entries (a file or directory created in it, a rename, a removal) are durable once the directory
 *   itself is fsync'ed (open(dir, 'r') then sync()); a file's own fsync does not make its name durable. A crash keeps a
 *   prefix of each directory's pending entry changes. A file whose name is lost is lost, whatever was synced in it.
 * - `boot({ crashAt })` hands out a StoreFs for one run of the machine; its `crashAt`th call crashes it: a write lands
 *   in the page cache first (so the crash can tear it), any other call crashes before it has an effect. The call, and
 *   every later call through that boot's StoreFs or its open files, rejects with SimulatedCrash. `crash()` crashes an
 *   idle machine. `strict` crashes keep nothing that was not synced.
 * - Everything is synchronous under the promises, and every choice comes from the `random` given, so a run is
 *   replayable from the seed of that generator.
 */
import { posix } from 'node:path'
import type { OpenFlags, StoreFile, StoreFs } from '../../src/control/store/store-fs.js'

export class SimulatedCrash extends Error {
  override name = 'SimulatedCrash'
}

type FileOp = { t: 'write'; position: number; bytes: Buffer } | { t: 'truncate'; length: number }
type DirOp =
  | { t: 'link'; name: string; node: Node }
  | { t: 'unlink'; name: string }
  | { t: 'rename'; from: string; to: string }

class FileNode {
  readonly kind = 'file'
  data: Buffer<ArrayBufferLike> = Buffer.alloc(0)
  durable: Buffer<ArrayBufferLike> = Buffer.alloc(0)
  pending: FileOp[] = []
}

class DirNode {
  readonly kind = 'dir'
  entries = new Map<string, Node>()
  durable = new Map<string, Node>()
  pending: DirOp[] = []
}

type Node = FileNode | DirNode

/** What a crash did. */
export interface CrashReport {
  /** the call it interrupted, as `<call> <path>`, or 'idle' */
  at: string
  /**
   * files that had unsynced operations: how many the crash kept and dropped, whether it kept one in part (`torn`),
   * whether it kept a later one without an earlier one (`outOfOrder`)
   */
  files: { path: string; kept: number; dropped: number; torn: boolean; outOfOrder: boolean }[]
  /** directories that had unsynced entry changes, and the changes dropped (`link x`, `unlink x`, `rename x y`) */
  dirs: { path: string; kept: number; dropped: string[] }[]
}

export interface BootOptions {
  /** the call (counted from 1 in this boot) at which the machine crashes; none when omitted */
  crashAt?: number
  /** a crash at `crashAt` keeps nothing unsynced */
  strict?: boolean
}

export class CrashDisk {
  private root = new DirNode()
  private boots = 0
  private down = true
  private steps = 0
  private crashAt = Number.POSITIVE_INFINITY
  private strict = false
  /** calls made through every boot, by kind: write, datasync, sync, syncDir, rename, truncate, open, ... */
  readonly calls = new Map<string, number>()
  /** the crashes so far, in order */
  readonly crashes: CrashReport[] = []

  /** `random` returns numbers in [0, 1); `dirs` exist (durably) from the start. */
  constructor(
    private readonly random: () => number,
    dirs: string[] = [],
    private readonly shortWrites = true,
  ) {
    for (const dir of dirs) {
      let d = this.root
      for (const part of parts(dir)) {
        let next = d.entries.get(part)
        if (next === undefined) {
          next = new DirNode()
          d.entries.set(part, next)
          d.durable.set(part, next)
        }
        if (next.kind !== 'dir') throw new Error(`${dir}: not a directory`)
        d = next
      }
    }
  }

  /** calls made in the current boot */
  get callsThisBoot(): number {
    return this.steps
  }

  get isDown(): boolean {
    return this.down
  }

  /** Starts the machine (after a crash, or the first time) and returns its file system. */
  boot(options: BootOptions = {}): StoreFs {
    if (!this.down) throw new Error('the machine is running: crash it first')
    this.down = false
    const boot = ++this.boots
    this.steps = 0
    this.crashAt = options.crashAt ?? Number.POSITIVE_INFINITY
    this.strict = options.strict ?? false
    return this.view(boot)
  }

  /** Crashes the machine now (between calls); `strict` keeps nothing unsynced. */
  crash(strict = false): CrashReport {
    return this.powerLoss('idle', strict)
  }

  /** The content of a file as it is now (in the page cache; after a crash, what the disk kept), or null. */
  peek(path: string): Buffer | null {
    const node = this.find(path)
    return node?.kind === 'file' ? Buffer.from(node.data) : null
  }

  /** The names in a directory as it is now, sorted, or null. */
  list(path: string): string[] | null {
    const node = this.find(path)
    return node?.kind === 'dir' ? [...node.entries.keys()].sort() : null
  }

  private find(path: string): Node | undefined {
    let node: Node | undefined = this.root
    for (const part of parts(path)) node = node?.kind === 'dir' ? node.entries.get(part) : undefined
    return node
  }

  private view(boot: number): StoreFs {
    const disk = this
    return {
      async open(path: string, flags: OpenFlags): Promise<StoreFile> {
        disk.enter(boot, 'open', path, false)
        const { dir, name } = disk.parent(path)
        let node = dir.entries.get(name)
        if (flags === 'r' || flags === 'r+') {
          if (node === undefined) throw fsError('ENOENT', 'open', path)
          if (flags === 'r+' && node.kind === 'dir') throw fsError('EISDIR', 'open', path)
          return new Handle(disk, boot, node, path, flags === 'r+')
        }
        if (node !== undefined && flags === 'wx+') throw fsError('EEXIST', 'open', path)
        if (node?.kind === 'dir') throw fsError('EISDIR', 'open', path)
        if (node === undefined) node = disk.create(dir, name)
        else disk.fileOp(node, { t: 'truncate', length: 0 })
        return new Handle(disk, boot, node, path, true)
      },
      async readFile(path: string): Promise<Buffer> {
        disk.enter(boot, 'read', path, false)
        const { dir, name } = disk.parent(path)
        const node = dir.entries.get(name)
        if (node === undefined) throw fsError('ENOENT', 'open', path)
        if (node.kind === 'dir') throw fsError('EISDIR', 'read', path)
        return Buffer.from(node.data)
      },
      async writeFile(path: string, data: string, options: { flag: 'wx' }): Promise<void> {
        disk.enter(boot, 'writeFile', path, false)
        if (options.flag !== 'wx') throw new Error(`writeFile: flag ${options.flag} is not simulated`)
        const { dir, name } = disk.parent(path)
        if (dir.entries.has(name)) throw fsError('EEXIST', 'open', path)
        disk.fileOp(disk.create(dir, name), { t: 'write', position: 0, bytes: Buffer.from(data) })
      },
      async rename(from: string, to: string): Promise<void> {
        disk.enter(boot, 'rename', from, false)
        const a = disk.parent(from)
        const b = disk.parent(to)
        if (a.dir !== b.dir) throw new Error('rename across directories is not simulated')
        const node = a.dir.entries.get(a.name)
        if (node === undefined) throw fsError('ENOENT', 'rename', from)
        a.dir.entries.delete(a.name)
        a.dir.entries.set(b.name, node)
        a.dir.pending.push({ t: 'rename', from: a.name, to: b.name })
      },
      async rm(path: string, options: { force: true }): Promise<void> {
        disk.enter(boot, 'rm', path, false)
        const { dir, name } = disk.parent(path)
        const node = dir.entries.get(name)
        if (node === undefined) {
          if (options.force) return
          throw fsError('ENOENT', 'rm', path)
        }
        if (node.kind === 'dir') throw fsError('EISDIR', 'rm', path)
        dir.entries.delete(name)
        dir.pending.push({ t: 'unlink', name })
      },
      async mkdir(path: string, _options: { recursive: true }): Promise<string | undefined> {
        disk.enter(boot, 'mkdir', path, false)
        let d = disk.root
        let first: string | undefined
        let at = '/'
        for (const part of parts(path)) {
          at = posix.join(at, part)
          let next = d.entries.get(part)
          if (next === undefined) {
            next = new DirNode()
            d.entries.set(part, next)
            d.pending.push({ t: 'link', name: part, node: next })
            first ??= at
          }
          if (next.kind !== 'dir') throw fsError('ENOTDIR', 'mkdir', path)
          d = next
        }
        return first
      },
    }
  }

  /** Counts a call; crashes the machine when it is the chosen one (`after`: once the call has had its effect). */
  enter(boot: number, call: string, path: string, after: boolean): boolean {
    if (boot !== this.boots || this.down) throw new SimulatedCrash(`${call} ${path}: the machine crashed`)
    this.calls.set(call, (this.calls.get(call) ?? 0) + 1)
    if (++this.steps !== this.crashAt) return false
    if (after) return true
    this.powerLoss(`${call} ${path}`, this.strict)
    throw new SimulatedCrash(`${call} ${path}: the machine crashed`)
  }

  /** The crash of a call that has had its effect (a write, torn by it). */
  crashAfter(call: string, path: string): never {
    this.powerLoss(`${call} ${path}`, this.strict)
    throw new SimulatedCrash(`${call} ${path}: the machine crashed`)
  }

  fileOp(node: FileNode, op: FileOp): void {
    node.data = applyFileOp(node.data, op)
    node.pending.push(op)
  }

  sync(node: Node): void {
    if (node.kind === 'file') {
      node.durable = Buffer.from(node.data)
    } else {
      node.durable = new Map(node.entries)
    }
    node.pending = []
  }

  /** bytes a write call takes: all of them, or (now and then) fewer, as write(2) may */
  writeLength(length: number): number {
    if (!this.shortWrites || length < 2 || this.random() >= 0.1) return length
    return 1 + Math.floor(this.random() * (length - 1))
  }

  private create(dir: DirNode, name: string): FileNode {
    const node = new FileNode()
    dir.entries.set(name, node)
    dir.pending.push({ t: 'link', name, node })
    return node
  }

  private parent(path: string): { dir: DirNode; name: string } {
    const p = parts(path)
    const name = p.pop()
    if (name === undefined) throw fsError('EISDIR', 'open', path)
    let d: Node = this.root
    for (const part of p) {
      const next: Node | undefined = d.kind === 'dir' ? d.entries.get(part) : undefined
      if (next === undefined) throw fsError('ENOENT', 'open', path)
      if (next.kind !== 'dir') throw fsError('ENOTDIR', 'open', path)
      d = next
    }
    return { dir: d as DirNode, name }
  }

  private powerLoss(at: string, strict: boolean): CrashReport {
    this.down = true
    const report: CrashReport = { at, files: [], dirs: [] }
    this.root = this.settleDir(this.root, '/', report, strict)
    this.crashes.push(report)
    return report
  }

  /** how many of `n` pending operations a crash keeps */
  private keep(n: number, strict: boolean): number {
    if (n === 0 || strict) return 0
    const r = this.random()
    if (r < 0.35) return 0
    if (r < 0.55) return n
    return Math.floor(this.random() * (n + 1))
  }

  private settleDir(d: DirNode, path: string, report: CrashReport, strict: boolean): DirNode {
    const entries = new Map(d.durable)
    const kept = this.keep(d.pending.length, strict)
    for (const op of d.pending.slice(0, kept)) {
      if (op.t === 'link') entries.set(op.name, op.node)
      else if (op.t === 'unlink') entries.delete(op.name)
      else {
        const node = entries.get(op.from)
        if (node === undefined) continue
        entries.delete(op.from)
        entries.set(op.to, node)
      }
    }
    if (d.pending.length > 0) {
      const dropped = d.pending
        .slice(kept)
        .map((op) => (op.t === 'rename' ? `rename ${op.from} ${op.to}` : `${op.t} ${op.name}`))
      report.dirs.push({ path, kept, dropped })
    }
    const out = new DirNode()
    for (const [name, node] of entries) {
      const at = posix.join(path, name)
      out.entries.set(
        name,
        node.kind === 'dir' ? this.settleDir(node, at, report, strict) : this.settleFile(node, at, report, strict),
      )
    }
    out.durable = new Map(out.entries)
    return out
  }

  private settleFile(f: FileNode, path: string, report: CrashReport, strict: boolean): FileNode {
    let data: Buffer<ArrayBufferLike> = Buffer.from(f.durable)
    const n = f.pending.length
    let kept = 0
    let torn = false
    let outOfOrder = false
    if (!strict && n > 0 && this.random() < 0.25) {
      // the disk wrote back some sectors of the pending operations, not necessarily the first ones
      let dropped = false
      for (const op of f.pending) {
        const units = sectors(op)
        let keptUnits = 0
        for (const unit of units) {
          if (this.random() < 0.5) {
            dropped = true
            continue
          }
          data = applyFileOp(data, unit)
          keptUnits++
          if (dropped) outOfOrder = true
        }
        if (keptUnits > 0) kept++
        if (keptUnits > 0 && keptUnits < units.length) torn = true
      }
    } else {
      kept = this.keep(n, strict)
      for (const op of f.pending.slice(0, kept)) data = applyFileOp(data, op)
      const next = f.pending[kept]
      if (!strict && next?.t === 'write' && next.bytes.length > 1 && this.random() < 0.6) {
        const bytes = next.bytes.subarray(0, 1 + Math.floor(this.random() * (next.bytes.length - 1)))
        data = applyFileOp(data, { t: 'write', position: next.position, bytes })
        torn = true
      }
    }
    if (n > 0) report.files.push({ path, kept, dropped: n - kept, torn, outOfOrder })
    const out = new FileNode()
    out.data = data
    out.durable = Buffer.from(data)
    return out
  }
}

class Handle implements StoreFile {
  private closed = false

  constructor(
    private readonly disk: CrashDisk,
    private readonly boot: number,
    private readonly node: Node,
    private readonly path: string,
    private readonly writable: boolean,
  ) {}

  async write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    const crash = this.disk.enter(this.boot, 'write', this.path, true)
    try {
      const n = this.disk.writeLength(length)
      const bytes = Buffer.from(buffer.subarray(offset, offset + n))
      this.disk.fileOp(this.file('write', true), { t: 'write', position, bytes })
      return { bytesWritten: n }
    } finally {
      if (crash) this.disk.crashAfter('write', this.path)
    }
  }

  async readFile(): Promise<Buffer> {
    this.disk.enter(this.boot, 'read', this.path, false)
    return Buffer.from(this.file('read', false).data)
  }

  async truncate(length: number): Promise<void> {
    this.disk.enter(this.boot, 'truncate', this.path, false)
    this.disk.fileOp(this.file('truncate', true), { t: 'truncate', length })
  }

  async sync(): Promise<void> {
    this.disk.enter(this.boot, this.node.kind === 'dir' ? 'syncDir' : 'sync', this.path, false)
    this.open('sync')
    this.disk.sync(this.node)
  }

  async datasync(): Promise<void> {
    this.disk.enter(this.boot, this.node.kind === 'dir' ? 'syncDir' : 'datasync', this.path, false)
    this.open('datasync')
    this.disk.sync(this.node)
  }

  async close(): Promise<void> {
    this.disk.enter(this.boot, 'close', this.path, false)
    this.open('close')
    this.closed = true
  }

  private open(call: string): void {
    if (this.closed) throw fsError('EBADF', call, this.path)
  }

  private file(call: string, write: boolean): FileNode {
    this.open(call)
    if (this.node.kind === 'dir') throw fsError('EISDIR', call, this.path)
    if (write && !this.writable) throw fsError('EBADF', call, this.path)
    return this.node
  }
}

const SECTOR_BYTES = 512

/** A write split at sector boundaries (what a disk may write back independently); a truncation is one unit. */
function sectors(op: FileOp): FileOp[] {
  if (op.t === 'truncate') return [op]
  const units: FileOp[] = []
  const end = op.position + op.bytes.length
  for (let at = op.position; at < end; ) {
    const next = Math.min(end, (Math.floor(at / SECTOR_BYTES) + 1) * SECTOR_BYTES)
    units.push({ t: 'write', position: at, bytes: op.bytes.subarray(at - op.position, next - op.position) })
    at = next
  }
  return units
}

function applyFileOp(data: Buffer, op: FileOp): Buffer {
  if (op.t === 'truncate') {
    if (op.length <= data.length) return Buffer.from(data.subarray(0, op.length))
    return Buffer.concat([data, Buffer.alloc(op.length - data.length)])
  }
  const end = op.position + op.bytes.length
  const out = end <= data.length ? Buffer.from(data) : Buffer.concat([data, Buffer.alloc(end - data.length)])
  op.bytes.copy(out, op.position)
  return out
}

function parts(path: string): string[] {
  if (!path.startsWith('/')) throw new Error(`${path}: the simulated disk takes absolute paths`)
  return posix.normalize(path).split('/').filter(Boolean)
}

function fsError(code: string, call: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${call} '${path}'`), { code, syscall: call, path })
}
