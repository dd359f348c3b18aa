/** SPIFFE ID parsing by the SPIFFE ID specification's rules: each broken rule has its own reason. */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseSpiffeId, SpiffeIdInvalid, spiffeId, workloadSpiffeId } from './spiffe.js'

function reason(text: string): string {
  const r = parseSpiffeId(text)
  return r.ok ? 'ok' : r.reason
}

describe('SPIFFE IDs', () => {
  test('valid IDs are split into trust domain and path', () => {
    const id = spiffeId('spiffe://cluster.local/ns/default/sa/reviews')
    assert.equal(id.trustDomain, 'cluster.local')
    assert.equal(id.path, '/ns/default/sa/reviews')
    assert.equal(spiffeId('spiffe://example.org').path, '')
    for (const ok of [
      'spiffe://a_b-c.9/x',
      'spiffe://td/Upper.Case-and_digits09',
      'spiffe://td/...',
      'spiffe://td/.a/a.',
      `spiffe://${'a'.repeat(255)}/x`,
    ])
      assert.equal(reason(ok), 'ok', ok)
  })

  const cases: [string, string][] = [
    ['', 'empty'],
    ['http://cluster.local/ns/a', 'wrong_scheme'],
    ['SPIFFE://cluster.local/ns/a', 'wrong_scheme'],
    ['spiffe:/cluster.local', 'wrong_scheme'],
    ['spiffe://', 'missing_trust_domain'],
    ['spiffe:///ns/a', 'missing_trust_domain'],
    [`spiffe://${'a'.repeat(256)}`, 'trust_domain_too_long'],
    ['spiffe://Cluster.local/ns/a', 'trust_domain_uppercase'],
    ['spiffe://cluster.local:8080/ns/a', 'trust_domain_port'],
    ['spiffe://user@cluster.local/ns/a', 'trust_domain_userinfo'],
    ['spiffe://clu%73ter/ns/a', 'trust_domain_bad_char'],
    ['spiffe://cluster.local?x=1', 'query_or_fragment'],
    ['spiffe://cluster.local/ns/a?x=1', 'query_or_fragment'],
    ['spiffe://cluster.local/ns/a#frag', 'query_or_fragment'],
    ['spiffe://cluster.local//a', 'empty_segment'],
    ['spiffe://cluster.local/', 'trailing_slash'],
    ['spiffe://cluster.local/ns/a/', 'trailing_slash'],
    ['spiffe://cluster.local/./a', 'dot_segment'],
    ['spiffe://cluster.local/ns/..', 'dot_segment'],
    ['spiffe://cluster.local/ns/a%20b', 'path_bad_char'],
    ['spiffe://cluster.local/ns/a b', 'path_bad_char'],
    ['spiffe://cluster.local/ns/é', 'path_bad_char'],
    [`spiffe://td/${'a'.repeat(2048)}`, 'too_long'],
  ]
  for (const [text, want] of cases) {
    test(`${JSON.stringify(text.length > 60 ? `${text.slice(0, 40)}…` : text)} → ${want}`, () => {
      assert.equal(reason(text), want)
    })
  }

  test('spiffeId throws with the reason and a message that says what is wrong', () => {
    assert.throws(
      () => spiffeId('spiffe://cluster.local:443/x'),
      (err: Error) =>
        err instanceof SpiffeIdInvalid && err.reason === 'trust_domain_port' && /cannot have a port/.test(err.message),
    )
  })

  test("a workload's ID is Istio's ns/<namespace>/sa/<service account>", () => {
    assert.equal(
      workloadSpiffeId('cluster.local', 'bookinfo', 'reviews').id,
      'spiffe://cluster.local/ns/bookinfo/sa/reviews',
    )
    // a "/" would make another workload's ID: refused, though the whole would be a valid SPIFFE ID
    assert.throws(() => workloadSpiffeId('cluster.local', 'kube-system/sa/admin/ns/x', 'c'), SpiffeIdInvalid)
    assert.throws(() => workloadSpiffeId('cluster.local', 'a', 'b/c'), SpiffeIdInvalid)
    assert.throws(() => workloadSpiffeId('cluster.local', '..', 'c'), SpiffeIdInvalid)
    assert.throws(() => workloadSpiffeId('cluster.local', 'a', ''), SpiffeIdInvalid)
  })
})
