/**
 * What the etcd store adds to the contract (store.test.ts runs that): several stores on one prefix (control planes
 * sharing a cluster) see each other's writes and never overwrite one unseen; a store whose watch fell behind an
 * etcd compaction lists again and delivers the difference; an unreachable cluster is a clear error; TLS with a
 * client certificate and etcd's users work, and their failures say what failed.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Etcd3, Range } from 'etcd3'
import { after, before, describe, test } from 'node:test'
import { ETCD_MISSING, type EtcdCluster, etcdBinary, startEtcdCluster } from '../../../test/helpers/etcd.js'
import type { Resource } from '../../api/resource.js'
import { EtcdStore, parseEtcdUrl } from './etcd-store.js'
import { StoreCompactedError, StoreConflictError, type WatchEvent } from './store.js'

/** A watch callback that collects events, and a promise of the collection once `done` says it is complete. */
function collector(done: (events: WatchEvent[]) => boolean, ms = 15_000) {
  const events: WatchEvent[] = []
  let resolve: () => void = () => {}
  const complete = new Promise<WatchEvent[]>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`watch events still incomplete after ${ms} ms: ${events.length}`)), ms)
    resolve = () => {
      clearTimeout(t)
      ok(events)
    }
  })
  return {
    onEvent: (e: WatchEvent) => {
      events.push(e)
      if (done(events)) resolve()
    },
    complete,
  }
}

function res(name: string, spec: unknown = {}): Resource {
  return { apiVersion: 'loom.dev/v1', kind: 'Service', metadata: { name, namespace: 'a' }, spec }
}

test('parseEtcdUrl: the endpoints of etcd://, or null for another store; a malformed one names its part', () => {
  assert.deepEqual(parseEtcdUrl('etcd://10.0.0.1:2379,[::1]:2379, etcd-2.local:2379'), [
    '10.0.0.1:2379',
    '[::1]:2379',
    'etcd-2.local:2379',
  ])
  assert.equal(parseEtcdUrl('file'), null)
  assert.throws(() => parseEtcdUrl('etcd://a:2379,b'), /"b" is not host:port/)
  assert.throws(() => parseEtcdUrl('etcd://a:99999'), /"a:99999" is not host:port/)
})

test('an unreachable cluster fails the open with the endpoints and the cause', async () => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })
  await assert.rejects(
    EtcdStore.open({ endpoints: [`127.0.0.1:${port}`], prefix: '/nowhere', retryMs: 300 }),
    (e: Error) =>
      e.message.startsWith(
        `etcd (127.0.0.1:${port}): reading /nowhere/resources/ failed (still failing after 0.3 s): `,
      ) && /ECONNREFUSED|UNAVAILABLE/.test(e.message),
  )
  await assert.rejects(EtcdStore.open({ endpoints: ['127.0.0.1:1'], prefix: 'loom/' }), /prefix must start with '\/'/)
})

describe('EtcdStore on a shared cluster', { skip: etcdBinary() === null ? ETCD_MISSING : false }, () => {
  let cluster: EtcdCluster
  before(async () => {
    cluster = await startEtcdCluster()
  })
  after(async () => {
    await cluster?.stop()
  })

  test("two stores on one prefix: each watch sees the other's writes; compare-and-set holds across them", async () => {
    const prefix = '/loom-shared'
    const a = await EtcdStore.open({ endpoints: cluster.endpoints, prefix })
    const b = await EtcdStore.open({ endpoints: cluster.endpoints, prefix })
    try {
      const seenByB = collector((es) => es.length === 4)
      b.watch(b.revision, seenByB.onEvent)
      const v1 = await a.put(res('x', { n: 1 }))
      assert.deepEqual(await b.get('Service', 'a', 'x'), v1, "b reads a's write at once (a linearizable read)")
      // each writes back what it read: the second one conflicts, even though its own mirror may not have the first
      const readA = (await a.get('Service', 'a', 'x'))!
      const readB = (await b.get('Service', 'a', 'x'))!
      readA.spec = { n: 2 }
      readB.spec = { n: 3 }
      const v2 = await a.put(readA)
      await assert.rejects(
        b.put(readB),
        (e: Error) =>
          e instanceof StoreConflictError &&
          e.message ===
            `put Service/a/x: expected resourceVersion ${v1.metadata.resourceVersion}, but it is at resourceVersion ${v2.metadata.resourceVersion}`,
      )
      // an unconditional write on b keeps a's uid and creation time and bumps the generation from a's
      const v3 = await b.put(res('x', { n: 4 }))
      assert.equal(v3.metadata.uid, v1.metadata.uid)
      assert.equal(v3.metadata.generation, 3)
      await a.delete('Service', 'a', 'x')
      assert.deepEqual(
        (await seenByB.complete).map((e) => `${e.type} ${e.revision}`),
        [
          `PUT ${v1.metadata.resourceVersion}`,
          `PUT ${v2.metadata.resourceVersion}`,
          `PUT ${v3.metadata.resourceVersion}`,
          `DELETE ${Number(v3.metadata.resourceVersion) + 1}`,
        ],
      )
    } finally {
      await a.close()
      await b.close()
    }
  })

  test('a watch that fell behind an etcd compaction lists again and delivers the difference', async () => {
    const prefix = '/loom-compacted'
    const [m0, m1, m2] = cluster.members
    // `behind` talks to one member only: while it is down, `writer` (the others) writes and compacts
    const behind = await EtcdStore.open({ endpoints: [m0!.endpoint], prefix, retryMs: 20_000 })
    const openedAt = behind.revision
    const writer = await EtcdStore.open({ endpoints: [m1!.endpoint, m2!.endpoint], prefix })
    try {
      const kept = await writer.put(res('kept'))
      const gone = await writer.put(res('gone'))
      const changed = await writer.put(res('changed', { n: 1 }))
      const early = collector((es) => es.length === 3)
      behind.watch(openedAt, early.onEvent)
      await early.complete
      const late = collector((es) => es.some((e) => e.resource.metadata.name === 'added'))
      behind.watch(Number(changed.metadata.resourceVersion), late.onEvent)
      await cluster.kill9(m0!)
      await writer.delete('Service', 'a', 'gone')
      const v2 = await writer.put(res('changed', { n: 2 }))
      const added = await writer.put(res('added'))
      await writer.client.kv.compact({ revision: added.metadata.resourceVersion, physical: true })
      await cluster.restart(m0!)
      const events = await late.complete
      const summary = events.map((e) => `${e.type} ${e.resource.metadata.name} ${e.resource.metadata.resourceVersion}`)
      assert.deepEqual(summary.sort(), [
        `DELETE gone ${gone.metadata.resourceVersion}`,
        `PUT added ${added.metadata.resourceVersion}`,
        `PUT changed ${v2.metadata.resourceVersion}`,
      ])
      assert.ok(
        events.every((e) => e.revision >= Number(added.metadata.resourceVersion)),
        'the difference comes at the revision of the new list',
      )
      assert.throws(() => behind.watch(openedAt, () => {}), StoreCompactedError)
      const listed = await behind.list('Service', 'a')
      assert.deepEqual(
        listed.items.map((r) => r.metadata.name),
        ['added', 'changed', 'kept'],
      )
      assert.equal(listed.items[2]!.metadata.resourceVersion, kept.metadata.resourceVersion)
    } finally {
      await behind.close()
      await writer.close()
    }
  })
})

/** A CA, a member certificate for 127.0.0.1 and a client certificate, made with openssl for this run. */
function makeCerts(dir: string): { ca: string; cert: string; key: string; clientCert: string; clientKey: string } {
  const openssl = (...args: string[]) =>
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=etcd test CA')
  const leaf = (name: string, cn: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}\n`)
    openssl('req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`)
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    )
  }
  // the member's certificate is also the client certificate of its own gRPC gateway
  leaf('member', 'etcd', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth')
  leaf('client', 'loom', 'extendedKeyUsage=clientAuth')
  const f = (n: string) => join(dir, n)
  return {
    ca: f('ca.crt'),
    cert: f('member.crt'),
    key: f('member.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
  }
}

describe('EtcdStore with TLS and etcd users', { skip: etcdBinary() === null ? ETCD_MISSING : false }, () => {
  let cluster: EtcdCluster
  let dir: string
  let certs: ReturnType<typeof makeCerts>
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-etcd-tls-'))
    certs = makeCerts(dir)
    cluster = await startEtcdCluster({ size: 1, tls: { ...certs, clientCertAuth: true } })
  })
  after(async () => {
    await cluster?.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  test('TLS with a client certificate; without one the open fails naming the endpoint', async () => {
    const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }
    const s = await EtcdStore.open({ endpoints: cluster.endpoints, prefix: '/loom-tls', tls })
    try {
      const put = await s.put(res('x', { n: 1 }))
      assert.deepEqual(await s.get('Service', 'a', 'x'), put)
    } finally {
      await s.close()
    }
    await assert.rejects(
      EtcdStore.open({ endpoints: cluster.endpoints, prefix: '/loom-tls', tls: { ca: certs.ca }, retryMs: 300 }),
      (e: Error) => e.message.startsWith(`etcd (${cluster.endpoints[0]}): reading /loom-tls/resources/ failed`),
    )
    await assert.rejects(
      EtcdStore.open({ endpoints: cluster.endpoints, tls: { ca: join(dir, 'missing.crt') } }),
      /cannot read the CA certificate \(--etcd-ca\) .*missing\.crt/,
    )
  })

  test("etcd users: a user's role bounds its prefix; a wrong password or prefix fails with etcd's reason", async () => {
    const admin = new Etcd3({
      hosts: `https://${cluster.endpoints[0]}`,
      credentials: {
        rootCertificate: readFileSync(certs.ca),
        certChain: readFileSync(certs.clientCert),
        privateKey: readFileSync(certs.clientKey),
      },
    })
    try {
      await admin.role('root').create()
      await (await admin.user('root').create('root-pw')).addRole('root')
      const role = await admin.role('loom').create()
      await role.grant({ permission: 'Readwrite', range: Range.prefix('/loom-users/') })
      await (await admin.user('loom').create('loom-pw')).addRole('loom')
      await admin.auth.authEnable()
    } finally {
      admin.close()
    }
    const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }
    const s = await EtcdStore.open({
      endpoints: cluster.endpoints,
      prefix: '/loom-users',
      tls,
      auth: { user: 'loom', password: 'loom-pw' },
    })
    try {
      const put = await s.put(res('x'))
      assert.deepEqual(await s.get('Service', 'a', 'x'), put)
    } finally {
      await s.close()
    }
    await assert.rejects(
      EtcdStore.open({
        endpoints: cluster.endpoints,
        prefix: '/loom-users',
        tls,
        auth: { user: 'loom', password: 'no' },
      }),
      /reading \/loom-users\/resources\/ failed: .*authentication failed/,
    )
    await assert.rejects(
      EtcdStore.open({
        endpoints: cluster.endpoints,
        prefix: '/other',
        tls,
        auth: { user: 'loom', password: 'loom-pw' },
      }),
      /reading \/other\/resources\/ failed: .*permission denied/,
    )
  })
})
