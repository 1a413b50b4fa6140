/**
 * Images waiting to go with the next question: added by the file picker, drag-and-drop or paste, shown as
 * thumbnails (blob: URLs, which the Content-Security-Policy allows for images) that a button removes.
 * The bytes are sent as they are, base64: the server reads them exactly as `dvl ask` reads the file.
 */
import { h } from './dom.js';

export interface Attachment {
  name: string;
  /** A blob: URL of the file, for thumbnails here and in the conversation (revoked by `New chat`). */
  url: string;
  /** The file's bytes as base64 (read once, when needed). */
  base64(): Promise<string>;
}

export class Attachments {
  private items: Attachment[] = [];

  constructor(
    private readonly list: HTMLUListElement,
    /** Files that are not images are refused with a message. */
    private readonly refuse: (message: string) => void,
  ) {}

  get count(): number {
    return this.items.length;
  }

  add(files: Iterable<File>): void {
    for (const file of files) {
      if (!file.type.startsWith('image/')) {
        this.refuse(`${file.name} is not an image`);
        continue;
      }
      this.items.push(attachment(file));
    }
    this.render();
  }

  /** Hands the images over to a question; the composer is empty afterwards. */
  take(): Attachment[] {
    const taken = this.items;
    this.items = [];
    this.render();
    return taken;
  }

  /** Puts images back (a question that was stopped or refused keeps them for the next try). */
  restore(items: Attachment[]): void {
    this.items = [...items, ...this.items];
    this.render();
  }

  /** Empties the composer and frees every thumbnail made so far, the conversation's too (`New chat`). */
  clear(): void {
    this.items = [];
    this.render();
    for (const url of made) URL.revokeObjectURL(url);
    made.clear();
  }

  private render(): void {
    this.list.replaceChildren(
      ...this.items.map((item, i) => {
        const remove = h('button', { type: 'button', class: 'remove', 'aria-label': `Remove ${item.name}`, title: 'Remove' }, '×');
        remove.addEventListener('click', () => {
          this.items.splice(i, 1);
          this.render();
        });
        return h('li', {}, thumbnail(item), remove);
      }),
    );
    this.list.hidden = this.items.length === 0;
  }
}

export function thumbnail(item: Attachment): HTMLImageElement {
  return h('img', { src: item.url, alt: item.name, class: 'thumb', decoding: 'async' });
}

/** Every blob: URL made, until `clear` frees them. */
const made = new Set<string>();

function attachment(file: File): Attachment {
  let read: Promise<string> | null = null;
  const url = URL.createObjectURL(file);
  made.add(url);
  return {
    name: file.name || 'pasted image',
    url,
    base64: () => (read ??= readBase64(file)),
  };
}

function readBase64(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    // A data: URL: "data:<type>;base64,<bytes>".
    reader.onload = () => resolve(String(reader.result).slice(String(reader.result).indexOf(',') + 1));
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}
