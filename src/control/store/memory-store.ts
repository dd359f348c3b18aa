/**
 * The store without a disk: the same semantics as FileStore (revisions, compare-and-set, atomic putAll, watch
 * history, `new MemoryStore({ historyLimit })`), for tests of the layers above it and for throwaway control planes.
 */
import { BaseStore } from './base-store.js'

export class MemoryStore extends BaseStore {
  protected override async persist(): Promise<void> {}
}
