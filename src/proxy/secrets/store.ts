/**
 * The proxy's secrets by name, as Envoy's SDS names them: what TLS contexts refer to with
 * `tls_certificate_sds_secret_configs` and `validation_context_sds_secret_config`. Istio's names are `default` (the
 * workload's own certificate chain and key) and `ROOTCA` (the trust bundle).
 *
 * Sources put secrets in (a bootstrap's `static_resources.secrets`, Secret resources over ADS, the proxy's own
 * identity from its certificate signing exchange); TLS contexts read them and subscribe to changes. A change applies
 * to connections made after it; connections already open keep the secret they were made with. Every value is
 * immutable: a change is a new object under the same name.
 */

/** A certificate chain (leaf first) and its private key, PEM. */
export interface TlsCertificateSecret {
  readonly kind: 'tls_certificate'
  readonly certificateChainPem: string
  readonly privateKeyPem: string
}

/** Trusted roots, PEM: one or more (during a root rotation, the old and the new). */
export interface ValidationContextSecret {
  readonly kind: 'validation_context'
  readonly trustedCaPem: string
}

export type Secret = TlsCertificateSecret | ValidationContextSecret

export type SecretListener = (name: string, secret: Secret | null) => void

export class SecretStore {
  readonly #secrets = new Map<string, Secret>()
  readonly #listeners = new Map<string, Set<SecretListener>>()
  /** Bumped on every change: a TLS context compiled at version N is current while the version is N. */
  version = 0

  get(name: string): Secret | undefined {
    return this.#secrets.get(name)
  }

  /** Sets (or replaces) a secret and tells its subscribers; a value equal to the current one changes nothing. */
  set(name: string, secret: Secret): void {
    const old = this.#secrets.get(name)
    if (old !== undefined && sameSecret(old, secret)) return
    this.#secrets.set(name, secret)
    this.version++
    this.#notify(name, secret)
  }

  delete(name: string): void {
    if (!this.#secrets.delete(name)) return
    this.version++
    this.#notify(name, null)
  }

  names(): string[] {
    return [...this.#secrets.keys()]
  }

  /** Calls `listener` on every later change of `name`; returns the function that unsubscribes. */
  subscribe(name: string, listener: SecretListener): () => void {
    let set = this.#listeners.get(name)
    if (set === undefined) {
      set = new Set()
      this.#listeners.set(name, set)
    }
    set.add(listener)
    return () => {
      set.delete(listener)
      if (set.size === 0) this.#listeners.delete(name)
    }
  }

  #notify(name: string, secret: Secret | null): void {
    const set = this.#listeners.get(name)
    if (set === undefined) return
    for (const l of [...set]) l(name, secret)
  }
}

function sameSecret(a: Secret, b: Secret): boolean {
  if (a.kind === 'tls_certificate' && b.kind === 'tls_certificate')
    return a.certificateChainPem === b.certificateChainPem && a.privateKeyPem === b.privateKeyPem
  if (a.kind === 'validation_context' && b.kind === 'validation_context') return a.trustedCaPem === b.trustedCaPem
  return false
}
