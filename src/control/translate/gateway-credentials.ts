/**
 * Gateway servers' `tls.credentialName`, as Istio serves it: the server's certificate is the SDS secret
 * `kubernetes://<name>`, a MUTUAL server's client CA `kubernetes://<name>-cacert`; the control plane serves both over
 * ADS to the gateways whose listeners name them, from its credentials (src/control/credentials.ts): the CA is the
 * credential's own `ca.crt`, else that of a credential named `<name>-cacert`. A name with no credential is not
 * served: the proxy keeps that filter chain's TLS context waiting (its handshakes fail) until it arrives.
 */
import type { Credential } from '../credentials.js'
import { secretRefs } from '../../xds/refs.js'
import type { Json } from './util.js'

/** Istio's prefix of SDS names read from Kubernetes Secrets */
const PREFIX = 'kubernetes://'
const CA_SUFFIX = '-cacert'

export function credentialSdsName(name: string): string {
  return `${PREFIX}${name}`
}

export function credentialCaSdsName(name: string): string {
  return `${PREFIX}${name}${CA_SUFFIX}`
}

/** The Secret resources (SDS) the listeners name that the credentials can give, sorted by name. */
export function credentialSecrets(listeners: readonly Json[], credentials: ReadonlyMap<string, Credential>): Json[] {
  const names = new Set<string>()
  for (const l of listeners) for (const n of secretRefs(l)) if (n.startsWith(PREFIX)) names.add(n)
  const out: Json[] = []
  for (const sds of [...names].sort()) {
    const name = sds.slice(PREFIX.length)
    const own = credentials.get(name)
    if (own?.cert !== undefined && own.key !== undefined) {
      out.push({
        name: sds,
        tls_certificate: { certificate_chain: { inline_string: own.cert }, private_key: { inline_string: own.key } },
      })
      continue
    }
    if (!name.endsWith(CA_SUFFIX)) continue
    const base = name.slice(0, -CA_SUFFIX.length)
    const ca = credentials.get(base)?.ca ?? credentials.get(name)?.ca
    if (ca !== undefined) out.push({ name: sds, validation_context: { trusted_ca: { inline_string: ca } } })
  }
  return out
}
