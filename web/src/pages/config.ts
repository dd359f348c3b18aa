/** Config: every resource (`#/config`) and one resource as YAML (`#/config/:kind/:namespace/:name`). */
import type { Page } from '../router.js'
import { h, replace } from '../dom.js'

export const configPage: Page = (el) => {
  replace(el, h('h1', null, 'Config'))
}

export const resourcePage: Page = (el, p) => {
  replace(el, h('h1', null, `${p.kind} ${p.namespace}/${p.name}`))
}
