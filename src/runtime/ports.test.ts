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
