/**
 * Envoy's `tls_inspector` listener filter: reads a connection's first bytes, without consuming them, and says
 * whether they are a TLS ClientHello, with its SNI and the ALPN protocols it offers. Filter chain matching uses the
 * answer (`transport_protocol` `tls` / `raw_buffer`, `server_names`, `application_protocols`), so one port can
 * serve TLS and plain-text chains (Istio's PERMISSIVE inbound).
 */

export type Inspection =
  | { kind: 'tls'; serverName: string; alpn: string[] }
  | { kind: 'raw' }
  /** not enough bytes yet */
  | { kind: 'more' }

/** Envoy's tls_inspector reads at most 64 KiB of ClientHello. */
export const MAX_CLIENT_HELLO = 64 * 1024

/** Inspects the bytes received so far. */
export function inspectClientHello(buf: Buffer): Inspection {
  if (buf.length === 0) return { kind: 'more' }
  if (buf[0] !== 0x16) return { kind: 'raw' }
  if (buf.length >= 2 && buf[1] !== 0x03) return { kind: 'raw' }
  // the handshake message may span records: join their fragments
  const parts: Buffer[] = []
  let at = 0
  let have = 0
  let need = -1
  while (true) {
    if (at + 5 > buf.length) break
    if (buf[at] !== 0x16) return { kind: 'raw' }
    const len = buf.readUInt16BE(at + 3)
    if (at + 5 + len > buf.length) {
      parts.push(buf.subarray(at + 5))
      have += buf.length - at - 5
      break
    }
    parts.push(buf.subarray(at + 5, at + 5 + len))
    have += len
    at += 5 + len
    if (need < 0 && have >= 4) {
      const hs = parts.length === 1 ? parts[0]! : Buffer.concat(parts)
      if (hs[0] !== 0x01) return { kind: 'raw' }
      need = 4 + hs.readUIntBE(1, 3)
    }
    if (need >= 0 && have >= need) break
  }
  const hs = parts.length === 1 ? parts[0]! : Buffer.concat(parts)
  if (need < 0 && hs.length >= 4) {
    if (hs[0] !== 0x01) return { kind: 'raw' }
    need = 4 + hs.readUIntBE(1, 3)
  }
  if (need < 0 || hs.length < need) return buf.length >= MAX_CLIENT_HELLO ? parseHello(hs) : { kind: 'more' }
  return parseHello(hs.subarray(0, need))
}

/** Parses a ClientHello handshake message (type and length first); what cannot be read is left out. */
function parseHello(hs: Buffer): Inspection {
  const out = { kind: 'tls' as const, serverName: '', alpn: [] as string[] }
  let p = 4 + 2 + 32 // type, length, client_version, random
  if (p >= hs.length) return out
  p += 1 + hs[p]! // session_id
  if (p + 2 > hs.length) return out
  p += 2 + hs.readUInt16BE(p) // cipher_suites
  if (p >= hs.length) return out
  p += 1 + hs[p]! // compression_methods
  if (p + 2 > hs.length) return out
  const end = Math.min(hs.length, p + 2 + hs.readUInt16BE(p))
  p += 2
  while (p + 4 <= end) {
    const type = hs.readUInt16BE(p)
    const len = hs.readUInt16BE(p + 2)
    const body = hs.subarray(p + 4, Math.min(end, p + 4 + len))
    p += 4 + len
    if (type === 0 && body.length >= 2) {
      // server_name: list length, then (name_type 0, length, host_name)
      let q = 2
      while (q + 3 <= body.length) {
        const t = body[q]!
        const n = body.readUInt16BE(q + 1)
        if (t === 0) {
          out.serverName = body.subarray(q + 3, q + 3 + n).toString('latin1')
          break
        }
        q += 3 + n
      }
    } else if (type === 16 && body.length >= 2) {
      // application_layer_protocol_negotiation: list length, then (length, name)*
      let q = 2
      while (q < body.length) {
        const n = body[q]!
        if (n === 0 || q + 1 + n > body.length) break
        out.alpn.push(body.subarray(q + 1, q + 1 + n).toString('latin1'))
        q += 1 + n
      }
    }
  }
  return out
}
