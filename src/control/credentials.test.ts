import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { readCredentials } from './credentials.js'

const dir = mkdtempSync(join(tmpdir(), 'loom-creds-'))
after(() => rmSync(dir, { recursive: true, force: true }))

function put(name: string, files: Record<string, string>): void {
  mkdirSync(join(dir, name), { recursive: true })
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, name, f), text)
}

test('credentials: tls.crt/tls.key/ca.crt, or the generic Secret keys cert/key/cacert', () => {
  put('shop', { 'tls.crt': 'C', 'tls.key': 'K', 'ca.crt': 'CA' })
  put('generic', { cert: 'C2', key: 'K2' })
  put('shop-cacert', { 'ca.crt': 'CA2' })
  put('half', { 'tls.crt': 'C3' })
  put('Not_A_Name', { 'tls.crt': 'C', 'tls.key': 'K' })
  assert.deepEqual(
    [...readCredentials(dir)],
    [
      ['generic', { cert: 'C2', key: 'K2' }],
      ['shop', { cert: 'C', key: 'K', ca: 'CA' }],
      ['shop-cacert', { ca: 'CA2' }],
    ],
  )
  assert.equal(readCredentials(join(dir, 'missing')).size, 0)
})
