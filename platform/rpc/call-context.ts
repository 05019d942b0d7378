/**
 * A cheap `HandlerContext` for the gRPC (h2c) path.
 *
 * connect's own `createHandlerContext` builds an AbortController, a timeout
 * and three Headers objects up front for every call; on the hot gRPC path most
 * handlers never read them. This context creates each of them the first time
 * it is read, so a handler that reads nothing costs nothing. What it reads
 * lazily comes from the transport's call object (`source`) through functions
 * shared by all calls, so creating a context allocates no closures.
 *
 * The transport enforces the deadline and sees the client cancel, so it is
 * the transport that aborts the context (`abort`): the context keeps no timer
 * or listener of its own.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type ContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";

/** How a context reads what it builds lazily from its transport's call object. */
export interface CallSourceAccess<S> {
  /** Reads the request headers on first use. */
  readHeaders(source: S): Headers;
  /**
   * Context values read from the call object only when a handler asks for
   * them (e.g. the peer address, which most calls never need), by key id.
   */
  lazyValues?: ReadonlyMap<symbol, (source: S) => unknown>;
}

/** What the transport knows about a call when it starts. */
export interface CallContextInit<S> {
  service: DescService;
  method: DescMethod;
  protocolName: string;
  url: string;
  /** Absolute deadline in epoch milliseconds, or undefined for none (the transport aborts the context when it passes). */
  deadline: number | undefined;
  /** The transport's call object. */
  source: S;
  access: CallSourceAccess<S>;
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

class LazyCallContext<S> implements CallContext {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly protocolName: string;
  readonly url: string;
  readonly requestMethod = "POST";
  private readonly deadline: number | undefined;
  private readonly source: S;
  private readonly access: CallSourceAccess<S>;
  private controller: AbortController | undefined;
  private abortReason: unknown;
  private reqHeader: Headers | undefined;
  private resHeader: Headers | undefined;
  private resTrailer: Headers | undefined;
  private ctxValues: ContextValues | undefined;

  constructor(init: CallContextInit<S>) {
    this.service = init.service;
    this.method = init.method;
    this.protocolName = init.protocolName;
    this.url = init.url;
    this.deadline = init.deadline;
    this.source = init.source;
    this.access = init.access;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  timeoutMs(): number | undefined {
    return this.deadline === undefined ? undefined : this.deadline - Date.now();
  }

  get requestHeader(): Headers {
    return (this.reqHeader ??= this.access.readHeaders(this.source));
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
    return (this.ctxValues ??= this.access.lazyValues === undefined ? createContextValues() : new CallValues(this.source, this.access.lazyValues));
  }

  abort(reason: unknown): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason ?? new ConnectError("the call was cancelled", Code.Canceled);
    this.controller?.abort(this.abortReason);
  }
}

/** Context values whose `lazy` keys are read from the call object on first `get`. */
class CallValues<S> implements ContextValues {
  private readonly own: Record<symbol, unknown> = {};

  constructor(
    private readonly source: S,
    private readonly lazy: ReadonlyMap<symbol, (source: S) => unknown>,
  ) {}

  get<T>(key: ContextKey<T>): T {
    if (key.id in this.own) return this.own[key.id] as T;
    const read = this.lazy.get(key.id);
    if (read === undefined) return key.defaultValue;
    return (this.own[key.id] = read(this.source)) as T;
  }

  set<T>(key: ContextKey<T>, value: T): this {
    this.own[key.id] = value;
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    // A deleted lazy key reads as its default from now on, as any deleted key does.
    if (this.lazy.has(key.id)) this.own[key.id] = key.defaultValue;
    else delete this.own[key.id];
    return this;
  }
}

/** Creates a call context whose signal, headers and values are built on first read. */
export function createCallContext<S>(init: CallContextInit<S>): CallContext {
  return new LazyCallContext(init);
}
