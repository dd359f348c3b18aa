/** Istio's metrics as a proxy's admin `/stats/prometheus` renders them, read back for assertions. */

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** The labelled samples of a Prometheus text exposition (lines without labels are left out). */
export function parseProm(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)$/.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    for (const l of m[2]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

/** The sum of `name`'s samples whose labels include every one of `match`. */
export function sum(m: Sample[], name: string, match: Record<string, string>): number {
  let n = 0
  for (const s of m) if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) n += s.value
  return n
}

/** The samples of a proxy's `/stats/prometheus` (`admin`: host:port). */
export async function scrape(admin: string): Promise<Sample[]> {
  return parseProm(await (await fetch(`http://${admin}/stats/prometheus`)).text())
}

export const SA = (sa: string, ns = 'default') => `spiffe://cluster.local/ns/${ns}/sa/${sa}`
