import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import { test } from 'node:test'
import type { HttpConnectionManager } from '../../config/envoy.js'
import { Headers } from './headers.js'
import { createHash, X509Certificate } from 'node:crypto'
import type { PeerCertificate } from 'node:tls'
import { makeLeaf, makeRoot } from '../../control/ca/pki-fixtures.js'
import { connectionPeer } from '../identity/connection-peer.js'
import { type ClientCert, XfccPolicy } from './xfcc.js'

const XFCC = 'x-forwarded-client-cert'
const peer: ClientCert = {
  by: 'spiffe://cluster.local/ns/default/sa/server',
  hash: 'ab'.repeat(32),
  subject: '',
  uris: ['spiffe://cluster.local/ns/default/sa/client'],
  dns: [],
  certPem: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n',
  chainPem: '',
}
const plainSocket = () => ({}) as Socket

const policy = (mode?: HttpConnectionManager['forward_client_cert_details'], details = {}) =>
  new XfccPolicy({
    forward_client_cert_details: mode,
    set_current_client_cert_details: details,
  } as HttpConnectionManager)

test("Istio's element: By, Hash, Subject, URI", () => {
  const e = policy('APPEND_FORWARD', { subject: true, dns: true, uri: true }).element(peer)
  assert.equal(e, `By=${peer.by};Hash=${peer.hash};Subject="";URI=${peer.uris[0]}`)
  const full = policy('SANITIZE_SET', { cert: true }).element(peer)
  assert.equal(full, `By=${peer.by};Hash=${peer.hash};Cert="${encodeURIComponent(peer.certPem)}"`)
})

test('without a client certificate every mode but ALWAYS_FORWARD_ONLY removes a client-sent header', () => {
  for (const mode of ['SANITIZE', 'FORWARD_ONLY', 'APPEND_FORWARD', 'SANITIZE_SET', undefined] as const) {
    const h = new Headers([XFCC, 'By=spiffe://evil/x', 'host', 'a'])
    policy(mode).apply(h, plainSocket())
    assert.equal(h.get(XFCC), undefined, String(mode))
    assert.equal(h.get('host'), 'a')
  }
  const h = new Headers([XFCC, 'By=spiffe://evil/x'])
  policy('ALWAYS_FORWARD_ONLY').apply(h, null)
  assert.equal(h.get(XFCC), 'By=spiffe://evil/x')
})

test('on an mTLS connection: SANITIZE removes, FORWARD_ONLY keeps, APPEND_FORWARD appends, SANITIZE_SET replaces', async () => {
  const root = await makeRoot()
  const leaf = new X509Certificate(await makeLeaf(root, { uris: [peer.uris[0]!], dns: ['client.default.svc'] }))
  const detailed = { raw: leaf.raw, subjectaltname: leaf.subjectAltName, subject: {} } as unknown as PeerCertificate
  let reads = 0
  // a verified TLS socket as the listener leaves it: its peer's certificate, its own with a URI SAN
  const socket = {
    authorized: true,
    getPeerCertificate: () => {
      reads++
      return detailed
    },
    getCertificate: () => ({ subjectaltname: `URI:${peer.by}` }),
  } as unknown as Socket
  const rec = connectionPeer(socket)!
  assert.equal(rec.hash, createHash('sha256').update(leaf.raw).digest('hex'))
  assert.deepEqual(rec.dns, ['client.default.svc'])
  assert.equal(rec.by, peer.by)
  const istio = { subject: true, dns: true, uri: true }
  const mine = `By=${peer.by};Hash=${rec.hash};Subject="";URI=${peer.uris[0]};DNS=client.default.svc`
  const run = (mode: HttpConnectionManager['forward_client_cert_details']) => {
    const h = new Headers([XFCC, 'By=spiffe://td/a;Hash=00'])
    policy(mode, istio).apply(h, socket)
    return h.getAll(XFCC)
  }
  assert.deepEqual(run('SANITIZE'), [])
  assert.deepEqual(run('FORWARD_ONLY'), ['By=spiffe://td/a;Hash=00'])
  assert.deepEqual(run('APPEND_FORWARD'), [`By=spiffe://td/a;Hash=00,${mine}`])
  assert.deepEqual(run('SANITIZE_SET'), [mine])
  assert.equal(connectionPeer(socket), rec, 'one record per connection')
  assert.equal(reads, 1, 'the certificate is read once')
})

test('a socket whose client presented no verified certificate has no peer (SANITIZE, APPEND_FORWARD alike)', () => {
  const unverified = { authorized: false, getPeerCertificate: () => ({ raw: Buffer.from('x') }) } as unknown as Socket
  assert.equal(connectionPeer(unverified), null)
  const h = new Headers([XFCC, 'By=spiffe://evil/x'])
  policy('APPEND_FORWARD', { uri: true }).apply(h, unverified)
  assert.equal(h.get(XFCC), undefined)
})

test('a head the parser saw no XFCC in is not scanned; appending adds the element', () => {
  const h = new Headers(['host', 'a'])
  h.xfccAbsent = true
  policy().apply(h, plainSocket())
  assert.deepEqual(h.list, ['host', 'a'])
  const socket = {
    authorized: true,
    getPeerCertificate: () => ({ raw: Buffer.from('der'), subjectaltname: `URI:${peer.uris[0]}`, subject: {} }),
    getCertificate: () => null,
  } as unknown as Socket
  const m = new Headers(['host', 'a'])
  m.xfccAbsent = true
  policy('APPEND_FORWARD', { uri: true }).apply(m, socket)
  assert.deepEqual(m.getAll(XFCC), [`Hash=${createHash('sha256').update('der').digest('hex')};URI=${peer.uris[0]}`])
})

test("the element is built on a connection's first request and reused by its later ones, per policy", () => {
  const socket = {
    authorized: true,
    getPeerCertificate: () => ({ raw: Buffer.from('der'), subjectaltname: `URI:${peer.uris[0]}`, subject: {} }),
    getCertificate: () => null,
  } as unknown as Socket
  const uri = policy('APPEND_FORWARD', { uri: true })
  let built = 0
  const element = uri.element.bind(uri)
  uri.element = (c) => {
    built++
    return element(c)
  }
  const hash = createHash('sha256').update('der').digest('hex')
  for (let i = 0; i < 3; i++) {
    const h = new Headers(['host', 'a'])
    h.xfccAbsent = true
    uri.apply(h, socket)
    assert.deepEqual(h.getAll(XFCC), [`Hash=${hash};URI=${peer.uris[0]}`])
  }
  assert.equal(built, 1, 'one element per connection and policy')
  // another connection manager's policy on the same connection (a listener update) writes its own details
  const h = new Headers([XFCC, 'By=spiffe://td/a;Hash=00'])
  policy('SANITIZE_SET', { subject: true }).apply(h, socket)
  assert.deepEqual(h.getAll(XFCC), [`Hash=${hash};Subject=""`])
  const again = new Headers(['host', 'a'])
  again.xfccAbsent = true
  uri.apply(again, socket)
  assert.deepEqual(again.getAll(XFCC), [`Hash=${hash};URI=${peer.uris[0]}`])
})
