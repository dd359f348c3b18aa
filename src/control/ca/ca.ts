/**
 * The control plane's certificate authority: issues X.509-SVIDs (SPIFFE identities) to workloads from their CSRs.
 *
 * Its root is generated on first start (ECDSA P-256, or RSA 2048) and kept in `<data-dir>/ca/`, or supplied by the
 * user (a root, or an intermediate under an enterprise root, with its chain). A root rotation keeps the previous
 * root in the trust bundle for an overlap period, so leaves issued before it still verify while proxies move to
 * leaves of the new root.
 *
 *   <data-dir>/ca/root-key.pem     the generated root's private key (0600; refused when others can read it)
 *   <data-dir>/ca/root-cert.pem    the generated root's certificate (0644)
 *   <data-dir>/ca/ca-state.json    the active root and the previous roots still trusted, with the end of their overlap
 *
 * The identity a leaf carries is the caller's to decide (the workload it authenticated): whatever subject or SANs
 * the CSR asks for are ignored, and the leaf gets exactly one URI SAN, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
 */
import { X509Certificate as NodeCertificate, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { ErrorCodes, LoomError } from '../../core/errors.js'
import { log } from '../../core/log.js'
import { type SpiffeId, trustDomainError, spiffeIdErrorMessage, workloadSpiffeId } from '../../core/spiffe.js'
import { generateCaKey, type KeyAlgorithm, writeFileAtomic } from './keys.js'
import { CaConfigError, loadSigner, type Signer, type SignerFiles } from './signer.js'
import * as x509 from './x509.js'

export const DEFAULT_TRUST_DOMAIN = 'cluster.local'
export const DEFAULT_CERT_TTL_MS = 24 * 3600_000
/** how long a previous root stays trusted after a rotation: long enough for every leaf it signed to expire */
export const DEFAULT_ROTATION_OVERLAP_MS = 48 * 3600_000
/** how far in the past a leaf's notBefore is put, for peers whose clocks are behind */
export const BACKDATE_MS = 5 * 60_000
const ROOT_VALIDITY_MS = 10 * 365 * 24 * 3600_000

export interface CaOptions {
  /** the CA's directory: `<data-dir>/ca` */
  dir: string
  /** default `cluster.local` */
  trustDomain?: string
  /** default lifetime of an issued leaf, ms (default 24 h) */
  certTtlMs?: number
  /** a user-supplied CA (root or intermediate) instead of the generated root */
  supplied?: SignerFiles
  /** how long the previous root stays in the trust bundle after a rotation, ms (default 48 h) */
  rotationOverlapMs?: number
  /** key type of a generated root (default ecdsa-p256) */
  keyAlgorithm?: KeyAlgorithm
  /** the clock, ms since the epoch (tests) */
  now?: () => number
}

/** Who the leaf is for: decided by the caller from what it authenticated, never read from the CSR. */
export interface WorkloadIdentity {
  namespace: string
  serviceAccount: string
}

export interface IssuedCertificate {
  spiffeId: string
  /** the leaf, PEM */
  certificatePem: string
  /** the certificates between the leaf and the root, the leaf's issuer first (empty under a generated root) */
  chainPem: string[]
  /** the roots peers should trust now: the active root, and during an overlap the previous ones */
  trustBundlePem: string[]
  serialNumber: string
  notBefore: Date
  notAfter: Date
}

/** A previous root, trusted until the end of its overlap. */
export interface RetiringRoot {
  certificatePem: string
  fingerprint256: string
  trustedUntil: string
}

/** What `ca-state.json` holds. */
/** A root of the trust bundle, described. */
export interface TrustedRoot {
  /** the distinguished name, one attribute a line (node:crypto's form) */
  subject: string
  serialNumber: string
  notBefore: string
  notAfter: string
  fingerprint256: string
  /** a previous root: when it leaves the bundle; the active root: null */
  trustedUntil: string | null
  /** the next root of a live rotation: when it starts signing */
  signingFrom?: string
}

export interface CaState {
  version: 1
  active: { certificatePem: string; fingerprint256: string; source: 'generated' | 'supplied' } | null
  retiring: RetiringRoot[]
  /**
   * A live rotation's next root: already in the trust bundle, signing from `activateAt` on (its key and certificate
   * are `root-key.pem.pending` / `root-cert.pem.pending`). The previous root then stays trusted for `overlapMs`.
   */
  pending?: { certificatePem: string; fingerprint256: string; activateAt: string; overlapMs: number }
}

/** What a server certificate is for: its SANs (the control plane's own TLS certificate). */
export interface ServerIdentity {
  /** a URI SAN, e.g. the control plane's SPIFFE ID */
  spiffeId: string
  dnsNames: string[]
  ipAddresses: string[]
}

export class CsrError extends LoomError {
  override name = 'CsrError'
  constructor(message: string) {
    super(ErrorCodes.CA_CSR, message)
  }
}

export function caFiles(dir: string) {
  return {
    key: join(dir, 'root-key.pem'),
    cert: join(dir, 'root-cert.pem'),
    state: join(dir, 'ca-state.json'),
  }
}

export class CertificateAuthority {
  readonly trustDomain: string
  readonly certTtlMs: number
  readonly rotationOverlapMs: number
  readonly dir: string
  private signer: Signer
  private state: CaState
  private readonly options: CaOptions
  private readonly now: () => number

  private constructor(options: CaOptions, signer: Signer, state: CaState) {
    this.options = options
    this.dir = options.dir
    this.trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN
    this.certTtlMs = options.certTtlMs ?? DEFAULT_CERT_TTL_MS
    this.rotationOverlapMs = options.rotationOverlapMs ?? DEFAULT_ROTATION_OVERLAP_MS
    this.now = options.now ?? Date.now
    this.signer = signer
    this.state = state
  }

  /** Loads the CA (generating its root on first start), or throws a `CaConfigError` naming every problem. */
  static async open(options: CaOptions): Promise<CertificateAuthority> {
    const td = options.trustDomain ?? DEFAULT_TRUST_DOMAIN
    const tdErr = trustDomainError(td)
    if (tdErr !== null) throw new CaConfigError([`trust domain "${td}": ${spiffeIdErrorMessage(tdErr)}`])
    const ttl = options.certTtlMs ?? DEFAULT_CERT_TTL_MS
    if (!(ttl >= 1000)) throw new CaConfigError([`certificate TTL ${ttl} ms: at least one second`])
    if (ttl < 60_000)
      log('warn', 'ca', 'a certificate TTL under a minute makes proxies renew constantly (meant for tests)', {
        cert_ttl_ms: ttl,
      })
    mkdirSync(options.dir, { recursive: true, mode: 0o700 })
    const now = (options.now ?? Date.now)()
    const signer =
      options.supplied !== undefined
        ? await loadSigner(options.supplied, now)
        : await loadOrGenerateRoot(options.dir, options.keyAlgorithm ?? 'ecdsa-p256', td, now)
    const state = readState(caFiles(options.dir).state)
    const ca = new CertificateAuthority(options, signer, state)
    ca.reconcile(options.supplied !== undefined ? 'supplied' : 'generated')
    const overlap = ca.rotationOverlapMs
    if (overlap < ttl)
      log(
        'warn',
        'ca',
        'the rotation overlap is shorter than the certificate TTL: leaves of a previous root may stop verifying before they expire',
        {
          overlap_ms: overlap,
          cert_ttl_ms: ttl,
        },
      )
    log('info', 'ca', 'certificate authority ready', {
      trust_domain: td,
      source: ca.state.active?.source,
      root: signer.rootFingerprint,
      key: signer.signingKey.label,
      trusted_roots: ca.trustBundle().length,
    })
    return ca
  }

  /**
   * Makes the state agree with the signer: a root other than the recorded active one means a rotation happened
   * (new files supplied, or a generated root replaced): the previous root stays trusted for the overlap period.
   */
  private reconcile(source: 'generated' | 'supplied'): void {
    const now = this.now()
    const fp = this.signer.rootFingerprint
    const before = JSON.stringify(this.state)
    const prev = this.state.active
    const retiring = this.state.retiring.filter((r) => Date.parse(r.trustedUntil) > now && r.fingerprint256 !== fp)
    if (
      prev !== null &&
      prev.fingerprint256 !== fp &&
      !retiring.some((r) => r.fingerprint256 === prev.fingerprint256)
    ) {
      retiring.push({
        certificatePem: prev.certificatePem,
        fingerprint256: prev.fingerprint256,
        trustedUntil: new Date(now + this.rotationOverlapMs).toISOString(),
      })
      log('info', 'ca', 'root rotated; the previous root stays trusted until the overlap ends', {
        previous: prev.fingerprint256,
        root: fp,
        trusted_until: retiring.at(-1)!.trustedUntil,
      })
    }
    const pending = this.state.pending
    this.state = {
      version: 1,
      active: { certificatePem: this.signer.rootPem, fingerprint256: fp, source },
      retiring,
      ...(pending !== undefined && pending.fingerprint256 !== fp && source === 'generated' ? { pending } : {}),
    }
    if (JSON.stringify(this.state) !== before)
      writeFileAtomic(caFiles(this.dir).state, `${JSON.stringify(this.state, null, 1)}\n`, 0o644)
  }

  /** The roots peers should trust at `now`: the active root first, then previous roots still in their overlap. */
  trustBundle(now = this.now()): string[] {
    return [
      this.signer.rootPem,
      ...(this.state.pending !== undefined ? [this.state.pending.certificatePem] : []),
      ...this.state.retiring.filter((r) => Date.parse(r.trustedUntil) > now).map((r) => r.certificatePem),
    ]
  }

  /**
   * The trust bundle's roots, described (for `GET /api/v1/ca` and `loom certs`): the active root first (its
   * `trustedUntil` is null), then the previous roots still in their overlap, each with the end of it.
   */
  trustBundleRoots(now = this.now()): TrustedRoot[] {
    const describe = (pem: string, trustedUntil: string | null): TrustedRoot => {
      const c = new NodeCertificate(pem)
      return {
        subject: c.subject,
        serialNumber: c.serialNumber.toLowerCase(),
        notBefore: new Date(c.validFrom).toISOString(),
        notAfter: new Date(c.validTo).toISOString(),
        fingerprint256: c.fingerprint256,
        trustedUntil,
      }
    }
    const p = this.state.pending
    return [
      describe(this.signer.rootPem, null),
      ...(p !== undefined ? [{ ...describe(p.certificatePem, null), signingFrom: p.activateAt }] : []),
      ...this.state.retiring
        .filter((r) => Date.parse(r.trustedUntil) > now)
        .map((r) => describe(r.certificatePem, r.trustedUntil)),
    ]
  }

  /**
   * When the trust bundle next changes by itself (a previous root's overlap ends), ms since the epoch, or null.
   * Whoever hands the bundle out (SDS) sends the new one then.
   */
  nextBundleChange(now = this.now()): number | null {
    let next: number | null = null
    const p = this.state.pending
    if (p !== undefined) next = Date.parse(p.activateAt)
    for (const r of this.state.retiring) {
      const t = Date.parse(r.trustedUntil)
      if (t > now && (next === null || t < next)) next = t
    }
    return next
  }

  /** The persisted rotation state (a copy). */
  rotationState(): CaState {
    return structuredClone(this.state)
  }

  /** The certificate leaves are signed with, PEM. */
  get signingCertificatePem(): string {
    return this.signer.certPem
  }

  get rootFingerprint(): string {
    return this.signer.rootFingerprint
  }

  /**
   * Replaces the generated root by a new one; the current root stays in the trust bundle for `overlapMs`. With a
   * user-supplied CA, rotation is done by restarting with the new files.
   */
  async rotate(overlapMs = this.rotationOverlapMs): Promise<void> {
    if (this.options.supplied !== undefined)
      throw new CaConfigError([
        'the CA is user-supplied: rotate it by restarting with the new --ca-cert/--ca-key files',
      ])
    if (this.state.pending !== undefined)
      throw new CaConfigError([
        `a live rotation is under way: the next root signs from ${this.state.pending.activateAt}`,
      ])
    const files = caFiles(this.dir)
    const now = this.now()
    await writeRoot(files, '.next', this.options.keyAlgorithm ?? 'ecdsa-p256', this.trustDomain, now)
    finishRotation(files)
    const prev = this.state.active
    this.signer = await loadSigner({ certFile: files.cert, keyFile: files.key }, now)
    if (prev !== null) this.retire(prev, now + overlapMs)
    this.reconcile('generated')
  }

  /** The previous root stays in the trust bundle until `untilMs`, once (a root retired again keeps one entry). */
  private retire(prev: { certificatePem: string; fingerprint256: string }, untilMs: number): void {
    this.state = {
      ...this.state,
      retiring: [
        ...this.state.retiring.filter((r) => r.fingerprint256 !== prev.fingerprint256),
        {
          certificatePem: prev.certificatePem,
          fingerprint256: prev.fingerprint256,
          trustedUntil: new Date(untilMs).toISOString(),
        },
      ],
    }
  }

  /**
   * Starts a live rotation: a new root joins the trust bundle now, while leaves are still signed by the current
   * one; at `now + propagationMs` (`activatePending`) it starts signing and the current root stays trusted for
   * `overlapMs`. Whoever hands the bundle out (SDS) pushes it at each step, so every proxy trusts the new root
   * before any leaf of it exists, and trusts the old one until its leaves have been renewed.
   */
  async beginRotation(propagationMs: number, overlapMs = this.rotationOverlapMs): Promise<void> {
    if (this.options.supplied !== undefined)
      throw new CaConfigError([
        'the CA is user-supplied: rotate it by restarting with the new --ca-cert/--ca-key files',
      ])
    if (this.state.pending !== undefined)
      throw new CaConfigError([`a rotation is under way: the next root signs from ${this.state.pending.activateAt}`])
    const files = caFiles(this.dir)
    const now = this.now()
    await writeRoot(files, '.pending', this.options.keyAlgorithm ?? 'ecdsa-p256', this.trustDomain, now)
    const pem = readFileSync(`${files.cert}.pending`, 'utf8')
    this.state = {
      ...this.state,
      pending: {
        certificatePem: pem,
        fingerprint256: new NodeCertificate(pem).fingerprint256,
        activateAt: new Date(now + propagationMs).toISOString(),
        overlapMs,
      },
    }
    writeFileAtomic(files.state, `${JSON.stringify(this.state, null, 1)}\n`, 0o644)
    log('info', 'ca', 'rotation started: the next root is trusted now and signs from activate_at', {
      root: this.rootFingerprint,
      next: this.state.pending!.fingerprint256,
      activate_at: this.state.pending!.activateAt,
    })
  }

  /** The live rotation's next root, if one is waiting, and when it starts signing (ms since the epoch). */
  pendingActivation(): number | null {
    const p = this.state.pending
    return p === undefined ? null : Date.parse(p.activateAt)
  }

  /** Makes the pending root (beginRotation) the signing root now; the previous one stays trusted for the overlap. */
  async activatePending(): Promise<boolean> {
    const p = this.state.pending
    if (p === undefined) return false
    const files = caFiles(this.dir)
    if (!existsSync(`${files.key}.pending`) || !existsSync(`${files.cert}.pending`)) {
      log('error', 'ca', 'the pending root files are missing; the rotation is abandoned', { dir: this.dir })
      const { pending: _, ...rest } = this.state
      this.state = rest
      writeFileAtomic(files.state, `${JSON.stringify(this.state, null, 1)}\n`, 0o644)
      return false
    }
    // the same steps as an offline rotation from here: complete .next files, renamed key then certificate
    renameSync(`${files.key}.pending`, `${files.key}.next`)
    renameSync(`${files.cert}.pending`, `${files.cert}.next`)
    finishRotation(files)
    const now = this.now()
    const prev = this.state.active
    this.signer = await loadSigner({ certFile: files.cert, keyFile: files.key }, now)
    const { pending: _, ...rest } = this.state
    this.state = rest
    if (prev !== null) this.retire(prev, now + p.overlapMs)
    this.reconcile('generated')
    writeFileAtomic(files.state, `${JSON.stringify(this.state, null, 1)}\n`, 0o644)
    return true
  }

  /**
   * Issues a server certificate (the control plane's own TLS certificate) for a key made here; the key is returned
   * with it and never written anywhere. serverAuth and clientAuth, a URI SAN and the DNS and IP SANs asked for.
   */
  async issueServerCertificate(
    identity: ServerIdentity,
    ttlMs = this.certTtlMs,
  ): Promise<{ certificatePem: string; chainPem: string[]; privateKeyPem: string; notAfter: Date }> {
    const { keys, pem } = await generateCaKey('ecdsa-p256')
    const names: x509.JsonGeneralName[] = [
      { type: 'url', value: identity.spiffeId },
      ...identity.dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ...identity.ipAddresses.map((value) => ({ type: 'ip' as const, value })),
    ]
    const leaf = await this.issue(keys.publicKey, names, ttlMs)
    return {
      certificatePem: `${leaf.toString('pem')}\n`,
      chainPem: this.signer.isRoot ? [] : [this.signer.certPem, ...this.signer.intermediatesPem],
      privateKeyPem: pem,
      notAfter: leaf.notAfter,
    }
  }

  private async issue(
    publicKey: x509.PublicKey | CryptoKey,
    names: x509.JsonGeneralName[],
    ttlMs: number,
  ): Promise<x509.X509Certificate> {
    const now = this.now()
    const s = this.signer
    if (s.notAfterMs <= now) throw new CsrError('the CA certificate has expired: no certificate can be issued')
    const notBefore = Math.max(now - BACKDATE_MS, s.cert.notBefore.getTime())
    const notAfter = Math.min(now + ttlMs, s.notAfterMs)
    const aki = s.cert.getExtension(x509.SubjectKeyIdentifierExtension)
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      // the subject is empty, so the SAN is critical (RFC 5280 4.2.1.6)
      new x509.SubjectAlternativeNameExtension(names, true),
    ]
    if (aki !== null) extensions.push(new x509.AuthorityKeyIdentifierExtension(aki.keyId))
    return x509.X509CertificateGenerator.create({
      serialNumber: randomBytes(16).toString('hex'),
      subject: new x509.Name(''),
      issuer: s.cert.subjectName,
      notBefore: new Date(notBefore),
      notAfter: new Date(notAfter),
      publicKey,
      signingKey: s.signingKey.key,
      signingAlgorithm: s.signingKey.signingAlgorithm,
      extensions,
    })
  }

  /**
   * Issues a leaf for `identity` from a PKCS#10 CSR (PEM). The CSR's signature must verify (the requester holds
   * the key); its subject and extensions are ignored. `ttlMs` defaults to the CA's TTL; the leaf never outlives
   * the CA's certificate or chain.
   */
  async sign(csrPem: string, identity: WorkloadIdentity, ttlMs = this.certTtlMs): Promise<IssuedCertificate> {
    if (!(ttlMs >= 1000)) throw new CsrError(`a certificate lifetime of ${ttlMs} ms is too short`)
    let id: SpiffeId
    try {
      id = workloadSpiffeId(this.trustDomain, identity.namespace, identity.serviceAccount)
    } catch (err) {
      throw new CsrError((err as Error).message)
    }
    let csr: x509.Pkcs10CertificateRequest
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem)
    } catch (err) {
      throw new CsrError(`the CSR cannot be parsed (PKCS#10 PEM expected): ${(err as Error).message}`)
    }
    let valid = false
    try {
      valid = await csr.verify()
    } catch (err) {
      throw new CsrError(`the CSR's signature cannot be checked: ${(err as Error).message}`)
    }
    if (!valid) throw new CsrError('the CSR signature does not verify with its public key')
    checkLeafKey(csr.publicKey)

    const now = this.now()
    const s = this.signer
    const leaf = await this.issue(csr.publicKey, [{ type: 'url', value: id.id }], ttlMs)
    return {
      spiffeId: id.id,
      certificatePem: `${leaf.toString('pem')}\n`,
      chainPem: s.isRoot ? [] : [s.certPem, ...s.intermediatesPem],
      trustBundlePem: this.trustBundle(now),
      serialNumber: leaf.serialNumber,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
    }
  }
}

function checkLeafKey(key: x509.PublicKey): void {
  const alg = key.algorithm as { name: string; namedCurve?: string; modulusLength?: number }
  if (alg.name === 'ECDSA' && (alg.namedCurve === 'P-256' || alg.namedCurve === 'P-384')) return
  if ((alg.name === 'RSASSA-PKCS1-v1_5' || alg.name === 'RSA-PSS') && (alg.modulusLength ?? 0) >= 2048) return
  throw new CsrError(
    `the CSR's key (${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ''}${alg.modulusLength ? ` ${alg.modulusLength}` : ''}) is not accepted: ECDSA P-256/P-384 or RSA of 2048 bits or more`,
  )
}

function readState(file: string): CaState {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, active: null, retiring: [] }
    throw new CaConfigError([`${file}: cannot read it (${(err as Error).message})`])
  }
  try {
    const s = JSON.parse(text) as CaState
    if (s.version !== 1 || !Array.isArray(s.retiring)) throw new Error('unknown format')
    for (const r of s.retiring) new NodeCertificate(r.certificatePem)
    return s
  } catch (err) {
    throw new CaConfigError([`${file}: not a CA state file (${(err as Error).message})`])
  }
}

/** Writes a new self-signed root to `<key|cert><suffix>` (each atomically, key 0600, cert 0644). */
async function writeRoot(
  files: ReturnType<typeof caFiles>,
  suffix: string,
  alg: KeyAlgorithm,
  trustDomain: string,
  now: number,
): Promise<void> {
  const { keys, pem } = await generateCaKey(alg)
  const signingAlgorithm =
    alg === 'rsa-2048' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', hash: 'SHA-256' }
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(16).toString('hex'),
    name: `O=${trustDomain}, CN=Loom root CA`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + ROOT_VALIDITY_MS),
    keys,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  writeFileAtomic(files.key + suffix, pem, 0o600)
  writeFileAtomic(files.cert + suffix, `${cert.toString('pem')}\n`, 0o644)
}

/**
 * A rotation writes the new root as `*.next` files (each complete, written atomically), then renames the key,
 * then the certificate. This finishes one a crash interrupted: both next files, or only the certificate's (the key
 * was renamed); a lone next key (the crash came before the certificate was written) is dropped.
 */
function finishRotation(files: ReturnType<typeof caFiles>): void {
  const nextKey = `${files.key}.next`
  const nextCert = `${files.cert}.next`
  if (existsSync(nextKey) && existsSync(nextCert)) renameSync(nextKey, files.key)
  else if (existsSync(nextKey)) rmSync(nextKey)
  if (existsSync(nextCert)) renameSync(nextCert, files.cert)
}

async function loadOrGenerateRoot(dir: string, alg: KeyAlgorithm, trustDomain: string, now: number): Promise<Signer> {
  const files = caFiles(dir)
  finishRotation(files)
  const haveKey = existsSync(files.key)
  const haveCert = existsSync(files.cert)
  if (!haveKey && !haveCert) {
    await writeRoot(files, '', alg, trustDomain, now)
    log('info', 'ca', 'generated a root CA', { cert: files.cert, key: files.key })
  } else if (haveKey !== haveCert) {
    throw new CaConfigError([
      `${haveKey ? files.cert : files.key}: missing while ${haveKey ? files.key : files.cert} exists; restore it, or remove both to generate a new root`,
    ])
  }
  return loadSigner({ certFile: files.cert, keyFile: files.key }, now)
}
