/**
 * The configuration store's contract. Two implementations are planned: an embedded, crash-safe one in the data
 * directory (the default) and etcd (several control planes). Every write is validated before it reaches the store;
 * the store itself only guarantees durability, ordering and compare-and-set.
 */
import type { Resource } from '../../api/resource.js'

export type WatchEvent =
  | { type: 'PUT'; revision: number; resource: Resource; previous: Resource | null }
  | { type: 'DELETE'; revision: number; resource: Resource }

export interface ListResult {
  /** the store revision the list reflects: `watch(revision)` (events after it) misses nothing */
  revision: number
  items: Resource[]
}

export interface PutOptions {
  /** compare-and-set: the write fails with a conflict unless the stored resourceVersion equals this ('' = must not exist) */
  expectedResourceVersion?: string
}

export interface Watch {
  close(): void
}

export class StoreConflictError extends Error {
  override name = 'StoreConflictError'
}

/** `watch()` from a revision older than the event history the store keeps: list again, then watch from the list's revision. */
export class StoreCompactedError extends Error {
  override name = 'StoreCompactedError'
  constructor(
    readonly fromRevision: number,
    /** the newest revision whose events may be gone; watching from it or later works */
    readonly compactedRevision: number,
  ) {
    super(
      `cannot watch from revision ${fromRevision}: events up to revision ${compactedRevision} are compacted; ` +
        `list again and watch from the list's revision`,
    )
  }
}

export interface Store {
  get(kind: string, namespace: string, name: string): Promise<Resource | null>
  /** every resource of `kind` (all kinds when omitted), optionally in one namespace, sorted by key */
  list(kind?: string, namespace?: string): Promise<ListResult>
  /** stores the resource; sets metadata.resourceVersion (the new revision), creationTimestamp, uid, generation */
  put(resource: Resource, options?: PutOptions): Promise<Resource>
  /** several writes that land together or not at all (one `loom apply -f` of many documents) */
  putAll(resources: Resource[]): Promise<Resource[]>
  delete(kind: string, namespace: string, name: string, options?: PutOptions): Promise<Resource | null>
  /** events after `fromRevision`, in order, then live ones; `onEvent` is called synchronously in revision order */
  watch(fromRevision: number, onEvent: (e: WatchEvent) => void): Watch
  readonly revision: number
  close(): Promise<void>
}
