import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2'
import { Headers } from '../headers.js'

/** node:http2 header object → our flat Headers, without pseudo-headers. */
export function fromH2(obj: IncomingHttpHeaders): Headers {
  const list: string[] = []
  for (const name in obj) {
    if (name.charCodeAt(0) === 0x3a) continue
    const v = obj[name]
    if (v === undefined) continue
    if (Array.isArray(v)) for (const x of v) list.push(name, x)
    else list.push(name, String(v))
  }
  return new Headers(list)
}

/** Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2). */
const FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host'])

/** Our Headers → a node:http2 header object, merging repeats into arrays and dropping forbidden fields. */
export function toH2(h: Headers, into: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const l = h.list
  for (let i = 0; i < l.length; i += 2) {
    const name = l[i]!
    if (FORBIDDEN.has(name)) continue
    if (name === 'te' && l[i + 1]!.toLowerCase() !== 'trailers') continue
    const prev = into[name]
    const v = l[i + 1]!
    if (prev === undefined) into[name] = v
    else if (Array.isArray(prev)) prev.push(v)
    else into[name] = [String(prev), v]
  }
  return into
}
