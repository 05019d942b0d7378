/**
 * A cheap `HandlerContext` for the gRPC (h2c) path.
 *
 * connect's own `createHandlerContext` builds an AbortController, a timeout
 * and three Headers objects up front for every call; on the hot gRPC path most
 * handlers never read them. This context creates each of them the first time
 * it is read, so a handler that reads nothing costs nothing.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type ContextValues, type HandlerContext } from "@connectrpc/connect";

/** What the transport knows about a call when it starts. */
export interface CallContextInit {
  service: DescService;
  method: DescMethod;
  protocolName: string;
  url: string;
  /** Absolute deadline in epoch milliseconds, or undefined for none. */
  deadline: number | undefined;
  /** Reads the request headers on first use. */
  readHeaders: () => Headers;
  /** Seeds the context values when they are first read (e.g. the peer address). */
  initValues?: (values: ContextValues) => void;
}

/** A HandlerContext that the transport can abort and whose headers it reads back. */
export interface CallContext extends HandlerContext {
  /** Aborts the call's signal with `reason` (cancel, deadline, shutdown). */
  abort(reason: unknown): void;
  /** Whether the handler touched the response headers. */
  readonly hasResponseHeader: boolean;
  /** Whether the handler touched the response trailers. */
  readonly hasResponseTrailer: boolean;
}

class LazyCallContext implements CallContext {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly protocolName: string;
  readonly url: string;
  readonly requestMethod = "POST";
  private readonly deadline: number | undefined;
  private readonly readHeaders: () => Headers;
  private readonly initValues: ((values: ContextValues) => void) | undefined;
  private controller: AbortController | undefined;
  private abortReason: unknown;
  private timer: NodeJS.Timeout | undefined;
  private reqHeader: Headers | undefined;
  private resHeader: Headers | undefined;
  private resTrailer: Headers | undefined;
  private ctxValues: ContextValues | undefined;

  constructor(init: CallContextInit) {
    this.service = init.service;
    this.method = init.method;
    this.protocolName = init.protocolName;
    this.url = init.url;
    this.deadline = init.deadline;
    this.readHeaders = init.readHeaders;
    this.initValues = init.initValues;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) {
        this.controller.abort(this.abortReason);
      } else if (this.deadline !== undefined) {
        const ms = Math.max(0, this.deadline - Date.now());
        this.timer = setTimeout(() => this.abort(new ConnectError("the call's deadline passed", Code.DeadlineExceeded)), ms);
        this.timer.unref();
      }
    }
    return this.controller.signal;
  }

  readonly timeoutMs = (): number | undefined =>
    this.deadline === undefined ? undefined : this.deadline - Date.now();

  get requestHeader(): Headers {
    return (this.reqHeader ??= this.readHeaders());
  }
  get responseHeader(): Headers {
    return (this.resHeader ??= new Headers());
  }
  get responseTrailer(): Headers {
    return (this.resTrailer ??= new Headers());
  }
  get hasResponseHeader(): boolean {
    return this.resHeader !== undefined;
  }
  get hasResponseTrailer(): boolean {
    return this.resTrailer !== undefined;
  }
  get values(): ContextValues {
    if (this.ctxValues === undefined) {
      this.ctxValues = createContextValues();
      this.initValues?.(this.ctxValues);
    }
    return this.ctxValues;
  }

  abort(reason: unknown): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason ?? new ConnectError("the call was cancelled", Code.Canceled);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.controller?.abort(this.abortReason);
  }
}

/** Creates a call context whose signal, headers and values are built on first read. */
export function createCallContext(init: CallContextInit): CallContext {
  return new LazyCallContext(init);
}
