/**
 * API tokens: who may change the mesh through the control plane's HTTP API (`loom control --api-token-file`).
 *
 * The file holds one token a line, `<token> <role>`, the role `read` or `write`; `#` starts a comment (a whole line,
 * or after the role). Without a file the API works as it always has for the CLI, and the dashboard is read-only: a
 * browser's change always needs a write token. With a file, every call that changes state needs
 * `Authorization: Bearer <token>` of a write token (401 without a known token, 403 with a read one); reads stay
 * open. `writeAccess` is that decision, in one table.
 *
 * Tokens are kept as SHA-256 digests and compared in constant time (a digest of the presented token against every
 * entry, with no early exit), so neither a match's position nor a common prefix shows in the answer's timing. No
 * token, nor any part of one, goes into a log line or an error message: a bad line is named by its number.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { type FSWatcher, readFileSync, statSync, watch } from 'node:fs'
import { basename, dirname } from 'node:path'
import { log } from '../core/log.js'
import type { Refusal } from './dashboard.js'

export type TokenRole = 'read' | 'write'

/** One token of the file: its digest (never the token itself), its role and where it is. */
export interface TokenEntry {
  digest: Buffer
  role: TokenRole
  line: number
}

/** What the decision needs of the tokens: the role of a presented token, or null when it is none of them. */
export interface TokenLookup {
  roleOf(token: string): TokenRole | null
}

/** The token file cannot be used (its mode, a line); the message names the file and the line. */
export class TokenFileError extends Error {
  override name = 'TokenFileError'
}

/** Shorter tokens are refused: a token is a password that a script types, so it can be long and random. */
export const MIN_TOKEN_LENGTH = 16

/** What a token may be made of: visible ASCII, as an HTTP header value carries it without quoting. */
const TOKEN_CHARS = /^[\x21-\x7e]+$/

function digestOf(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/** Parses a token file's text; every problem is a TokenFileError naming `file` and the line. */
export function parseTokenFile(text: string, file: string): TokenEntry[] {
  const entries: TokenEntry[] = []
  const problems: string[] = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1
    const fields = raw.trim().split(/\s+/)
    if (fields[0] === '' || fields[0]!.startsWith('#')) return
    const c = fields.findIndex((f, j) => j > 0 && f.startsWith('#'))
    const [token, role, ...rest] = c < 0 ? fields : fields.slice(0, c)
    if (role === undefined || rest.length > 0) {
      problems.push(`${file}:${line}: a line is "<token> <role>", the role read or write`)
      return
    }
    if (role !== 'read' && role !== 'write') {
      problems.push(`${file}:${line}: the role is read or write, not "${role}"`)
      return
    }
    if (!TOKEN_CHARS.test(token!)) {
      problems.push(`${file}:${line}: a token is visible ASCII characters (no spaces or control characters)`)
      return
    }
    if (token!.length < MIN_TOKEN_LENGTH) {
      problems.push(
        `${file}:${line}: the token has ${token!.length} characters; ${MIN_TOKEN_LENGTH} or more are required ` +
          '(make one with: openssl rand -hex 32)',
      )
      return
    }
    const digest = digestOf(token!)
    const same = entries.find((e) => e.digest.equals(digest))
    if (same !== undefined) {
      problems.push(`${file}:${line}: the same token as line ${same.line}`)
      return
    }
    entries.push({ digest, role, line })
  })
  if (problems.length > 0) throw new TokenFileError(problems.join('\n'))
  return entries
}

/** The role of `token` among `entries`, in time that does not depend on which entry (if any) matches. */
export function lookupRole(entries: readonly TokenEntry[], token: string): TokenRole | null {
  const digest = digestOf(token)
  let found: TokenRole | null = null
  for (const e of entries) {
    // every entry is compared; the assignment is the only branch on the result
    if (timingSafeEqual(digest, e.digest)) found = e.role
  }
  return found
}

/** Why a token file may not be used for its mode, or null: others must neither read nor write it. */
export function tokenFileModeProblem(file: string): string | null {
  if (process.platform === 'win32') return null
  const mode = statSync(file).mode & 0o777
  if ((mode & 0o006) === 0) return null
  return (
    `${file}: the API token file is readable or writable by other users (mode ${mode.toString(8).padStart(4, '0')}); ` +
    `run chmod 600 ${file}`
  )
}

/** Reads and checks a token file (mode, then lines). */
export function readTokenFile(file: string): TokenEntry[] {
  let text: string
  try {
    const problem = tokenFileModeProblem(file)
    if (problem !== null) throw new TokenFileError(problem)
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if (err instanceof TokenFileError) throw err
    throw new TokenFileError(`${file}: cannot read the API token file (${(err as Error).message})`)
  }
  return parseTokenFile(text, file)
}

/**
 * The tokens of a file, read again when the file changes (watched through its directory, so an editor's
 * write-and-rename is seen) or on `reload()` (SIGHUP). A reload that fails keeps the tokens in use and logs why.
 */
export class ApiTokens implements TokenLookup {
  readonly file: string
  private entries: TokenEntry[]
  private watcher: FSWatcher | null = null
  private timer: NodeJS.Timeout | null = null

  private constructor(file: string, entries: TokenEntry[]) {
    this.file = file
    this.entries = entries
  }

  /** Reads the file; throws TokenFileError when it cannot be used (the control plane then refuses to start). */
  static open(file: string): ApiTokens {
    return new ApiTokens(file, readTokenFile(file))
  }

  roleOf(token: string): TokenRole | null {
    return lookupRole(this.entries, token)
  }

  /** How many tokens of each role (for the logs: counts only). */
  counts(): { read: number; write: number } {
    return {
      read: this.entries.filter((e) => e.role === 'read').length,
      write: this.entries.filter((e) => e.role === 'write').length,
    }
  }

  /** Reads the file again (`reason` goes to the log); false, and the tokens unchanged, when it cannot be used. */
  reload(reason = 'SIGHUP'): boolean {
    try {
      this.entries = readTokenFile(this.file)
    } catch (err) {
      log('error', 'api', 'API token file not reloaded: the previous tokens stay in use', {
        file: this.file,
        reason,
        error: (err as Error).message,
      })
      return false
    }
    log('info', 'api', 'API tokens reloaded', { file: this.file, reason, ...this.counts() })
    return true
  }

  /** Reloads on every change of the file (changes within 100 ms are read once); `reloaded` hears each outcome. */
  watch(reloaded?: (ok: boolean) => void): void {
    if (this.watcher !== null) return
    const name = basename(this.file)
    try {
      this.watcher = watch(dirname(this.file), { persistent: false }, (_event, changed) => {
        if (changed !== null && changed !== name) return
        if (this.timer !== null) clearTimeout(this.timer)
        this.timer = setTimeout(() => {
          this.timer = null
          const ok = this.reload('file changed')
          reloaded?.(ok)
        }, 100)
        this.timer.unref()
      })
      this.watcher.on('error', (err) => log('warn', 'api', 'API token file watch failed', { error: err.message }))
    } catch (err) {
      log('warn', 'api', 'cannot watch the API token file (SIGHUP reloads it)', {
        file: this.file,
        error: (err as Error).message,
      })
    }
  }

  close(): void {
    this.watcher?.close()
    this.watcher = null
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }
}

/** The token of an `Authorization: Bearer <token>` header; undefined without one, null when malformed. */
export function bearerToken(header: string | undefined): string | null | undefined {
  if (header === undefined || header === '') return undefined
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
  return m === null ? null : m[1]!
}

export const READ_ONLY_DASHBOARD =
  'the dashboard is read-only: start loom control with --api-token-file <file> and enter a token with write access'
export const WRITE_TOKEN_REQUIRED =
  'this change needs an API token with write access: Authorization: Bearer <token> ' +
  '(loom: --token or LOOM_API_TOKEN; the dashboard: its token field)'

/**
 * Whether a call that changes state may go on (null) or is refused, by the table:
 *
 *   token file | from a browser | Authorization          | answer
 *   none       | no             | anything               | go on (the CLI as without tokens)
 *   none       | yes            | anything               | 403 the dashboard is read-only
 *   given      | either         | none                   | 401 a write token is required
 *   given      | either         | not `Bearer <token>`   | 401 malformed
 *   given      | either         | unknown token          | 401 not a valid token
 *   given      | either         | read token             | 403 read access only
 *   given      | either         | write token            | go on
 */
export function writeAccess(
  tokens: TokenLookup | null,
  browser: boolean,
  authorization: string | undefined,
): Refusal | null {
  if (tokens === null) return browser ? { status: 403, message: READ_ONLY_DASHBOARD } : null
  const token = bearerToken(authorization)
  if (token === undefined) return { status: 401, message: WRITE_TOKEN_REQUIRED }
  if (token === null) return { status: 401, message: 'the Authorization header must be "Bearer <token>"' }
  const role = tokens.roleOf(token)
  if (role === null) return { status: 401, message: 'the API token is not valid: it is not in the token file' }
  if (role === 'read')
    return { status: 403, message: 'the API token has read access only: this change needs a token with write access' }
  return null
}
