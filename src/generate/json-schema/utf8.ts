/**
 * The UTF-8 and escape byte rules inside a JSON string, as small integer states.
 *
 * A byte-level BPE token can end or start in the middle of a multi-byte character, so validity is checked
 * byte by byte: a string may only hold well-formed UTF-8 (no overlong forms, no surrogates, nothing above
 * U+10FFFF), never a raw byte below 0x20, and only the escapes \" \\ \/ \b \f \n \r \t \uXXXX.
 * \u escapes of surrogates (D800-DFFF) are not allowed: a lone one is not a character, and every
 * character they could pair into can be written as raw UTF-8.
 *
 * Both the byte-at-a-time automaton (json-automaton.ts) and the per-token tables for strings
 * (vocabulary.ts) use these functions, so the two agree by construction.
 */

/**
 * UTF-8 state: how the next byte of the current character is constrained.
 * 0: between characters; 1: one continuation byte left (80-BF); 2: two left, next 80-BF; 3: two left, next
 * A0-BF (after E0: no overlong); 4: two left, next 80-9F (after ED: no surrogate); 5: three left, next 90-BF
 * (after F0); 6: three left, next 80-BF (after F1-F3); 7: three left, next 80-8F (after F4: <= U+10FFFF).
 */
export type Utf8State = number;
export const UTF8_STATES = 8;

/** Continuation bytes still missing in each UTF-8 state. */
export const UTF8_PENDING: readonly number[] = [0, 1, 2, 2, 2, 3, 3, 3];

/**
 * The state after `byte` (a byte that is plain string content: >= 0x20, not '"' nor '\\'), or -1 when the
 * byte is not valid here. A byte that starts a character (ASCII or a lead byte) is counted by the caller as
 * one code point, which is how JSON Schema (and ajv) count string length.
 */
export function utf8Next(state: Utf8State, byte: number): Utf8State {
  switch (state) {
    case 0:
      if (byte < 0x80) return 0;
      if (byte < 0xc2) return -1; // stray continuation, or C0/C1 (overlong)
      if (byte < 0xe0) return 1;
      if (byte === 0xe0) return 3;
      if (byte === 0xed) return 4;
      if (byte < 0xf0) return 2;
      if (byte === 0xf0) return 5;
      if (byte < 0xf4) return 6;
      if (byte === 0xf4) return 7;
      return -1;
    case 1:
      return byte >= 0x80 && byte <= 0xbf ? 0 : -1;
    case 2:
      return byte >= 0x80 && byte <= 0xbf ? 1 : -1;
    case 3:
      return byte >= 0xa0 && byte <= 0xbf ? 1 : -1;
    case 4:
      return byte >= 0x80 && byte <= 0x9f ? 1 : -1;
    case 5:
      return byte >= 0x90 && byte <= 0xbf ? 2 : -1;
    case 6:
      return byte >= 0x80 && byte <= 0xbf ? 2 : -1;
    case 7:
      return byte >= 0x80 && byte <= 0x8f ? 2 : -1;
    default:
      throw new Error(`utf8Next: bad state ${state}`);
  }
}

/** Does this byte start a character (so counts one code point)? Continuation bytes (80-BF) do not. */
export const startsCharacter = (byte: number): boolean => byte < 0x80 || byte >= 0xc0;

/** A byte that is string content by itself (the escape and the closing quote aside, and no control byte). */
export const isPlainStringByte = (byte: number): boolean => byte >= 0x20 && byte !== 0x22 && byte !== 0x5c;

/**
 * Escape state after a backslash. 0: none; 1: after '\'; 2: after '\u'; 3: after '\u' + one hex digit
 * (not D); 4: after '\uD' (the next digit must be 0-7: no surrogate); 5: two hex digits; 6: three.
 */
export type EscapeState = number;

/** Bytes an escape still needs in each escape state. */
export const ESCAPE_PENDING: readonly number[] = [0, 1, 4, 3, 3, 2, 1];

const isHex = (b: number) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** The escape state after `byte`, or -1 (state must be > 0). */
export function escapeNext(state: EscapeState, byte: number): EscapeState {
  switch (state) {
    case 1:
      // \" \\ \/ \b \f \n \r \t, or \u
      if (byte === 0x75) return 2;
      return byte === 0x22 || byte === 0x5c || byte === 0x2f || byte === 0x62 || byte === 0x66 || byte === 0x6e || byte === 0x72 || byte === 0x74 ? 0 : -1;
    case 2:
      if (byte === 0x44 || byte === 0x64) return 4;
      return isHex(byte) ? 3 : -1;
    case 3:
      return isHex(byte) ? 5 : -1;
    case 4:
      return byte >= 0x30 && byte <= 0x37 ? 5 : -1;
    case 5:
      return isHex(byte) ? 6 : -1;
    case 6:
      return isHex(byte) ? 0 : -1;
    default:
      throw new Error(`escapeNext: bad state ${state}`);
  }
}
