/**
 * The settings panel: one declarative list of fields, drawn into the panel and read into each request.
 * Each field's input carries `name` (a stable hook for tests and automation) and its browser-side limits
 * (min, max, step), so a bad value is reported before anything is sent; the server checks them again.
 *
 * Adding a setting is adding one entry to SETTINGS: its control, its default, and `apply`, which puts the
 * value where the request wants it (most go into `body.settings`; the JSON schema, a 'textarea', sets the
 * body's own `format`). `apply` may throw: its message is shown, and nothing is sent.
 */
import { h } from './dom.js';
import type { AskBody } from './wire.js';

export interface SettingField {
  /** The input's `name` attribute. */
  name: string;
  label: string;
  /** One line under the label. */
  help: string;
  control: 'number' | 'select' | 'textarea';
  /** The value the field starts with ('' = not set: the server's default). */
  initial: string;
  placeholder?: string;
  min?: number;
  max?: number;
  /** Number inputs: 1 for whole numbers (the default), 'any' for decimals. */
  step?: number | 'any';
  options?: { value: string; label: string }[];
  /** Puts the field's value into the request: `value` is the trimmed text, never '' (empty fields are skipped). */
  apply(body: AskBody, value: string): void;
}

/** `dvl ask`'s defaults (README: the flags of `dvl ask`). */
export const SETTINGS: SettingField[] = [
  {
    name: 'gen_length',
    label: 'Gen length',
    help: 'tokens to generate at most',
    control: 'number',
    initial: '128',
    min: 1,
    max: 65536,
    apply: (body, value) => (body.settings.genLength = Number(value)),
  },
  {
    name: 'steps',
    label: 'Steps',
    help: 'denoising steps per block',
    control: 'number',
    initial: '8',
    min: 1,
    max: 1024,
    apply: (body, value) => (body.settings.steps = Number(value)),
  },
  {
    name: 'remasking',
    label: 'Remasking',
    help: 'static: the most confident slots, on a schedule; dynamic: all above the threshold',
    control: 'select',
    initial: 'low_confidence_static',
    options: [
      { value: 'low_confidence_static', label: 'static' },
      { value: 'low_confidence_dynamic', label: 'dynamic' },
    ],
    apply: (body, value) => (body.settings.remasking = value as 'low_confidence_static' | 'low_confidence_dynamic'),
  },
  {
    name: 'threshold',
    label: 'Threshold',
    help: 'confidence threshold of dynamic remasking',
    control: 'number',
    initial: '0.85',
    min: 0,
    max: 1,
    step: 'any',
    apply: (body, value) => (body.settings.threshold = Number(value)),
  },
  {
    name: 'temperature',
    label: 'Temperature',
    help: '0 is greedy: the same answer every time',
    control: 'number',
    initial: '0',
    min: 0,
    max: 100,
    step: 'any',
    apply: (body, value) => (body.settings.temperature = Number(value)),
  },
  {
    name: 'seed',
    label: 'Seed',
    help: 'with a temperature: the same seed, the same answer',
    control: 'number',
    initial: '',
    placeholder: 'random',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    apply: (body, value) => (body.settings.seed = Number(value)),
  },
  {
    name: 'json_schema',
    label: 'JSON schema',
    help: 'answers are JSON: "json" for any object, or a JSON Schema; empty for text',
    control: 'textarea',
    initial: '',
    placeholder: '{"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}',
    apply: (body, value) => (body.format = jsonFormat(value)),
  },
];

/** The JSON schema field's text -> the request's `format` ("json", or the parsed schema). */
function jsonFormat(value: string): 'json' | boolean | Record<string, unknown> {
  if (value === 'json') return 'json';
  let schema: unknown;
  try {
    schema = JSON.parse(value);
  } catch (error) {
    throw new Error(`JSON schema: not valid JSON (${(error as Error).message})`);
  }
  if (typeof schema === 'boolean') return schema;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new Error('JSON schema: a schema is a JSON object (or "json" for any object)');
  return schema as Record<string, unknown>;
}

type Control = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** Draws the fields into `container`; the returned function reads them into a request body. */
export function renderSettings(container: HTMLElement): (body: AskBody) => void {
  const controls = SETTINGS.map((field) => {
    const id = `setting-${field.name}`;
    const control = makeControl(field, id);
    container.append(
      // A text area takes the whole row (a JSON schema needs the width).
      h('div', { class: field.control === 'textarea' ? 'field wide' : 'field' }, h('label', { for: id }, field.label), control, h('small', { id: `${id}-help` }, field.help)),
    );
    return { field, control };
  });
  return (body) => {
    for (const { field, control } of controls) {
      if (!control.checkValidity()) {
        control.focus();
        throw new Error(`${field.label}: ${control.validationMessage}`);
      }
      const value = control.value.trim();
      if (value !== '') field.apply(body, value);
    }
  };
}

function makeControl(field: SettingField, id: string): Control {
  const common = { id, name: field.name, 'aria-describedby': `${id}-help` };
  if (field.control === 'select') {
    const select = h('select', common, ...(field.options ?? []).map((o) => h('option', { value: o.value }, o.label)));
    select.value = field.initial;
    return select;
  }
  if (field.control === 'textarea') {
    const area = h('textarea', { ...common, rows: 4, placeholder: field.placeholder, spellcheck: 'false' });
    area.value = field.initial;
    return area;
  }
  const input = h('input', { ...common, type: 'number', inputmode: field.step === 'any' ? 'decimal' : 'numeric', min: field.min, max: field.max, step: field.step ?? 1, placeholder: field.placeholder });
  input.value = field.initial;
  return input;
}
