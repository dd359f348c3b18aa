/** Services and workloads: the list (`#/services`), a service's page and a workload's page. */
import type { Page } from '../router.js'
import { h, replace } from '../dom.js'

export const servicesPage: Page = (el) => {
  replace(el, h('h1', null, 'Services'))
}

export const servicePage: Page = (el, p) => {
  replace(el, h('h1', null, `Service ${p.namespace}/${p.name}`))
}

export const workloadPage: Page = (el, p) => {
  replace(el, h('h1', null, `Workload ${p.namespace}/${p.name}`))
}
