/**
 * A cluster's transport sockets: `transport_socket` and `transport_socket_matches`, with Envoy's semantics.
 *
 * - Each socket is compiled once, when the cluster is: TLS (UpstreamTlsContext) becomes `tls.connect` options
 *   (a SecureContext built then), raw_buffer plain text (`tls: null`). A socket whose SDS secrets change is
 *   rebuilt in place; new connections use the new options, open ones keep theirs.
 * - A host's socket is chosen when it joins and whenever a membership update restates it: the first match whose
 *   `match` is a subset of the endpoint's `filter_metadata["envoy.transport_socket_match"]`, else the first whose
 *   `match` is a subset of its locality's, else `transport_socket` (plain text when the cluster has none). An empty
 *   `match` is a subset of anything, also of no metadata. Values compare as JSON values (Envoy's ValueUtil::equal).
 * - The choice is kept on the host (`host.transport`): the codecs read its options per new connection, so the
 *   request path pays nothing for it.
 */
import type { Cluster, UpstreamTransportSocket } from '../../config/envoy.js'
import { TypeUrls } from '../../config/type-urls.js'
import type { ConfigIssue } from '../../core/errors.js'
import { log } from '../../core/log.js'
import type { SecretStore } from '../secrets/store.js'
import type { HostTransport } from './host.js'
import { type UpstreamTlsOptions, upstreamTlsOptions, upstreamTlsSecretNames } from './tls.js'

/** The filter metadata namespace transport_socket_matches reads (Envoy's). */
export const TRANSPORT_SOCKET_MATCH_KEY = 'envoy.transport_socket_match'

export type MatchMetadata = Readonly<Record<string, unknown>>

/** One compiled transport socket; `tls` is replaced when a secret it names changes. */
export class TransportSocket implements HostTransport {
  /** the match's name; `''` for the cluster's own transport_socket */
  readonly name: string
  tls: UpstreamTlsOptions | null
  readonly #config: UpstreamTransportSocket | undefined
  readonly #path: string

  constructor(name: string, config: UpstreamTransportSocket | undefined, tls: UpstreamTlsOptions | null, path: string) {
    this.name = name
    this.#config = config
    this.tls = tls
    this.#path = path
  }

  /** SDS names this socket reads. */
  secretNames(): string[] {
    const c = this.#config?.typed_config
    return c === undefined || c['@type'] !== TypeUrls.upstreamTls ? [] : upstreamTlsSecretNames(c)
  }

  /** Compiles the TLS options again from `secrets`; a rebuild that fails keeps the old ones. */
  rebuild(http2: boolean, secrets: SecretStore, cluster: string): void {
    const c = this.#config?.typed_config
    if (c === undefined || c['@type'] !== TypeUrls.upstreamTls) return
    const issues: ConfigIssue[] = []
    const next = upstreamTlsOptions(c, http2, this.#path, issues, secrets)
    if (next === null) {
      log('warn', 'cluster', 'TLS context not rebuilt', { cluster, match: this.name, error: issues[0]?.message })
      return
    }
    this.tls = next
  }
}

/** Compiles one transport socket; null (with issues) when its TLS context does not compile. */
function compileSocket(
  name: string,
  ts: UpstreamTransportSocket | undefined,
  http2: boolean,
  path: string,
  issues: ConfigIssue[],
  secrets: SecretStore | undefined,
): TransportSocket | null {
  const c = ts?.typed_config
  if (c === undefined || c['@type'] !== TypeUrls.upstreamTls) return new TransportSocket(name, ts, null, path)
  const tls = upstreamTlsOptions(c, http2, path, issues, secrets)
  return tls === null ? null : new TransportSocket(name, ts, tls, path)
}

interface CompiledMatch {
  entries: readonly (readonly [string, unknown])[]
  socket: TransportSocket
}

/** A cluster's sockets and the choice of one per host. */
export class TransportSockets {
  /** `transport_socket` (plain text when unset) */
  readonly default: TransportSocket
  readonly #matches: readonly CompiledMatch[]

  private constructor(def: TransportSocket, matches: readonly CompiledMatch[]) {
    this.default = def
    this.#matches = matches
  }

  /** Compiles a cluster's sockets; issues at `path` (the cluster's own path). Null when any failed. */
  static compile(
    config: Cluster,
    http2: boolean,
    path: string,
    issues: ConfigIssue[],
    secrets?: SecretStore,
  ): TransportSockets | null {
    const before = issues.length
    const def = compileSocket(
      '',
      config.transport_socket,
      http2,
      `${path}.transport_socket.typed_config`,
      issues,
      secrets,
    )
    const matches: CompiledMatch[] = []
    const seen = new Set<string>()
    ;(config.transport_socket_matches ?? []).forEach((m, i) => {
      const at = `${path}.transport_socket_matches[${i}]`
      if (seen.has(m.name)) issues.push({ path: `${at}.name`, message: `"${m.name}" is listed twice` })
      seen.add(m.name)
      const socket = compileSocket(
        m.name,
        m.transport_socket,
        http2,
        `${at}.transport_socket.typed_config`,
        issues,
        secrets,
      )
      if (socket !== null) matches.push({ entries: Object.entries(m.match ?? {}), socket })
    })
    if (issues.length > before || def === null) return null
    return new TransportSockets(def, matches)
  }

  /** Whether any host can get another socket than the default. */
  get matches(): boolean {
    return this.#matches.length > 0
  }

  /** Every socket: the default first, then the matches' in order. */
  all(): TransportSocket[] {
    return [this.default, ...this.#matches.map((m) => m.socket)]
  }

  /** The socket for a host with this endpoint and locality `envoy.transport_socket_match` metadata. */
  choose(endpoint: MatchMetadata | undefined, locality: MatchMetadata | undefined): TransportSocket {
    const matches = this.#matches
    for (const m of matches) if (subsetOf(m.entries, endpoint)) return m.socket
    if (locality !== undefined) for (const m of matches) if (subsetOf(m.entries, locality)) return m.socket
    return this.default
  }
}

function subsetOf(entries: readonly (readonly [string, unknown])[], md: MatchMetadata | undefined): boolean {
  if (entries.length === 0) return true
  if (md === undefined) return false
  for (const [k, want] of entries) {
    if (!Object.hasOwn(md, k) || !jsonEqual(md[k], want)) return false
  }
  return true
}

/** Equality of two JSON values (Struct values): same type, same scalars, lists in order, structs by key. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    return a.every((x, i) => jsonEqual(x, b[i]))
  }
  if (Array.isArray(b)) return false
  const ka = Object.keys(a)
  const rb = b as Record<string, unknown>
  if (ka.length !== Object.keys(rb).length) return false
  return ka.every((k) => Object.hasOwn(rb, k) && jsonEqual((a as Record<string, unknown>)[k], rb[k]))
}

/** The `envoy.transport_socket_match` Struct of a Metadata, if any. */
export function transportMatchMetadata(
  md: { filter_metadata?: Record<string, Record<string, unknown>> } | undefined,
): MatchMetadata | undefined {
  return md?.filter_metadata?.[TRANSPORT_SOCKET_MATCH_KEY]
}
