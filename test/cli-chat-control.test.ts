/**
 * `dvl chat` control through the real binary: bad images are refused when given (command line: before the
 * model loads; /image: not attached), /set and /show (scripted), --verbose reports the load once, a real
 * SIGINT still stops the chat (130), and on a terminal (tmux) Ctrl-C stops a running answer without leaving:
 * the follow-up question is answered with the conversation kept and the stopped turn left out.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DVL_BIN, REPO_ROOT, runDvl } from './helpers/cli.js';
import { tinyConfig } from './helpers/random-weights.js';
import { writeTinyCheckpoint } from './helpers/tiny-checkpoint.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dvl-cli-chat-control-'));
const ckpt = path.join(work, 'tiny');
const env = { DVL_HOME: path.join(work, 'home') };
const OPTS = ['--model', ckpt, '--dtype', 'fp32', '--gen-length', '8', '--steps', '4', '--threads', '1', '--min-pixels', '784', '--max-pixels', '3136'];
const BAD = path.join(work, 'corrupt.jpg');

const chat = (args: string[], lines: string[], options: { env?: NodeJS.ProcessEnv } = {}) =>
  runDvl(['chat', ...OPTS, ...args], { env: options.env ?? env, input: `${lines.join('\n')}\n` });
const askText = (args: string[]) => {
  const run = runDvl(['ask', ...OPTS, '-q', '--json', ...args], { env });
  expect(run.status, run.stderr).toBe(0);
  return (JSON.parse(run.stdout) as { text: string }).text;
};

beforeAll(() => {
  writeTinyCheckpoint(ckpt, { config: tinyConfig({ text: { tieWordEmbeddings: false } }), seed: 21 });
  fs.writeFileSync(BAD, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5]));
  askText(['Hi']); // converts the model once
}, 120_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('dvl chat, scripted', () => {
  it('a corrupt image on the command line fails before the model loads: exit 2, nothing converted', () => {
    const home = path.join(work, 'empty-home');
    const run = chat([BAD], ['What is this?'], { env: { DVL_HOME: home } });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^dvl: cannot decode image .*corrupt\.jpg: [^\n]*\n$/);
    expect(run.stdout).toBe('');
    expect(fs.existsSync(path.join(home, 'models'))).toBe(false);
  });

  it('/image with a corrupt image is reported and not attached: the question is answered, text only', () => {
    const run = chat(['-q'], [`/image ${BAD}`, 'What is this?']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^dvl: cannot decode image .*corrupt\.jpg/m);
    expect(run.stdout).toBe(`${askText(['What is this?'])}\n`);
  });

  it('/set changes the settings of the next answers (bad values on stderr, the chat goes on); /show and /help print', () => {
    const run = chat(['-q'], [
      '/set gen-length 4',
      '/set steps 0',
      '/set temperature 1',
      '/set seed 7',
      '/set top-k 5',
      '/set nonsense 3',
      '/set system Be brief.',
      '/show',
      'Hi',
      '/help',
    ]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toBe(["dvl: steps must be an integer from 1 to 1024, got '0'", "dvl: unknown setting 'nonsense' (one of gen-length, steps, block-size, temperature, top-k, top-p, remasking, threshold, seed, system, format, json-schema)", ''].join('\n'));
    const show = ['gen-length 4', 'steps 4', 'block-size 8', 'temperature 1', 'top-k 5', 'top-p 1', 'remasking low_confidence_static', 'threshold 0.85', 'seed 7', 'system "Be brief."', 'format text'];
    const answer = askText(['-n', '4', '-t', '1', '--seed', '7', '--top-k', '5', '--system', 'Be brief.', 'Hi']);
    expect(run.stdout.startsWith(`${show.join('\n')}\n${answer}\n`)).toBe(true);
    const help = run.stdout.slice(`${show.join('\n')}\n${answer}\n`.length);
    for (const command of ['/image PATH', '/set NAME VALUE', '/show', '/clear', '/help', '/exit']) expect(help).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
    for (const name of show.map((line) => line.split(' ')[0])) expect(help).toContain(name);
  });

  it('--verbose reports the load time once, at the first answer, and no pixel budget without images', () => {
    const run = chat(['--verbose'], ['Hi', 'And then?', 'And?']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr.match(/^dvl: load \d+ ms, preprocess \d+ ms/gm)).toHaveLength(1);
    expect(run.stderr.match(/^dvl: (load \d+ ms, )?preprocess \d+ ms, vision \d+ ms, prefill \d+ ms, decode \d+ ms$/gm)).toHaveLength(3);
    // The first lines of all: where the start-up went, then the first answer's stages with the load time.
    expect(run.stderr).toMatch(/^dvl: start-up: decoder session \d+ ms .*\ndvl: load \d+ ms, preprocess/);
    expect(run.stderr.match(/^dvl: start-up: /gm)).toHaveLength(1);
    expect(run.stderr).not.toMatch(/pixel budget/);
  });

  it('a real SIGINT (kill -INT) during an answer still stops the whole chat, exit 130', async () => {
    const child = spawn(process.execPath, [DVL_BIN, 'chat', ...OPTS, '-q', '--gen-length', '4096'], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
    child.stdin.write('Tell me a long story.\n'); // stdin stays open: the chat is not over
    let killedAt = 0;
    child.stdout.once('data', () => {
      killedAt = performance.now();
      child.kill('SIGINT');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    expect(code).toBe(130);
    expect(performance.now() - killedAt).toBeLessThan(5000);
  }, 90_000);
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

// CI installs tmux (.ci/run), so there a missing tmux fails instead of skipping.
describe.skipIf(!hasTmux && !process.env.CI)('dvl chat on a terminal (tmux)', () => {
  // A tmux server (socket) per window: restarting a server on the same socket can race its shutdown, and
  // then new-session fails.
  const sockets: string[] = [];
  let socket = '';
  const tmux = (...args: string[]) => spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8' });
  afterAll(() => {
    for (const s of sockets) spawnSync('tmux', ['-S', s, 'kill-server']);
  });
  /** The whole screen and its scrollback, wrapped lines joined. */
  const screen = () => tmux('capture-pane', '-p', '-J', '-S', '-').stdout;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  async function waitFor(what: string, test: () => boolean, ms = 30_000): Promise<void> {
    const t0 = performance.now();
    while (!test()) {
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
      await sleep(30);
    }
  }
  const promptTokens = (text: string) => [...text.matchAll(/^dvl: (\d+) prompt tokens/gm)].map((m) => Number(m[1]));

  /** Starts `dvl chat ARGS` in a fresh tmux window; returns whether it has exited and how to read its exit line. */
  function startChat(args: string[]) {
    const done = path.join(work, `chat-done-${Date.now()}`);
    const envs = Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ');
    const quoted = ['chat', ...OPTS, ...args].map((a) => JSON.stringify(a)).join(' ');
    // As a user's terminal: without CI (set when CI runs these tests), for which dvl shows no spinner.
    const cmd = `cd ${JSON.stringify(REPO_ROOT)} && env -u CI ${envs} ${JSON.stringify(process.execPath)} ${JSON.stringify(DVL_BIN)} ${quoted}; echo "exit=$?" > ${done}; sleep 60`;
    if (socket) tmux('kill-server');
    socket = path.join(work, `tmux-${sockets.length}.sock`);
    sockets.push(socket);
    expect(tmux('new-session', '-d', '-x', '120', '-y', '30', 'sh', '-c', cmd).status).toBe(0);
    return { exited: () => fs.existsSync(done), exitLine: () => fs.readFileSync(done, 'utf8').trim() };
  }

  it('Ctrl-C stops a long answer; the prompt comes back; the follow-up keeps the conversation; Ctrl-C at an empty prompt leaves (exit 0)', async () => {
    // The same two questions, scripted: the prompt lengths a kept conversation gives.
    const scripted = chat(['--verbose'], ['What is this?', 'And the colour?']);
    expect(scripted.status, scripted.stderr).toBe(0);
    const expected = promptTokens(scripted.stderr);
    expect(expected).toHaveLength(2);

    const { exited, exitLine } = startChat(['--verbose']);

    await waitFor('the first prompt', () => /^>\s*$/m.test(screen()) || exited());
    tmux('send-keys', 'What is this?', 'Enter');
    await waitFor('the first answer', () => promptTokens(screen()).length === 1 || exited());
    tmux('send-keys', '/set gen-length 4096', 'Enter');
    await waitFor('the setting', () => screen().includes('(gen-length set to 4096)') || exited());
    tmux('send-keys', 'Tell me a long story.', 'Enter');
    // Ctrl-C once the answer is being drawn (the live view's masked slots).
    await waitFor('the long answer to start', () => screen().split('Tell me a long story.')[1]?.includes('░') === true || exited());
    tmux('send-keys', 'C-c');
    const stoppedAt = performance.now();
    await waitFor('the answer to stop', () => screen().includes('(answer stopped)') || exited(), 10_000);
    expect(exited()).toBe(false);
    expect(performance.now() - stoppedAt).toBeLessThan(5000);

    tmux('send-keys', '/set gen-length 8', 'Enter');
    await waitFor('the setting', () => screen().includes('(gen-length set to 8)') || exited());
    tmux('send-keys', 'And the colour?', 'Enter');
    await waitFor('the follow-up answer', () => promptTokens(screen()).length === 2 || exited());
    // The follow-up saw the first turn, and not the stopped one.
    expect(promptTokens(screen())).toEqual(expected);

    // Ctrl-C on a typed line clears it; Ctrl-C at the empty prompt leaves.
    tmux('send-keys', 'never sent');
    await waitFor('the typed line', () => screen().includes('> never sent'));
    tmux('send-keys', 'C-c');
    await sleep(500);
    expect(exited()).toBe(false);
    expect(screen().trimEnd().split('\n').at(-1)).toBe('>');
    tmux('send-keys', 'C-c');
    await waitFor('the chat to end', exited, 10_000);
    expect(exitLine()).toBe('exit=0');
  }, 120_000);

  it('Ctrl-C while the spinner turns (reading a large image) stops the answer too, and Ctrl-D leaves (exit 0)', async () => {
    // The spinner library would otherwise take the terminal's keys and turn Ctrl-C into a real SIGINT.
    // 6 megapixels: reading and encoding the image take seconds, so the spinner is on screen long enough to be
    // seen by the polling below on a fast or a busy machine alike.
    const { exited, exitLine } = startChat(['--min-pixels', '6000000', '--max-pixels', '6000000', path.resolve('fixtures/images/chelsea.png')]);
    await waitFor('the first prompt', () => /^>\s*$/m.test(screen()) || exited());
    tmux('send-keys', 'What is this?', 'Enter');
    await waitFor('the spinner', () => /reading images|encoding images/.test(screen()) || exited());
    tmux('send-keys', 'C-c');
    await waitFor('the answer to stop', () => screen().includes('(answer stopped; its images stay attached') || exited());
    expect(exited()).toBe(false);
    tmux('send-keys', 'C-d');
    await waitFor('the chat to end', exited, 10_000);
    expect(exitLine()).toBe('exit=0');
  }, 120_000);
});
