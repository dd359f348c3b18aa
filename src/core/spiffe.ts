/**
 * SPIFFE IDs (`spiffe://<trust-domain>/<path>`), parsed and validated by the SPIFFE ID specification's rules:
 *
 * - the scheme is `spiffe`, in lower case, followed by `://`;
 * - the trust domain is not empty, at most 255 characters of `a-z 0-9 . - _` (lower case only: no port, no
 *   userinfo, no percent-encoding);
 * - the path is empty or a sequence of `/segment`, each segment non-empty, not `.` or `..`, of `a-z A-Z 0-9 . - _`;
 *   no trailing slash, no query, no fragment;
 * - the whole ID is at most 2048 bytes.
 *
 * Each rule broken has its own reason, so a refusal says exactly what is wrong. Used by the control plane's CA
 * (building the ID of an identity) and by the proxies (checking a peer's certificate).
 */

export interface SpiffeId {
  /** the whole ID, as given */
  readonly id: string
  readonly trustDomain: string
  /** '' for a trust domain's own ID, else starts with '/' */
  readonly path: string
}

export type SpiffeIdError =
  | 'empty'
  | 'too_long'
  | 'wrong_scheme'
  | 'missing_trust_domain'
  | 'trust_domain_too_long'
  | 'trust_domain_uppercase'
  | 'trust_domain_port'
  | 'trust_domain_userinfo'
  | 'trust_domain_bad_char'
  | 'query_or_fragment'
  | 'empty_segment'
  | 'dot_segment'
  | 'trailing_slash'
  | 'path_bad_char'

const MESSAGES: Record<SpiffeIdError, string> = {
  empty: 'the SPIFFE ID is empty',
  too_long: 'a SPIFFE ID is at most 2048 bytes',
  wrong_scheme: 'a SPIFFE ID starts with "spiffe://" (lower case)',
  missing_trust_domain: 'the trust domain is missing',
  trust_domain_too_long: 'a trust domain is at most 255 characters',
  trust_domain_uppercase: 'the trust domain must be lower case',
  trust_domain_port: 'the trust domain cannot have a port',
  trust_domain_userinfo: 'the trust domain cannot have userinfo (user@)',
  trust_domain_bad_char: 'trust domain characters are limited to a-z, 0-9, ".", "-" and "_"',
  query_or_fragment: 'a SPIFFE ID cannot have a query or a fragment',
  empty_segment: 'path segments cannot be empty ("//")',
  dot_segment: 'path segments cannot be "." or ".."',
  trailing_slash: 'the path cannot end with "/"',
  path_bad_char: 'path characters are limited to a-z, A-Z, 0-9, ".", "-" and "_"',
}

export class SpiffeIdInvalid extends Error {
  override name = 'SpiffeIdInvalid'
  readonly reason: SpiffeIdError
  constructor(
    readonly input: string,
    reason: SpiffeIdError,
  ) {
    super(`invalid SPIFFE ID "${input}": ${MESSAGES[reason]}`)
    this.reason = reason
  }
}

const SCHEME = 'spiffe://'
const MAX_ID_BYTES = 2048
const MAX_TRUST_DOMAIN = 255

function tdChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f
}

function pathChar(c: number): boolean {
  return tdChar(c) || (c >= 0x41 && c <= 0x5a)
}

/** Why `td` is not a valid trust domain name, or null if it is. */
export function trustDomainError(td: string): SpiffeIdError | null {
  if (td === '') return 'missing_trust_domain'
  if (td.length > MAX_TRUST_DOMAIN) return 'trust_domain_too_long'
  for (let i = 0; i < td.length; i++) {
    const c = td.charCodeAt(i)
    if (tdChar(c)) continue
    if (c >= 0x41 && c <= 0x5a) return 'trust_domain_uppercase'
    if (c === 0x3a) return 'trust_domain_port'
    if (c === 0x40) return 'trust_domain_userinfo'
    if (c === 0x3f || c === 0x23) return 'query_or_fragment'
    return 'trust_domain_bad_char'
  }
  return null
}

/** Why `path` ('' or '/a/b') is not a valid SPIFFE ID path, or null if it is. */
export function pathError(path: string): SpiffeIdError | null {
  if (path === '') return null
  if (path.charCodeAt(0) !== 0x2f) return 'path_bad_char'
  let segStart = 1
  for (let i = 1; i <= path.length; i++) {
    const c = i === path.length ? 0x2f : path.charCodeAt(i)
    if (c === 0x2f) {
      const len = i - segStart
      if (len === 0) return i === path.length ? 'trailing_slash' : 'empty_segment'
      if ((len === 1 && path[segStart] === '.') || (len === 2 && path.startsWith('..', segStart))) return 'dot_segment'
      segStart = i + 1
      continue
    }
    if (c === 0x3f || c === 0x23) return 'query_or_fragment'
    if (!pathChar(c)) return 'path_bad_char'
  }
  return null
}

/** Parses a SPIFFE ID; the result says why when it is not one. */
export function parseSpiffeId(text: string): { ok: true; id: SpiffeId } | { ok: false; reason: SpiffeIdError } {
  if (text === '') return { ok: false, reason: 'empty' }
  if (Buffer.byteLength(text) > MAX_ID_BYTES) return { ok: false, reason: 'too_long' }
  if (!text.startsWith(SCHEME)) return { ok: false, reason: 'wrong_scheme' }
  const rest = text.slice(SCHEME.length)
  const slash = rest.indexOf('/')
  const td = slash === -1 ? rest : rest.slice(0, slash)
  const path = slash === -1 ? '' : rest.slice(slash)
  const reason = trustDomainError(td) ?? pathError(path)
  if (reason !== null) return { ok: false, reason }
  return { ok: true, id: { id: text, trustDomain: td, path } }
}

/** Parses a SPIFFE ID or throws `SpiffeIdInvalid` with the reason. */
export function spiffeId(text: string): SpiffeId {
  const r = parseSpiffeId(text)
  if (!r.ok) throw new SpiffeIdInvalid(text, r.reason)
  return r.id
}

/** The message for a reason, e.g. for a CLI error. */
export function spiffeIdErrorMessage(reason: SpiffeIdError): string {
  return MESSAGES[reason]
}

/**
 * `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`, Istio's identity of a workload; throws when invalid. The
 * namespace and the service account are one path segment each: a "/" in either (which could make another
 * workload's ID) is refused.
 */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  const id = `${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`
  for (const part of [namespace, serviceAccount]) {
    if (part === '') throw new SpiffeIdInvalid(id, 'empty_segment')
    if (part.includes('/')) throw new SpiffeIdInvalid(id, 'path_bad_char')
  }
  return spiffeId(id)
}
