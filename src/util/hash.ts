/** sha256 of checkpoint files, streamed: a 16 GB checkpoint is never held in memory. */
import crypto from 'node:crypto';
import fs from 'node:fs';

/** The file's sha256 (hex); `onBytes` is told the size of each chunk read (for progress). */
export async function sha256File(file: string, onBytes?: (bytes: number) => void): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 << 20 })) {
    hash.update(chunk as Buffer);
    onBytes?.((chunk as Buffer).byteLength);
  }
  return hash.digest('hex');
}
