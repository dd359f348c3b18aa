import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  fqdnError,
  gatewayNameError,
  ipOrCidrError,
  isDns1123Subdomain,
  parseDurationMs,
  parseDurationNs,
  qualifiedNameError,
  wildcardDomainError,
} from './common.js'

describe('durations, as Istio writes them', () => {
  const cases: [string, number | null][] = [
    ['1s', 1000],
    ['0.5s', 500],
    ['1.5s', 1500],
    ['500ms', 500],
    ['3m', 180_000],
    ['1h30m', 5_400_000],
    ['1m0.5s', 60_500],
    ['.25s', 250],
    ['300s', 300_000],
    ['250us', 0.25],
    ['0', 0],
    ['-1s', -1000],
    ['1', null],
    ['s', null],
    ['1 s', null],
    ['1d', null],
    ['', null],
    ['1s2', null],
  ]
  for (const [text, ms] of cases) {
    test(JSON.stringify(text), () => assert.equal(parseDurationMs(text), ms))
  }
  test('nanosecond precision is kept', () => {
    assert.equal(parseDurationNs('1.000000001s'), 1_000_000_001n)
    assert.equal(parseDurationNs('2h'), 7_200_000_000_000n)
  })
})

describe('names and addresses', () => {
  test('wildcard domains', () => {
    for (const ok of [
      '*',
      '*.example.com',
      'reviews',
      'reviews.prod.svc.cluster.local',
      '*x',
      'istio.io.',
      'Reviews',
    ]) {
      assert.equal(wildcardDomainError(ok), null, ok)
    }
    for (const bad of ['', 'foo*', 'a..b', 'example.123', '-a.com', `${'a'.repeat(64)}.com`, 'a_b.com']) {
      assert.notEqual(wildcardDomainError(bad), null, bad)
    }
    assert.notEqual(fqdnError('*.example.com'), null)
  })
  test('gateway references', () => {
    assert.equal(gatewayNameError('bookinfo-gateway'), null)
    assert.equal(gatewayNameError('istio-system/ingress'), null)
    assert.match(gatewayNameError('/x') ?? '', /cannot be empty/)
    assert.match(gatewayNameError('Istio_System/x') ?? '', /namespace/)
  })
  test('IPs and CIDRs', () => {
    for (const ok of ['1.2.3.4', '10.0.0.0/8', '2001:db8::/32', '::1']) assert.equal(ipOrCidrError(ok), null, ok)
    for (const bad of ['1.2.3', '10.0.0.0/33', 'fe80::/129', 'host', '1.2.3.4/'])
      assert.notEqual(ipOrCidrError(bad), null, bad)
  })
  test('Kubernetes names and label keys', () => {
    assert.ok(isDns1123Subdomain('reviews.v1'))
    assert.ok(!isDns1123Subdomain('Reviews'))
    assert.equal(qualifiedNameError('app.kubernetes.io/name'), null)
    assert.notEqual(qualifiedNameError('-app'), null)
    assert.notEqual(qualifiedNameError('Bad_Prefix/name'), null)
  })
})
