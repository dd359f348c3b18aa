/**
 * Node modules loaded on first use. TLS and HTTP/2 bring in OpenSSL and nghttp2 code that a plain-text HTTP/1.1
 * sidecar never runs; loading them only when a config or a connection needs them keeps its resident memory lower.
 */
import { createRequire } from 'node:module'

const load = createRequire(import.meta.url)
let tlsModule: typeof import('node:tls') | null = null
let http2Module: typeof import('node:http2') | null = null

export function tls(): typeof import('node:tls') {
  if (tlsModule === null) tlsModule = load('node:tls') as typeof import('node:tls')
  return tlsModule
}

export function http2(): typeof import('node:http2') {
  if (http2Module === null) http2Module = load('node:http2') as typeof import('node:http2')
  return http2Module
}

/** HTTP/2 constants used on the hot path, without loading node:http2 for them. */
export const H2 = {
  FLAG_END_STREAM: 0x1,
  NO_ERROR: 0x0,
  INTERNAL_ERROR: 0x2,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  ENHANCE_YOUR_CALM: 0xb,
} as const
