/**
 * telemetry.istio.io `Telemetry` (v1 and v1alpha1, one schema), with Istio's field names: how tracing, access logs
 * and metrics are generated for the workloads it applies to. The schema follows Istio's API reference; the check
 * mirrors what Istio's webhook rejects. Which Telemetry applies to a proxy, and how levels merge, is
 * src/control/translate/telemetry.ts.
 */
import { v } from '../config/schema.js'
import type { ConfigIssue } from '../core/errors.js'
import {
  bool,
  duration,
  enumOf,
  field,
  headerNameError,
  Issues,
  MatchLabelsSelector,
  nonEmpty,
  opt,
  PolicyTargetReference,
  rule,
  str,
} from './common.js'
import type { SpecContext } from './networking.js'

export const TELEMETRY_GROUP = 'telemetry.istio.io'

const WORKLOAD_MODES = ['CLIENT_AND_SERVER', 'CLIENT', 'SERVER'] as const
export type WorkloadMode = (typeof WORKLOAD_MODES)[number]
const WorkloadModeSelector = v.strictObject({ mode: opt(enumOf(WORKLOAD_MODES)) })

const ProviderRef = v.strictObject({ name: nonEmpty })

/** Tracing.CustomTag: exactly one of literal, environment, header. */
const CustomTag = v.strictObject({
  literal: opt(v.strictObject({ value: str })),
  environment: opt(v.strictObject({ name: nonEmpty, defaultValue: opt(str) })),
  header: opt(v.strictObject({ name: rule((s) => headerNameError(s)), defaultValue: opt(str) })),
})
export type TelemetryCustomTag = v.InferOutput<typeof CustomTag>

const samplingPercentage = v.pipe(
  v.number(),
  v.check(
    (n) => n >= 0 && n <= 100,
    (issue) => `randomSamplingPercentage must be in range [0.0, 100.0], found ${String(issue.input)}`,
  ),
)

export const TelemetryTracing = v.strictObject({
  match: opt(WorkloadModeSelector),
  providers: opt(v.array(ProviderRef)),
  randomSamplingPercentage: opt(samplingPercentage),
  disableSpanReporting: opt(bool),
  customTags: opt(v.record(nonEmpty, CustomTag)),
  useRequestIdForTraceSampling: opt(bool),
  enableIstioTags: opt(bool),
})
export type TelemetryTracing = v.InferOutput<typeof TelemetryTracing>

export const TelemetryAccessLogging = v.strictObject({
  match: opt(WorkloadModeSelector),
  providers: opt(v.array(ProviderRef)),
  disabled: opt(bool),
  filter: opt(v.strictObject({ expression: opt(str) })),
})
export type TelemetryAccessLogging = v.InferOutput<typeof TelemetryAccessLogging>

export const ISTIO_METRICS = [
  'ALL_METRICS',
  'REQUEST_COUNT',
  'REQUEST_DURATION',
  'REQUEST_SIZE',
  'RESPONSE_SIZE',
  'TCP_OPENED_CONNECTIONS',
  'TCP_CLOSED_CONNECTIONS',
  'TCP_SENT_BYTES',
  'TCP_RECEIVED_BYTES',
  'GRPC_REQUEST_MESSAGES',
  'GRPC_RESPONSE_MESSAGES',
] as const

const MetricsOverride = v.strictObject({
  match: opt(
    v.strictObject({
      metric: opt(enumOf(ISTIO_METRICS)),
      customMetric: opt(nonEmpty),
      mode: opt(enumOf(WORKLOAD_MODES)),
    }),
  ),
  disabled: opt(bool),
  tagOverrides: opt(
    v.record(nonEmpty, v.strictObject({ operation: opt(enumOf(['UPSERT', 'REMOVE'])), value: opt(str) })),
  ),
})

export const TelemetryMetrics = v.strictObject({
  providers: opt(v.array(ProviderRef)),
  overrides: opt(v.array(MetricsOverride)),
  reportingInterval: opt(duration),
})
export type TelemetryMetrics = v.InferOutput<typeof TelemetryMetrics>

export const TelemetrySpec = v.strictObject({
  selector: opt(MatchLabelsSelector),
  targetRef: opt(PolicyTargetReference),
  targetRefs: opt(v.pipe(v.array(PolicyTargetReference), v.maxLength(16, 'at most 16 targetRefs'))),
  tracing: opt(v.array(TelemetryTracing)),
  accessLogging: opt(v.array(TelemetryAccessLogging)),
  metrics: opt(v.array(TelemetryMetrics)),
})
export type TelemetrySpec = v.InferOutput<typeof TelemetrySpec>

export function checkTelemetry(spec: TelemetrySpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  const set = (['selector', 'targetRef', 'targetRefs'] as const).filter((k) => spec[k] !== undefined)
  if (set.length > 1)
    issues.add('spec', `only one of selector, targetRef or targetRefs can be set (found ${set.join(', ')})`)
  spec.tracing?.forEach((t, i) => {
    const p = field('spec.tracing', i)
    if ((t.providers?.length ?? 0) > 1) issues.add(`${p}.providers`, 'multiple providers is not currently supported')
    for (const [name, tag] of Object.entries(t.customTags ?? {})) {
      const n = [tag.literal, tag.environment, tag.header].filter((x) => x !== undefined).length
      if (n !== 1)
        issues.add(
          field(`${p}.customTags`, name),
          'exactly one of literal, environment or header must be set for a custom tag',
        )
    }
  })
  spec.metrics?.forEach((m, i) => {
    m.overrides?.forEach((o, j) => {
      const p = `${field('spec.metrics', i)}.overrides[${j}]`
      if (o.match?.metric !== undefined && o.match.customMetric !== undefined)
        issues.add(`${p}.match`, 'only one of metric or customMetric can be set')
      for (const [tag, to] of Object.entries(o.tagOverrides ?? {})) {
        if (to.operation === 'REMOVE' && to.value !== undefined)
          issues.add(field(`${p}.tagOverrides`, tag), 'value must not be set when operation is REMOVE')
        if ((to.operation ?? 'UPSERT') === 'UPSERT' && to.value === undefined)
          issues.add(field(`${p}.tagOverrides`, tag), 'value must be set when operation is UPSERT')
      }
    })
  })
  return issues.list
}
