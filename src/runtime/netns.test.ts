import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LoomError } from '../core/errors.js'
import { captureRules, EXCLUDE_OUTBOUND_IP_RANGES, netNames, parseCapture } from './netns.js'

describe('transparent mode: capture rules', () => {
  const rules = captureRules({
    excludeInboundPorts: [15020],
    excludeOutboundPorts: [5432],
    excludeOutboundCidrs: ['10.1.0.0/16'],
  })
  const lines = rules.split('\n')
  it("has istio-iptables' chains, inbound to 15006 and outbound to 15001", () => {
    for (const chain of ['ISTIO_INBOUND', 'ISTIO_IN_REDIRECT', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT'])
      assert.ok(lines.includes(`:${chain} - [0:0]`), chain)
    assert.ok(lines.includes('-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006'))
    assert.ok(lines.includes('-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001'))
    assert.equal(lines.at(-2), 'COMMIT')
  })
  it("lets the sidecar's user and group out, and what is excluded, before the redirect", () => {
    const redirect = lines.indexOf('-A ISTIO_OUTPUT -j ISTIO_REDIRECT')
    for (const rule of [
      '-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN',
      '-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN',
      '-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN',
      '-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN',
      '-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN',
    ]) {
      const at = lines.indexOf(rule)
      assert.ok(at >= 0 && at < redirect, rule)
    }
    const inbound = lines.indexOf('-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT')
    const excluded = lines.indexOf('-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN')
    assert.ok(excluded >= 0 && excluded < inbound)
  })
})

describe('transparent mode: annotations and names', () => {
  it('reads the exclusions, naming a bad value', () => {
    const c = parseCapture(
      {
        'traffic.sidecar.istio.io/excludeInboundPorts': '9100, 9101',
        [EXCLUDE_OUTBOUND_IP_RANGES]: '10.0.0.0/8,192.168.1.5',
      },
      'w.yaml: Workload x',
    )
    assert.deepEqual(c.excludeInboundPorts, [9100, 9101])
    assert.deepEqual(c.excludeOutboundCidrs, ['10.0.0.0/8', '192.168.1.5/32'])
    assert.throws(
      () => parseCapture({ 'traffic.sidecar.istio.io/excludeOutboundPorts': 'http' }, 'w.yaml: Workload x'),
      (e: unknown) => e instanceof LoomError && /excludeOutboundPorts.*"http" is not a port/.test(e.message),
    )
  })
  it('names fit Linux interface names and differ by data dir', () => {
    const a = netNames('/tmp/a')
    assert.ok(`${a.vethPrefix}p199`.length <= 15 && a.bridge.length <= 15)
    assert.notEqual(a.tag, netNames('/tmp/b').tag)
  })
})
