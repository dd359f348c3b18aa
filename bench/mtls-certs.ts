// Certificates for the mutual-TLS pairs of the benchmark: X.509-SVIDs issued by Loom's own CA
// (src/control/ca) for a client workload and a server workload, written as PEM files to a directory.
import { randomBytes, webcrypto } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { CertificateAuthority } from '../src/control/ca/ca.js'
import { toPem } from '../src/control/ca/keys.js'
import { type Issuer, makeCsr, makeRoot } from '../src/control/ca/pki-fixtures.js'
import * as x509 from '../src/control/ca/x509.js'

export const TRUST_DOMAIN = 'cluster.local'
export const NAMESPACE = 'bench'
/** the server's host name: nginx checks it against a DNS SAN (proxy_ssl_verify), Loom sends it inside Istio's SNI */
export const SERVER_HOST = `server.${NAMESPACE}.svc.cluster.local`
export const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/sa/client`
export const SERVER_ID = `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/sa/server`

/** PEM file paths: the trust bundle (root) and, per side, the leaf and its private key. */
export interface MtlsFiles {
  root: string
  client: { cert: string; key: string }
  server: { cert: string; key: string }
  /**
   * nginx's server certificate: the server's SPIFFE ID plus SERVER_HOST as a DNS SAN, because nginx's upstream
   * verification always checks a host name and cannot match a URI SAN; same root, same key type (ECDSA P-256)
   */
  serverWithDns: { cert: string; key: string }
}

/**
 * A root (ECDSA P-256) handed to Loom's CA as a supplied root, and the CA's SVIDs for `sa/client` and `sa/server`
 * from CSRs (the CA decides the SAN: the SPIFFE ID only, empty subject, as Istio's leaves).
 */
export async function writeMtlsCerts(dir: string): Promise<MtlsFiles> {
  mkdirSync(dir, { recursive: true })
  const file = (name: string, text: string): string => {
    const p = path.join(dir, name)
    writeFileSync(p, text, { mode: 0o600 })
    return p
  }
  const root = await makeRoot({ name: 'CN=Loom bench root, O=Loom' })
  const rootCert = file('root-cert.pem', root.pem)
  const rootKey = file('root-key.pem', root.keyPem)
  const ca = await CertificateAuthority.open({
    dir: path.join(dir, 'ca'),
    trustDomain: TRUST_DOMAIN,
    supplied: { certFile: rootCert, keyFile: rootKey },
  })
  const svid = async (sa: string): Promise<{ cert: string; key: string }> => {
    const csr = await makeCsr()
    const issued = await ca.sign(csr.pem, { namespace: NAMESPACE, serviceAccount: sa })
    return {
      cert: file(`${sa}-cert.pem`, [issued.certificatePem, ...issued.chainPem].join('')),
      key: file(`${sa}-key.pem`, csr.keyPem),
    }
  }
  const client = await svid('client')
  const server = await svid('server')
  const withDns = await leafWithDns(root, SERVER_ID, SERVER_HOST)
  const serverWithDns = {
    cert: file('server-dns-cert.pem', withDns.cert),
    key: file('server-dns-key.pem', withDns.key),
  }
  return { root: rootCert, client, server, serverWithDns }
}

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }

/** A leaf with the extensions of the CA's SVIDs (ca.ts `sign`) and a DNS SAN beside the SPIFFE ID. */
async function leafWithDns(root: Issuer, id: string, host: string): Promise<{ cert: string; key: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair
  const ski = root.cert.getExtension(x509.SubjectKeyIdentifierExtension)
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(16).toString('hex'),
    subject: new x509.Name(''),
    issuer: root.cert.subjectName,
    notBefore: new Date(Date.now() - 5 * 60_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    publicKey: keys.publicKey,
    signingKey: root.keys.privateKey,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(
        [
          { type: 'url', value: id },
          { type: 'dns', value: host },
        ],
        true,
      ),
      ...(ski === null ? [] : [new x509.AuthorityKeyIdentifierExtension(ski.keyId)]),
    ],
  })
  const key = toPem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)))
  return { cert: `${cert.toString('pem')}\n`, key }
}
