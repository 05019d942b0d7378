/**
 * One gRPC call on the server, straight on a node:http2 stream: reads its
 * request messages, writes its response messages, headers, status and
 * trailers, and ends it on deadline or when the client goes away.
 *
 * A call ends exactly once: by its status (`respond`, `respondStream`,
 * `fail`), by its deadline (DEADLINE_EXCEEDED), or by the stream closing
 * first (the client cancelled, or the connection went). Its handler context
 * is aborted then, so a handler waiting on its signal stops.
 */
import { create, isMessage, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import http2 from "node:http2";
import { peerAddressKey } from "../auth/client-address.js";
import { createCallContext, type CallContext, type CallSourceAccess } from "./call-context.js";
import { DecodeFailure, type Decoder } from "./codec.js";
import { wireFormOf } from "./encoded.js";
import { acceptedEncodings, inflateMessage } from "./grpc-compression.js";
import { createFrameReader, encodeFrame, type Frame } from "./grpc-frames.js";
import { protocolRequestHeaders, requestHeaderValue } from "./grpc-request.js";
import { errorTrailerFields, okTrailerFields } from "./grpc-status.js";
import { addHttp2Fields, headersFromHttp2, protocolResponseHeaders } from "./headers.js";
import type { PlatformMethod } from "./pipeline.js";

/** What every call of one method shares. */
export interface MethodRuntime {
  readonly method: PlatformMethod;
  readonly decode: Decoder;
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  /** Reports errors that are the server's fault (never the caller's). */
  readonly onInternalError: (err: unknown, method: PlatformMethod) => void;
}

const responseHeaderBase = { ":status": 200, "content-type": "application/grpc+proto", "grpc-accept-encoding": acceptedEncodings } as const;
const cancelledByClient = new ConnectError("the caller cancelled the call", Code.Canceled);
const completed = new ConnectError("the call completed", Code.Canceled);
const ignore = () => undefined;

/** How a handler context reads this call: shared by every call, so a context costs no closures. */
const callAccess: CallSourceAccess<GrpcServerCall> = {
  readHeaders: (call) => headersFromHttp2(call.headers, protocolRequestHeaders),
  lazyValues: new Map([[peerAddressKey.id, (call: GrpcServerCall) => call.stream.session?.socket?.remoteAddress]]),
};

/**
 * Request messages of a client or bidi stream beyond which the stream stops
 * reading (HTTP/2 flow control then holds the client back) until the handler
 * catches up.
 */
const REQUEST_QUEUE_HIGH = 16;

/** One call (see the module comment). */
export class GrpcServerCall {
  /** The handler context; set by `startContext`, before the handler runs. */
  ctx: CallContext | undefined;
  /** The absolute deadline (epoch ms), counted from the call's arrival; undefined for none. */
  readonly deadline: number | undefined;
  private ended = false;
  /** Why the call ended (what a late read of the request stream fails with). */
  private endReason: unknown;
  private headersSent = false;
  private timer: NodeJS.Timeout | undefined;
  /** Wakes a reader of the request stream waiting for a message (client and bidi streams). */
  private wakeReader: (() => void) | undefined;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly headers: http2.IncomingHttpHeaders,
    private readonly rt: MethodRuntime,
    /** Milliseconds until the deadline, or undefined for none. */
    timeoutMs: number | undefined,
  ) {
    stream.on("error", ignore); // "close" says what happened
    stream.once("close", () => this.onClose());
    if (timeoutMs !== undefined) {
      this.deadline = Date.now() + timeoutMs;
      this.timer = setTimeout(() => this.expire(), timeoutMs);
    }
  }

  /** Reads one request header (first value), as `RpcCall.header` does. */
  readonly header = (name: string): string | null => requestHeaderValue(this.headers, name);

  /** Creates the handler context. */
  startContext(): CallContext {
    const m = this.rt.method;
    return (this.ctx = createCallContext({ service: m.service, method: m.method, protocolName: "grpc", url: m.path, deadline: this.deadline, source: this, access: callAccess }));
  }

  /**
   * Reads the single request message of a unary or server-streaming call
   * and hands it to `then` once the client has half-closed; any failure
   * (too big, malformed, not exactly one message) ends the call instead.
   */
  readSingle(then: (message: unknown) => void): void {
    const reader = createFrameReader(this.rt.readMaxBytes, "the client");
    let frame: Frame | undefined;
    let count = 0;
    this.stream.on("data", (chunk: Buffer) => {
      if (this.ended) return;
      try {
        for (const f of reader.push(chunk)) {
          frame ??= f;
          count++;
        }
      } catch (err) {
        this.fail(err);
      }
    });
    this.stream.once("end", () => {
      if (this.ended) return;
      if (reader.partial) return this.fail(truncatedRequest());
      if (count !== 1) {
        return this.fail(new ConnectError(`${this.rt.method.path} takes exactly one request message; the client sent ${count}`, Code.Unimplemented));
      }
      if (!frame!.compressed) return this.deliver(frame!.message, then);
      inflateMessage(frame!.message, this.encoding(), this.rt.readMaxBytes).then(
        (bytes) => this.deliver(bytes, then),
        (err: unknown) => this.fail(err),
      );
    });
  }

  /** The request messages of a client or bidi stream, decoded as the handler pulls them. */
  async *requestStream(): AsyncGenerator<unknown> {
    const reader = createFrameReader(this.rt.readMaxBytes, "the client");
    const queue: Frame[] = [];
    let halfClosed = false;
    const stream = this.stream;
    stream.on("data", (chunk: Buffer) => {
      if (this.ended) return;
      try {
        queue.push(...reader.push(chunk));
      } catch (err) {
        this.fail(err); // the frame is refused, so the stream cannot be read further
      }
      if (queue.length >= REQUEST_QUEUE_HIGH) stream.pause();
      this.wakeReader?.();
    });
    stream.once("end", () => {
      halfClosed = true;
      this.wakeReader?.();
    });
    for (;;) {
      if (this.ended) throw this.endReason;
      while (queue.length === 0) {
        if (this.ended) throw this.endReason;
        if (halfClosed) {
          if (reader.partial) throw truncatedRequest();
          return;
        }
        await new Promise<void>((resolve) => (this.wakeReader = resolve));
        this.wakeReader = undefined;
      }
      const frame = queue.shift()!;
      if (queue.length < REQUEST_QUEUE_HIGH / 2 && stream.isPaused()) stream.resume();
      const bytes = frame.compressed ? await inflateMessage(frame.message, this.encoding(), this.rt.readMaxBytes) : frame.message;
      const message = this.rt.decode(bytes);
      if (message instanceof DecodeFailure) throw message.error;
      yield message;
    }
  }

  /** Ends a unary or client-streaming call with its response message and OK. */
  respond(value: unknown): void {
    if (this.ended) return;
    let frame: Buffer;
    try {
      frame = this.frameOf(value);
    } catch (err) {
      return this.fail(err);
    }
    this.end(okTrailerFields(this.handlerTrailer()), completed, frame);
  }

  /**
   * Writes the messages of a server or bidi stream as the handler yields
   * them, with the stream's backpressure, then ends the call with OK or with
   * the error the stream failed with.
   */
  async respondStream(messages: AsyncIterable<unknown>): Promise<void> {
    try {
      for await (const value of messages) {
        if (this.ended) return; // leaving the loop ends the handler's generator
        const frame = this.frameOf(value);
        this.sendHeaders();
        if (!this.stream.write(frame)) await this.drained();
      }
      this.end(okTrailerFields(this.handlerTrailer()), completed);
    } catch (err) {
      this.fail(err);
    }
  }

  /** Ends the call with the status of `err` (a ConnectError as it is; anything else is INTERNAL and reported). */
  fail(err: unknown): void {
    if (this.ended) return;
    let error: ConnectError;
    if (err instanceof ConnectError) {
      error = err;
    } else {
      this.rt.onInternalError(err, this.rt.method);
      error = new ConnectError("internal error", Code.Internal);
    }
    this.end(errorTrailerFields(error, this.handlerTrailer()), error);
  }

  private deliver(bytes: Uint8Array, then: (message: unknown) => void): void {
    const message = this.rt.decode(bytes);
    if (message instanceof DecodeFailure) this.fail(message.error);
    else then(message);
  }

  private encoding(): string | undefined {
    const value = this.headers["grpc-encoding"];
    return Array.isArray(value) ? value[0] : value;
  }

  /** The response message framed; RESOURCE_EXHAUSTED past the response limit. A pre-encoded response is sent as it is. */
  private frameOf(value: unknown): Buffer {
    const schema = this.rt.method.method.output as DescMessage;
    const bytes = wireFormOf(value) ?? toBinary(schema, isMessage(value, schema) ? value : create(schema, value as never));
    if (bytes.byteLength > this.rt.writeMaxBytes) {
      throw new ConnectError(`the response message of ${bytes.byteLength} bytes is over the limit of ${this.rt.writeMaxBytes}`, Code.ResourceExhausted);
    }
    return encodeFrame(bytes);
  }

  private handlerTrailer(): Headers | undefined {
    return this.ctx?.hasResponseTrailer ? this.ctx.responseTrailer : undefined;
  }

  /** Sends the response headers (the handler's beside the protocol's) unless sent already. */
  private sendHeaders(): void {
    if (this.headersSent || this.stream.destroyed || this.stream.closed) return;
    this.headersSent = true;
    const fields = this.ctx?.hasResponseHeader ? addHttp2Fields({ ...responseHeaderBase }, this.ctx.responseHeader, protocolResponseHeaders) : { ...responseHeaderBase };
    this.stream.respond(fields, { waitForTrailers: true });
  }

  /**
   * Ends the call: trailers-only when nothing was sent and the handler set
   * no headers, else headers (if not yet sent), `lastFrame`, then trailers.
   * The handler context is aborted with `reason` (the first reason wins).
   */
  private end(trailerFields: http2.OutgoingHttpHeaders, reason: unknown, lastFrame?: Buffer): void {
    if (!this.settle(reason)) return;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    if (!this.headersSent && lastFrame === undefined && !this.ctx?.hasResponseHeader) {
      this.headersSent = true;
      stream.respond({ ...responseHeaderBase, ...trailerFields }, { endStream: true });
    } else {
      this.sendHeaders();
      stream.once("wantTrailers", () => stream.sendTrailers(trailerFields));
      if (lastFrame === undefined) stream.end();
      else stream.end(lastFrame);
    }
    // The response is complete; what the client still sends is read and dropped.
    if (!stream.readableEnded) stream.resume();
  }

  private expire(): void {
    this.timer = undefined;
    this.fail(new ConnectError("the call's deadline passed", Code.DeadlineExceeded));
  }

  /** The stream closed: a call that had not ended was cancelled by the client (or lost its connection). */
  private onClose(): void {
    this.settle(cancelledByClient);
  }

  /** Marks the call ended with `reason` (false if it already was): stops the deadline, aborts the handler, wakes a waiting read. */
  private settle(reason: unknown): boolean {
    if (this.ended) return false;
    this.ended = true;
    this.endReason = reason;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.ctx?.abort(reason);
    this.wakeReader?.();
    return true;
  }

  /** Resolves when the stream can take more, or has closed. */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.stream.off("drain", done);
        this.stream.off("close", done);
        resolve();
      };
      this.stream.on("drain", done);
      this.stream.on("close", done);
    });
  }
}

function truncatedRequest(): ConnectError {
  return new ConnectError("the request ended in the middle of a message", Code.InvalidArgument);
}
