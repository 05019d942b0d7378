/**
 * A small OTLP/HTTP trace receiver for tests and benches: accepts
 * `POST /v1/traces` as the OTLP specification defines it, in JSON
 * (`application/json`, what @opentelemetry/exporter-trace-otlp-http sends)
 * or binary protobuf (`application/x-protobuf`, what the proto exporter and
 * collectors send), optionally gzip-compressed, and keeps every span with
 * its resource's `service.name`. Answers like a collector: 200 with an empty
 * ExportTraceServiceResponse.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

/** OTLP span kinds (the wire values). */
export const SpanKindWire = { UNSPECIFIED: 0, INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;
/** OTLP status codes (the wire values). */
export const StatusWire = { UNSET: 0, OK: 1, ERROR: 2 } as const;

/** One received span, ids as lowercase hex. */
export interface ReceivedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  /** Empty for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: number;
  readonly startNs: bigint;
  readonly endNs: bigint;
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
  readonly status: { readonly code: number; readonly message: string };
}

/** A running receiver. */
export interface OtlpReceiver {
  /** Spans received in all (kept or not). */
  readonly received: () => number;
  /** Base URL, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string;
  readonly spans: ReceivedSpan[];
  /** Export requests received, by content type. */
  readonly requests: Record<string, number>;
  /** Spans of one trace. */
  trace(traceId: string): ReceivedSpan[];
  /** Resolves once `pred` holds for the spans received (checked on every export), rejecting after `ms`. */
  waitFor(pred: (spans: ReceivedSpan[]) => boolean, ms: number, what: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a receiver on a free loopback port. With `keep: false` it decodes
 * every export but keeps only the count (benchmarks).
 */
export async function startOtlpReceiver(options: { keep?: boolean } = {}): Promise<OtlpReceiver> {
  const keep = options.keep ?? true;
  let received = 0;
  const spans: ReceivedSpan[] = [];
  const requests: Record<string, number> = {};
  const waiters = new Set<() => void>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim();
      requests[type] = (requests[type] ?? 0) + 1;
      try {
        let body = Buffer.concat(chunks);
        if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
        let got: ReceivedSpan[];
        if (type === "application/json") got = spansFromJson(JSON.parse(body.toString("utf8")));
        else if (type === "application/x-protobuf") got = spansFromProtobuf(body);
        else {
          res.writeHead(415).end();
          return;
        }
        received += got.length;
        if (keep) for (const s of got) spans.push(s);
      } catch (err) {
        res.writeHead(400, { "content-type": "text/plain" }).end(String(err));
        return;
      }
      if (type === "application/json") res.writeHead(200, { "content-type": "application/json" }).end("{}");
      else res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
      for (const w of [...waiters]) w();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    received: () => received,
    spans,
    requests,
    trace: (traceId) => spans.filter((s) => s.traceId === traceId),
    waitFor(pred, ms, what) {
      if (pred(spans)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred(spans)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${what} within ${ms} ms; received ${spans.length} spans: ${spans.map((s) => `${s.service}:${s.name}`).join(", ")}`));
        }, ms);
        waiters.add(check);
      });
    },
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ---- JSON (protobuf JSON mapping; ids hex as OTLP/JSON requires) ----------------

interface JsonAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
}
interface JsonKeyValue {
  key: string;
  value?: JsonAnyValue;
}

function jsonValue(v: JsonAnyValue | undefined): string | number | boolean {
  if (v === undefined) return "";
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  return "";
}

function jsonAttributes(list: JsonKeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of list ?? []) out[kv.key] = jsonValue(kv.value);
  return out;
}

/** Reads an ExportTraceServiceRequest in OTLP/JSON. */
export function spansFromJson(body: {
  resourceSpans?: {
    resource?: { attributes?: JsonKeyValue[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind?: number;
        startTimeUnixNano?: string | number;
        endTimeUnixNano?: string | number;
        attributes?: JsonKeyValue[];
        status?: { code?: number; message?: string };
      }[];
    }[];
  }[];
}): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const service = String(jsonAttributes(rs.resource?.attributes)["service.name"] ?? "");
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          service,
          traceId: s.traceId.toLowerCase(),
          spanId: s.spanId.toLowerCase(),
          parentSpanId: (s.parentSpanId ?? "").toLowerCase(),
          name: s.name,
          kind: s.kind ?? 0,
          startNs: BigInt(s.startTimeUnixNano ?? 0),
          endNs: BigInt(s.endTimeUnixNano ?? 0),
          attributes: jsonAttributes(s.attributes),
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? "" },
        });
      }
    }
  }
  return out;
}

// ---- protobuf (opentelemetry/proto/collector/trace/v1, read at the wire level) ---

class Wire {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  more(): boolean {
    return this.pos < this.buf.length;
  }
  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
  }
  bytes(): Buffer {
    const n = Number(this.varint());
    if (this.pos + n > this.buf.length) throw new Error("truncated field");
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  fixed64(): bigint {
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  fixed64Double(): number {
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) this.bytes();
    else if (wireType === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
  }
  /** Each field as (number, wire type). */
  *fields(): Iterable<[number, number]> {
    while (this.more()) {
      const tag = Number(this.varint());
      yield [tag >>> 3, tag & 7];
    }
  }
}

function pbAnyValue(buf: Buffer): string | number | boolean {
  const w = new Wire(buf);
  for (const [no, wt] of w.fields()) {
    if (no === 1 && wt === 2) return w.bytes().toString("utf8");
    if (no === 2 && wt === 0) return w.varint() !== 0n;
    if (no === 3 && wt === 0) return Number(BigInt.asIntN(64, w.varint()));
    if (no === 4 && wt === 1) return w.fixed64Double();
    w.skip(wt);
  }
  return "";
}

function pbKeyValue(buf: Buffer): [string, string | number | boolean] {
  const w = new Wire(buf);
  let key = "";
  let value: string | number | boolean = "";
  for (const [no, wt] of w.fields()) {
    if (no === 1 && wt === 2) key = w.bytes().toString("utf8");
    else if (no === 2 && wt === 2) value = pbAnyValue(w.bytes());
    else w.skip(wt);
  }
  return [key, value];
}

function pbSpan(buf: Buffer, service: string): ReceivedSpan {
  const w = new Wire(buf);
  const s = { service, traceId: "", spanId: "", parentSpanId: "", name: "", kind: 0, startNs: 0n, endNs: 0n, attributes: {} as Record<string, string | number | boolean>, status: { code: 0, message: "" } };
  for (const [no, wt] of w.fields()) {
    if (no === 1 && wt === 2) s.traceId = w.bytes().toString("hex");
    else if (no === 2 && wt === 2) s.spanId = w.bytes().toString("hex");
    else if (no === 4 && wt === 2) s.parentSpanId = w.bytes().toString("hex");
    else if (no === 5 && wt === 2) s.name = w.bytes().toString("utf8");
    else if (no === 6 && wt === 0) s.kind = Number(w.varint());
    else if (no === 7 && wt === 1) s.startNs = w.fixed64();
    else if (no === 8 && wt === 1) s.endNs = w.fixed64();
    else if (no === 9 && wt === 2) {
      const [k, v] = pbKeyValue(w.bytes());
      s.attributes[k] = v;
    } else if (no === 15 && wt === 2) {
      const st = new Wire(w.bytes());
      for (const [sno, swt] of st.fields()) {
        if (sno === 2 && swt === 2) s.status.message = st.bytes().toString("utf8");
        else if (sno === 3 && swt === 0) s.status.code = Number(st.varint());
        else st.skip(swt);
      }
    } else w.skip(wt);
  }
  return s;
}

/** Reads an ExportTraceServiceRequest in binary protobuf. */
export function spansFromProtobuf(body: Buffer): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  const req = new Wire(body);
  for (const [no, wt] of req.fields()) {
    if (no !== 1 || wt !== 2) {
      req.skip(wt);
      continue;
    }
    const rs = new Wire(req.bytes());
    let service = "";
    const scopes: Buffer[] = [];
    for (const [rno, rwt] of rs.fields()) {
      if (rno === 1 && rwt === 2) {
        const res = new Wire(rs.bytes());
        for (const [ano, awt] of res.fields()) {
          if (ano === 1 && awt === 2) {
            const [k, v] = pbKeyValue(res.bytes());
            if (k === "service.name") service = String(v);
          } else res.skip(awt);
        }
      } else if (rno === 2 && rwt === 2) scopes.push(rs.bytes());
      else rs.skip(rwt);
    }
    for (const scope of scopes) {
      const ss = new Wire(scope);
      for (const [sno, swt] of ss.fields()) {
        if (sno === 2 && swt === 2) out.push(pbSpan(ss.bytes(), service));
        else ss.skip(swt);
      }
    }
  }
  return out;
}
