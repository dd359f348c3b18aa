/**
 * `x-request-id` values: random (version 4) UUIDs, as Envoy generates them.
 *
 * crypto.randomUUID() costs about half a kilobyte of garbage per call; this draws 16 bytes at a time from a pool of
 * random bytes refilled from the same CSPRNG and writes the 36 characters into a scratch buffer, so each id is one
 * string allocation.
 */
import { randomFillSync } from 'node:crypto'

const POOL_IDS = 256
const pool = Buffer.allocUnsafeSlow(16 * POOL_IDS)
let next = POOL_IDS
const out = Buffer.allocUnsafeSlow(36)
const HEX = new Uint8Array(16)
for (let i = 0; i < 16; i++) HEX[i] = '0123456789abcdef'.charCodeAt(i)
/** output position of each of the 32 hex digits */
const POS = new Uint8Array(32)
for (let i = 0, o = 0; i < 32; i++, o++) {
  if (o === 8 || o === 13 || o === 18 || o === 23) o++
  POS[i] = o
}
out[8] = out[13] = out[18] = out[23] = 0x2d

export function requestId(): string {
  if (next === POOL_IDS) {
    randomFillSync(pool)
    next = 0
  }
  const base = next++ * 16
  pool[base + 6] = (pool[base + 6]! & 0x0f) | 0x40 // version 4
  pool[base + 8] = (pool[base + 8]! & 0x3f) | 0x80 // RFC 9562 variant
  for (let i = 0; i < 16; i++) {
    const b = pool[base + i]!
    out[POS[2 * i]!] = HEX[b >> 4]!
    out[POS[2 * i + 1]!] = HEX[b & 15]!
  }
  return out.latin1Slice(0, 36)
}
