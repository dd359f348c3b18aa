/** The control plane's HTTP API, as the dashboard reads it (same origin: the dashboard is served by the API port). */

export class ApiError extends Error {
  readonly status: number
  readonly body: unknown
  constructor(status: number, message: string, body: unknown) {
    super(message)
    this.status = status
    this.body = body
  }
}

/** The API token the user entered on this tab (sessionStorage: gone when the tab closes), sent on writes. */
export function apiToken(): string | null {
  return sessionStorage.getItem('loom.apiToken')
}

export function setApiToken(token: string | null): void {
  if (token === null || token === '') sessionStorage.removeItem('loom.apiToken')
  else sessionStorage.setItem('loom.apiToken', token)
}

async function answer<T>(r: Response, what: string): Promise<T> {
  const text = await r.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // a non-JSON answer is shown as it is
  }
  if (!r.ok) {
    const msg = (body as { error?: { message?: string } })?.error?.message ?? (typeof body === 'string' ? body : '')
    throw new ApiError(r.status, `${what}: ${r.status} ${msg}`.trim(), body)
  }
  return body as T
}

/** GET `path` (from /api/v1/...) as JSON. */
export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const r = await fetch(path, { headers: { accept: 'application/json' }, ...(signal ? { signal } : {}) })
  return answer<T>(r, `GET ${path}`)
}

/**
 * POST (or DELETE) to `path`; `body` a string is sent as it is (YAML for apply), anything else as JSON. The API
 * token, when the user gave one, goes in `authorization`.
 */
export async function send<T>(
  method: 'POST' | 'DELETE',
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<T> {
  const h: Record<string, string> = { accept: 'application/json', ...headers }
  const token = apiToken()
  if (token !== null) h.authorization = `Bearer ${token}`
  let payload: string | undefined
  if (typeof body === 'string') payload = body
  else if (body !== undefined) {
    payload = JSON.stringify(body)
    h['content-type'] = 'application/json'
  }
  const r = await fetch(path, { method, headers: h, ...(payload !== undefined ? { body: payload } : {}) })
  return answer<T>(r, `${method} ${path}`)
}
