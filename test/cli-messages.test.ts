/**
 * What `loom apply` and `loom analyze` tell the user, against a real `loom control`: the analyzer's warnings for
 * what was applied (on stderr, exit code 0), and every accepted-but-not-enforced field or kind as a warning with
 * its resource, file, document and field path.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Control, startControl } from './helpers/control.js'
import { ROOT, runLoom, writeTemp } from './helpers/proxy.js'

const FIXTURES = join(ROOT, 'test', 'fixtures', 'cli')
const fixture = (name: string) => join(FIXTURES, name)

describe('loom apply warnings', () => {
  let cp: Control
  before(async () => {
    cp = await startControl()
  })
  after(async () => {
    await cp.stop()
  })

  test('a VirtualService to a host that does not exist: created, then a warning on stderr, exit 0', async () => {
    const file = fixture('vs-unknown-host.yaml')
    const r = await cp.loom(['apply', '-f', file])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'virtualservices/nowhere created\n')
    assert.equal(
      r.stderr,
      'Warning: [VirtualService/default/nowhere] spec.http[0].route[0].destination.host: ' +
        `destination host nowhere.default.svc.cluster.local not found in the registry (${file}, document 0)\n`,
    )
    // applied again unchanged: nothing written, nothing to warn about (loom analyze still finds it)
    const again = await cp.loom(['apply', '-f', file])
    assert.equal(again.stdout, 'virtualservices/nowhere unchanged\n')
    assert.equal(again.stderr, '')
  })

  test('fields and kinds accepted but not enforced are warnings, with file, document and path', async () => {
    const file = fixture('not-enforced.yaml')
    const r = await cp.loom(['apply', '-f', file])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'serviceentries/web created\nvirtualservices/web created\ndestinationrules/web created\n')
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [
      `Warning: [VirtualService/default/web] spec.http[0].retries.retryRemoteLocalities: retryRemoteLocalities is not supported yet; retries do not prefer other localities (${file}, document 1)`,
      `Warning: [DestinationRule/default/web] spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: TCP keepalive is not supported by Loom's proxy yet; ignored (${file}, document 2)`,
    ])
    // enforced: no warning
    const authz = await cp.loom(['apply', '-f', fixture('authz-allow-nothing.yaml')])
    assert.equal(authz.code, 0)
    assert.equal(authz.stderr, '')
  })

  test('the API returns the warnings; --dry-run shows them without writing', async () => {
    const file = writeTemp(
      'authz.yaml',
      'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext-authz}\nspec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}\n',
    )
    const r = await cp.loom(['apply', '--dry-run', '-o', 'json', '-f', file])
    assert.equal(r.code, 0, r.stderr)
    const body = JSON.parse(r.stdout) as { warnings: Record<string, unknown>[] }
    assert.deepEqual(body.warnings, [
      {
        level: 'error',
        resource: 'AuthorizationPolicy/default/ext-authz',
        path: 'spec.provider.name',
        message:
          'extension provider "ext" is not defined in the mesh config\'s extensionProviders (there are none): ' +
          "the requests this policy's rules match are denied",
        source: file,
        index: 0,
      },
    ])
    const res = await fetch(`http://${cp.api}/api/v1/apply?dryRun=true`, {
      method: 'POST',
      body:
        'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict}\nspec: {mtls: {mode: STRICT}}\n' +
        '---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext2}\n' +
        'spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}\n',
      headers: { 'x-loom-source': 'pa.yaml' },
    })
    const json = (await res.json()) as { warnings: { resource: string; source: string; index: number }[] }
    assert.equal(res.status, 200)
    assert.deepEqual(
      json.warnings.map((w) => [w.resource, w.source, w.index]),
      [['AuthorizationPolicy/default/ext2', 'pa.yaml', 1]],
    )
    for (const kind of ['PeerAuthentication', 'AuthorizationPolicy']) {
      const listed = (await (await fetch(`http://${cp.api}/api/v1/resources?kind=${kind}`)).json()) as {
        items: { metadata: { name: string } }[]
      }
      assert.deepEqual(
        listed.items.map((i) => i.metadata.name),
        kind === 'PeerAuthentication' ? [] : ['allow-nothing'],
        'a dry run writes nothing',
      )
    }
  })

  test('loom analyze against the control plane names each file and document', async () => {
    const a = fixture('vs-unknown-host.yaml')
    const b = fixture('not-enforced.yaml')
    const r = await cp.loom(['analyze', '-f', a, '-f', b])
    assert.equal(r.code, 1, r.stderr)
    assert.match(
      r.stdout,
      new RegExp(`Error \\[VirtualService/default/nowhere\\] spec\\.http.* \\(${a}, document 0\\)\n`),
    )
    assert.match(
      r.stdout,
      new RegExp(`Warning \\[DestinationRule/default/web\\] spec\\.trafficPolicy.* \\(${b}, document 2\\)\n`),
    )
  })
})

describe('schema errors and cross-reference errors in one pass', () => {
  test('loom validate lists both kinds of bootstrap errors at once', async () => {
    const file = fixture('bootstrap-errors.yaml')
    const r = await runLoom(['validate', '-c', file])
    assert.equal(r.code, 1)
    const route =
      'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route'
    assert.equal(
      r.stderr,
      `loom: ${file}: invalid configuration:\n` +
        `  ${route}.timeout: wrong type: Expected string but received 5\n` +
        '  static_resources.clusters[0].typo_field: unknown field (not supported by Loom, or misspelt)\n' +
        '  static_resources.clusters[1].name: duplicate cluster name "backend"\n' +
        `  ${route}.cluster: unknown cluster "missing"\n`,
    )
  })

  test('loom apply lists schema errors and Istio rules together, each with file, document and path', async () => {
    const cp = await startControl()
    try {
      const file = fixture('manifest-errors.yaml')
      const r = await cp.loom(['apply', '-f', file])
      assert.equal(r.code, 1)
      assert.equal(r.stdout, '')
      const vs = `${file}: document 0 (VirtualService reviews): spec.http`
      const dr = `${file}: document 1 (DestinationRule reviews): spec`
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        `error: ${file} was not applied (nothing in it was written):`,
        `  ${vs}[0].route[0].destination.subsett: unknown field (not supported by Loom, or misspelt)`,
        `  ${vs}[1]: wrong type: Expected Object but received 5`,
        `  ${vs}[2].timeout: wrong type: Expected string but received 5`,
        `  ${vs}[0].route: total destination weight 90 != 100`,
        `  ${vs}[2].route: total destination weight 60 != 100`,
        `  ${dr}.trafficPolicy.loadBalancer.simple: invalid value "FASTEST"; expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST`,
        `  ${dr}.subsets[1].name: duplicate subset name v1`,
      ])
      const listed = (await (await fetch(`http://${cp.api}/api/v1/resources`)).json()) as { items: unknown[] }
      assert.equal(listed.items.length, 0)
    } finally {
      await cp.stop()
    }
  })
})

describe('loom analyze --local', () => {
  test('an AuthorizationPolicy with an empty spec (deny all) is enforced: no problems', async () => {
    const file = fixture('authz-allow-nothing.yaml')
    const r = await runLoom(['analyze', '--local', file])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'No problems found.\n')
  })
})
