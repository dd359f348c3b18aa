/**
 * `node dist/bench/path-normalize.js`: CPU time per request path of the connection manager's path normalization
 * (Istio's DECODE_AND_MERGE_SLASHES, every step on), next to a bare loop that reads each character of the same
 * paths once. CPU time (not wall time), so a loaded machine skews the two alike.
 */
import { PathNormalizer } from '../src/proxy/http/path-normalize.js'

const n = PathNormalizer.compile({
  normalize_path: true,
  merge_slashes: true,
  path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD',
})!
const UNCHANGED = [
  '/api/v1/users/1234/orders?include=items&page=2',
  '/static/js/app.3f2a1b.min.js',
  '/reviews/0',
  '/a%20b/%C3%A9t%C3%A9/x?q=%2F',
  '/productpage?u=normal',
]
const CHANGED = ['/a//b/./c/../d%61?x', '//admin/x', '/x/%2e%2e/admin%2Fy']

function bare(s: string): number {
  let x = 0
  for (let i = 0; i < s.length; i++) x += s.charCodeAt(i)
  return x
}

function cpuNs(count: number, fn: (i: number) => void): number {
  const t = process.cpuUsage()
  for (let i = 0; i < count; i++) fn(i)
  const u = process.cpuUsage(t)
  return ((u.user + u.system) * 1000) / count
}

let sink = 0
const N = 5_000_000
for (let round = 1; round <= 3; round++) {
  const b = cpuNs(N, (i) => {
    sink += bare(UNCHANGED[i % UNCHANGED.length]!)
  })
  const a = cpuNs(N, (i) => {
    sink += n.apply(UNCHANGED[i % UNCHANGED.length]!)
  })
  const c = cpuNs(N / 10, (i) => {
    sink += n.apply(CHANGED[i % CHANGED.length]!)
  })
  console.log(
    `round ${round}: bare character loop ${b.toFixed(0)} ns, path needing no change ${a.toFixed(0)} ns, ` +
      `path rebuilt ${c.toFixed(0)} ns`,
  )
}
if (sink === -1) console.log(sink)
