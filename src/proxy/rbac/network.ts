/**
 * Role-based access control on connections (Envoy's envoy.filters.network.rbac): a network filter before the
 * chain's terminal filter (TCP proxy or HTTP connection manager) that admits or closes each connection with the
 * RBAC engine of matcher.ts.
 *
 * - The decision is made once per connection, when the listener hands it to the chain (after the TLS handshake
 *   and the client certificate check on a TLS chain), before the terminal filter sees it: a refused connection is
 *   closed before the TCP proxy connects upstream, so no byte of it reaches a backend. Every input the engine reads
 *   on a connection (the peer's certificate, addresses, port, SNI) is known by then and never changes, so
 *   `enforcement_type` `ONE_TIME_ON_FIRST_BYTE` (Envoy's default) and `CONTINUOUS` decide the same; both are
 *   accepted. (Envoy waits for the first byte; deciding at accept also covers server-first protocols.)
 * - Rules: what matcher.ts describes, less the HTTP-only `header` and `url_path`, which a connection has not: a
 *   config that uses them is refused, with the field path. `remote_ip` is the peer (no x-forwarded-for here);
 *   `metadata` tests see no values (a connection carries no dynamic metadata in Loom).
 * - Enforced `ALLOW` rules admit a connection only when a policy matches, `DENY` rules refuse it when one does,
 *   `LOG` rules admit everything; no `rules`: nothing is enforced. `shadow_rules` are evaluated and counted only.
 * - Stats (Envoy's names, at the root): `<stat_prefix>rbac.allowed`, `.denied`,
 *   `<stat_prefix>rbac.<shadow_rules_stat_prefix>shadow_allowed`, `.shadow_denied`, and for `LOG` rules
 *   `.logged` / `.not_logged`.
 * - A refused connection is logged (`rbac` `connection denied`, with the policy that decided,
 *   `rbac_access_denied_matched_policy[<policy>]`, `[none]` when an ALLOW engine matched nothing) and, on a TCP
 *   proxy chain, written to the TCP proxy's access log with that reason as `connection_termination_details`.
 */
import type { Socket } from 'node:net'
import type { NetworkRbac, RbacPermission, RbacPrincipal } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { log } from '../../core/log.js'
import type { StatsStore } from '../stats/stats.js'
import { type ConnectionInput, LOG, RbacRulesEngine, type RuleExtension } from './matcher.js'

const never = () => false

/** Reports `header` / `url_path` (HTTP-only) with their path; null leaves any other rule to the engine. */
function httpOnly(p: RbacPermission | RbacPrincipal, path: string, issues: ConfigIssue[]): (() => boolean) | null {
  for (const k of ['header', 'url_path'] as const) {
    if (p[k] === undefined) continue
    issues.push({
      path: `${path}.${k}`,
      message: `${k} matches an HTTP request: the network RBAC filter sees connections only (use the HTTP RBAC filter)`,
    })
    return never
  }
  return null
}

/** The connection-level rules: none beyond the engine's own; HTTP-only ones are reported. */
export const CONNECTION_RULES: RuleExtension<ConnectionInput> = { permission: httpOnly, principal: httpOnly }

const noMetadata = () => undefined

export class NetworkRbacFilter {
  readonly name: string
  private readonly engine: RbacRulesEngine<ConnectionInput> | null
  private readonly shadow: RbacRulesEngine<ConnectionInput> | null
  private readonly stats: Record<string, number>
  private readonly shadowAllowedKey: string
  private readonly shadowDeniedKey: string

  constructor(name: string, cfg: NetworkRbac, path: string, issues: ConfigIssue[], store: StatsStore) {
    this.name = name
    this.engine =
      cfg.rules === undefined ? null : new RbacRulesEngine(cfg.rules, `${path}.rules`, issues, CONNECTION_RULES)
    this.shadow =
      cfg.shadow_rules === undefined
        ? null
        : new RbacRulesEngine(cfg.shadow_rules, `${path}.shadow_rules`, issues, CONNECTION_RULES)
    const sp = cfg.shadow_rules_stat_prefix ?? ''
    this.shadowAllowedKey = `${sp}shadow_allowed`
    this.shadowDeniedKey = `${sp}shadow_denied`
    const stats = store.forCounters(`${cfg.stat_prefix}rbac.`).values
    const keys = ['allowed', 'denied', this.shadowAllowedKey, this.shadowDeniedKey]
    if (this.engine?.action === LOG) keys.push('logged', 'not_logged')
    for (const k of keys) stats[k] ??= 0
    this.stats = stats
  }

  /**
   * Decides a connection: null admits it, else the reason it is refused (the caller closes it). `listener` names
   * the listener in the log.
   */
  check(socket: Socket, listener: string): string | null {
    const input: ConnectionInput = {
      downstreamSocket: socket,
      sourceIp: socket.remoteAddress ?? '',
      metadata: noMetadata,
    }
    const stats = this.stats
    const shadow = this.shadow
    if (shadow !== null)
      stats[shadow.allows(shadow.matchedPolicy(input)) ? this.shadowAllowedKey : this.shadowDeniedKey]!++
    const engine = this.engine
    if (engine === null) return null
    const policy = engine.matchedPolicy(input)
    if (engine.action === LOG) stats[policy !== null ? 'logged' : 'not_logged']!++
    if (engine.allows(policy)) {
      stats.allowed!++
      return null
    }
    stats.denied!++
    const reason = `rbac_access_denied_matched_policy[${policy ?? 'none'}]`
    log('info', 'rbac', 'connection denied', {
      listener,
      filter: this.name,
      policy: policy ?? 'none',
      reason,
      downstream_remote_address: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? ''}`,
    })
    return reason
  }
}
