import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import * as net from 'node:net'
import { test } from 'node:test'
import { freePort } from './ports.js'

test('freePort never hands out the same port twice, even though the kernel reuses released ports', async () => {
  // 2000 draws from the ~22k ports below the ephemeral range: without the memory of what was handed out, dozens would
  // repeat
  const seen = new Set<number>()
  for (let i = 0; i < 2000; i++) {
    const p = await freePort()
    assert.ok(!seen.has(p), `port ${p} handed out twice (draw ${i})`)
    seen.add(p)
  }
})

test('freePort draws below the ephemeral range, where no outgoing connection can take the port', async () => {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
  for (let i = 0; i < 50; i++) {
    const p = await freePort()
    assert.ok(p >= 10_000 && p < low!, `port ${p}`)
  }
  const any = await freePort(0)
  assert.ok(any >= 10_000 && any < low!, `port ${any} for preferred 0`)
})

test('freePort returns a preferred port when it is free, another one when it is taken', async () => {
  const preferred = await freePort()
  // handed out already: not returned again
  assert.notEqual(await freePort(preferred), preferred)
  const busy = net.createServer()
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r))
  const taken = (busy.address() as net.AddressInfo).port
  try {
    assert.notEqual(await freePort(taken), taken)
  } finally {
    busy.close()
  }
})

test("freePort never hands out a port that fetch refuses (10080 is one of the Fetch standard's bad ports)", async () => {
  const { fetchBlocksPort } = await import('./ports.js')
  assert.ok(fetchBlocksPort(10080))
  assert.ok(fetchBlocksPort(6000))
  assert.ok(!fetchBlocksPort(10081))
  // the list is the one fetch applies: 10080 fails before any connection is tried
  await assert.rejects(
    fetch('http://127.0.0.1:10080/'),
    (e: Error & { cause?: Error }) => e.cause?.message === 'bad port',
  )
  // the draw lands on 10080 first (Math.random steered for one call), then anywhere: 10080 is skipped
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
  const random = Math.random
  let first = true
  Math.random = () => {
    if (!first) return random()
    first = false
    return 80.5 / (low! - 10_000)
  }
  try {
    assert.notEqual(await freePort(), 10080)
    assert.equal(first, false, 'the draw used Math.random')
  } finally {
    Math.random = random
  }
})
