/**
 * An explanation (`POST /api/v1/explain`'s answer) as people read it: the request, the source and the config it was
 * read from, the decision tree (✓ holds, ✗ does not, • a setting that applies) and the outcome. `loom explain`
 * prints it as text; the dashboard builds the same lines as elements. Plain data in, strings out: this module is
 * bundled into the dashboard too, so it imports nothing.
 */

export interface ExplainedStep {
  ok: boolean | null
  text: string
  children?: ExplainedStep[]
}

/** The fields of an explanation that its rendering reads. */
export interface Explained {
  source: { name: string; kind: string; nodeId: string; principal: string | null }
  request: { method: string; url: string; headers: [string, string][] }
  config: { type: string; version: string; acked: boolean }[]
  localReply: { status: number; flag: string; reason: string } | null
  faults: string[]
  steps: ExplainedStep[]
}

export function mark(ok: boolean | null): string {
  return ok === true ? '✓' : ok === false ? '✗' : '•'
}

/** The lines above the tree: the request, its source, the config versions it was read from. */
export function explanationHead(e: Explained): string[] {
  const hdrs = e.request.headers.map(([n, v]) => ` -H '${n}: ${v}'`).join('')
  const cfg = e.config.map((c) => `${c.type} ${c.version.slice(0, 8)}${c.acked ? '' : ' (not ACKed)'}`).join(', ')
  return [
    `${e.request.method} ${e.request.url}${hdrs}`,
    `  from ${e.source.name} (${e.source.kind}${e.source.principal === null ? '' : `, ${e.source.principal}`})`,
    `  config: the snapshot sent to ${e.source.nodeId}${cfg === '' ? '' : `: ${cfg}`}`,
  ]
}

/** What happens to the request in the end. */
export function explanationOutcome(e: Explained): string {
  if (e.localReply !== null) {
    const r = e.localReply
    return `${r.status}${r.flag === '' ? '' : ` ${r.flag}`} (${r.reason}), answered by the mesh`
  }
  if (e.faults.length > 0) return `forwarded upstream, unless a fault fires: ${e.faults.join(', ')}`
  return "forwarded upstream: the answer is the application's"
}

function renderSteps(steps: ExplainedStep[], indent: string, out: string[]): void {
  for (const s of steps) {
    out.push(`${indent}${mark(s.ok)} ${s.text}`)
    if (s.children !== undefined) renderSteps(s.children, `${indent}    `, out)
  }
}

/** The readable tree, as `loom explain` prints it. */
export function renderExplanation(e: Explained): string {
  const out = explanationHead(e)
  out.push('')
  renderSteps(e.steps, '', out)
  out.push('', `outcome: ${explanationOutcome(e)}`)
  return `${out.join('\n')}\n`
}
