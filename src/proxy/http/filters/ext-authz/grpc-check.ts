/**
 * The envoy.service.auth.v3.Authorization/Check protocol on the wire: a CheckRequest framed as one gRPC message
 * (5-byte prefix, protobuf), and the CheckResponse decoded from the reply. The auth protos are loaded into the shared
 * protobuf Root (src/xds/proto.ts) when a filter with a gRPC service is compiled, so a proxy without one never parses
 * them.
 */
import { Buffer } from 'node:buffer'
import type * as PB from 'protobufjs'
import { protoRoot } from '../../../../xds/proto.js'

export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check'

let types: { request: PB.Type; response: PB.Type } | null = null

/** Loads the Check protocol's messages (once); the filter calls it when compiled so no request waits for it. */
export function authTypes(): { request: PB.Type; response: PB.Type } {
  if (types !== null) return types
  const root = protoRoot()
  if (root.lookup('envoy.service.auth.v3.CheckRequest') === null) {
    root.loadSync('envoy/service/auth/v3/external_auth.proto', { keepCase: true })
    root.resolveAll()
  }
  types = {
    request: root.lookupType('envoy.service.auth.v3.CheckRequest'),
    response: root.lookupType('envoy.service.auth.v3.CheckResponse'),
  }
  return types
}

export interface PeerAttributes {
  address?: { socket_address: { address: string; port_value: number } }
  principal?: string
  certificate?: string
}

/** AttributeContext's fields Loom fills. */
export interface CheckAttributes {
  source: PeerAttributes
  destination: PeerAttributes
  request: {
    time: { seconds: number; nanos: number }
    http: {
      id: string
      method: string
      headers: Record<string, string>
      path: string
      host: string
      scheme: string
      query: string
      size: number
      protocol: string
      body?: string
      raw_body?: Buffer
    }
  }
  context_extensions?: Record<string, string>
}

/** A CheckRequest as one length-prefixed gRPC message. */
export function encodeCheckRequest(attributes: CheckAttributes): Buffer {
  const t = authTypes().request
  const msg = t.encode(t.fromObject({ attributes })).finish()
  const out = Buffer.allocUnsafe(5 + msg.length)
  out[0] = 0
  out.writeUInt32BE(msg.length, 1)
  out.set(msg, 5)
  return out
}

export interface HeaderValueOption {
  header?: { key?: string; value?: string }
  append?: { value?: boolean }
  /** HeaderAppendAction by number (0 APPEND_IF_EXISTS_OR_ADD is the unset default) */
  append_action?: number
}

export interface CheckResponse {
  status?: { code?: number; message?: string }
  denied_response?: { status?: { code?: number }; headers?: HeaderValueOption[]; body?: string }
  ok_response?: {
    headers?: HeaderValueOption[]
    headers_to_remove?: string[]
    response_headers_to_add?: HeaderValueOption[]
  }
}

/** The CheckResponse in a gRPC reply body (one uncompressed message); throws on anything else. */
export function decodeCheckResponse(body: Buffer): CheckResponse {
  if (body.length < 5) throw new Error('empty gRPC response')
  if (body[0] !== 0) throw new Error('compressed gRPC messages are not supported')
  const len = body.readUInt32BE(1)
  if (body.length < 5 + len) throw new Error('truncated gRPC message')
  const t = authTypes().response
  const msg = t.decode(body.subarray(5, 5 + len))
  return t.toObject(msg, { enums: Number, longs: Number }) as CheckResponse
}
