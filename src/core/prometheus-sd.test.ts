import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import {
  labelName,
  prometheusConfig,
  promDurationMs,
  renderTargetGroups,
  type ScrapeTarget,
  targetGroups,
  workloadOfNodeId,
} from './prometheus-sd.js'

const reviews: ScrapeTarget = {
  adminAddress: '127.0.0.1:15001',
  kind: 'sidecar',
  namespace: 'default',
  workload: 'reviews-v2',
  labels: { version: 'v2', app: 'reviews', 'security.istio.io/tlsMode': 'istio' },
}
const gateway: ScrapeTarget = {
  adminAddress: '127.0.0.1:15002',
  kind: 'gateway',
  namespace: 'istio-system',
  workload: 'ingressgateway',
  labels: { istio: 'ingressgateway' },
}

describe('Prometheus service discovery', () => {
  test("one group per proxy: its admin address, the workload's labels, then namespace, workload and kind", () => {
    assert.deepEqual(targetGroups([reviews, gateway]), [
      {
        targets: ['127.0.0.1:15002'],
        labels: { istio: 'ingressgateway', namespace: 'istio-system', workload: 'ingressgateway', kind: 'gateway' },
      },
      {
        targets: ['127.0.0.1:15001'],
        labels: {
          app: 'reviews',
          security_istio_io_tlsMode: 'istio',
          version: 'v2',
          namespace: 'default',
          workload: 'reviews-v2',
          kind: 'sidecar',
        },
      },
    ])
  })

  test('the same proxies in any order give the same text; none gives an empty list', () => {
    assert.equal(renderTargetGroups([reviews, gateway]), renderTargetGroups([gateway, reviews]))
    assert.equal(renderTargetGroups([]), '[]\n')
  })

  test("a workload label cannot replace namespace, workload or kind, nor be one of Prometheus' own", () => {
    const g = targetGroups([{ ...reviews, labels: { kind: 'x', namespace: 'y', __address__: 'z', '9lives': 'v' } }])
    assert.deepEqual(g[0]!.labels, { _9lives: 'v', kind: 'sidecar', namespace: 'default', workload: 'reviews-v2' })
  })

  test('label names', () => {
    assert.equal(labelName('app'), 'app')
    assert.equal(labelName('app.kubernetes.io/name'), 'app_kubernetes_io_name')
    assert.equal(labelName('1x'), '_1x')
  })

  test("the workload of an Istio node id is the pod part's name", () => {
    assert.equal(workloadOfNodeId('sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local'), 'reviews-v1')
    assert.equal(
      workloadOfNodeId('router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local'),
      'ingressgateway',
    )
    assert.equal(workloadOfNodeId('my-proxy'), null)
  })

  test('durations', () => {
    assert.equal(promDurationMs('5s'), 5000)
    assert.equal(promDurationMs('1m30s'), 90_000)
    assert.equal(promDurationMs('500ms'), 500)
    assert.equal(promDurationMs('2h'), 7_200_000)
    for (const bad of ['', '5', 's', '5 s', '1.5s', '-1s']) assert.equal(promDurationMs(bad), null, bad)
  })

  test('the scrape timeout is the interval, at most 10 s', () => {
    const short = prometheusConfig({ source: { file: '/x/targets.json' }, scrapeInterval: '1s', comment: 'c' })
    assert.match(short, /scrape_interval: 1s\n {2}scrape_timeout: 1s\n/)
    const long = prometheusConfig({ source: { file: '/x/targets.json' }, scrapeInterval: '1m', comment: 'c' })
    assert.match(long, /scrape_interval: 1m\n {2}scrape_timeout: 10s\n/)
  })

  // Prometheus' own check of the config, where Debian's prometheus package (promtool) is installed
  const promtool = spawnSync('promtool', ['--version']).status === 0
  test('promtool accepts both configs', { skip: promtool ? false : 'promtool is not installed' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-promcfg-'))
    writeFileSync(join(dir, 'targets.json'), renderTargetGroups([reviews, gateway]))
    const configs = {
      file: prometheusConfig({ source: { file: join(dir, 'targets.json') }, scrapeInterval: '5s', comment: 'file' }),
      http: prometheusConfig({
        source: { url: 'http://127.0.0.1:15080/api/v1/prometheus/targets' },
        scrapeInterval: '15s',
        comment: 'http',
      }),
    }
    for (const [name, text] of Object.entries(configs)) {
      const file = join(dir, `${name}.yml`)
      writeFileSync(file, text)
      const r = spawnSync('promtool', ['check', 'config', file], { encoding: 'utf8' })
      assert.equal(r.status, 0, `${name}: ${r.stdout}${r.stderr}\n${text}`)
    }
    const sd = spawnSync('promtool', ['check', 'service-discovery', join(dir, 'file.yml'), 'envoy-stats'], {
      encoding: 'utf8',
    })
    // promtool scrapes nothing here; it lists the targets discovery finds, with their labels
    assert.match(sd.stdout, /127\.0\.0\.1:15001/, sd.stdout + sd.stderr)
    assert.match(sd.stdout, /reviews-v2/, sd.stdout)
  })
})
