/**
 * `loom control`'s certificate authority as a real process: the root generated in the data directory and
 * reloaded, a key others can read refused at start, a supplied CA's problems named with their files, the CA flags'
 * own checks, and `loom control rotate-root`.
 */
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { makeRoot } from '../src/control/ca/pki-fixtures.js'
import { spawnLoom } from './helpers/control.js'
import { runLoom } from './helpers/proxy.js'

let base: string
before(() => {
  base = mkdtempSync(join(tmpdir(), 'loom-ca-cli-'))
})
after(() => rmSync(base, { recursive: true, force: true }))

const ADDR = ['--api', '127.0.0.1:0', '--xds', '127.0.0.1:0']

describe('loom control: the CA', () => {
  test('generates its root in <data-dir>/ca on first start and loads the same root on the next', async () => {
    const dataDir = join(base, 'gen')
    const first = await spawnLoom(['control', '--data-dir', dataDir, ...ADDR, '--trust-domain', 'prod.example'])
    assert.equal(first.ready.trust_domain, 'prod.example')
    await first.stop()
    const key = join(dataDir, 'ca', 'root-key.pem')
    const cert = join(dataDir, 'ca', 'root-cert.pem')
    assert.equal(statSync(key).mode & 0o777, 0o600)
    assert.equal(statSync(cert).mode & 0o777, 0o644)
    const fp = new X509Certificate(readFileSync(cert)).fingerprint256
    assert.match(new X509Certificate(readFileSync(cert)).subject, /O=prod\.example/)
    const second = await spawnLoom(['control', '--data-dir', dataDir, ...ADDR])
    assert.match(second.stderr(), new RegExp(`"msg":"certificate authority ready".*"root":"${fp}"`))
    await second.stop()

    chmodSync(key, 0o644)
    const refused = await runLoom(['control', '--data-dir', dataDir, ...ADDR])
    assert.equal(refused.code, 1)
    assert.match(refused.stderr, /the private key is accessible by group or others \(mode 0644\); run chmod 600/)
    chmodSync(key, 0o600)

    const rotated = await runLoom(['control', 'rotate-root', '--data-dir', dataDir, '--ca-rotation-overlap', '36h'])
    assert.equal(rotated.code, 0, rotated.stderr)
    assert.match(rotated.stdout, new RegExp(`previous root ${fp} trusted until \\d{4}-`))
    const state = JSON.parse(readFileSync(join(dataDir, 'ca', 'ca-state.json'), 'utf8'))
    assert.equal(state.retiring[0].fingerprint256, fp)
    assert.notEqual(new X509Certificate(readFileSync(cert)).fingerprint256, fp)
  })

  test('a supplied CA with problems is refused, each with its file', async () => {
    const dir = join(base, 'bad')
    const root = await makeRoot({ ca: false })
    const other = await makeRoot()
    const { mkdirSync } = await import('node:fs')
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'ca-cert.pem'), root.pem)
    writeFileSync(join(dir, 'ca-key.pem'), other.keyPem, { mode: 0o600 })
    const r = await runLoom([
      'control',
      '--data-dir',
      join(dir, 'data'),
      ...ADDR,
      '--ca-cert',
      join(dir, 'ca-cert.pem'),
      '--ca-key',
      join(dir, 'ca-key.pem'),
    ])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /ca-key\.pem: the private key does not match the certificate in .*ca-cert\.pem/)
    assert.match(r.stderr, /ca-cert\.pem: "CN=Test root, O=Example" is not a CA certificate/)
  })

  test('the CA flags are checked', async () => {
    const cases: [string[], RegExp][] = [
      [['--cert-ttl', 'a day'], /--cert-ttl needs a duration such as 24h/],
      [['--ca-cert', 'x.pem'], /--ca-cert and --ca-key go together/],
      [['--ca-chain', 'x.pem'], /--ca-chain needs --ca-cert and --ca-key/],
      [['--ca-key-type', 'dsa'], /--ca-key-type must be ecdsa-p256 or rsa-2048/],
      [['--trust-domain', 'Cluster.Local'], /trust domain "Cluster.Local": the trust domain must be lower case/],
    ]
    for (const [flags, msg] of cases) {
      const r = await runLoom(['control', '--data-dir', join(base, 'flags'), ...ADDR, ...flags])
      assert.notEqual(r.code, 0, flags.join(' '))
      assert.match(r.stderr, msg)
    }
    const help = await runLoom(['control', '--help'])
    for (const flag of ['--trust-domain', '--cert-ttl', '--ca-cert', '--ca-key', '--ca-chain', '--ca-rotation-overlap'])
      assert.ok(help.stdout.includes(flag), flag)
  })
})
