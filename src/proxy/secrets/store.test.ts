import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type Secret, SecretStore } from './store.js'

const cert = (n: string): Secret => ({ kind: 'tls_certificate', certificateChainPem: n, privateKeyPem: `key-${n}` })

describe('SecretStore', () => {
  test('set, get, replace and delete tell the subscribers of that name only; an equal value changes nothing', () => {
    const s = new SecretStore()
    const seen: string[] = []
    const off = s.subscribe('default', (name, v) =>
      seen.push(`${name}:${v === null ? 'gone' : (v as { certificateChainPem: string }).certificateChainPem}`),
    )
    s.subscribe('ROOTCA', () => seen.push('root'))
    s.set('default', cert('a'))
    s.set('default', cert('a'))
    assert.equal(s.version, 1)
    s.set('default', cert('b'))
    assert.equal((s.get('default') as { certificateChainPem: string }).certificateChainPem, 'b')
    s.delete('default')
    s.delete('default')
    assert.deepEqual(seen, ['default:a', 'default:b', 'default:gone'])
    assert.equal(s.version, 3)
    off()
    s.set('default', cert('c'))
    assert.deepEqual(seen, ['default:a', 'default:b', 'default:gone'])
    s.set('ROOTCA', { kind: 'validation_context', trustedCaPem: 'r' })
    assert.deepEqual(s.names().sort(), ['ROOTCA', 'default'])
    assert.equal(seen.at(-1), 'root')
  })
})
