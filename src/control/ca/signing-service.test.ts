import assert from 'node:assert/strict'
import { createPrivateKey, sign, X509Certificate } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { CertificateAuthority } from './ca.js'
import { makeCsr, tamperCsr } from './pki-fixtures.js'
import { SigningService } from './signing-service.js'
import { TokenIssuer } from './tokens.js'

const ID = 'spiffe://cluster.local/ns/shop/sa/reviews'

describe('the certificate signing service', () => {
  let svc: SigningService
  let tokens: TokenIssuer
  before(async () => {
    const ca = await CertificateAuthority.open({ dir: mkdtempSync(join(tmpdir(), 'loom-signing-')) })
    tokens = new TokenIssuer(Buffer.alloc(32, 1))
    svc = new SigningService(ca, tokens)
  })
  const bearer = (ns = 'shop', sa = 'reviews') => `Bearer ${tokens.issue(ns, sa).token}`
  const refusal = async (call: () => Promise<unknown>, code: grpc.status, reason: string) => {
    const before = svc.stats.refused[reason as 'bad_csr'] ?? 0
    await assert.rejects(call, (e: { code: grpc.status; reason: string }) => e.code === code && e.reason === reason)
    assert.equal(svc.stats.refused[reason as 'bad_csr'], before + 1, `${reason} is counted`)
  }

  test('a token gets a certificate for its identity, leaf first, with the trust bundle; validity_seconds shortens it', async () => {
    const csr = await makeCsr()
    const res = await svc.create({ csr: csr.pem, validity_seconds: 120 }, bearer())
    const leaf = new X509Certificate(res.certificate_chain![0]!)
    assert.equal(leaf.subjectAltName, `URI:${ID}`)
    assert.ok(leaf.checkIssued(new X509Certificate(res.trust_bundle![0]!)))
    const life = Date.parse(leaf.validTo) - Date.now()
    assert.ok(life <= 121_000 && life > 60_000, `${life} ms`)
    // never longer than the CA's TTL
    const long = await svc.create({ csr: (await makeCsr()).pem, validity_seconds: 10 * 86_400 }, bearer())
    assert.ok(Date.parse(new X509Certificate(long.certificate_chain![0]!).validTo) - Date.now() <= 24 * 3600_000)
  })

  test('each refusal has its gRPC status and reason, and is counted', async () => {
    const csr = (await makeCsr()).pem
    await refusal(() => svc.create({ csr }, undefined), grpc.status.UNAUTHENTICATED, 'no_credentials')
    await refusal(() => svc.create({ csr }, 'Basic abc'), grpc.status.UNAUTHENTICATED, 'bad_token')
    await refusal(
      () => svc.create({ csr }, `Bearer ${new TokenIssuer(Buffer.alloc(32, 2)).issue('shop', 'reviews').token}`),
      grpc.status.UNAUTHENTICATED,
      'bad_token',
    )
    const expired = new TokenIssuer(Buffer.alloc(32, 1), () => Date.now() - 7200_000).issue('shop', 'reviews').token
    await refusal(() => svc.create({ csr }, `Bearer ${expired}`), grpc.status.UNAUTHENTICATED, 'expired_token')
    const admin = (await makeCsr({ uris: ['spiffe://cluster.local/ns/shop/sa/admin'] })).pem
    await refusal(() => svc.create({ csr: admin }, bearer()), grpc.status.PERMISSION_DENIED, 'identity_mismatch')
    await refusal(() => svc.create({ csr: tamperCsr(csr) }, bearer()), grpc.status.INVALID_ARGUMENT, 'bad_csr')
    await refusal(() => svc.create({ csr: 'not a csr' }, bearer()), grpc.status.INVALID_ARGUMENT, 'bad_csr')
    await refusal(() => svc.create({}, bearer()), grpc.status.INVALID_ARGUMENT, 'bad_csr')
  })

  test('a renewal by the current certificate keeps the identity; a forged signature or a stranger chain does not renew', async () => {
    const a = await makeCsr({ uris: [ID] })
    const chain = (await svc.create({ csr: a.pem }, bearer())).certificate_chain!.join('')
    const key = createPrivateKey(a.keyPem)
    const next = (await makeCsr()).pem
    const renewed = await svc.create(
      {
        csr: next,
        current_certificate_chain: chain,
        csr_signature: sign('sha256', Buffer.from(next), key).toString('base64'),
      },
      undefined,
    )
    assert.equal(new X509Certificate(renewed.certificate_chain![0]!).subjectAltName, `URI:${ID}`)
    assert.equal(svc.stats.renewed, 1)
    // a signature over another CSR
    await refusal(
      () =>
        svc.create(
          {
            csr: next,
            current_certificate_chain: chain,
            csr_signature: sign('sha256', Buffer.from(a.pem), key).toString('base64'),
          },
          undefined,
        ),
      grpc.status.UNAUTHENTICATED,
      'bad_renewal_signature',
    )
    await refusal(
      () => svc.create({ csr: next, current_certificate_chain: 'garbage', csr_signature: 'AA==' }, undefined),
      grpc.status.UNAUTHENTICATED,
      'bad_certificate',
    )
  })
})
