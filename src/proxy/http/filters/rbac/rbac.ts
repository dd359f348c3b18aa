/**
 * Role-based access control (Envoy's envoy.filters.http.rbac): the request headers are checked against the
 * compiled `rules` (enforced) and `shadow_rules` (evaluated and counted only). See matcher.ts for what each
 * permission and principal reads. Semantics follow Envoy's:
 *
 * - Enforced `ALLOW` rules admit a request only when a policy matches; `DENY` rules refuse it when one does;
 *   `LOG` rules admit everything and set the dynamic metadata `envoy.common` `access_log_hint` (true when a policy
 *   matched). No `rules`: nothing is enforced.
 * - A refused request gets **403** with body `RBAC: access denied`, response flag `RBAC`, and the reason
 *   (`x-loom-reason`, the access log's response code details) `rbac_access_denied_matched_policy[<policy>]`
 *   (`[none]` when an ALLOW engine matched nothing).
 * - Dynamic metadata under `envoy.filters.http.rbac`: `<shadow_rules_stat_prefix>shadow_effective_policy_id` and
 *   `<shadow_rules_stat_prefix>shadow_engine_result` (`allowed` / `denied`) for shadow rules, and
 *   `<rules_stat_prefix>enforced_effective_policy_id` / `enforced_engine_result` for the enforced ones.
 * - Stats under the connection manager: `rbac.<rules_stat_prefix>allowed`, `.denied`, and
 *   `rbac.<shadow_rules_stat_prefix>shadow_allowed`, `.shadow_denied`; `LOG` rules count `logged` / `not_logged`.
 *   Several RBAC filters of one connection manager without prefixes share the counters, as in Envoy.
 *
 * The filter has no per-route config; a stream gets one small filter object per RBAC filter of its connection
 * manager, and the engines run once, on the request headers (after the filters before it, such as JWT
 * authentication, have set their metadata).
 */
import type { Rbac } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import type { HttpConnManagerStats } from '../../../stats/stats.js'
import type { RequestHead } from '../../types.js'
import {
  CONTINUE,
  type FilterCallbacks,
  type FilterStatus,
  type HttpFilterFactory,
  type StreamFilter,
} from '../filter.js'
import { LOG, RbacEngine } from './matcher.js'

export const RBAC_METADATA = 'envoy.filters.http.rbac'
export const DENIED_BODY = 'RBAC: access denied'

/** Counters, by name (prefixed names are added as fields when a filter has a stat prefix). */
export class RbacStats {
  allowed = 0
  denied = 0
  shadow_allowed = 0
  shadow_denied = 0;
  [name: string]: number
}

export class RbacFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly engine: RbacEngine | null
  readonly shadow: RbacEngine | null
  readonly stats: RbacStats
  readonly allowedKey: string
  readonly deniedKey: string
  readonly loggedKey: string
  readonly notLoggedKey: string
  readonly shadowAllowedKey: string
  readonly shadowDeniedKey: string
  readonly policyIdKey: string
  readonly resultKey: string
  readonly shadowPolicyIdKey: string
  readonly shadowResultKey: string

  constructor(name: string, cfg: Rbac, path: string, issues: ConfigIssue[], hcmStats: HttpConnManagerStats) {
    this.name = name
    this.engine = cfg.rules === undefined ? null : new RbacEngine(cfg.rules, `${path}.rules`, issues)
    this.shadow =
      cfg.shadow_rules === undefined ? null : new RbacEngine(cfg.shadow_rules, `${path}.shadow_rules`, issues)
    const p = cfg.rules_stat_prefix ?? ''
    const sp = cfg.shadow_rules_stat_prefix ?? ''
    const stats = hcmStats.filterStats('rbac', RbacStats)
    this.allowedKey = `${p}allowed`
    this.deniedKey = `${p}denied`
    this.loggedKey = `${p}logged`
    this.notLoggedKey = `${p}not_logged`
    this.shadowAllowedKey = `${sp}shadow_allowed`
    this.shadowDeniedKey = `${sp}shadow_denied`
    this.policyIdKey = `${p}enforced_effective_policy_id`
    this.resultKey = `${p}enforced_engine_result`
    this.shadowPolicyIdKey = `${sp}shadow_effective_policy_id`
    this.shadowResultKey = `${sp}shadow_engine_result`
    const keys = [this.allowedKey, this.deniedKey, this.shadowAllowedKey, this.shadowDeniedKey]
    if (this.engine?.action === LOG) keys.push(this.loggedKey, this.notLoggedKey)
    for (const k of keys) stats[k] ??= 0
    this.stats = stats
  }

  create(cb: FilterCallbacks): StreamFilter | null {
    if (this.engine === null && this.shadow === null) return null
    return new RbacFilter(this, cb)
  }
}

class RbacFilter implements StreamFilter {
  private readonly f: RbacFilterFactory
  private readonly cb: FilterCallbacks

  constructor(f: RbacFilterFactory, cb: FilterCallbacks) {
    this.f = f
    this.cb = cb
  }

  decodeHeaders(_head: RequestHead): FilterStatus {
    const { f, cb } = this
    const stats = f.stats
    const shadow = f.shadow
    if (shadow !== null) {
      const policy = shadow.matchedPolicy(cb)
      const allowed = shadow.allows(policy)
      stats[allowed ? f.shadowAllowedKey : f.shadowDeniedKey]!++
      if (policy !== null) cb.setMetadata(RBAC_METADATA, f.shadowPolicyIdKey, policy)
      cb.setMetadata(RBAC_METADATA, f.shadowResultKey, allowed ? 'allowed' : 'denied')
    }
    const engine = f.engine
    if (engine === null) return CONTINUE
    const policy = engine.matchedPolicy(cb)
    if (engine.action === LOG) {
      stats[policy !== null ? f.loggedKey : f.notLoggedKey]!++
      cb.setMetadata('envoy.common', 'access_log_hint', policy !== null)
      if (policy !== null) cb.setMetadata(RBAC_METADATA, f.policyIdKey, policy)
      stats[f.allowedKey]!++
      return CONTINUE
    }
    const allowed = engine.allows(policy)
    if (policy !== null) cb.setMetadata(RBAC_METADATA, f.policyIdKey, policy)
    cb.setMetadata(RBAC_METADATA, f.resultKey, allowed ? 'allowed' : 'denied')
    if (allowed) {
      stats[f.allowedKey]!++
      return CONTINUE
    }
    stats[f.deniedKey]!++
    cb.sendLocalReply(403, 'RBAC', `rbac_access_denied_matched_policy[${policy ?? 'none'}]`, DENIED_BODY)
    return CONTINUE
  }
}
