/**
 * The proxy's TLS to its control plane (xDS, the certificate signing service, rate limit shares: one port, one set
 * of credentials). The control plane's certificate is verified against the roots of `--xds-ca` (a file, read at
 * start) and the mesh trust bundle the proxy holds (`ROOTCA`, which follows a root rotation), and its name against
 * the address dialled (an IP SAN for 127.0.0.1, a DNS SAN for a host name). The proxy presents no certificate of
 * its own on this connection: its first certificate request carries a bootstrap token, and a renewal proves the
 * identity with the current certificate's chain and a signature by its key inside the request.
 */
import { readFileSync } from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import type { SecretStore } from './secrets/store.js'

type CaListener = grpc.experimental.CaCertificateUpdateListener

/** Reads the roots file; throws an error naming it when it is missing or holds no certificate. */
export function readRootsFile(file: string): string {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new Error(`--xds-ca ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`--xds-ca ${file}: no PEM certificate in it`)
  return text
}

export function xdsChannelCredentials(roots: string, store: SecretStore): grpc.ChannelCredentials {
  const caListeners = new Set<CaListener>()
  const ca = (): grpc.experimental.CaCertificateUpdate => {
    const bundle = store.get('ROOTCA')
    const extra = bundle?.kind === 'validation_context' ? bundle.trustedCaPem : ''
    return { caCertificate: Buffer.from(`${roots}\n${extra}`) }
  }
  store.subscribe('ROOTCA', () => {
    for (const l of caListeners) l(ca())
  })
  const provider: grpc.experimental.CertificateProvider = {
    addCaCertificateListener: (l) => {
      caListeners.add(l)
      l(ca())
    },
    removeCaCertificateListener: (l) => void caListeners.delete(l),
    addIdentityCertificateListener: () => {},
    removeIdentityCertificateListener: () => {},
  }
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, null)
}
