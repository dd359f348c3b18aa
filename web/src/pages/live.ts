/** Live requests (`#/live`): a tap of a workload's requests, and `explain` for one request. */
import type { Page } from '../router.js'
import { h, replace } from '../dom.js'

export const livePage: Page = (el) => {
  replace(el, h('h1', null, 'Live requests'))
}
