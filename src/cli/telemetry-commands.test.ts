import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { edgesText, formatMs, formatRps, graphDot, percent, secured, statText } from './telemetry-commands.js'

const about = {
  window: '1m',
  gathering: { intervalSeconds: 5, rounds: 3, proxies: 7, failing: [] as string[] },
}

describe('loom stat/edges/graph output', () => {
  test('numbers as linkerd viz shows them', () => {
    assert.equal(formatRps(0.4), '0.40rps')
    assert.equal(formatRps(12.345), '12.3rps')
    assert.equal(formatMs(3.26), '3.3ms')
    assert.equal(formatMs(37.5), '38ms')
    assert.equal(formatMs(2500), '2.5s')
    assert.equal(formatMs(null), '-')
    assert.equal(percent(1), '100.00%')
    assert.equal(percent(null), '-')
    assert.deepEqual([secured(1), secured(0), secured(0.5), secured(null)], ['yes', 'no', '50%', '-'])
  })

  test('no traffic: the table of known workloads, then why it is empty', () => {
    const text = statText(
      {
        ...about,
        rows: [
          {
            namespace: 'default',
            name: 'details-v1',
            version: '',
            meshed: { meshed: 1, total: 1 },
            requests: 0,
            rps: 0,
            successRate: null,
            latencyMs: null,
            tcpConnections: null,
            mtlsShare: null,
          },
        ],
      },
      'deployment',
      false,
    )
    assert.equal(
      text,
      'NAME         MESHED   SUCCESS   RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN   MTLS\n' +
        'details-v1   1/1      -         -     -             -             -             -          -\n' +
        'No traffic in the last 1m to deployments (metrics of 7 proxies, read every 5s).\n',
    )
    assert.match(
      edgesText({ ...about, gathering: { ...about.gathering, rounds: 0 }, edges: [] }),
      /^No traffic yet: the control plane has not read its proxies' metrics yet \(every 5s\)\.$/m,
    )
  })

  test('DOT: quoted ids, failing edges red, plain-text edges dashed', () => {
    const dot = graphDot({
      ...about,
      nodes: [
        { id: 'default/a', workload: 'a', namespace: 'default' },
        { id: 'default/b', workload: 'b', namespace: 'default' },
      ],
      edges: [
        { from: 'default/a', to: 'default/b', service: 'b', requests: 4, rps: 0.5, successRate: 0.75, mtlsShare: 0 },
      ],
    })
    assert.match(dot, /^ {2}"default\/a" \[label="a\\ndefault"\];$/m)
    assert.match(
      dot,
      /^ {2}"default\/a" -> "default\/b" \[label="b\\n0\.50rps, 75\.00% ok", color="red", fontcolor="red", style="dashed"\];$/m,
    )
  })
})
