/**
 * `loom up` waits for each proxy to listen by asking the proxy itself (its admin `/listeners`), not by connecting to
 * the port: another mesh on the machine may hold a port that this one found free a moment before its proxy tried to
 * bind it, and a connection would then reach the other mesh's proxy.
 */
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, describe, test } from 'node:test'
import { proxyListensOn } from '../src/runtime/up.js'
import { type RunningProxy, simpleBootstrap, startProxy, staticCluster } from './helpers/proxy.js'

describe('loom up: whether a proxy listens on its ports', () => {
  let proxy: RunningProxy
  let other: net.Server
  let otherPort: number
  before(async () => {
    proxy = await startProxy(simpleBootstrap([staticCluster('backend', [1])]))
    other = net.createServer((s) => s.destroy())
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r))
    otherPort = (other.address() as net.AddressInfo).port
  })
  after(async () => {
    await proxy?.stop()
    other?.close()
  })

  const adminPort = () => Number(proxy.admin.split(':').pop())

  test('its own listener: yes', async () => {
    assert.equal(await proxyListensOn(adminPort(), [proxy.ports.http!]), true)
  })

  test('a port another process listens on: no, though a connection to it succeeds', async () => {
    const connected = await new Promise<boolean>((r) => {
      const s = net.connect(otherPort, '127.0.0.1', () => {
        s.destroy()
        r(true)
      })
      s.once('error', () => r(false))
    })
    assert.equal(connected, true)
    assert.equal(await proxyListensOn(adminPort(), [otherPort]), false)
    assert.equal(await proxyListensOn(adminPort(), [proxy.ports.http!, otherPort]), false)
  })
})
