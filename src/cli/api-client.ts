/**
 * How the CLI talks to the control plane's HTTP API: plain HTTP, or HTTPS verified with the control plane's trust
 * bundle (`--ca-bundle`, else LOOM_CA_BUNDLE, else `./.loom/ca/trust-bundle.pem` when it exists; the system roots
 * otherwise, for a control plane serving a certificate of a public CA). With an API token (`--token`, else
 * LOOM_API_TOKEN) every request carries it as `Authorization: Bearer`: a control plane started with
 * `--api-token-file` takes changes only with a write token.
 */
import { existsSync, readFileSync } from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import { join } from 'node:path'

export interface ApiTarget {
  /** `http://host:port` or `https://host:port`, no trailing slash */
  base: string
  /** the file of trusted roots for https, if any */
  caBundle?: string
  /** the API token sent with every request, if any */
  token?: string
}

/** The API token to send: the flag, else LOOM_API_TOKEN, else none. */
export function apiTokenOf(flag: string | undefined): string | undefined {
  if (flag !== undefined && flag !== '') return flag
  const env = process.env.LOOM_API_TOKEN
  return env !== undefined && env !== '' ? env : undefined
}

/** The trust bundle file to verify the API with, or undefined (system roots). */
export function caBundleFile(flag: string | undefined): string | undefined {
  if (flag !== undefined) return flag
  if (process.env.LOOM_CA_BUNDLE !== undefined && process.env.LOOM_CA_BUNDLE !== '') return process.env.LOOM_CA_BUNDLE
  const local = join('.loom', 'ca', 'trust-bundle.pem')
  return existsSync(local) ? local : undefined
}

/** One request; resolves with the status and body text, rejects when the server cannot be reached or verified. */
export function apiRequest(
  target: ApiTarget,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  const url = new URL(`${target.base}${path}`)
  const tls = url.protocol === 'https:'
  const options: https.RequestOptions = {
    method,
    headers: target.token === undefined ? headers : { authorization: `Bearer ${target.token}`, ...headers },
  }
  if (tls && target.caBundle !== undefined) options.ca = readFileSync(target.caBundle, 'utf8')
  return new Promise((resolve, reject) => {
    const req = (tls ? https : http).request(url, options, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.setTimeout(30_000, () => req.destroy(new Error('no answer in 30 s')))
    req.on('error', reject)
    req.end(body)
  })
}

/** What to tell a user whose request failed at the TLS layer, or null when it is not a TLS failure. */
export function tlsHint(err: NodeJS.ErrnoException, target: ApiTarget): string | null {
  const code = err.code ?? ''
  if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(err.message))
    return 'the control plane does not speak TLS on this port: use http:// (or start it with --api-tls on)'
  if (
    /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME_INVALID/.test(code) ||
    /certificate/i.test(err.message)
  )
    return `the control plane's certificate does not verify (${err.message}) against ${target.caBundle ?? 'the system roots'}; give its trust bundle with --ca-bundle <data-dir>/ca/trust-bundle.pem or LOOM_CA_BUNDLE`
  return null
}
