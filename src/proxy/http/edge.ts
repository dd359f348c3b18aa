/**
 * Envoy's edge rules for request headers (the HTTP connection manager's `use_remote_address` family), applied to
 * every request before it is routed:
 *
 * - **Trusted client address.** With `use_remote_address`, the peer of the connection, or with
 *   `xff_num_trusted_hops: N > 0` the Nth address from the right of `x-forwarded-for` (before the proxy appends to
 *   it). Without `use_remote_address`, the (N+1)th address from the right of `x-forwarded-for`, else the peer. It is
 *   the address access logs, `connection_properties.source_ip` hashing and generated affinity cookies use.
 * - **Internal or external.** With `use_remote_address`, a request is internal when it carries no
 *   `x-forwarded-for` and its peer is an internal address; without, when `x-forwarded-for` holds a single internal
 *   address. Internal addresses are `internal_address_config.cidr_ranges`; without that field none (Envoy's default
 *   since 1.33). An *edge* request is an external one on a connection manager with `use_remote_address`.
 * - `x-forwarded-for`: the peer is appended when `use_remote_address` is set and `skip_xff_append` is not.
 * - `x-forwarded-proto`: set from the downstream connection (`http` or `https`) when absent, and overwritten on edge
 *   requests unless `xff_num_trusted_hops` says a trusted proxy set it.
 * - `x-envoy-internal`: always the proxy's own verdict (`true` on internal requests, absent otherwise).
 * - Edge requests lose every `x-envoy-*` and `x-loom-*` request header, then get `x-envoy-external-address` (the
 *   trusted client address). Other requests keep theirs: a sidecar trusts its mesh. `x-loom-explain` is left to
 *   the explain filter when the chain has one (it removes the header from callers it does not permit).
 * - `x-request-id` (`generate_request_id`, default on): generated when absent, and on edge requests replaced unless
 *   `preserve_external_request_id`.
 *
 * A connection manager without `use_remote_address` (a sidecar) pays for one pass over the header names, which
 * replaces the two lookups (`x-request-id`, `x-forwarded-proto`) the proxy always made; the rest runs only when the
 * headers it concerns are present. Nothing here allocates unless a header is added or changed.
 */
import { BlockList, isIP } from 'node:net'
import type { CidrRange } from '../../config/envoy.js'
import type { HcmContext } from './hcm.js'
import { requestId } from './request-id.js'
import type { ActiveStream } from './stream.js'
import type { RequestHead } from './types.js'

/** `internal_address_config.cidr_ranges` as one lookup; null when no address is internal. */
export function compileInternalAddresses(ranges: readonly CidrRange[] | undefined): BlockList | null {
  if (ranges === undefined || ranges.length === 0) return null
  const list = new BlockList()
  for (const r of ranges) {
    const family = isIP(r.address_prefix) === 4 ? 'ipv4' : 'ipv6'
    list.addSubnet(r.address_prefix, r.prefix_len ?? 0, family)
  }
  return list
}

/** Whether `address` (as a socket reports it, IPv4-mapped IPv6 included) is in `list`. */
export function isInternalAddress(list: BlockList | null, address: string): boolean {
  if (list === null || address === '') return false
  if (address.startsWith('::ffff:') && isIP(address.slice(7)) === 4) return list.check(address.slice(7), 'ipv4')
  const family = isIP(address)
  return family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

// What one pass over the header names found (one request head is processed at a time).
let xffAt = -1
let xffCount = 0
let xfpAt = -1
let ridAt = -1
let envoyInternalAt = -1
/** `x-envoy-*` and `x-loom-*` names seen, `x-envoy-internal` included */
let reserved = 0

function scan(l: readonly string[]): void {
  // locals in the loop, module state written once
  let xff = -1
  let nXff = 0
  let xfp = -1
  let rid = -1
  let internal = -1
  let nReserved = 0
  for (let i = 0; i < l.length; i += 2) {
    const n = l[i]!
    // every name of interest starts with `x-`
    if (n.charCodeAt(0) !== 0x78 || n.charCodeAt(1) !== 0x2d) continue
    const c = n.charCodeAt(2)
    if (c === 0x66) {
      // f
      if (n === 'x-forwarded-for') {
        if (xff < 0) xff = i
        nXff++
      } else if (n === 'x-forwarded-proto' && xfp < 0) xfp = i
    } else if (c === 0x72) {
      // r
      if (n === 'x-request-id' && rid < 0) rid = i
    } else if (c === 0x65) {
      // e
      if (n.startsWith('x-envoy-')) {
        nReserved++
        if (n === 'x-envoy-internal') internal = i
      }
    } else if (c === 0x6c && n.startsWith('x-loom-')) nReserved++
  }
  xffAt = xff
  xffCount = nXff
  xfpAt = xfp
  ridAt = rid
  envoyInternalAt = internal
  reserved = nReserved
}

/** Whether the last `x-forwarded-for` looked at by xffAddress held a single address. */
let xffSingle = false

/**
 * The address `skip` elements from the right of an `x-forwarded-for` value, if it is an IP address; null when the
 * list is shorter or that element is not an address.
 */
function xffAddress(xff: string, skip: number): string | null {
  xffSingle = xff.indexOf(',') < 0
  let end = xff.length
  for (let i = 0; i < skip; i++) {
    const comma = end === 0 ? -1 : xff.lastIndexOf(',', end - 1)
    if (comma < 0) return null
    end = comma
  }
  const start = end === 0 ? 0 : xff.lastIndexOf(',', end - 1) + 1
  const a = xff.slice(start, end).trim()
  return isIP(a) !== 0 ? a : null
}

/**
 * Removes every `x-envoy-*` and `x-loom-*` field, keeping the order of the rest; `x-loom-explain` stays when the
 * connection manager's explain filter decides who may send it (`keepExplain`).
 */
function removeReserved(l: string[], keepExplain: boolean): void {
  let w = 0
  for (let i = 0; i < l.length; i += 2) {
    const n = l[i]!
    if (n.startsWith('x-envoy-') || (n.startsWith('x-loom-') && !(keepExplain && n === 'x-loom-explain'))) continue
    if (w !== i) {
      l[w] = n
      l[w + 1] = l[i + 1]!
    }
    w += 2
  }
  l.length = w
}

/** Applies the edge rules to `head` and sets the stream's trusted client address and request id. */
export function applyEdgeRules(s: ActiveStream, hcm: HcmContext, head: RequestHead): void {
  const headers = head.headers
  const l = headers.list
  scan(l)
  if (xffCount > 1) {
    // several x-forwarded-for fields are one list
    headers.set('x-forwarded-for', headers.getAll('x-forwarded-for').join(', '))
    scan(l)
  }
  const peer = s.peerIp
  const xff = xffAt < 0 ? undefined : l[xffAt + 1]!
  let internal = false
  if (hcm.useRemoteAddress) {
    if (xff === undefined) internal = isInternalAddress(hcm.internalAddresses, peer)
    else if (hcm.xffTrustedHops > 0) {
      const a = xffAddress(xff, hcm.xffTrustedHops - 1)
      if (a !== null) s.sourceIp = a
    }
    if (hcm.appendXff) {
      if (xff === undefined) headers.add('x-forwarded-for', peer)
      else l[xffAt + 1] = `${xff}, ${peer}`
    }
  } else if (xff !== undefined) {
    const a = xffAddress(xff, hcm.xffTrustedHops)
    if (a !== null) {
      s.sourceIp = a
      internal = xffSingle && isInternalAddress(hcm.internalAddresses, a)
    }
  }
  const edge = hcm.useRemoteAddress && !internal

  // x-request-id (by index, before anything below moves fields)
  if (ridAt < 0) {
    if (hcm.generateRequestId) headers.add('x-request-id', (s.requestId = requestId()))
  } else if (edge && hcm.generateRequestId && !hcm.preserveExternalRequestId) {
    l[ridAt + 1] = s.requestId = requestId()
  } else s.requestId = l[ridAt + 1]!

  if (xfpAt < 0) headers.add('x-forwarded-proto', head.scheme)
  else if (edge && hcm.xffTrustedHops === 0) headers.set('x-forwarded-proto', head.scheme)

  if (edge) {
    if (reserved > 0) removeReserved(l, hcm.explainFilter)
    headers.add('x-envoy-external-address', s.sourceIp)
  } else if (envoyInternalAt >= 0) headers.remove('x-envoy-internal')
  if (internal) headers.add('x-envoy-internal', 'true')
}
