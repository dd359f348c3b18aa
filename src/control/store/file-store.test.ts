/**
 * FileStore on disk: reopen, compaction (explicit, automatic, interrupted), torn tail recovery, corruption refused,
 * the on-disk format, group commit, the directory lock, and refusing writes after a failed write.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import type { FileHandle } from 'node:fs/promises'
import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, test } from 'node:test'
import { crc32 } from 'node:zlib'
import type { Resource } from '../../api/resource.js'
import { FileStore, LOCK_FILE, SNAPSHOT_FILE, SNAPSHOT_TMP_FILE, StoreCompactedError, WAL_FILE } from './file-store.js'
import { encodeRecord, StoreCorruptionError } from './wal.js'

function res(kind: string, namespace: string, name: string, spec: unknown = {}): Resource {
  return { apiVersion: 'loom.dev/v1', kind, metadata: { name, namespace }, spec }
}

describe('FileStore', () => {
  let dir: string
  const opened: FileStore[] = []
  async function open(options?: Parameters<typeof FileStore.open>[1]): Promise<FileStore> {
    const s = await FileStore.open(dir, options)
    opened.push(s)
    return s
  }
  async function reopen(s: FileStore, options?: Parameters<typeof FileStore.open>[1]): Promise<FileStore> {
    await s.close()
    return open(options)
  }
  const walPath = () => join(dir, WAL_FILE)
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'loom-filestore-'))
  })
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close()
    await rm(dir, { recursive: true, force: true })
  })

  test('open creates the directory (and parents); an empty store has revision 0', async () => {
    dir = join(dir, 'a', 'b', 'data')
    const s = await open()
    assert.equal(s.revision, 0)
    assert.equal(s.dir, dir)
    assert.deepEqual((await readdir(dir)).sort(), [LOCK_FILE, WAL_FILE])
    assert.equal((await readFile(join(dir, LOCK_FILE), 'utf8')).trim(), String(process.pid))
    assert.deepEqual(s.recovery, { snapshotRevision: 0, replayed: 0, skipped: 0, truncatedBytes: 0 })
  })

  test('state, revisions, metadata and watch history survive reopen', async () => {
    let s = await open()
    await s.put(res('Service', 'a', 'x', { n: 1 }))
    await s.putAll([res('Service', 'a', 'y'), res('Route', 'b', 'r', { to: 'x' })])
    await s.put(res('Service', 'a', 'x', { n: 2 }))
    await s.delete('Service', 'a', 'y')
    const before = await s.list()
    s = await reopen(s)
    assert.deepEqual(await s.list(), before)
    assert.equal(s.revision, 4)
    assert.deepEqual(s.recovery, { snapshotRevision: 0, replayed: 4, skipped: 0, truncatedBytes: 0 })
    const events: string[] = []
    s.watch(1, (e) => events.push(`${e.revision} ${e.type} ${e.resource.metadata.name}`))
    assert.deepEqual(events, ['2 PUT y', '2 PUT r', '3 PUT x', '4 DELETE y'])
    const x = await s.put(res('Service', 'a', 'x', { n: 3 }))
    assert.equal(x.metadata.resourceVersion, '5')
    assert.equal(x.metadata.generation, 3)
    assert.equal(x.metadata.uid, before.items.find((r) => r.metadata.name === 'x')?.metadata.uid)
  })

  test('the log is the documented format, one record per group commit', async () => {
    const s = await open()
    const stored = await s.put(res('Service', 'a', 'x', { port: 80 }))
    const wal = await readFile(walPath())
    const length = wal.readUInt32LE(0)
    assert.equal(wal.length, 8 + length)
    assert.equal(wal.readUInt32LE(4), crc32(wal.subarray(8), crc32(wal.subarray(0, 4))))
    assert.deepEqual(JSON.parse(wal.subarray(8).toString()), {
      txns: [{ revision: 1, ops: [{ op: 'put', resource: stored }] }],
    })
    await s.delete('Service', 'a', 'x')
    const second = (await readFile(walPath())).subarray(wal.length + 8)
    assert.deepEqual(JSON.parse(second.toString()), {
      txns: [{ revision: 2, ops: [{ op: 'delete', key: 'Service/a/x' }] }],
    })
  })

  test('concurrent writes share log records and fsyncs (group commit) and all survive reopen', async () => {
    let s = await open()
    await Promise.all(Array.from({ length: 200 }, (_, i) => s.put(res('Service', 'a', `s${i}`, { i }))))
    const wal = await readFile(walPath())
    let records = 0
    for (let off = 0; off < wal.length; off += 8 + wal.readUInt32LE(off)) records++
    assert.ok(records < 200, `${records} records for 200 transactions`)
    s = await reopen(s)
    assert.equal(s.revision, 200)
    assert.equal((await s.list('Service')).items.length, 200)
  })

  test('compaction writes a snapshot and empties the log; reopen loads it and replays the rest', async () => {
    let s = await open()
    for (let i = 0; i < 5; i++) await s.put(res('Service', 'a', `s${i}`, { i }))
    await s.delete('Service', 'a', 's0')
    await s.compact()
    assert.equal((await stat(walPath())).size, 0)
    assert.ok((await stat(join(dir, SNAPSHOT_FILE))).size > 0)
    await s.put(res('Service', 'a', 's1', { i: 'changed' }))
    await s.put(res('Route', 'a', 'r'))
    const before = await s.list()
    s = await reopen(s)
    assert.deepEqual(await s.list(), before)
    assert.deepEqual(s.recovery, { snapshotRevision: 6, replayed: 2, skipped: 0, truncatedBytes: 0 })
    assert.throws(() => s.watch(0, () => {}), StoreCompactedError)
    const events: number[] = []
    s.watch(6, (e) => events.push(e.revision))
    assert.deepEqual(events, [7, 8])
    s = await reopen(s)
    await s.compact()
    s = await reopen(s)
    assert.deepEqual(await s.list(), before)
    assert.deepEqual(s.recovery, { snapshotRevision: 8, replayed: 0, skipped: 0, truncatedBytes: 0 })
    assert.deepEqual((await readdir(dir)).sort(), [LOCK_FILE, SNAPSHOT_FILE, WAL_FILE])
  })

  test('the log compacts on its own once it outgrows compactBytes', async () => {
    let s = await open({ compactBytes: 4096 })
    for (let i = 0; i < 100; i++) await s.put(res('Service', 'a', `s${i % 10}`, { i, pad: 'x'.repeat(200) }))
    assert.ok((await stat(walPath())).size < 4096 + 1024)
    const before = await s.list()
    s = await reopen(s)
    assert.deepEqual(await s.list(), before)
    assert.equal(s.revision, 100)
    assert.ok(s.recovery.snapshotRevision > 0)
  })

  test('a crash between the snapshot rename and the log truncation: records up to the snapshot are skipped', async () => {
    let s = await open()
    for (let i = 0; i < 5; i++) await s.put(res('Service', 'a', `s${i}`, { i }))
    const oldLog = await readFile(walPath())
    await s.compact()
    await s.close()
    await writeFile(walPath(), oldLog)
    await writeFile(join(dir, SNAPSHOT_TMP_FILE), 'half a snapshot')
    s = await open()
    assert.deepEqual(s.recovery, { snapshotRevision: 5, replayed: 0, skipped: 5, truncatedBytes: 0 })
    assert.equal(s.revision, 5)
    await s.put(res('Service', 'a', 's9'))
    const before = await s.list()
    s = await reopen(s)
    assert.deepEqual(await s.list(), before)
    assert.deepEqual(s.recovery, { snapshotRevision: 5, replayed: 1, skipped: 5, truncatedBytes: 0 })
    assert.ok(!(await readdir(dir)).includes(SNAPSHOT_TMP_FILE))
  })

  test('a torn tail is cut off on open; writing and reopening continue cleanly', async () => {
    let s = await open()
    for (let i = 0; i < 3; i++) await s.put(res('Service', 'a', `s${i}`, { i }))
    const before = await s.list()
    await s.close()
    const good = (await stat(walPath())).size
    const partial = encodeRecord(JSON.stringify({ txns: [{ revision: 4, ops: [] }], pad: 'y'.repeat(3000) }))
    const tails = [
      Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03]),
      partial.subarray(0, 1500),
      Buffer.alloc(4096),
    ]
    for (const tail of tails) {
      await appendFile(walPath(), tail)
      s = await open()
      assert.deepEqual(await s.list(), before)
      assert.deepEqual(s.recovery, { snapshotRevision: 0, replayed: 3, skipped: 0, truncatedBytes: tail.length })
      assert.equal((await stat(walPath())).size, good)
      await s.close()
    }
    await appendFile(walPath(), Buffer.from('garbage'))
    s = await open()
    const next = await s.put(res('Service', 'a', 'after'))
    assert.equal(next.metadata.resourceVersion, '4')
    s = await reopen(s)
    assert.equal(s.revision, 4)
    assert.deepEqual(s.recovery.truncatedBytes, 0)
    assert.deepEqual((await s.get('Service', 'a', 'after'))?.metadata.uid, next.metadata.uid)
  })

  test('a bad record in the middle of the log refuses to open, naming the file and offset', async () => {
    const s = await open()
    await s.put(res('Service', 'a', 'x', { n: 1 }))
    const second = (await stat(walPath())).size
    await s.put(res('Service', 'a', 'x', { n: 2 }))
    await s.put(res('Service', 'a', 'x', { n: 3 }))
    await s.close()
    const wal = await readFile(walPath())
    wal.writeUInt8(wal.readUInt8(second + 20) ^ 0x20, second + 20)
    await writeFile(walPath(), wal)
    const refused = (e: Error) =>
      e instanceof StoreCorruptionError &&
      e.file === walPath() &&
      e.offset === second &&
      e.message.startsWith(`${walPath()}: corrupt at byte offset ${second}: `)
    await assert.rejects(FileStore.open(dir), refused)
    await assert.rejects(FileStore.open(dir), refused, 'the failed open released the lock')
    assert.deepEqual(await readFile(walPath()), wal, 'nothing was truncated')
  })

  test('a revision out of sequence or an invalid transaction is corruption', async () => {
    const s = await open()
    await s.put(res('Service', 'a', 'x'))
    await s.close()
    const good = await readFile(walPath())
    await appendFile(walPath(), encodeRecord(JSON.stringify({ txns: [{ revision: 3, ops: [] }] })))
    await assert.rejects(
      FileStore.open(dir),
      /wal\.log: corrupt at byte offset \d+: transaction revision 3 does not follow 1/,
    )
    await writeFile(walPath(), good)
    await appendFile(
      walPath(),
      encodeRecord(JSON.stringify({ txns: [{ revision: 2, ops: [{ op: 'delete', key: 'A/b/c' }] }] })),
    )
    await assert.rejects(FileStore.open(dir), /deletes A\/b\/c, which does not exist/)
    await writeFile(walPath(), good)
    await appendFile(walPath(), encodeRecord('{"txns":[{"revision":2,"ops":[{"op":"put","resource":{}}]}]}'))
    await assert.rejects(FileStore.open(dir), /invalid operation in transaction 2/)
  })

  test('a damaged snapshot refuses to open', async () => {
    const s = await open()
    await s.put(res('Service', 'a', 'x'))
    await s.compact()
    await s.close()
    const path = join(dir, SNAPSHOT_FILE)
    const snap = await readFile(path)
    snap.writeUInt8(snap.readUInt8(snap.length - 2) ^ 0x01, snap.length - 2)
    await writeFile(path, snap)
    await assert.rejects(
      FileStore.open(dir),
      (e: Error) => e instanceof StoreCorruptionError && e.file === path && e.message.startsWith(`${path}: corrupt`),
    )
    await writeFile(path, encodeRecord('{"format":99}'))
    await assert.rejects(FileStore.open(dir), /not a snapshot of format 1/)
  })

  test('one store per directory: the lock refuses a second open and is taken over from a dead process', async () => {
    const s = await open()
    await assert.rejects(FileStore.open(dir), /is already open in this process/)
    await s.close()
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString()
    await writeFile(join(dir, LOCK_FILE), `${dead}\n`)
    const again = await open()
    assert.equal((await readFile(join(dir, LOCK_FILE), 'utf8')).trim(), String(process.pid))
    await again.close()
    assert.ok(!(await readdir(dir)).includes(LOCK_FILE), 'close removes the lock')
  })

  test('a LOCK left by a crash is taken over even when it names this pid or was cut short', async () => {
    // an earlier process with the same pid (pid 1 of a restarted container) or a write cut off by the crash
    for (const content of [`${process.pid}\n`, '1', '']) {
      await writeFile(join(dir, LOCK_FILE), content)
      const s = await open()
      await assert.rejects(FileStore.open(dir), /is already open in this process/)
      assert.equal((await readFile(join(dir, LOCK_FILE), 'utf8')).trim(), String(process.pid))
      await s.close()
    }
    // two opens at once: exactly one gets the store (whichever reserves the directory first), the other is refused
    const both = await Promise.allSettled([FileStore.open(dir), FileStore.open(dir)])
    const won = both.filter((r): r is PromiseFulfilledResult<FileStore> => r.status === 'fulfilled')
    const lost = both.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    assert.equal(won.length, 1)
    assert.match(String(lost[0]?.reason), /is already open in this process/)
    await won[0]!.value.close()
  })

  test('after a failed write the store refuses writes until reopened; acknowledged writes are kept', async () => {
    let s = await open()
    await s.put(res('Service', 'a', 'x', { n: 1 }))
    await (s as unknown as { wal: FileHandle }).wal.close()
    await assert.rejects(
      s.put(res('Service', 'a', 'x', { n: 2 })),
      /write of revisions 2-2 failed; the store accepts no more/,
    )
    await assert.rejects(s.delete('Service', 'a', 'x'), /accepts no more writes until it is reopened/)
    await assert.rejects(s.compact(), /accepts no more writes/)
    assert.equal(s.revision, 1)
    assert.deepEqual((await s.get('Service', 'a', 'x'))?.spec, { n: 1 }, 'reads still work')
    s = await reopen(s)
    assert.deepEqual((await s.get('Service', 'a', 'x'))?.spec, { n: 1 })
    assert.equal((await s.put(res('Service', 'a', 'x', { n: 2 }))).metadata.resourceVersion, '2')
  })
})
