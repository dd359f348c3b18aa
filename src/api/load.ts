/**
 * Reading manifests: multi-document YAML or JSON (one object, or a Kubernetes `List`), as `kubectl apply -f` takes
 * them. Every document is validated on its own, so one bad document does not hide the problems of the others;
 * each error names the file, the document (0-based index, kind and name when known) and the field path.
 * Kubernetes' own kinds (Deployment, Service, ...) are not Loom resources: they are skipped and reported.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import * as yaml from 'js-yaml'
import { CORE_SCHEMA, load, type Type, YAMLException } from 'js-yaml'
import { formatPath } from '../config/schema.js'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { type IstioResource, isIstioKind, validateResource } from './kinds.js'

export interface ManifestError {
  /** the file name (or `<stdin>`) */
  source: string
  /** the document's 0-based index in the file */
  index: number
  kind?: string
  name?: string
  /** the field path inside the document (`spec.http[0].route`), or '' for the whole document */
  path: string
  message: string
  /** 1-based, for YAML syntax errors */
  line?: number
  column?: number
}

export interface SkippedDocument {
  index: number
  kind: string
  apiVersion?: string
  name?: string
}

/** Where a resource came from: the file (or `<stdin>`) and the document's 0-based index in it. */
export interface ResourceOrigin {
  source: string
  index: number
}

export interface ManifestResult {
  resources: IstioResource[]
  /** `origins[i]` is where `resources[i]` came from */
  origins: ResourceOrigin[]
  errors: ManifestError[]
  skipped: SkippedDocument[]
}

/** YAML as Kubernetes reads it: the core schema (no timestamps or binary) plus merge keys. */
const mergeType = (yaml as unknown as { types: { merge: Type } }).types.merge
const SCHEMA = CORE_SCHEMA.extend({ implicit: [mergeType] })

const K8S_GROUPS = new Set(['', 'apps', 'batch', 'autoscaling', 'policy', 'extensions'])

/** Kinds served by Kubernetes itself (core, apps, batch, `*.k8s.io`...): skipped, not errors. */
export function isKubernetesBuiltin(apiVersion: string): boolean {
  const slash = apiVersion.indexOf('/')
  const group = slash < 0 ? '' : apiVersion.slice(0, slash)
  return K8S_GROUPS.has(group) || group.endsWith('.k8s.io')
}

interface Chunk {
  text: string
  /** 0-based line of the chunk's first line in the file */
  line: number
}

const DOC_START = /^---(?:[ \t].*)?$/

function hasContent(text: string): boolean {
  return text.split('\n').some((l) => !/^\s*(?:#.*)?$/.test(l) && !l.startsWith('%'))
}

/** Splits a YAML stream at `---` lines, keeping line numbers; a leading chunk of only comments is not a document. */
function splitDocuments(text: string): Chunk[] {
  const lines = text.split(/\r?\n/)
  const chunks: Chunk[] = []
  let start = 0
  for (let i = 1; i <= lines.length; i++) {
    if (i === lines.length || DOC_START.test(lines[i]!)) {
      chunks.push({ text: lines.slice(start, i).join('\n'), line: start })
      start = i
    }
  }
  const first = chunks[0]
  if (first !== undefined && !DOC_START.test(lines[0] ?? '') && !hasContent(first.text)) chunks.shift()
  return chunks
}

interface Entry {
  line: number
  col: number
  seq: boolean
  key?: string
}

const KEY_RE = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s"'#{[\]][^#]*?)[ \t]*:(?=[ \t]|$)/

function lineEntries(text: string, line: number): Entry[] {
  const out: Entry[] = []
  let i = 0
  while (text[i] === ' ') i++
  if (i >= text.length || text[i] === '#') return out
  while (text[i] === '-' && (text[i + 1] === ' ' || i + 1 === text.length)) {
    out.push({ line, col: i, seq: true })
    i++
    while (text[i] === ' ') i++
  }
  const m = KEY_RE.exec(text.slice(i))
  if (m !== null) {
    let key = m[1]!
    if (key.startsWith('"')) key = JSON.parse(key) as string
    else if (key.startsWith("'")) key = key.slice(1, -1).replace(/''/g, "'")
    out.push({ line, col: i, seq: false, key })
  }
  return out
}

/**
 * The field path of the block-style key at (line, column), from indentation: good enough to point at a duplicated
 * key. Returns '' when the key is not in block style.
 */
function keyPathAt(lines: readonly string[], line: number, column: number): string {
  const entries: Entry[] = []
  for (let l = 0; l <= line && l < lines.length; l++) entries.push(...lineEntries(lines[l]!, l))
  const idx = entries.findIndex((e) => e.line === line && !e.seq && e.col === column)
  if (idx < 0) return ''
  const path: (string | number)[] = [entries[idx]!.key!]
  let col = column
  let inSeq = false
  let count = 0
  for (let j = idx - 1; j >= 0; j--) {
    const e = entries[j]!
    if (!inSeq) {
      if (e.col >= col) continue
      if (e.seq) {
        inSeq = true
        count = 1
      } else path.unshift(e.key!)
      col = e.col
    } else if (e.seq && e.col === col) count++
    else if (e.col > col) continue
    else if (!e.seq) {
      path.unshift(e.key!, count - 1)
      inSeq = false
      col = e.col
    } else {
      path.unshift(count - 1)
      count = 1
      col = e.col
    }
  }
  if (inSeq) path.unshift(count - 1)
  return formatPath(path)
}

/** Best-effort kind and name of a document that did not parse, for the error message. */
function guessIdentity(text: string): { kind?: string; name?: string } {
  const out: { kind?: string; name?: string } = {}
  const k = /^kind:[ \t]*["']?([A-Za-z0-9]+)/m.exec(text)
  if (k !== null) out.kind = k[1]!
  const n = /^metadata:[ \t]*\r?\n(?:[ \t]+.*\r?\n)*?[ \t]+name:[ \t]*["']?([^"'\s#]+)/m.exec(text)
  if (n !== null) out.name = n[1]!
  return out
}

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x)
}

function identity(doc: Record<string, unknown>): { kind?: string; name?: string } {
  const out: { kind?: string; name?: string } = {}
  if (typeof doc.kind === 'string') out.kind = doc.kind
  const meta = doc.metadata
  if (isObject(meta) && typeof meta.name === 'string') out.name = meta.name
  return out
}

/** Validates one parsed document (or each item of a List) into `result`. */
function addDocument(result: ManifestResult, source: string, index: number, doc: unknown, pathPrefix: string): void {
  if (doc === null || doc === undefined) return
  const at = (p: string) => (pathPrefix === '' ? p : p === '' ? pathPrefix : `${pathPrefix}.${p}`)
  if (!isObject(doc)) {
    result.errors.push({
      source,
      index,
      path: pathPrefix,
      message: 'a document must be an object with apiVersion, kind, metadata and spec',
    })
    return
  }
  const kind = typeof doc.kind === 'string' ? doc.kind : undefined
  const apiVersion = typeof doc.apiVersion === 'string' ? doc.apiVersion : undefined
  if (pathPrefix === '' && kind !== undefined && (kind === 'List' || kind.endsWith('List')) && 'items' in doc) {
    if (!Array.isArray(doc.items)) {
      result.errors.push({ source, index, kind, path: 'items', message: 'items must be a list of resources' })
      return
    }
    doc.items.forEach((item, i) => {
      addDocument(result, source, index, item, `items[${i}]`)
    })
    return
  }
  if (kind !== undefined && apiVersion !== undefined && !isIstioKind(kind) && isKubernetesBuiltin(apiVersion)) {
    const skipped: SkippedDocument = { index, kind, apiVersion }
    const name = identity(doc).name
    if (name !== undefined) skipped.name = name
    result.skipped.push(skipped)
    return
  }
  const r = validateResource(doc)
  if (r.ok) {
    result.resources.push(r.resource)
    result.origins.push({ source, index })
    return
  }
  const id = identity(doc)
  for (const issue of r.issues)
    result.errors.push({ source, index, ...id, path: at(issue.path), message: issue.message })
}

/**
 * Parses manifests from `text` (multi-document YAML, or JSON: an object or a `List`), validating every document.
 * `source` names the file in errors.
 */
export function parseManifests(text: string, source: string): ManifestResult {
  const result: ManifestResult = { resources: [], origins: [], errors: [], skipped: [] }
  const body = text.replace(/^\uFEFF/, '')
  const trimmed = body.trimStart()
  const chunks = trimmed.startsWith('{') || trimmed.startsWith('[') ? [{ text: body, line: 0 }] : splitDocuments(body)
  chunks.forEach((chunk, index) => {
    let doc: unknown
    try {
      doc = load(chunk.text, { schema: SCHEMA, filename: source })
    } catch (err) {
      if (!(err instanceof YAMLException)) throw err
      const e: ManifestError = { source, index, ...guessIdentity(chunk.text), path: '', message: `YAML: ${err.reason}` }
      if (err.mark !== undefined && err.mark !== null) {
        e.line = chunk.line + err.mark.line + 1
        e.column = err.mark.column + 1
        e.message += ` (line ${e.line}, column ${e.column})`
        if (err.reason.startsWith('duplicated mapping key')) {
          e.path = keyPathAt(chunk.text.split('\n'), err.mark.line, err.mark.column)
        }
      }
      result.errors.push(e)
      return
    }
    addDocument(result, source, index, doc, '')
  })
  return result
}

/** `file.yaml: document 2 (VirtualService reviews): spec.http[0].route: total destination weight 90 != 100` */
export function formatManifestError(e: ManifestError): string {
  const who = [e.kind, e.name].filter((x) => x !== undefined).join(' ')
  const where = e.path === '' ? '' : `${e.path}: `
  return `${e.source}: document ${e.index}${who === '' ? '' : ` (${who})`}: ${where}${e.message}`
}

const MANIFEST_FILE = /\.(?:ya?ml|json)$/i

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    process.stdin.on('data', (d: Buffer) => parts.push(d))
    process.stdin.on('end', () => resolve(Buffer.concat(parts).toString('utf8')))
    process.stdin.on('error', reject)
  })
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new LoomError(ErrorCodes.CONFIG_READ, `${file}: cannot read: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Loads manifests from a file, from every `*.yaml`, `*.yml` and `*.json` file of a directory (sorted by name, not
 * recursive), or from stdin when `pathOrDir` is `-`. Throws a LoomError (CONFIG_READ) if a path cannot be read.
 */
export async function loadManifestPath(pathOrDir: string): Promise<ManifestResult> {
  if (pathOrDir === '-') return parseManifests(await readStdin(), '<stdin>')
  let isDir: boolean
  try {
    isDir = statSync(pathOrDir).isDirectory()
  } catch (err) {
    throw new LoomError(ErrorCodes.CONFIG_READ, `${pathOrDir}: cannot read: ${(err as Error).message}`, { cause: err })
  }
  if (!isDir) return parseManifests(readText(pathOrDir), pathOrDir)
  const files = readdirSync(pathOrDir)
    .filter((f) => MANIFEST_FILE.test(f))
    .sort()
  const result: ManifestResult = { resources: [], origins: [], errors: [], skipped: [] }
  for (const f of files) {
    const file = join(pathOrDir, f)
    if (!statSync(file).isFile()) continue
    const r = parseManifests(readText(file), file)
    result.resources.push(...r.resources)
    result.origins.push(...r.origins)
    result.errors.push(...r.errors)
    result.skipped.push(...r.skipped)
  }
  return result
}
