/**
 * Turning Envoy DownstreamTlsContexts into Node secure contexts (downstream side; the upstream side lives with
 * clusters), and checking a client's certificate.
 *
 * A context whose certificate or trusted CA comes from SDS is rebuilt when the secret changes (`rebuild()`, called by
 * the listener's subscription): handshakes after that use the new one, connections already open keep theirs. While a
 * secret is missing the context is warming (`context` null) and handshakes on its filter chain are refused.
 */
import type * as TLS from 'node:tls'
import { tls } from '../core/lazy.js'
import type { CommonTlsContext, DownstreamTlsContext } from '../config/envoy.js'
import type { ConfigIssue } from '../core/errors.js'
import { log } from '../core/log.js'
import { chainOfPeerCertificate, PeerVerifier, type PeerVerdict } from './identity/peer-verifier.js'
import { parseSubjectAltNames } from '../core/subject-alt-names.js'
import { compileStringMatcher } from './cluster/tls.js'
import type { SecretStore } from './secrets/store.js'
import { EXCHANGE_PROTOCOL } from './telemetry/tcp-exchange.js'
import { CIPHERS, exactSpiffeIds, peerReasonPhrase, resolveTlsMaterial, trustDomainOf } from './secrets/tls-material.js'

const VERSIONS = { TLS_AUTO: undefined, TLSv1_2: 'TLSv1.2', TLSv1_3: 'TLSv1.3' } as const

export function tlsVersions(c: CommonTlsContext | undefined): {
  minVersion?: TLS.SecureVersion
  maxVersion?: TLS.SecureVersion
} {
  const out: { minVersion?: TLS.SecureVersion; maxVersion?: TLS.SecureVersion } = { minVersion: 'TLSv1.2' }
  const p = c?.tls_params
  const min = p?.tls_minimum_protocol_version
  const max = p?.tls_maximum_protocol_version
  if (min !== undefined && VERSIONS[min] !== undefined) out.minVersion = VERSIONS[min]
  if (max !== undefined && VERSIONS[max] !== undefined) out.maxVersion = VERSIONS[max]
  return out
}

/** The result of checking a client's certificate: ok, or a reason (`tls_peer: <phrase>`) and a sentence. */
export type ClientVerdict = { ok: true } | { ok: false; reason: string; message: string }

/** A compiled client check: PeerVerifier (when a trust domain is known) and the SAN matchers. */
type ClientCheck = (socket: TLS.TLSSocket) => ClientVerdict

export class DownstreamTls {
  readonly config: DownstreamTlsContext
  readonly alpn: string[]
  readonly requireClientCert: boolean
  /** the SDS names the context reads */
  readonly secretNames: string[]
  /** the current server context; null while a secret is missing */
  context: TLS.SecureContext | null = null
  /** whether clients are asked for a certificate (a validation context is set) */
  requestCert = false
  /** the client check; null when clients are not verified */
  check: ClientCheck | null = null
  /** the secrets the context waits for */
  missing: string[] = []
  /** the PEM options a tls.Server for this context is made with (it ignores a `secureContext` option) */
  serverOptions: TLS.TlsOptions | null = null
  /** the handshaking server of the current context, made by the listener on first use; reset by a rebuild */
  server: TLS.Server | null = null
  private readonly store: SecretStore

  constructor(cfg: DownstreamTlsContext, defaultAlpn: string[], store: SecretStore) {
    this.config = cfg
    this.store = store
    this.alpn = cfg.common_tls_context.alpn_protocols ?? defaultAlpn
    this.requireClientCert = cfg.require_client_certificate === true
    const c = cfg.common_tls_context
    this.secretNames = [
      ...(c.tls_certificate_sds_secret_configs ?? []).map((s) => s.name),
      ...(c.validation_context_sds_secret_config === undefined ? [] : [c.validation_context_sds_secret_config.name]),
      ...(c.combined_validation_context === undefined
        ? []
        : [c.combined_validation_context.validation_context_sds_secret_config.name]),
    ]
  }

  /** (Re)builds the context from the config and the store; false with issues when it cannot. */
  rebuild(path: string, issues: ConfigIssue[]): boolean {
    const before = issues.length
    const c = this.config.common_tls_context
    const cpath = `${path}.common_tls_context`
    const m = resolveTlsMaterial(c, this.store, cpath, issues)
    if (issues.length > before) return false
    if (m.cert === undefined && m.missing.length === 0) {
      issues.push({ path: `${cpath}.tls_certificates`, message: 'a server certificate is required' })
      return false
    }
    if (this.requireClientCert && m.ca === undefined && m.missing.length === 0) {
      issues.push({
        path: `${cpath}.validation_context.trusted_ca`,
        message: 'require_client_certificate needs a trusted CA',
      })
      return false
    }
    this.missing = m.missing
    if (m.missing.length > 0) {
      this.context = null
      return true
    }
    const versions = tlsVersions(c)
    let context: TLS.SecureContext
    try {
      context = tls().createSecureContext({ cert: m.cert, key: m.key, ca: m.ca, ...versions, ciphers: CIPHERS })
    } catch (err) {
      issues.push({ path: cpath, message: `cannot load TLS material: ${(err as Error).message}` })
      return false
    }
    let check: ClientCheck | null = null
    if (m.ca !== undefined) {
      const matchers: ((sans: { type: string; value: string }[]) => boolean)[] = []
      const ids = exactSpiffeIds(m)
      m.sanMatchers.forEach((sm, i) => {
        if (ids !== null && sm.san_type === 'URI') return
        const test = compileStringMatcher(
          sm.matcher,
          `${cpath}.validation_context.match_typed_subject_alt_names[${i}].matcher`,
          issues,
        )
        const prefix = { DNS: 'DNS', URI: 'URI', EMAIL: 'email', IP_ADDRESS: 'IP Address' }[sm.san_type]
        if (test !== null) matchers.push((sans) => sans.some((s) => s.type === prefix && test(s.value)))
      })
      if (issues.length > before) return false
      // the X.509-SVID rules apply to mesh contexts (material from SDS); file and inline ones keep Envoy's checks
      const td = m.fromSds ? trustDomainOf(m) : null
      const verifier = td === null ? null : new PeerVerifier({ trustDomain: td, roots: m.ca.toString() })
      check = (socket) => {
        const peer = socket.getPeerCertificate(true)
        if (peer === null || peer.raw === undefined)
          return { ok: false, reason: 'tls_peer: no_certificate', message: 'the client presented no certificate' }
        if (verifier !== null) {
          const v: PeerVerdict = verifier.verify(chainOfPeerCertificate(peer), {
            purpose: 'client',
            ...(ids === null ? {} : { ids }),
          })
          if (!v.ok) return { ok: false, reason: `tls_peer: ${peerReasonPhrase(v.reason)}`, message: v.message }
        }
        if (matchers.length > 0) {
          const sans = parseSubjectAltNames(peer.subjectaltname ?? '')
          if (!matchers.some((t) => t(sans)))
            return {
              ok: false,
              reason: 'tls_peer: wrong SAN',
              message: `the client's subject alt names (${peer.subjectaltname ?? 'none'}) match none of match_typed_subject_alt_names`,
            }
        }
        return { ok: true }
      }
    }
    this.context = context
    this.serverOptions = {
      cert: m.cert,
      key: m.key,
      ...(m.ca === undefined ? {} : { ca: m.ca }),
      ...versions,
      ciphers: CIPHERS,
      ...(this.alpn.length === 0 ? {} : { ALPNCallback: this.selectAlpn }),
      requestCert: m.ca !== undefined,
      rejectUnauthorized: this.requireClientCert,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    }
    this.server = null
    this.requestCert = m.ca !== undefined
    this.check = check
    return true
  }

  /**
   * ALPN: the first of the context's protocols the client offers. When it offers none of them (Istio's clients
   * offer `istio-peer-exchange`, `istio` to a server of `h2`, `http/1.1`), Envoy goes on without ALPN; Node's TLS
   * cannot, so one of the client's protocols is selected, which the codec choice treats as HTTP/1.1: its first
   * other than `istio-peer-exchange`, which would tell the client to start Istio's TCP metadata exchange (a server
   * runs it only where its chain lists the protocol).
   */
  private readonly selectAlpn = ({ protocols }: { protocols: string[] }): string | undefined =>
    this.alpn.find((p) => protocols.includes(p)) ?? protocols.find((p) => p !== EXCHANGE_PROTOCOL) ?? protocols[0]

  /** Rebuilds on every change of a secret the context reads; returns the function that stops that. */
  watch(onRebuilt: () => void = () => {}): () => void {
    if (this.secretNames.length === 0) return () => {}
    const offs = this.secretNames.map((n) =>
      this.store.subscribe(n, () => {
        const issues: ConfigIssue[] = []
        if (this.rebuild('transport_socket.typed_config', issues)) onRebuilt()
        else log('warn', 'listener', 'TLS context not rebuilt', { error: issues[0]?.message })
      }),
    )
    return () => {
      for (const off of offs) off()
    }
  }
}

/** How long a TLS client may take from its first byte to a finished handshake. */
const HANDSHAKE_TIMEOUT_MS = 15_000

/** Builds a server TLS context; problems come back as issues under `path`. */
export function buildDownstreamTls(
  cfg: DownstreamTlsContext,
  defaultAlpn: string[],
  path: string,
  issues: ConfigIssue[],
  store: SecretStore,
): DownstreamTls | null {
  const d = new DownstreamTls(cfg, defaultAlpn, store)
  return d.rebuild(path, issues) ? d : null
}
