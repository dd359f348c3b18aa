/**
 * MurmurHash3 (x86, 32-bit) of a string's UTF-8 bytes. Used to place hosts on the ring (RING_HASH) and to derive
 * Maglev permutations; written for build time, not the per-request path. Ring positions are 32-bit because the
 * request hash the router hands over is a uint32: finer positions would not spread requests any better.
 */

const encoder = new TextEncoder()
let scratch = new Uint8Array(256)

export function murmur3(text: string, seed = 0): number {
  // Worst case 3 bytes per UTF-16 unit.
  if (scratch.length < text.length * 3) scratch = new Uint8Array(text.length * 3)
  const len = encoder.encodeInto(text, scratch).written
  return murmur3Bytes(scratch, len, seed)
}

export function murmur3Bytes(bytes: Uint8Array, len: number, seed = 0): number {
  const c1 = 0xcc9e2d51
  const c2 = 0x1b873593
  let h = seed >>> 0
  const blocks = len & ~3
  for (let i = 0; i < blocks; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  const rest = len & 3
  if (rest !== 0) {
    let k = bytes[blocks]!
    if (rest >= 2) k |= bytes[blocks + 1]! << 8
    if (rest === 3) k |= bytes[blocks + 2]! << 16
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
  }
  h ^= len
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}
