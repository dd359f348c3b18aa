/**
 * The CA's signing identity: a certificate, its private key and the chain from it up to a self-signed root, read
 * from files and checked. Every problem is reported, each with the file it is in: a key that others can read, a
 * key that is not the certificate's, a certificate that is not a CA (basicConstraints cA, keyUsage keyCertSign) or
 * is not valid now, a chain whose links do not hold or that does not end at a root.
 */
import { X509Certificate as NodeCertificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import * as x509 from './x509.js'
import { keyFileModeProblem, parsePrivateKey, type SigningKey, signingKeyOf } from './keys.js'
import { ErrorCodes, LoomError } from '../../core/errors.js'

export interface Signer {
  /** the certificate leaves are issued under */
  cert: x509.X509Certificate
  certPem: string
  signingKey: SigningKey
  /** the certificates between `cert` and the root, `cert`'s issuer first (empty when `cert` is the root) */
  intermediatesPem: string[]
  /** the self-signed root the chain ends at (`certPem` itself when `cert` is the root) */
  rootPem: string
  rootFingerprint: string
  /** `cert` is the root itself */
  isRoot: boolean
  /** the earliest notAfter of `cert` and the certificates above it, ms */
  notAfterMs: number
}

/** A CA that cannot be used: every problem found, one a line, each naming its file. */
export class CaConfigError extends LoomError {
  override name = 'CaConfigError'
  readonly problems: string[]
  constructor(problems: string[]) {
    super(
      ErrorCodes.CA_INVALID,
      problems.length === 1 ? `CA: ${problems[0]}` : `CA:\n${problems.map((p) => `  ${p}`).join('\n')}`,
    )
    this.problems = problems
  }
}

export interface SignerFiles {
  certFile: string
  keyFile: string
  /** the certificates above certFile, up to and including the root (optional when certFile is a root) */
  chainFile?: string | undefined
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

function readText(file: string, problems: string[]): string | null {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    problems.push(`${file}: cannot read it (${e.code ?? e.message})`)
    return null
  }
}

interface Parsed {
  pem: string
  node: NodeCertificate
  cert: x509.X509Certificate
}

function parseCerts(file: string, text: string, problems: string[]): Parsed[] | null {
  const pems = text.match(PEM_CERT) ?? []
  if (pems.length === 0) {
    problems.push(`${file}: no PEM certificate found`)
    return null
  }
  const out: Parsed[] = []
  for (const [i, pem] of pems.entries()) {
    try {
      out.push({ pem: `${pem}\n`, node: new NodeCertificate(pem), cert: new x509.X509Certificate(pem) })
    } catch (err) {
      problems.push(`${file}: certificate ${i + 1} cannot be parsed (${(err as Error).message})`)
      return null
    }
  }
  return out
}

export function subjectOf(c: Parsed | NodeCertificate): string {
  const node = c instanceof NodeCertificate ? c : c.node
  return `"${node.subject.replace(/\n/g, ', ')}"`
}

/** Problems that keep `c` from being a CA valid at `now`. */
function caProblems(file: string, c: Parsed, now: number): string[] {
  const out: string[] = []
  const name = subjectOf(c)
  if (!c.node.ca) out.push(`${file}: ${name} is not a CA certificate (basicConstraints cA is not set)`)
  const ku = c.cert.getExtension(x509.KeyUsagesExtension)
  if (ku === null) out.push(`${file}: ${name} has no keyUsage extension (a CA needs keyCertSign)`)
  else if ((ku.usages & x509.KeyUsageFlags.keyCertSign) === 0)
    out.push(`${file}: ${name} may not sign certificates (keyUsage lacks keyCertSign)`)
  if (c.cert.notBefore.getTime() > now)
    out.push(`${file}: ${name} is not valid yet (notBefore ${c.cert.notBefore.toISOString()})`)
  if (c.cert.notAfter.getTime() <= now) out.push(`${file}: ${name} expired on ${c.cert.notAfter.toISOString()}`)
  return out
}

function selfSigned(c: Parsed): boolean {
  // not checkIssued: it also wants keyCertSign, a problem reported on its own
  return c.node.subject === c.node.issuer && c.node.verify(c.node.publicKey)
}

/** Reads and checks a CA from its files; throws `CaConfigError` listing every problem. */
export async function loadSigner(files: SignerFiles, now: number): Promise<Signer> {
  const problems: string[] = []
  const certText = readText(files.certFile, problems)
  const certs = certText === null ? null : parseCerts(files.certFile, certText, problems)
  // a certificate file with the chain after the CA certificate ("fullchain") is read as certificate + chain
  const own = certs?.[0]
  const chain: { file: string; c: Parsed }[] = (certs ?? []).slice(1).map((c) => ({ file: files.certFile, c }))
  if (files.chainFile !== undefined) {
    const chainText = readText(files.chainFile, problems)
    const parsed = chainText === null ? null : parseCerts(files.chainFile, chainText, problems)
    for (const c of parsed ?? []) chain.push({ file: files.chainFile, c })
  }

  let signingKey: SigningKey | null = null
  let modeProblem: string | null = null
  try {
    modeProblem = keyFileModeProblem(files.keyFile)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    problems.push(`${files.keyFile}: cannot read it (${e.code ?? e.message})`)
  }
  if (modeProblem !== null) problems.push(modeProblem)
  else {
    const keyText = problems.some((p) => p.startsWith(`${files.keyFile}:`)) ? null : readText(files.keyFile, problems)
    if (keyText !== null) {
      try {
        const key = parsePrivateKey(keyText, files.keyFile)
        if (own !== undefined && !own.node.checkPrivateKey(key))
          problems.push(`${files.keyFile}: the private key does not match the certificate in ${files.certFile}`)
        else signingKey = await signingKeyOf(key)
      } catch (err) {
        const msg = (err as Error).message
        problems.push(msg.startsWith(files.keyFile) ? msg : `${files.keyFile}: ${msg}`)
      }
    }
  }

  if (own !== undefined) {
    problems.push(...caProblems(files.certFile, own, now))
    let below = own
    let belowFile = files.certFile
    for (const [i, { file, c }] of chain.entries()) {
      problems.push(...caProblems(file, c, now))
      if (!(below.node.checkIssued(c.node) && below.node.verify(c.node.publicKey)))
        problems.push(
          `${file}: ${subjectOf(c)} (chain certificate ${i + 1}) is not the issuer of ${subjectOf(below)} in ${belowFile}; the chain goes from the CA certificate's issuer up to the root`,
        )
      below = c
      belowFile = file
    }
    const top = chain.at(-1)?.c ?? own
    if (!selfSigned(top)) {
      problems.push(
        chain.length === 0
          ? `${files.certFile}: ${subjectOf(own)} is not a root (it is issued by "${own.node.issuer.replace(/\n/g, ', ')}"); give the certificates above it, up to the root, with --ca-chain`
          : `${chain.at(-1)!.file}: the chain does not end with a self-signed root (the last certificate, ${subjectOf(top)}, is issued by "${top.node.issuer.replace(/\n/g, ', ')}")`,
      )
    }
  }

  if (problems.length > 0 || own === undefined || signingKey === null) throw new CaConfigError(problems)
  const top = chain.at(-1)?.c ?? own
  return {
    cert: own.cert,
    certPem: own.pem,
    signingKey,
    intermediatesPem: chain.slice(0, -1).map(({ c }) => c.pem),
    rootPem: top.pem,
    rootFingerprint: top.node.fingerprint256,
    isRoot: own.node.fingerprint256 === top.node.fingerprint256,
    notAfterMs: Math.min(own.cert.notAfter.getTime(), ...chain.map(({ c }) => c.cert.notAfter.getTime())),
  }
}
