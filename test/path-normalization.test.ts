/**
 * Path normalization through a real `loom proxy` from a static bootstrap: every listener routes `prefix: /admin` to
 * a direct 403 and everything else to a backend that records the paths it receives. Each listener's connection
 * manager normalizes as one of Istio's mesh-wide settings (or Envoy's own actions) would have it. The spellings of
 * `/admin` that bypassed the route get 403 and never reach the backend; the paths that do reach it arrive
 * normalized, queries untouched; paths that cannot be normalized get 400, escaped slashes under
 * UNESCAPE_AND_REDIRECT a 307 (400 for gRPC). Then `loom control`: its sidecars normalize as BASE unless
 * `--path-normalization` says otherwise.
 */
import assert from 'node:assert/strict'
import * as http2 from 'node:http2'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import {
  adminAddress,
  hcm,
  listener,
  type RunningProxy,
  runLoom,
  startProxy,
  stat,
  staticCluster,
  writeTemp,
} from './helpers/proxy.js'
import { type Backend, freePort, rawExchange, startBackend } from './helpers/servers.js'

const ROUTES = {
  name: 'local',
  virtual_hosts: [
    {
      name: 'all',
      domains: ['*'],
      routes: [
        { match: { prefix: '/admin' }, direct_response: { status: 403, body: { inline_string: 'admin only' } } },
        { match: { prefix: '/' }, route: { cluster: 'backend' } },
      ],
    },
  ],
}

const LISTENERS: Record<string, Record<string, unknown>> = {
  // Envoy's defaults: paths routed as written
  plain: {},
  // Istio BASE
  base: { normalize_path: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
  // Istio MERGE_SLASHES
  merge: { normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' },
  // Istio DECODE_AND_MERGE_SLASHES
  decode: { normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action: 'UNESCAPE_AND_FORWARD' },
  reject: { normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action: 'REJECT_REQUEST' },
  redirect: { normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action: 'UNESCAPE_AND_REDIRECT' },
}

interface Reply {
  status: number
  headers: Record<string, string>
  body: string
}

/** One HTTP/1.1 request written byte for byte (clients may tidy a path; this one does not). */
async function get(port: number, path: string, headers = ''): Promise<Reply> {
  const { text } = await rawExchange(
    port,
    `GET ${path} HTTP/1.1\r\nhost: paths.test\r\nconnection: close\r\n${headers}\r\n`,
  )
  const [head = '', body = ''] = text.split('\r\n\r\n')
  const lines = head.split('\r\n')
  const h: Record<string, string> = {}
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':')
    h[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim()
  }
  return { status: Number(lines[0]?.split(' ')[1]), headers: h, body }
}

describe('path normalization', () => {
  let backend: Backend
  let proxy: RunningProxy
  const port = (name: string) => proxy.ports[name]!

  before(async () => {
    backend = await startBackend()
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: Object.entries(LISTENERS).map(([name, extra]) =>
          listener(name, hcm(ROUTES, { stat_prefix: name, ...extra })),
        ),
        clusters: [staticCluster('backend', [backend.port])],
      },
    })
  })
  after(async () => {
    await proxy?.stop()
    await backend?.close()
  })

  /** The paths the backend received while `fn` ran. */
  async function reached(fn: () => Promise<void>): Promise<string[]> {
    const from = backend.requests.length
    await fn()
    return backend.requests.slice(from).map((r) => r.url)
  }

  const BYPASSES = [
    '/admin/x',
    '//admin/x',
    '///admin/x',
    '/./admin/x',
    '/.//admin/x',
    '/%61dmin/x',
    '/%61%64min/x',
    '/x/../admin/x',
    '/x/..//admin/x',
    '/%2e/admin/x',
    '/x/%2e%2e/admin/x',
    '/x/%2e%2E/admin/x',
    '/x/%2E%2e/admin/x',
    '/x/.%2e/admin/x',
    '/x\\..\\admin/x',
    '/../../admin/x',
    '/x/y/../../admin/x?next=%2F',
  ]

  test('without normalization the spellings of /admin reach the backend (the bypass)', async () => {
    const seen = await reached(async () => {
      for (const p of ['//admin/x', '/./admin/x', '/%61dmin/x', '/x/../admin/x']) {
        assert.equal((await get(port('plain'), p)).status, 200, p)
      }
    })
    assert.deepEqual(seen, ['//admin/x', '/./admin/x', '/%61dmin/x', '/x/../admin/x'])
  })

  test('MERGE_SLASHES, DECODE_AND_MERGE_SLASHES and the escaped-slash actions: every spelling gets 403', async () => {
    const seen = await reached(async () => {
      for (const name of ['merge', 'decode', 'reject', 'redirect'])
        for (const p of BYPASSES) {
          const r = await get(port(name), p)
          assert.equal(r.status, 403, `${name} ${p}`)
          assert.match(r.body, /admin only/)
        }
    })
    assert.deepEqual(seen, [], 'no spelling of /admin reached the backend')
  })

  test('BASE normalizes dot segments and escapes but keeps double slashes, as Istio', async () => {
    const seen = await reached(async () => {
      for (const p of ['/./admin/x', '/%61dmin/x', '/x/../admin/x', '/x\\..\\admin/x', '/x/%2e%2E/admin/x'])
        assert.equal((await get(port('base'), p)).status, 403, p)
      assert.equal((await get(port('base'), '//admin/x')).status, 200)
      assert.equal((await get(port('base'), '/x/.%2e/y//z%2f')).status, 200)
    })
    assert.deepEqual(seen, ['//admin/x', '/y//z%2f'])
  })

  test('escaped slashes: kept (MERGE_SLASHES), decoded (DECODE_AND_MERGE_SLASHES) before routing', async () => {
    const seen = await reached(async () => {
      for (const p of ['/%2fadmin/x', '/%2Fadmin/x', '/%5cadmin/x', '/%5Cadmin/x', '/x/..%2fadmin/x'])
        assert.equal((await get(port('merge'), p)).status, 200, p)
    })
    assert.deepEqual(seen, ['/%2fadmin/x', '/%2Fadmin/x', '/%5cadmin/x', '/%5Cadmin/x', '/x/..%2fadmin/x'])
    const decoded = await reached(async () => {
      for (const p of ['/%2fadmin/x', '/%2Fadmin/x', '/%5cadmin/x', '/%5Cadmin/x', '/x/..%2fadmin/x'])
        assert.equal((await get(port('decode'), p)).status, 403, p)
      assert.equal((await get(port('decode'), '/app%2fx%5Cy?q=%2F%5c')).status, 200)
    })
    assert.deepEqual(decoded, ['/app/x/y?q=%2F%5c'])
  })

  test('the backend sees normalized paths, queries as sent', async () => {
    const cases: [string, string][] = [
      ['/a/./b/../c//d?q=%2F//..&r=%61', '/a/c/d?q=%2F//..&r=%61'],
      ['/%7euser/%41%62c', '/~user/Abc'],
      ['/a%20b/%c3%a9', '/a%20b/%c3%a9'],
      ['/static/app.min.js', '/static/app.min.js'],
      ['/x/..', '/'],
      ['/x/y/.', '/x/y/'],
      ['/a|b', '/a%7Cb'],
      ['/%%30%30', '/%2500'],
    ]
    const seen = await reached(async () => {
      for (const [p] of cases) assert.equal((await get(port('merge'), p)).status, 200, p)
    })
    assert.deepEqual(
      seen,
      cases.map(([, want]) => want),
    )
  })

  test('a path that cannot be normalized gets 400 path_normalization_failed; escaped slashes under REJECT_REQUEST too', async () => {
    const before = await stat(proxy.admin, 'http.reject.downstream_rq_failed_path_normalization')
    const seen = await reached(async () => {
      for (const name of ['base', 'merge', 'decode', 'reject', 'redirect']) {
        const r = await get(port(name), '/ok%00/x')
        assert.equal(r.status, 400, name)
        assert.equal(r.headers['x-loom-reason'], 'path_normalization_failed')
      }
      for (const p of ['/a%2Fb', '/a%2fb', '/a%5Cb', '/a%5cb']) {
        const r = await get(port('reject'), p)
        assert.equal(r.status, 400, p)
        assert.equal(r.headers['x-loom-reason'], 'path_normalization_failed')
      }
      // a query's escaped slashes are not the path's
      assert.equal((await get(port('reject'), '/a/b?c=%2F')).status, 200)
    })
    assert.deepEqual(seen, ['/a/b?c=%2F'])
    assert.equal(await stat(proxy.admin, 'http.reject.downstream_rq_failed_path_normalization'), before + 5)
  })

  test('UNESCAPE_AND_REDIRECT: 307 to the normalized path; gRPC gets 400', async () => {
    const seen = await reached(async () => {
      const r = await get(port('redirect'), '/a%2fb/..%2F%2e%2e/c%5Cd?x=%2f')
      assert.equal(r.status, 307)
      assert.equal(r.headers.location, '/c/d?x=%2f')
      assert.equal(r.headers['x-loom-reason'], 'path_normalization_redirect')
      const g = await get(port('redirect'), '/pkg.Svc%2FMethod', 'content-type: application/grpc\r\n')
      assert.equal(g.status, 400)
      // no escaped slash: normalized and forwarded
      assert.equal((await get(port('redirect'), '/c//d/./e')).status, 200)
    })
    assert.deepEqual(seen, ['/c/d/e'])
    assert.equal(await stat(proxy.admin, 'http.redirect.downstream_rq_redirected_with_normalized_path'), 1)
  })

  test('HTTP/2: the :path is normalized the same way', async () => {
    const session = http2.connect(`http://127.0.0.1:${port('merge')}`)
    const h2get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        const req = session.request({ ':method': 'GET', ':path': path, ':authority': 'paths.test' })
        req.on('response', (h) => resolve(Number(h[':status'])))
        req.on('error', reject)
        req.resume()
        req.end()
      })
    try {
      const seen = await reached(async () => {
        assert.equal(await h2get('/x/../admin'), 403)
        assert.equal(await h2get('//admin'), 403)
        assert.equal(await h2get('/%61dmin'), 403)
        assert.equal(await h2get('/a//b/%2e%2e/c?d=//'), 200)
        // a fragment is refused before anything looks at the path, as HTTP/1.1's parser does
        assert.equal(await h2get('/x#/../admin'), 400)
      })
      assert.deepEqual(seen, ['/a/c?d=//'])
    } finally {
      session.close()
    }
  })
})

test('the fields are validated with their paths; path_normalization_options is refused', async () => {
  const bad = {
    static_resources: {
      listeners: [
        listener(
          'http',
          hcm(ROUTES, {
            normalize_path: 'yes',
            path_with_escaped_slashes_action: 'UNESCAPE',
            path_normalization_options: {},
          }),
        ),
      ],
      clusters: [staticCluster('backend', [1])],
    },
  }
  const r = await runLoom(['validate', '-c', writeTemp('bootstrap.json', JSON.stringify(bad))])
  assert.equal(r.code, 1)
  const at = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config'
  assert.match(r.stderr, new RegExp(`${at.replace(/[[\].]/g, '\\$&')}\\.normalize_path: wrong type`))
  assert.match(r.stderr, /path_with_escaped_slashes_action: wrong type: Expected \("IMPLEMENTATION_SPECIFIC_DEFAULT"/)
  assert.match(r.stderr, /path_normalization_options: unknown field/)
})

describe('loom control --path-normalization', () => {
  const procs: Proc[] = []
  let backend: Backend

  before(async () => {
    backend = await startBackend()
  })
  after(async () => {
    for (const p of procs.reverse()) await p.stop()
    await backend?.close()
  })

  /** A control plane with `args`, the backend registered as reviews, and a sidecar; the sidecar's outbound port. */
  async function mesh(args: string[]): Promise<number> {
    const cp: Control = await startControl(undefined, 0, args)
    procs.push(cp)
    const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name: 'reviews-v1',
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: backend.port, servicePort: 9080 }],
        labels: { app: 'reviews', version: 'v1' },
        ttlSeconds: 600,
      }),
    })
    assert.equal(res.status, 200, await res.text())
    const out = await freePort()
    procs.push(await startSidecar(cp.xds, { app: 'productpage', version: 'v1' }, out))
    return out
  }

  /** The path the backend received for `path` sent through the sidecar's outbound listener. */
  async function forwarded(out: number, path: string): Promise<string> {
    const from = backend.requests.length
    await eventually(
      async () => {
        const { text } = await rawExchange(
          out,
          `GET ${path} HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n\r\n`,
        )
        return text.startsWith('HTTP/1.1 200')
      },
      10000,
      'the route to reviews',
    )
    return backend.requests.at(-1)!.url + (backend.requests.length > from ? '' : ' (nothing new)')
  }

  test('BASE by default: dot segments removed, double slashes kept', async () => {
    const out = await mesh([])
    assert.equal(await forwarded(out, '//reviews/../x//y/%2e/%61?q=//..'), '//x//y/a?q=//..')
  })

  test('MERGE_SLASHES: slashes merged too', async () => {
    const out = await mesh(['--path-normalization', 'MERGE_SLASHES'])
    assert.equal(await forwarded(out, '//reviews/../x//y/%2e/%61?q=//..'), '/x/y/a?q=//..')
  })

  test('an unknown setting is refused with the ones there are', async () => {
    const r = await runLoom([
      'control',
      '--path-normalization',
      'merge',
      '--api',
      '127.0.0.1:0',
      '--xds',
      '127.0.0.1:0',
    ])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /--path-normalization must be one of NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES/)
    // loom up hands the setting to its control plane, and refuses an unknown one before starting anything
    const up = await runLoom(['up', '-f', writeTemp('mesh.yaml', ''), '--path-normalization', 'decode'])
    assert.equal(up.code, 1)
    assert.match(
      up.stderr,
      /--path-normalization must be one of NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES, got "decode"/,
    )
  })
})
