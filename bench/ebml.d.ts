/** The little of the untyped `ebml` package the benchmark uses. */
declare module 'ebml' {
  import { Transform } from 'node:stream';

  /** A Transform stream: EBML bytes in, `[kind, { name, ... }]` tuples out. */
  export class Decoder extends Transform {
    constructor(options?: Record<string, unknown>);
  }
}
