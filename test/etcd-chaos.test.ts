/**
 * The etcd store under a member failure: `loom control --store etcd://a,b,c` takes a stream of applies over its API
 * while the etcd leader is killed with SIGKILL. Writes go on through the other two members; a write may fail while
 * the client fails over, but only as a reported failure: every write the API acknowledged is in etcd afterwards.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Control, startControl } from './helpers/control.js'
import { ETCD_MISSING, type EtcdCluster, type EtcdMember, etcdBinary, startEtcdCluster } from './helpers/etcd.js'

/** The member etcd reports as leader (its gRPC gateway's maintenance status). */
async function leaderOf(cluster: EtcdCluster): Promise<EtcdMember> {
  for (const m of cluster.members) {
    if (m.proc === null) continue
    const res = await fetch(`http://${m.endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}' })
    const status = (await res.json()) as { header: { member_id: string }; leader: string }
    if (status.header.member_id === status.leader) return m
  }
  throw new Error('no member says it is the leader')
}

function virtualService(i: number): string {
  return JSON.stringify({
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: { name: `vs-${i}`, namespace: 'chaos' },
    spec: { hosts: [`svc-${i}`], http: [{ route: [{ destination: { host: `svc-${i}` } }] }] },
  })
}

describe('the etcd store with a member killed', { skip: etcdBinary() === null ? ETCD_MISSING : false }, () => {
  let cluster: EtcdCluster
  let cp: Control
  before(async () => {
    cluster = await startEtcdCluster()
    cp = await startControl(undefined, 0, ['--store', cluster.url, '--telemetry-interval', 'off'])
  })
  after(async () => {
    await cp?.stop()
    await cluster?.stop()
  })

  test('kill -9 one etcd member during a stream of applies', async () => {
    const total = 200
    const writers = 4
    const killAt = 60
    const acknowledged = new Set<number>()
    const failures: string[] = []
    let next = 0
    let ackedAfterKill = 0
    let killed: EtcdMember | null = null
    let killedAtMs = 0
    let longestMs = 0
    let killing: Promise<void> | null = null
    const t0 = performance.now()
    const writer = async () => {
      for (;;) {
        const i = next++
        if (i >= total) return
        if (i === killAt)
          killing = leaderOf(cluster).then(async (m) => {
            killed = m
            killedAtMs = performance.now() - t0
            await cluster.kill9(m)
          })
        const start = performance.now()
        try {
          const res = await fetch(`http://${cp.api}/api/v1/apply`, {
            method: 'POST',
            body: virtualService(i),
            signal: AbortSignal.timeout(30_000),
          })
          const body = await res.text()
          if (res.status === 200) {
            acknowledged.add(i)
            if (killed !== null) ackedAfterKill++
          } else failures.push(`vs-${i}: HTTP ${res.status} ${body}`)
        } catch (err) {
          failures.push(`vs-${i}: ${err}`)
        }
        longestMs = Math.max(longestMs, performance.now() - start)
      }
    }
    await Promise.all(Array.from({ length: writers }, writer))
    await killing
    const elapsedMs = performance.now() - t0

    // what etcd holds, read through the control plane (a linearizable read on the surviving members)
    const res = await fetch(`http://${cp.api}/api/v1/resources?kind=VirtualService&namespace=chaos`)
    assert.equal(res.status, 200)
    const listed = (await res.json()) as { revision: number; items: { metadata: { name: string } }[] }
    const stored = new Set(listed.items.map((r) => Number(r.metadata.name.slice(3))))
    // the control plane's watch went on through the failover: it has seen every write (what proxies are built from)
    const seen = ((await (await fetch(`http://${cp.api}/healthz`)).json()) as { revision: number }).revision
    assert.equal(seen, listed.revision, 'the watch feeding the translator is at the latest revision')
    const lost = [...acknowledged].filter((i) => !stored.has(i))
    const figures = {
      writes: total,
      acknowledged: acknowledged.size,
      failed: failures.length,
      lost: lost.length,
      acknowledgedAfterKill: ackedAfterKill,
      killed: killed === null ? null : (killed as EtcdMember).name,
      killedAtMs: Math.round(killedAtMs),
      longestWriteMs: Math.round(longestMs),
      elapsedMs: Math.round(elapsedMs),
    }
    console.log(`etcd chaos: ${JSON.stringify(figures)}`)
    if (failures.length > 0) console.log(`failed writes (reported to the client):\n${failures.join('\n')}`)
    assert.notEqual(killed, null, 'a member was killed')
    assert.deepEqual(lost, [], 'no acknowledged write is lost')
    assert.equal(acknowledged.size + failures.length, total, 'every write was either acknowledged or reported failed')
    assert.ok(ackedAfterKill >= total - killAt - writers - failures.length, 'writes go on after the kill')
    // a failed write left nothing half-done: it is absent or entirely there
    for (const i of stored) assert.ok(i >= 0 && i < total)

    // the member comes back and catches up; the control plane never noticed beyond the failover
    await cluster.restart(killed!)
    const again = await fetch(`http://${cp.api}/api/v1/apply`, { method: 'POST', body: virtualService(total) })
    assert.equal(again.status, 200, await again.text())
  })
})
