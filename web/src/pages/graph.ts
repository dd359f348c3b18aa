/** The service graph (`#/graph`). */
import type { Page } from '../router.js'
import { h, replace } from '../dom.js'

export const graphPage: Page = (el) => {
  replace(el, h('h1', null, 'Service graph'))
}
