/**
 * dvl's chat page: pick a model, drop a photo, ask, and watch the answer denoise. Served by `dvl serve` at `/`
 * (src/server/web-ui.ts), it talks only to that server (api.ts).
 *
 * The conversation is kept here, in the page: each question is sent with the earlier turns and their images
 * (`history`, `history_images`), as `dvl chat` sends them, and with `reuse_prefix` so that the server computes
 * only what is new since the previous question (the stats show those prompt tokens as cached).
 * A stopped answer keeps its committed text on screen but is not part of the conversation, and its question's
 * images go back to the composer, as `dvl chat` keeps them attached after Ctrl-C.
 */
import { Api, ApiError } from './api.js';
import { type Attachment, Attachments } from './attachments.js';
import { byId } from './dom.js';
import { renderSettings } from './settings.js';
import { AnswerTurn, questionTurn } from './turns.js';
import type { AskBody, Turn } from './wire.js';

const api = new Api();

const modelSelect = byId('model', HTMLSelectElement);
const newChatButton = byId('new-chat', HTMLButtonElement);
const themeButton = byId('theme', HTMLButtonElement);
const keyForm = byId('key-form', HTMLFormElement);
const keyInput = byId('api-key', HTMLInputElement);
const keyMessage = byId('key-message', HTMLElement);
const scroller = byId('scroller', HTMLElement);
const log = byId('log', HTMLElement);
const intro = byId('intro', HTMLElement);
const errorBox = byId('error', HTMLElement);
const composer = byId('composer', HTMLFormElement);
const promptBox = byId('prompt', HTMLTextAreaElement);
const imageInput = byId('image-input', HTMLInputElement);
const sendButton = byId('send', HTMLButtonElement);
const stopButton = byId('stop', HTMLButtonElement);

const readSettings = renderSettings(byId('settings-fields', HTMLElement));
const attachments = new Attachments(byId('attachments', HTMLUListElement), showError);

/** The conversation the model sees: finished turns only, and the images of its user turns (base64). */
let history: Turn[] = [];
let historyImages: string[] = [];
/** The answer being computed; aborting it closes the request, which stops it on the server. */
let running: AbortController | null = null;
/** Counts `New chat`s: an answer that ends after one belongs to a conversation that is gone. */
let chatNumber = 0;

// ---- models ------------------------------------------------------------------------------------------------

async function loadModels(): Promise<void> {
  try {
    const [ids, loaded] = await Promise.all([api.models(), api.loadedModels()]);
    const previous = modelSelect.value;
    modelSelect.replaceChildren(...ids.map((id) => new Option(id, id)));
    // The one the user had, else the one already in memory (dvl serve -m), else the first.
    modelSelect.value = [previous, ...loaded, ids[0] ?? ''].find((id) => ids.includes(id)) ?? '';
    modelSelect.disabled = ids.length === 0;
    if (ids.length === 0) showError('This server has no models yet: start it with dvl serve -m MODEL.');
    keyForm.hidden = true;
  } catch (error) {
    if (error instanceof ApiError && error.needsKey) askForKey(error.message);
    else showError(error);
  }
}

// ---- the API key (dvl serve --api-key) ---------------------------------------------------------------------

function askForKey(reason: string): void {
  keyMessage.textContent = api.hasKey ? `That key was refused (${reason}). Enter the key again:` : 'This server needs the API key it was started with:';
  keyForm.hidden = false;
  keyInput.focus();
}

keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (key === '') return;
  api.setKey(key);
  keyInput.value = '';
  hideError();
  void loadModels();
});

// ---- asking ------------------------------------------------------------------------------------------------

async function send(): Promise<void> {
  if (running) return;
  const prompt = promptBox.value;
  if (prompt.trim() === '') {
    showError('Type a question first (images go with a question).');
    promptBox.focus();
    return;
  }
  if (modelSelect.value === '') {
    showError('No model to ask: the server lists none, or the API key is missing.');
    return;
  }
  const body: AskBody = { model: modelSelect.value, prompt, images: [], history, history_images: historyImages, settings: {}, reuse_prefix: true };
  try {
    readSettings(body);
  } catch (error) {
    showError(error);
    return;
  }
  hideError();
  const images = attachments.take();
  promptBox.value = '';
  const question = questionTurn(prompt, images);
  const answer = new AnswerTurn();
  intro.hidden = true;
  log.append(question, answer.element);
  scrollToEnd(true);
  const controller = new AbortController();
  const chat = chatNumber;
  setRunning(controller);
  try {
    body.images = await Promise.all(images.map((image) => image.base64()));
    const done = await api.ask(body, controller.signal, (event) => {
      answer.apply(event);
      scrollToEnd();
    });
    if (chat !== chatNumber) return;
    answer.finish(done);
    history = [...history, { role: 'user', text: prompt, images: images.length }, { role: 'assistant', text: done.result.text }];
    historyImages = [...historyImages, ...body.images];
  } catch (error) {
    if (chat !== chatNumber) return;
    if (controller.signal.aborted) {
      // Stopped (the Stop button, Escape, or New chat, which clears the page anyway).
      answer.stop();
      giveBack(prompt, images);
    } else {
      // Refused or failed: the question did not happen; the composer gets it back to fix and send again.
      question.remove();
      answer.element.remove();
      intro.hidden = log.querySelector('.turn') !== null;
      giveBack(prompt, images);
      if (error instanceof ApiError && error.needsKey) askForKey(error.message);
      showError(withImageNames(error, images));
    }
  } finally {
    if (running === controller) setRunning(null);
    scrollToEnd();
  }
}

/** A question that did not become part of the conversation: its images (and text, unless replaced) go back. */
function giveBack(prompt: string, images: Attachment[]): void {
  attachments.restore(images);
  if (promptBox.value === '') promptBox.value = prompt;
}

/** The server names the question's images by their place ("images[1]: ..."); the user knows their file names. */
function withImageNames(error: unknown, images: Attachment[]): unknown {
  if (!(error instanceof Error)) return error;
  return new Error(error.message.replace(/^images\[(\d+)\]/, (place, i: string) => images[Number(i)]?.name ?? place));
}

function stop(): void {
  running?.abort();
}

function setRunning(controller: AbortController | null): void {
  const focusWasOn = document.activeElement;
  running = controller;
  sendButton.disabled = controller !== null;
  stopButton.disabled = controller === null;
  // A button that becomes disabled loses the keyboard focus: hand it to the one that now matters.
  if (controller && focusWasOn === sendButton) stopButton.focus();
  if (!controller && focusWasOn === stopButton) promptBox.focus();
}

function newChat(): void {
  stop();
  setRunning(null);
  chatNumber += 1;
  history = [];
  historyImages = [];
  attachments.clear();
  log.querySelectorAll('.turn').forEach((turn) => turn.remove());
  intro.hidden = false;
  promptBox.value = '';
  hideError();
  promptBox.focus();
}

// ---- composer: Enter sends, Shift+Enter is a new line; images by picker, drop and paste ----------------------

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  void send();
});

promptBox.addEventListener('keydown', (event) => {
  // isComposing: Enter that confirms an input method's candidate (Japanese, Chinese) is not a send.
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    void send();
  }
});

document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && running) stop();
});

stopButton.addEventListener('click', stop);
newChatButton.addEventListener('click', newChat);

imageInput.addEventListener('change', () => {
  attachments.add(imageInput.files ?? []);
  // The same file can be picked again.
  imageInput.value = '';
});

promptBox.addEventListener('paste', (event) => {
  const files = [...(event.clipboardData?.files ?? [])];
  if (files.length === 0) return; // plain text: the textarea takes it
  event.preventDefault();
  attachments.add(files);
});

let dragDepth = 0;
const carriesFiles = (event: DragEvent) => event.dataTransfer?.types.includes('Files') === true;
document.addEventListener('dragenter', (event) => {
  if (!carriesFiles(event)) return;
  dragDepth += 1;
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) document.body.classList.remove('dragging');
});
document.addEventListener('dragover', (event) => {
  if (carriesFiles(event)) event.preventDefault(); // allows the drop
});
document.addEventListener('drop', (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault(); // the browser would otherwise open the file
  dragDepth = 0;
  document.body.classList.remove('dragging');
  attachments.add(event.dataTransfer?.files ?? []);
  promptBox.focus();
});

// ---- errors, scrolling, theme ------------------------------------------------------------------------------

function showError(error: unknown): void {
  errorBox.textContent = error instanceof Error ? error.message : String(error);
  errorBox.hidden = false;
}

function hideError(): void {
  errorBox.hidden = true;
  errorBox.textContent = '';
}

/** Follows the answer as it grows, unless the reader scrolled up to read something else. */
function scrollToEnd(always = false): void {
  const nearEnd = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  if (always || nearEnd) scroller.scrollTop = scroller.scrollHeight;
}

const THEME_STORAGE = 'dvl-theme';

/** Light or dark: the system's choice until the button picks one (remembered on this machine). */
function applyTheme(theme: string | null): void {
  if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
  const dark = document.documentElement.dataset.theme === 'dark' || (!document.documentElement.dataset.theme && matchMedia('(prefers-color-scheme: dark)').matches);
  themeButton.setAttribute('aria-pressed', String(dark));
}

themeButton.addEventListener('click', () => {
  const next = themeButton.getAttribute('aria-pressed') === 'true' ? 'light' : 'dark';
  localStorage.setItem(THEME_STORAGE, next);
  applyTheme(next);
});

applyTheme(localStorage.getItem(THEME_STORAGE));
setRunning(null);
void loadModels();
promptBox.focus();
