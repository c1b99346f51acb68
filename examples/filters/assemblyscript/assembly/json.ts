// Just enough JSON for the hello filter, on UTF-8 bytes: read the
// "greeting" string out of a configuration object, and write a string
// literal. AssemblyScript's standard library has no JSON.

/** Nesting deeper than this (in members the filter skips) is refused. */
const MAX_DEPTH = 64;

/** What reading the configuration gave. */
export class Greeting {
  constructor(
    /** false: not a JSON object, or its greeting is not a string. */
    public ok: bool,
    /** The decoded greeting, or null when the object has none. */
    public value: Uint8Array | null,
  ) {}
}

/**
 * Reads a configuration such as `{"greeting": "hello"}`: a JSON object whose
 * "greeting" member, if present, is a string. Other members may hold any
 * JSON value and are skipped.
 */
export function readGreeting(text: Uint8Array): Greeting {
  const p = new Parser(text);
  let greeting: Uint8Array | null = null;
  p.space();
  if (!p.eat(0x7b /* { */)) return new Greeting(false, null);
  p.space();
  if (!p.eat(0x7d /* } */)) {
    while (true) {
      const key = p.string();
      p.space();
      if (key === null || !p.eat(0x3a /* : */)) return new Greeting(false, null);
      p.space();
      if (String.UTF8.decode(key.buffer) == "greeting") {
        greeting = p.string();
        if (greeting === null) return new Greeting(false, null);
      } else if (!p.skipValue(0)) {
        return new Greeting(false, null);
      }
      p.space();
      if (p.eat(0x7d /* } */)) break;
      if (!p.eat(0x2c /* , */)) return new Greeting(false, null);
      p.space();
    }
  }
  p.space();
  return new Greeting(p.atEnd(), greeting);
}

class Parser {
  at: i32 = 0;
  constructor(private text: Uint8Array) {}

  atEnd(): bool {
    return this.at == this.text.length;
  }

  peek(): i32 {
    return this.at < this.text.length ? <i32>this.text[this.at] : -1;
  }

  eat(c: i32): bool {
    if (this.peek() != c) return false;
    this.at++;
    return true;
  }

  space(): void {
    let c = this.peek();
    while (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) {
      this.at++;
      c = this.peek();
    }
  }

  /** A string literal, decoded to UTF-8; null if there is none here. */
  string(): Uint8Array | null {
    if (!this.eat(0x22 /* " */)) return null;
    const out = new Array<u8>();
    while (true) {
      const c = this.peek();
      if (c < 0x20) return null; // the end of the text, or a raw control character
      this.at++;
      if (c == 0x22) break;
      if (c != 0x5c /* \ */) {
        out.push(<u8>c);
        continue;
      }
      const e = this.peek();
      this.at++;
      if (e == 0x22 || e == 0x5c || e == 0x2f) out.push(<u8>e);
      else if (e == 0x62 /* b */) out.push(0x08);
      else if (e == 0x66 /* f */) out.push(0x0c);
      else if (e == 0x6e /* n */) out.push(0x0a);
      else if (e == 0x72 /* r */) out.push(0x0d);
      else if (e == 0x74 /* t */) out.push(0x09);
      else if (e == 0x75 /* u */) {
        let code = this.hex4();
        if (code >= 0xdc00 && code <= 0xdfff) return null; // a lone low surrogate
        if (code >= 0xd800 && code <= 0xdbff) {
          // A high surrogate must be followed by \u and a low one.
          if (!this.eat(0x5c) || !this.eat(0x75)) return null;
          const low = this.hex4();
          if (low < 0xdc00 || low > 0xdfff) return null;
          code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        }
        if (code < 0) return null;
        pushUtf8(out, code);
      } else return null;
    }
    const bytes = new Uint8Array(out.length);
    for (let i = 0; i < out.length; i++) bytes[i] = out[i];
    return bytes;
  }

  /** Four hex digits as a number, or -1. */
  hex4(): i32 {
    let value = 0;
    for (let i = 0; i < 4; i++) {
      const c = this.peek();
      let digit = -1;
      if (c >= 0x30 && c <= 0x39) digit = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) digit = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) digit = c - 0x41 + 10;
      if (digit < 0) return -1;
      this.at++;
      value = (value << 4) | digit;
    }
    return value;
  }

  /** Skips any JSON value; false if there is none here. */
  skipValue(depth: i32): bool {
    if (depth > MAX_DEPTH) return false;
    const c = this.peek();
    if (c == 0x22) return this.string() !== null;
    if (c == 0x7b /* { */ || c == 0x5b /* [ */) {
      const close = c == 0x7b ? 0x7d : 0x5d;
      this.at++;
      this.space();
      if (this.eat(close)) return true;
      while (true) {
        if (c == 0x7b) {
          if (this.string() === null) return false;
          this.space();
          if (!this.eat(0x3a)) return false;
          this.space();
        }
        if (!this.skipValue(depth + 1)) return false;
        this.space();
        if (this.eat(close)) return true;
        if (!this.eat(0x2c)) return false;
        this.space();
      }
    }
    if (this.word("true") || this.word("false") || this.word("null")) return true;
    return this.number();
  }

  word(w: string): bool {
    for (let i = 0; i < w.length; i++) {
      if (this.at + i >= this.text.length || <i32>this.text[this.at + i] != w.charCodeAt(i)) {
        return false;
      }
    }
    this.at += w.length;
    return true;
  }

  /** -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
  number(): bool {
    this.eat(0x2d /* - */);
    if (!this.eat(0x30 /* 0 */)) {
      if (this.digits() == 0) return false;
    }
    if (this.eat(0x2e /* . */) && this.digits() == 0) return false;
    if (this.eat(0x65 /* e */) || this.eat(0x45 /* E */)) {
      if (!this.eat(0x2b /* + */)) this.eat(0x2d);
      if (this.digits() == 0) return false;
    }
    return true;
  }

  digits(): i32 {
    let n = 0;
    while (this.peek() >= 0x30 && this.peek() <= 0x39) {
      this.at++;
      n++;
    }
    return n;
  }
}

function pushUtf8(out: Array<u8>, code: i32): void {
  if (code < 0x80) {
    out.push(<u8>code);
  } else if (code < 0x800) {
    out.push(<u8>(0xc0 | (code >> 6)));
    out.push(<u8>(0x80 | (code & 0x3f)));
  } else if (code < 0x10000) {
    out.push(<u8>(0xe0 | (code >> 12)));
    out.push(<u8>(0x80 | ((code >> 6) & 0x3f)));
    out.push(<u8>(0x80 | (code & 0x3f)));
  } else {
    out.push(<u8>(0xf0 | (code >> 18)));
    out.push(<u8>(0x80 | ((code >> 12) & 0x3f)));
    out.push(<u8>(0x80 | ((code >> 6) & 0x3f)));
    out.push(<u8>(0x80 | (code & 0x3f)));
  }
}

/**
 * `bytes` as a JSON string literal: quotes, backslashes and control
 * characters escaped, everything else (UTF-8 included) as it is.
 */
export function quote(bytes: Uint8Array): Array<u8> {
  const hex = "0123456789abcdef";
  const out = new Array<u8>();
  out.push(0x22);
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c == 0x22 || c == 0x5c) {
      out.push(0x5c);
      out.push(c);
    } else if (c == 0x0a) {
      out.push(0x5c); out.push(0x6e);
    } else if (c == 0x0d) {
      out.push(0x5c); out.push(0x72);
    } else if (c == 0x09) {
      out.push(0x5c); out.push(0x74);
    } else if (c < 0x20) {
      out.push(0x5c); out.push(0x75); out.push(0x30); out.push(0x30);
      out.push(<u8>hex.charCodeAt(c >> 4));
      out.push(<u8>hex.charCodeAt(c & 0xf));
    } else {
      out.push(c);
    }
  }
  out.push(0x22);
  return out;
}
