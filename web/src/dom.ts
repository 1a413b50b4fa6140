/** Two small DOM helpers, so that the rest reads as what it builds. */

type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | number | boolean | undefined>;

/**
 * An element with attributes and children: `h('button', { type: 'button', class: 'copy' }, 'Copy')`.
 * `true` sets an empty attribute, `false` and `undefined` leave it out; strings become text (never HTML).
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Attributes = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) element.append(child);
  }
  return element;
}

/** An element of index.html by id, of the expected kind (a missing one is a bug in the page: thrown). */
export function byId<T extends HTMLElement>(id: string, kind: { new (): T }): T {
  const element = document.getElementById(id);
  if (!(element instanceof kind)) throw new Error(`index.html has no <${kind.name}> #${id}`);
  return element;
}
