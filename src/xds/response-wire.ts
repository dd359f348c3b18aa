/**
 * DiscoveryResponse and DeltaDiscoveryResponse written by hand: every response the xDS server sends goes through
 * here, and its resources are encoded already (`Any` bytes from the snapshot cache), so writing one is measuring
 * the fields, allocating once and copying. protobufjs (through proto-loader) first converts the whole object, then
 * encodes it op by op; for the small per-stream deltas of a thousand scoped proxies that was most of a push's cost.
 *
 * The bytes are those protobufjs writes for the same object (fields in field number order, a field written when it
 * is set, even to an empty value), which the tests check. A message with a
 * field not handled here (`canary`, a resource's `ttl`...) returns null, and the caller encodes it as before.
 */
import type { DeltaDiscoveryResponse, DiscoveryResponse } from './ads.js'

const SOTW_KEYS = new Set(['version_info', 'resources', 'type_url', 'nonce', 'control_plane'])
const DELTA_KEYS = new Set([
  'system_version_info',
  'resources',
  'type_url',
  'removed_resources',
  'nonce',
  'control_plane',
])
const RESOURCE_KEYS = new Set(['name', 'aliases', 'version', 'resource'])

/** UTF-8 length of a string: its length when it is ASCII, found without a call into the encoder */
function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s)
  return s.length
}

function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5
}

/** bytes of a length-delimited field (one-byte tag) holding `len` bytes */
function fieldSize(len: number): number {
  return 1 + varintSize(len) + len
}

function only(o: object, keys: ReadonlySet<string>): boolean {
  for (const k in o) if (!keys.has(k) && (o as Record<string, unknown>)[k] !== undefined) return false
  return true
}

class Writer {
  at = 0
  constructor(readonly buf: Buffer) {}

  varint(n: number): void {
    const b = this.buf
    while (n >= 0x80) {
      b[this.at++] = (n & 0x7f) | 0x80
      n >>>= 7
    }
    b[this.at++] = n
  }

  /** a string field: tag, length, UTF-8 (`len`: from `utf8Length`) */
  string(tag: number, s: string, len: number): void {
    const b = this.buf
    b[this.at++] = tag
    this.varint(len)
    if (len === s.length) {
      // ASCII (names, hashes, type URLs): copied in JS, cheaper than a call into the encoder for a few dozen bytes
      let at = this.at
      for (let i = 0; i < len; i++) b[at++] = s.charCodeAt(i)
      this.at = at
    } else this.at += b.write(s, this.at, len, 'utf8')
  }

  bytes(tag: number, v: Uint8Array): void {
    this.buf[this.at++] = tag
    this.varint(v.length)
    this.buf.set(v, this.at)
    this.at += v.length
  }

  /** the head of an embedded message of `len` bytes */
  open(tag: number, len: number): void {
    this.buf[this.at++] = tag
    this.varint(len)
  }
}

interface AnyLike {
  type_url?: string
  value?: Uint8Array
}

/** the type URLs of the resources sent (a handful) as their field's bytes: tag, length, UTF-8 */
const typeUrlFields = new Map<string, Buffer>()

function typeUrlField(url: string): Buffer {
  let b = typeUrlFields.get(url)
  if (b === undefined) {
    const len = utf8Length(url)
    const w = new Writer(Buffer.alloc(fieldSize(len)))
    w.string(0x0a, url, len)
    b = w.buf
    if (typeUrlFields.size < 64) typeUrlFields.set(url, b)
  }
  return b
}

/** An Any's size, its type URL's field made (or found) on the way. */
function anySize(a: AnyLike): number {
  let size = a.type_url == null ? 0 : typeUrlField(a.type_url).length
  if (a.value != null) size += fieldSize(a.value.length)
  return size
}

function writeAny(w: Writer, a: AnyLike): void {
  if (a.type_url != null) {
    const f = typeUrlField(a.type_url)
    w.buf.set(f, w.at)
    w.at += f.length
  }
  if (a.value != null) w.bytes(0x12, a.value)
}

const str = (s: string | null | undefined): number => (s == null ? -1 : utf8Length(s))
const strField = (len: number): number => (len < 0 ? 0 : fieldSize(len))

/** DiscoveryResponse's bytes, or null when it has a field this does not write. */
export function encodeDiscoveryResponse(m: DiscoveryResponse): Buffer | null {
  if (!only(m, SOTW_KEYS)) return null
  const version = str(m.version_info)
  const typeUrl = str(m.type_url)
  const nonce = str(m.nonce)
  const cp = m.control_plane == null ? -1 : str(m.control_plane.identifier)
  const resources = m.resources ?? []
  const sizes = new Array<number>(resources.length)
  let size = strField(version) + strField(typeUrl) + strField(nonce)
  if (m.control_plane != null) size += fieldSize(strField(cp))
  for (let i = 0; i < resources.length; i++) {
    const len = anySize(resources[i]!)
    sizes[i] = len
    size += fieldSize(len)
  }
  const w = new Writer(Buffer.allocUnsafe(size))
  if (version >= 0) w.string(0x0a, m.version_info, version)
  for (let i = 0; i < resources.length; i++) {
    w.open(0x12, sizes[i]!)
    writeAny(w, resources[i]!)
  }
  if (typeUrl >= 0) w.string(0x22, m.type_url, typeUrl)
  if (nonce >= 0) w.string(0x2a, m.nonce, nonce)
  if (m.control_plane != null) {
    w.open(0x32, strField(cp))
    if (cp >= 0) w.string(0x0a, m.control_plane.identifier, cp)
  }
  return w.buf
}

/** DeltaDiscoveryResponse's bytes, or null when it has a field this does not write. */
export function encodeDeltaDiscoveryResponse(m: DeltaDiscoveryResponse): Buffer | null {
  if (!only(m, DELTA_KEYS)) return null
  const version = str(m.system_version_info)
  const typeUrl = str(m.type_url)
  const nonce = str(m.nonce)
  const cp = m.control_plane == null ? -1 : str(m.control_plane.identifier)
  const resources = m.resources ?? []
  const removed = m.removed_resources ?? []
  // per resource: name, version, the Any's size, the Resource's size
  const sizes = new Array<number>(resources.length * 4)
  let size = strField(version) + strField(typeUrl) + strField(nonce)
  if (m.control_plane != null) size += fieldSize(strField(cp))
  for (let i = 0; i < resources.length; i++) {
    const r = resources[i]!
    if (!only(r, RESOURCE_KEYS)) return null
    const name = str(r.name)
    const ver = str(r.version)
    let len = strField(name) + strField(ver)
    for (const a of r.aliases ?? []) len += fieldSize(utf8Length(a))
    let anyLen = -1
    if (r.resource != null) {
      anyLen = anySize(r.resource)
      len += fieldSize(anyLen)
    }
    const at = 4 * i
    sizes[at] = name
    sizes[at + 1] = ver
    sizes[at + 2] = anyLen
    sizes[at + 3] = len
    size += fieldSize(len)
  }
  for (const n of removed) size += fieldSize(utf8Length(n))
  const w = new Writer(Buffer.allocUnsafe(size))
  if (version >= 0) w.string(0x0a, m.system_version_info, version)
  for (let i = 0; i < resources.length; i++) {
    const r = resources[i]!
    const at = 4 * i
    const name = sizes[at]!
    const ver = sizes[at + 1]!
    w.open(0x12, sizes[at + 3]!)
    // Resource, in field number order: version (1), resource (2), name (3), aliases (4)
    if (ver >= 0) w.string(0x0a, r.version, ver)
    if (r.resource != null) {
      w.open(0x12, sizes[at + 2]!)
      writeAny(w, r.resource)
    }
    if (name >= 0) w.string(0x1a, r.name, name)
    for (const a of r.aliases ?? []) w.string(0x22, a, utf8Length(a))
  }
  if (typeUrl >= 0) w.string(0x22, m.type_url, typeUrl)
  if (nonce >= 0) w.string(0x2a, m.nonce, nonce)
  for (const n of removed) w.string(0x32, n, utf8Length(n))
  if (m.control_plane != null) {
    w.open(0x3a, strField(cp))
    if (cp >= 0) w.string(0x0a, m.control_plane.identifier, cp)
  }
  return w.buf
}
