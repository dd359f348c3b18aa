/**
 * The injection webhook's HTTPS server: `POST /inject` takes an AdmissionReview v1 and answers with injection.ts's
 * patch. Its certificate is issued by the control plane's CA (renewed with the control plane's own), so the
 * MutatingWebhookConfiguration's `caBundle` is the CA's trust bundle.
 */
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { log } from '../../core/log.js'
import type { ControlTls } from '../tls.js'
import { type AdmissionReview, admit, type InjectionOptions } from './injection.js'
import type { KubernetesSource } from './source.js'

/** An AdmissionReview is small; a larger body is refused. */
const MAX_BODY = 4 * 1024 * 1024

export class InjectionWebhook {
  readonly #server: Server
  /** pods patched, pods left as they were */
  readonly counts = { injected: 0, skipped: 0 }

  constructor(tls: ControlTls, source: KubernetesSource, options: InjectionOptions) {
    const cert = () => ({ cert: tls.certificate.certChainPem, key: tls.certificate.privateKeyPem })
    this.#server = createServer(cert(), (req, res) => {
      if (req.method !== 'POST' || !req.url?.startsWith('/inject')) {
        res.writeHead(404).end()
        return
      }
      const chunks: Buffer[] = []
      let size = 0
      req.on('data', (c: Buffer) => {
        size += c.length
        if (size > MAX_BODY) req.destroy()
        else chunks.push(c)
      })
      req.on('end', () => {
        let review: AdmissionReview
        try {
          review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as AdmissionReview
        } catch {
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"the body is not JSON"}')
          return
        }
        const answer = admit(review, (ns) => source.namespaceLabels(ns), options)
        if (answer.response.patch !== undefined) {
          this.counts.injected++
          log('info', 'inject', 'sidecar added', {
            namespace: review.request?.namespace,
            pod: review.request?.object?.metadata?.name ?? review.request?.object?.metadata?.generateName,
          })
        } else this.counts.skipped++
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
      })
    })
    tls.onChange(() => this.#server.setSecureContext(cert()))
  }

  async listen(host: string, port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(port, host, () => resolve())
    })
    return `${host}:${(this.#server.address() as AddressInfo).port}`
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve())
      this.#server.closeAllConnections()
    })
  }
}
