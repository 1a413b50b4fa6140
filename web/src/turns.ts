/**
 * The conversation's turns as elements. A question: its images and text. An answer: drawn live from dvl's
 * events while the model denoises it, then its plain text, stats and a copy button.
 *
 * The live view follows block diffusion: the answer is made block by block (8 tokens by default); a block
 * starts with every slot masked, and each denoising step fills some of them (the most confident first).
 * Committed text (finished blocks) is plain text; the block being denoised follows it as one element per
 * slot: a dim placeholder while masked (`data-testid="masked"`), the token's text once filled, the ones the
 * last step filled highlighted. When the answer is done the element holds exactly the answer's text.
 */
import type { Answer } from './api.js';
import { type Attachment, thumbnail } from './attachments.js';
import { h } from './dom.js';
import type { AskEvent } from './wire.js';

/** The question as it was asked. */
export function questionTurn(text: string, images: Attachment[]): HTMLElement {
  return h(
    'article',
    { class: 'turn question', 'aria-label': 'Your question' },
    images.length > 0 ? h('div', { class: 'thumbs' }, ...images.map(thumbnail)) : null,
    h('p', { class: 'text' }, text),
  );
}

/** What each stage is, for the line shown until the first block appears. */
const STAGES: Record<Extract<AskEvent, { type: 'stage' }>['stage'], string> = {
  preprocess: 'Preparing the images…',
  vision: 'Encoding the images…',
  prefill: 'Reading the prompt…',
  generate: 'Denoising…',
};

interface LiveBlock {
  firstIndex: number;
  element: HTMLElement;
  slots: HTMLElement[];
}

export class AnswerTurn {
  readonly element: HTMLElement;
  /** `data-testid="answer"`: committed text, then the block being denoised. */
  private readonly answer: HTMLElement;
  private readonly committed = document.createTextNode('');
  private readonly status: HTMLElement;
  private block: LiveBlock | null = null;
  /** The slots the last step filled (highlighted until the next step). */
  private fresh: HTMLElement[] = [];

  constructor() {
    // aria-busy: screen readers wait for the answer to be done instead of reading every step.
    this.answer = h('div', { class: 'answer', 'data-testid': 'answer', 'aria-busy': 'true' }, this.committed);
    this.status = h('p', { class: 'status' }, 'Waiting for the model…');
    this.element = h('article', { class: 'turn reply', 'aria-label': 'Answer' }, this.answer, this.status);
  }

  /** The text committed so far (what a stopped answer keeps). */
  get committedText(): string {
    return this.committed.data;
  }

  apply(event: AskEvent): void {
    switch (event.type) {
      case 'stage':
        this.status.textContent = STAGES[event.stage];
        break;
      case 'image-progress':
        this.status.textContent = `Encoding image ${event.image + 1} of ${event.images}: ${event.done} of ${event.crops} crops…`;
        break;
      case 'block-start': {
        const slots = Array.from({ length: event.size }, () => maskedSlot());
        this.block = { firstIndex: event.firstIndex, element: h('span', { class: 'block' }, ...slots), slots };
        this.answer.append(this.block.element);
        this.status.hidden = true;
        break;
      }
      case 'unmask': {
        const block = this.block;
        if (!block) break;
        for (const slot of this.fresh) slot.classList.remove('fresh');
        this.fresh = [];
        event.indices.forEach((index, i) => {
          const slot = block.slots[index - block.firstIndex];
          if (!slot) return;
          slot.removeAttribute('data-testid');
          slot.removeAttribute('aria-hidden');
          slot.className = 'slot filled fresh';
          slot.textContent = event.pieces[i] ?? '';
          this.fresh.push(slot);
        });
        break;
      }
      case 'block-end':
        // The block's text replaces its slots: pieces decoded one by one can differ from the text decoded
        // whole (a character split over two tokens), and the block-end text is what the answer holds.
        this.block?.element.remove();
        this.block = null;
        this.fresh = [];
        this.committed.appendData(event.text);
        break;
      case 'finished':
        this.committed.appendData(event.text);
        break;
    }
  }

  /** The answer is done: its exact text, then the stats and a copy button. */
  finish(answer: Answer): void {
    this.dropLiveBlock();
    this.answer.textContent = answer.result.text;
    this.answer.setAttribute('aria-busy', 'false');
    this.status.remove();
    this.element.append(h('footer', { class: 'meta' }, stats(answer), copyButton(answer.result.text)));
  }

  /** Stopped: the committed text stays on screen; the turn is not part of the conversation (as in `dvl chat`). */
  stop(): void {
    this.dropLiveBlock();
    this.answer.setAttribute('aria-busy', 'false');
    this.element.classList.add('stopped');
    this.status.hidden = false;
    this.status.textContent = 'Stopped. What was committed stays here; this turn is not sent with the next question.';
    if (this.committedText !== '') this.element.append(h('footer', { class: 'meta' }, copyButton(this.committedText)));
  }

  private dropLiveBlock(): void {
    this.block?.element.remove();
    this.block = null;
    this.fresh = [];
  }
}

function maskedSlot(): HTMLElement {
  // Empty: the placeholder is drawn by CSS, so the answer's text never contains it.
  return h('span', { class: 'slot masked', 'data-testid': 'masked', 'aria-hidden': 'true' });
}

/** NFE, tokens per NFE, token counts (cached prompt tokens too), stage times. */
function stats(answer: Answer): HTMLElement {
  const { stats: s, tokens } = answer.result;
  const item = (label: string, value: string, title: string) => h('span', { class: 'stat', title }, `${label} `, h('strong', {}, value));
  const items = [
    item('NFE', String(s.nfe), 'decoder calls: one per denoising step'),
    item('tokens/NFE', s.nfe > 0 ? (tokens.length / s.nfe).toFixed(2) : '–', 'answer tokens per decoder call'),
    item('tokens', String(tokens.length), 'answer tokens'),
    item('prompt', String(s.promptTokens), `prompt tokens (${s.imageTokens} of them for images)`),
    item('cached', String(s.cachedTokens), 'prompt tokens reused from the previous question, not computed again'),
  ];
  if (answer.queueMs >= 1) items.push(item('queue', ms(answer.queueMs), 'waiting behind other requests'));
  if (answer.loadMs > 0) items.push(item('load', ms(answer.loadMs), 'loading the model'));
  for (const [stage, value] of Object.entries(s.ms)) {
    if (value > 0) items.push(item(stage, ms(value), `time spent in ${stage}`));
  }
  // Spaces between the items: the text reads (and copies) as "NFE 25 tokens/NFE 0.96 ...".
  return h('p', { class: 'stats', 'data-testid': 'stats' }, ...items.flatMap((item, i) => (i === 0 ? [item] : [' ', item])));
}

function ms(value: number): string {
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`;
}

function copyButton(text: string): HTMLButtonElement {
  const button = h('button', { type: 'button', class: 'copy' }, 'Copy');
  button.addEventListener('click', () => {
    void copy(text).then(
      () => flash(button, 'Copied'),
      () => flash(button, 'Cannot copy'),
    );
  });
  return button;
}

/** The clipboard API where the page is a secure context (localhost is), else the older copy command. */
async function copy(text: string): Promise<void> {
  if (navigator.clipboard) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      // Refused (no permission): try the other way.
    }
  }
  const area = h('textarea', { class: 'offscreen', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  const copied = document.execCommand('copy');
  area.remove();
  if (!copied) throw new Error('copy refused');
}

function flash(button: HTMLButtonElement, text: string): void {
  button.textContent = text;
  setTimeout(() => (button.textContent = 'Copy'), 1500);
}
