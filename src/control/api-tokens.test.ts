import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import {
  ApiTokens,
  bearerToken,
  lookupRole,
  parseTokenFile,
  READ_ONLY_DASHBOARD,
  type TokenLookup,
  TokenFileError,
  WRITE_TOKEN_REQUIRED,
  writeAccess,
} from './api-tokens.js'

const W = 'w-0123456789abcdef0123'
const R = 'r-0123456789abcdef0123'

function tempFile(text: string, mode = 0o600): string {
  const file = join(mkdtempSync(join(tmpdir(), 'loom-tokens-')), 'tokens')
  writeFileSync(file, text)
  chmodSync(file, mode)
  return file
}

test('a token file: tokens with their roles, comments and blank lines skipped', () => {
  const entries = parseTokenFile(`# the operators\n${W} write   # ci\n\n   ${R}\tread\n#${W} read\n`, 't')
  assert.deepEqual(
    entries.map((e) => [e.role, e.line]),
    [
      ['write', 2],
      ['read', 4],
    ],
  )
  assert.equal(lookupRole(entries, W), 'write')
  assert.equal(lookupRole(entries, R), 'read')
  assert.equal(lookupRole(entries, `${W}x`), null)
  assert.equal(lookupRole(entries, W.slice(0, -1)), null)
  assert.equal(lookupRole([], W), null)
  // only digests are kept
  assert.ok(entries.every((e) => e.digest.length === 32 && !e.digest.toString('latin1').includes(W)))
})

test('every bad line is reported with its number, and no token text in the message', () => {
  const text = [
    `${W} admin`,
    `${R}`,
    'short write',
    `${W} write`,
    `${W} write`,
    `${R} read extra`,
    'tab\u0001bad-token-xx read',
  ].join('\n')
  assert.throws(
    () => parseTokenFile(text, 'tokens.txt'),
    (err: Error) => {
      assert.ok(err instanceof TokenFileError)
      const lines = err.message.split('\n')
      assert.deepEqual(
        lines.map((l) => l.split(':').slice(0, 2).join(':')),
        ['tokens.txt:1', 'tokens.txt:2', 'tokens.txt:3', 'tokens.txt:5', 'tokens.txt:6', 'tokens.txt:7'],
      )
      assert.match(lines[0]!, /role is read or write, not "admin"/)
      assert.match(lines[2]!, /5 characters; 16 or more/)
      assert.match(lines[3]!, /the same token as line 4/)
      assert.doesNotMatch(err.message, new RegExp(`${W}|${R}|short`))
      return true
    },
  )
})

test('Authorization: Bearer <token>', () => {
  assert.equal(bearerToken(undefined), undefined)
  assert.equal(bearerToken(''), undefined)
  assert.equal(bearerToken(`Bearer ${W}`), W)
  assert.equal(bearerToken(`bearer  ${W} `), W)
  assert.equal(bearerToken(`Basic ${W}`), null)
  assert.equal(bearerToken('Bearer'), null)
  assert.equal(bearerToken(`Bearer ${W} more`), null)
})

test('the decision table for a call that changes state', () => {
  const tokens: TokenLookup = {
    roleOf: (t) => lookupRole(parseTokenFile(`${W} write\n${R} read\n`, 't'), t),
  }
  const cases: [TokenLookup | null, boolean, string | undefined, number | null, RegExp | null][] = [
    [null, false, undefined, null, null], // the CLI without a token file: as ever
    [null, false, `Bearer ${R}`, null, null],
    [null, true, undefined, 403, /dashboard is read-only/],
    [null, true, `Bearer ${W}`, 403, /--api-token-file/], // no file: no token can write from a browser
    [tokens, false, undefined, 401, /write access/],
    [tokens, true, undefined, 401, /write access/],
    [tokens, false, `Basic ${W}`, 401, /Bearer <token>/],
    [tokens, false, 'Bearer not-a-known-token-at-all', 401, /not valid/],
    [tokens, false, `Bearer ${R}`, 403, /read access only/],
    [tokens, true, `Bearer ${R}`, 403, /read access only/],
    [tokens, false, `Bearer ${W}`, null, null],
    [tokens, true, `Bearer ${W}`, null, null],
  ]
  for (const [t, browser, auth, status, message] of cases) {
    const got = writeAccess(t, browser, auth)
    const what = `file ${t !== null}, browser ${browser}, ${auth ?? 'no authorization'}`
    assert.equal(got?.status ?? null, status, what)
    if (message !== null) assert.match(got!.message, message, what)
    if (got !== null) assert.ok(!got.message.includes(W) && !got.message.includes(R), what)
  }
  assert.equal(writeAccess(null, true, undefined)?.message, READ_ONLY_DASHBOARD)
  assert.equal(writeAccess(tokens, false, undefined)?.message, WRITE_TOKEN_REQUIRED)
})

test('a token file others can read or write is refused; its owner and group may read it', {
  skip: process.platform === 'win32',
}, () => {
  for (const mode of [0o644, 0o606, 0o602]) {
    const file = tempFile(`${W} write\n`, mode)
    assert.throws(() => ApiTokens.open(file), /readable or writable by other users \(mode 06\d\d\); run chmod 600/)
  }
  assert.equal(ApiTokens.open(tempFile(`${W} write\n`, 0o640)).roleOf(W), 'write')
  assert.throws(() => ApiTokens.open('/nonexistent/tokens'), /cannot read the API token file/)
})

test('reload: a new file replaces the tokens; a bad one keeps them', () => {
  const file = tempFile(`${W} write\n`)
  const tokens = ApiTokens.open(file)
  assert.deepEqual(tokens.counts(), { read: 0, write: 1 })
  writeFileSync(file, `${W} read\n${R} read\n`)
  assert.equal(tokens.reload(), true)
  assert.equal(tokens.roleOf(W), 'read')
  writeFileSync(file, `${W} owner\n`)
  assert.equal(tokens.reload(), false)
  assert.equal(tokens.roleOf(W), 'read')
  chmodSync(file, 0o644)
  writeFileSync(file, `${W} write\n`)
  assert.equal(tokens.reload(), false)
  assert.equal(tokens.roleOf(W), 'read')
})

test('watch: a file replaced by rename (as editors save) is read again', async () => {
  const file = tempFile(`${W} write\n`)
  const tokens = ApiTokens.open(file)
  const reloads: boolean[] = []
  let seen: () => void = () => {}
  tokens.watch((ok) => {
    reloads.push(ok)
    if (tokens.roleOf(R) === 'write') seen()
  })
  try {
    const next = `${file}.new`
    writeFileSync(next, `${R} write\n`, { mode: 0o600 })
    // the watcher keeps no process alive (the control plane's servers do): the guard timer does here
    let guard: NodeJS.Timeout | undefined
    const reloaded = new Promise<void>((resolve, reject) => {
      seen = resolve
      guard = setTimeout(() => reject(new Error('the change was not seen in 5 s')), 5000)
    })
    renameSync(next, file)
    await reloaded.finally(() => clearTimeout(guard))
    assert.equal(tokens.roleOf(W), null)
    assert.ok(reloads.every((ok) => ok))
  } finally {
    tokens.close()
  }
})
