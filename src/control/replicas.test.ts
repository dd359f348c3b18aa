/**
 * Replicas on a real etcd: files published once under a compare-and-set, whatever the race; the replica list; one
 * leader, and the next one when it resigns or its process dies.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ETCD_MISSING, type EtcdCluster, etcdBinary, startEtcdCluster } from '../../test/helpers/etcd.js'
import { EtcdReplicas, sharedFiles } from './replicas.js'
import { EtcdStore } from './store/etcd-store.js'

async function until(what: string, f: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('replicas on etcd', { skip: etcdBinary() === null ? ETCD_MISSING : false }, () => {
  let cluster: EtcdCluster
  const stores: EtcdStore[] = []
  const dirs: string[] = []
  const open = async (prefix: string) => {
    const s = await EtcdStore.open({ endpoints: cluster.endpoints, prefix })
    stores.push(s)
    return s
  }
  const dir = () => {
    const d = mkdtempSync(join(tmpdir(), 'loom-replicas-'))
    dirs.push(d)
    return d
  }

  before(async () => {
    cluster = await startEtcdCluster()
  })
  after(async () => {
    for (const s of stores) await s.close()
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
    await cluster?.stop()
  })

  test('files are published once: of five replicas racing, one creates and every one ends with its files', async () => {
    const racers = await Promise.all(Array.from({ length: 5 }, () => open('/race')))
    const where = racers.map(() => dir())
    const created = await Promise.all(
      racers.map((s, i) =>
        sharedFiles(s, 'key', where[i]!, ['key.pem'], `r${i}`, async () => {
          writeFileSync(join(where[i]!, 'key.pem'), `key of r${i}\n`)
        }),
      ),
    )
    assert.equal(created.filter(Boolean).length, 1, 'exactly one published')
    const winner = created.indexOf(true)
    for (const d of where) assert.equal(readFileSync(join(d, 'key.pem'), 'utf8'), `key of r${winner}\n`)
    // a loser that made its own files before it saw the winner's keeps them aside (one that saw etcd's copy first
    // made none); the winner keeps nothing aside
    assert.equal(existsSync(join(where[winner]!, 'key.pem.replaced')), false, 'the winner kept nothing aside')
    for (const [i, d] of where.entries())
      if (i !== winner && existsSync(join(d, 'key.pem.replaced')))
        assert.equal(readFileSync(join(d, 'key.pem.replaced'), 'utf8'), `key of r${i}\n`, `r${i}'s own key kept aside`)
    // a replica that starts later loads them without creating anything
    const late = dir()
    const made = await sharedFiles(racers[0]!, 'key', late, ['key.pem'], 'late', async () => {
      throw new Error('must not create: etcd holds them')
    })
    assert.equal(made, false)
    assert.equal(readFileSync(join(late, 'key.pem'), 'utf8'), `key of r${winner}\n`)
  })

  test('the replica list, and one leader at a time: the next leads when it resigns', async () => {
    const [sa, sb] = [await open('/lead'), await open('/lead')]
    const info = (id: string) => ({ id, api: `${id}:15080`, xds: `${id}:15010`, startedAt: new Date().toISOString() })
    const a = await EtcdReplicas.join(sa, info('a'), 2)
    await until('a to lead', () => a.leader)
    const b = await EtcdReplicas.join(sb, info('b'), 2)
    assert.deepEqual(
      (await b.list()).map((r) => r.id),
      ['a', 'b'],
    )
    assert.equal(await b.leaderId(), 'a')
    assert.equal(b.leader, false)
    const changes: boolean[] = []
    b.onLeadership((l) => changes.push(l))
    await a.close()
    await until('b to lead', () => b.leader)
    assert.deepEqual(changes, [true])
    assert.equal(await b.leaderId(), 'b')
    assert.deepEqual(
      (await b.list()).map((r) => r.id),
      ['b'],
      'a left the list',
    )
    await b.close()
  })
})
