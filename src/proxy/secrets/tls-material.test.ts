import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { CommonTlsContext, Cluster } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { makeCsr, makeLeaf, makeRoot } from '../../control/ca/pki-fixtures.js'
import { UpstreamCluster } from '../cluster/cluster.js'
import { SecretStore } from './store.js'
import { exactSpiffeIds, resolveTlsMaterial, trustDomainOf } from './tls-material.js'

const ISTIO: CommonTlsContext = {
  tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } }],
  combined_validation_context: {
    default_validation_context: {
      match_typed_subject_alt_names: [
        { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/reviews' } },
      ],
    },
    validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { ads: {} } },
  },
}

test("Istio's shape: the certificate from `default`, the roots from `ROOTCA`, the SAN matchers from the default context", () => {
  const store = new SecretStore()
  const issues: ConfigIssue[] = []
  let m = resolveTlsMaterial(ISTIO, store, 'ctx', issues)
  assert.deepEqual(issues, [])
  assert.deepEqual(m.missing, ['default', 'ROOTCA'])
  assert.deepEqual(m.secretNames, ['default', 'ROOTCA'])
  store.set('default', { kind: 'tls_certificate', certificateChainPem: 'CHAIN', privateKeyPem: 'KEY' })
  store.set('ROOTCA', { kind: 'validation_context', trustedCaPem: 'ROOTS' })
  m = resolveTlsMaterial(ISTIO, store, 'ctx', issues)
  assert.deepEqual([m.cert, m.key, m.ca, m.missing, m.fromSds], ['CHAIN', 'KEY', 'ROOTS', [], true])
  assert.deepEqual(exactSpiffeIds(m), ['spiffe://cluster.local/ns/default/sa/reviews'])
  assert.equal(trustDomainOf(m), 'cluster.local')
})

test('a secret of the wrong kind, or two validation sources, is a config issue with its path', () => {
  const store = new SecretStore()
  store.set('default', { kind: 'validation_context', trustedCaPem: 'ROOTS' })
  const issues: ConfigIssue[] = []
  resolveTlsMaterial({ ...ISTIO, validation_context: { trusted_ca: { inline_string: 'x' } } }, store, 'ctx', issues)
  assert.deepEqual(
    issues.map((i) => i.path),
    ['ctx.tls_certificate_sds_secret_configs[0].name', 'ctx'],
  )
})

test('a cluster whose secret arrives later: pending until then, its TLS options rebuilt when it comes and changes', async () => {
  const root = await makeRoot()
  const store = new SecretStore()
  const config = {
    name: 'reviews',
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: { cluster_name: 'reviews', endpoints: [] },
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
        common_tls_context: ISTIO,
      },
    },
  } as unknown as Cluster
  const cluster = new UpstreamCluster(config, { secrets: store })
  await cluster.start()
  assert.match(cluster.tls?.pending?.message ?? '', /^tls_secret: missing: .*"default", "ROOTCA"/)
  const leafPem = await makeLeaf(root, { uris: ['spiffe://cluster.local/ns/default/sa/ratings'] })
  const { keyPem } = await makeCsr()
  // makeLeaf does not return its key: a mismatched pair is refused and the pending options stay
  store.set('ROOTCA', { kind: 'validation_context', trustedCaPem: root.pem })
  store.set('default', { kind: 'tls_certificate', certificateChainPem: leafPem, privateKeyPem: keyPem })
  assert.ok(cluster.tls?.pending !== undefined, 'a key that does not match keeps the previous options')
  store.set('default', { kind: 'tls_certificate', certificateChainPem: root.pem, privateKeyPem: root.keyPem })
  const first = cluster.tls
  assert.equal(first?.pending, undefined)
  assert.equal(first?.maxVersion, 'TLSv1.3')
  assert.equal(first?.cert, root.pem)
  const other = await makeRoot({ name: 'CN=Other root' })
  store.set('default', { kind: 'tls_certificate', certificateChainPem: other.pem, privateKeyPem: other.keyPem })
  assert.notEqual(cluster.tls, first)
  assert.equal(cluster.tls?.cert, other.pem)
  cluster.stop()
  store.set('default', { kind: 'tls_certificate', certificateChainPem: root.pem, privateKeyPem: root.keyPem })
  assert.equal(cluster.tls?.cert, other.pem, 'a stopped cluster no longer follows the store')
})
