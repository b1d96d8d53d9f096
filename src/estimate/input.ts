import { walkBody } from './body-walk.js';

/** Counts the tokens of a text. */
export type TokenEstimator = (text: string) => number;

/**
 * One token per UTF-8 byte: an upper bound for OpenAI's tokenizers (every token of their
 * byte-level BPE covers at least one byte), so an input estimated with it is never below what
 * the upstream bills, whatever language or characters the prompt uses. It overstates English
 * about fourfold; the reservation is released when the request settles at its real usage.
 * Pass a real tokenizer (`estimateTokens`) to hold less.
 */
export const utf8ByteTokens: TokenEstimator = (text) => Buffer.byteLength(text, 'utf8');

/**
 * OpenAI's rule of thumb, four characters a token. Not a bound: code, digits and non-Latin
 * scripts take more tokens than this says, so a reservation made with it can be exceeded.
 */
export const charactersOverFour: TokenEstimator = (text) => Math.ceil(text.length / 4);

/** How a request's input is estimated. */
export interface InputEstimateSettings {
  estimateTokens: TokenEstimator;
  /** Tokens allowed for each image (the upstream bills images by their size and detail). */
  imageTokens: number;
}

/** Part types that carry an image (Chat `image_url`, Responses `input_image`, Anthropic `image`). */
const IMAGE_PART = /image/;
const DATA_URL = /^data:([^;,]*)[;,]/;

/**
 * Input tokens of a request, estimated from its **whole** body rather than a list of known
 * fields: every string anywhere in it (messages, tool definitions, earlier tool-call
 * arguments, JSON schemas, instructions…) is text; every key and scalar counts toward the
 * structure the upstream renders around them (role markers, message separators); each image
 * part counts `imageTokens`; other embedded files and audio (`data:` URLs) count their decoded
 * size in bytes. Throws `BodyShapeError` for a body too deep or too large to walk.
 */
export function estimateInputTokens(body: unknown, settings: InputEstimateSettings): number {
  const { estimateTokens, imageTokens } = settings;
  const bytesOnly = estimateTokens === utf8ByteTokens;
  const texts: string[] = [];
  let textBytes = 0;
  let structure = 0;
  let media = 0;
  walkBody(body, ({ value, key }) => {
    if (key !== undefined) structure += Buffer.byteLength(key, 'utf8');
    if (typeof value === 'string') {
      const dataUrl = value.length > 5 ? DATA_URL.exec(value.slice(0, 128)) : null;
      if (dataUrl) {
        media += dataUrl[1]!.startsWith('image/') ? imageTokens : Math.ceil((value.length * 3) / 4);
      } else if (bytesOnly) {
        textBytes += Buffer.byteLength(value, 'utf8') + 1;
      } else {
        texts.push(value);
      }
      return undefined;
    }
    if (value === null || typeof value !== 'object') {
      structure += String(value).length;
      return undefined;
    }
    // One token for the object or array itself: separators, role markers.
    structure += 1;
    const type = (value as { type?: unknown }).type;
    if (typeof type === 'string' && IMAGE_PART.test(type)) {
      media += imageTokens;
      return false;
    }
    return undefined;
  });
  const text = bytesOnly ? textBytes : countTokens(estimateTokens, texts.join('\n'));
  return text + structure + media;
}

function countTokens(estimateTokens: TokenEstimator, text: string): number {
  const tokens = estimateTokens(text);
  if (!Number.isSafeInteger(tokens) || tokens < 0) {
    throw new TypeError(`estimateTokens must return a non-negative integer (got ${String(tokens)}).`);
  }
  return tokens;
}
