/**
 * An image's width and height read from its header (PNG, GIF, JPEG, WebP), without
 * decoding it: what Bluesky's `aspectRatio` wants so that apps lay a post out before
 * the image arrives. Null when the header is not one of these or is cut short.
 */
export interface ImageSize {
  readonly width: number;
  readonly height: number;
}

const sized = (width: number, height: number): ImageSize | null => (width > 0 && height > 0 ? { width, height } : null);

function png(b: Buffer): ImageSize | null {
  // signature (8), IHDR length (4) and type (4), then width and height, big-endian
  if (b.length < 24 || b.readUInt32BE(0) !== 0x89504e47 || b.toString('latin1', 12, 16) !== 'IHDR') return null;
  return sized(b.readUInt32BE(16), b.readUInt32BE(20));
}

function gif(b: Buffer): ImageSize | null {
  if (b.length < 10 || !/^GIF8[79]a$/.test(b.toString('latin1', 0, 6))) return null;
  return sized(b.readUInt16LE(6), b.readUInt16LE(8));
}

/** the start-of-frame markers (SOF0-SOF15 but DHT C4, JPG C8 and DAC CC), which carry the size */
const SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpeg(b: Buffer): ImageSize | null {
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return null;
  let at = 2;
  while (at + 4 <= b.length) {
    if (b[at] !== 0xff) return null;
    const marker = b.readUInt8(at + 1);
    // fill bytes, and markers without a length (RST, TEM)
    if (marker === 0xff) {
      at += 1;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2;
      continue;
    }
    const length = b.readUInt16BE(at + 2);
    if (SOF.has(marker)) return at + 9 <= b.length ? sized(b.readUInt16BE(at + 7), b.readUInt16BE(at + 5)) : null;
    if (marker === 0xda || length < 2) return null; // the scan begins: no frame header before it
    at += 2 + length;
  }
  return null;
}

function webp(b: Buffer): ImageSize | null {
  if (b.length < 30 || b.toString('latin1', 0, 4) !== 'RIFF' || b.toString('latin1', 8, 12) !== 'WEBP') return null;
  const chunk = b.toString('latin1', 12, 16);
  if (chunk === 'VP8 ') return sized(b.readUInt16LE(26) & 0x3fff, b.readUInt16LE(28) & 0x3fff);
  if (chunk === 'VP8L') {
    const bits = b.readUInt32LE(21);
    return sized((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1);
  }
  if (chunk === 'VP8X') return sized(b.readUIntLE(24, 3) + 1, b.readUIntLE(27, 3) + 1);
  return null;
}

export function imageSize(bytes: Buffer): ImageSize | null {
  return png(bytes) ?? gif(bytes) ?? jpeg(bytes) ?? webp(bytes);
}
