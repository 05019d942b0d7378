/**
 * Two properties of a whole auth run, observed from outside:
 *
 * - an independent client: @grpc/grpc-js with a service definition built by
 *   @grpc/proto-loader from the .proto files alone (not from gen/) registers,
 *   signs in and calls GetMe over h2c;
 * - secrets never reach the logs: every log line of the run (at level trace)
 *   is captured, and none holds a password, an access token (`eyJ`), a
 *   refresh token, an Authorization header, a password hash or the master key.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { bearer, startAuth, type AuthUnderTest } from "../../services/auth/testing.js";

type Callback<T> = (err: grpc.ServiceError | null, res: T) => void;
interface LoadedAuthClient extends grpc.Client {
  Register(req: object, cb: Callback<{ user: { userId: string; email: string; tier: string }; tokens: { accessToken: string; refreshToken: string } }>): void;
  Login(req: object, cb: Callback<{ tokens: { accessToken: string; refreshToken: string }; user: { userId: string } }>): void;
  GetMe(req: object, md: grpc.Metadata, cb: Callback<{ user: { userId: string; email: string; tier: string; createTime: { seconds: string } } }>): void;
}

function call<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

describe("an auth run seen from outside", () => {
  const lines: string[] = [];
  const logTo = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split("\n").filter((l) => l !== ""));
      done();
    },
  });
  const masterKey = randomBytes(32).toString("base64");
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const secrets: string[] = [password];
  let a: AuthUnderTest;
  let loaded: LoadedAuthClient;

  before(async () => {
    a = await startAuth({ logTo, logLevel: "trace", authEnv: { AUTH_MASTER_KEY: masterKey } });
    const definition = await protoLoader.load("switchyard/auth/v1/auth.proto", {
      includeDirs: ["proto", "third_party/proto"],
      longs: String,
      enums: String,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      switchyard: { auth: { v1: { AuthService: new (address: string, creds: grpc.ChannelCredentials) => LoadedAuthClient } } };
    };
    loaded = new pkg.switchyard.auth.v1.AuthService(`127.0.0.1:${a.port}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    loaded.close();
    await a.stop();
  });

  test("a grpc-js client built from the .proto files registers, signs in and calls GetMe", async () => {
    const email = `indie.${randomBytes(4).toString("hex")}@example.com`;
    const reg = await call<Parameters<Parameters<LoadedAuthClient["Register"]>[1]>[1]>((cb) => loaded.Register({ email, password, displayName: "Indie" }, cb));
    assert.equal(reg.user.email, email);
    assert.equal(reg.user.tier, "TIER_FREE");
    secrets.push(reg.tokens.accessToken, reg.tokens.refreshToken);

    const login = await call<Parameters<Parameters<LoadedAuthClient["Login"]>[1]>[1]>((cb) => loaded.Login({ email, password }, cb));
    secrets.push(login.tokens.accessToken, login.tokens.refreshToken);
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${login.tokens.accessToken}`);
    const me = await call<Parameters<Parameters<LoadedAuthClient["GetMe"]>[2]>[1]>((cb) => loaded.GetMe({}, md, cb));
    assert.equal(me.user.userId, reg.user.userId);
    assert.equal(me.user.email, email);
    assert.ok(Number(me.user.createTime.seconds) > 0);

    const wrong = await call((cb) => loaded.Login({ email, password: password + "x" }, cb)).catch((e: grpc.ServiceError) => e);
    assert.equal((wrong as grpc.ServiceError).code, grpc.status.UNAUTHENTICATED);
    const anonymous = await call((cb) => loaded.GetMe({}, new grpc.Metadata(), cb)).catch((e: grpc.ServiceError) => e);
    assert.equal((anonymous as grpc.ServiceError).code, grpc.status.UNAUTHENTICATED);
  });

  test("the rest of a run, on every protocol path: refresh, update, logout, and failures", async () => {
    const email = `logs.${randomBytes(4).toString("hex")}@example.com`;
    for (const transport of [
      createConnectTransport({ baseUrl: a.baseUrl, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: a.baseUrl, httpVersion: "1.1" }),
    ]) {
      const anon = createClient(AuthService, transport);
      const e = `${randomBytes(3).toString("hex")}.${email}`;
      const reg = await anon.register({ email: e, password, displayName: "Logged" });
      const refreshed = await anon.refresh({ refreshToken: reg.tokens!.refreshToken });
      secrets.push(reg.tokens!.accessToken, reg.tokens!.refreshToken, refreshed.tokens!.accessToken, refreshed.tokens!.refreshToken);
      const me = createClient(AuthService, createConnectTransport({ baseUrl: a.baseUrl, httpVersion: "1.1", interceptors: [bearer(refreshed.tokens!.accessToken)] }));
      await me.updateMe({ user: { displayName: "Renamed" }, updateMask: { paths: ["display_name"] } });
      await me.logout({ refreshToken: refreshed.tokens!.refreshToken });
      // Failures whose requests carry secrets.
      const failures = [
        () => anon.login({ email: e, password: password + "wrong" }),
        () => anon.refresh({ refreshToken: reg.tokens!.refreshToken }),
        () => anon.register({ email: "bad", password }),
        () => anon.register({ email: e, password: "short-pw" }),
        () => createClient(AuthService, createConnectTransport({ baseUrl: a.baseUrl, httpVersion: "1.1", interceptors: [bearer(reg.tokens!.accessToken + "x")] })).getMe({}),
        () => me.updateMe({ user: { displayName: password }, updateMask: { paths: ["password"] } }),
      ];
      for (const f of failures) {
        const err = await f().catch((x: unknown) => ConnectError.from(x));
        assert.ok(err instanceof ConnectError && err.code !== Code.Internal, `expected a client error, got ${String(err)}`);
      }
    }
  });

  test("no secret reached the logs", async () => {
    await new Promise((r) => setImmediate(r));
    const text = lines.join("\n");
    assert.ok(lines.length > 20, `the run was logged (${lines.length} lines)`);
    assert.ok(text.includes("AuthService/Login") && text.includes("AuthService/Refresh"), "the RPC lines were captured");
    assert.ok(!text.includes("eyJ"), "an access token (or any JWT) was logged");
    assert.ok(!/syrt_/.test(text), "a refresh token was logged");
    assert.ok(!/bearer/i.test(text), "a bearer credential was logged");
    assert.ok(!/"authorization"/i.test(text), "an Authorization header was logged");
    assert.ok(!text.includes("$argon2"), "a password hash was logged");
    assert.ok(!text.includes(masterKey), "the master key was logged");
    for (const s of secrets) assert.ok(!text.includes(s), `a secret was logged: ${s.slice(0, 6)}…`);
  });
});
