// Node's fast, unchecked latin1 slice: present on every Buffer, missing from @types/node.
declare global {
  interface Buffer {
    latin1Slice(start: number, end: number): string
  }
}
export {}
