/** Proxies (`#/proxies`): every connected proxy and its sync status. */
import type { Page } from '../router.js'
import { h, replace } from '../dom.js'

export const proxiesPage: Page = (el) => {
  replace(el, h('h1', null, 'Proxies'))
}
