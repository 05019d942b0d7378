import assert from "node:assert/strict";
import { test } from "node:test";
import { TestingService } from "../gen/switchyard/testing/v1/testing_pb.js";
import { AuthService } from "../gen/switchyard/auth/v1/auth_pb.js";
import { declarationProblems } from "./declarations.js";
import { register } from "./rpc/pipeline.js";
import type { ServiceModule } from "./service.js";

const module = (over: Partial<ServiceModule>): ServiceModule => ({ name: "m", summary: "", serves: [TestingService], start: () => ({ services: [] }), ...over });
const handle = () => undefined;

test("a module serving exactly what it declares passes", () => {
  const m = module({ routes: [{ path: "/hook", methods: ["POST"], access: "public" }, { path: "/ws", methods: ["GET"], access: "public", websocket: true }] });
  assert.deepEqual(
    declarationProblems(m, { services: [register(TestingService, {})], routes: [{ method: "POST", path: "/hook", handle }], upgrades: [{ path: "/ws", handle }] }),
    [],
  );
});

test("an undeclared service, and a declared one left out, are both named", () => {
  const problems = declarationProblems(module({}), { services: [register(AuthService, {})] });
  assert.deepEqual(problems, [
    'module "m" registers switchyard.auth.v1.AuthService, which it does not declare in `serves`',
    'module "m" declares switchyard.testing.v1.TestingService in `serves` but does not register it',
  ]);
});

test("routes: an undeclared path or method, an undeclared upgrade, and a declared route not served", () => {
  const m = module({ serves: [], routes: [{ path: "/a", methods: ["GET"], access: "public" }] });
  const problems = declarationProblems(m, {
    services: [],
    routes: [{ method: "POST", path: "/a", handle }, { method: "GET", path: "/b", handle }],
    upgrades: [{ path: "/ws", handle }],
  });
  assert.deepEqual(problems, [
    'module "m" serves POST /a, which it does not declare in `routes`',
    'module "m" serves GET /b, which it does not declare in `routes`',
    'module "m" serves an upgrade at /ws, which it does not declare in `routes` (websocket: true)',
  ]);
  assert.deepEqual(declarationProblems(m, { services: [] }), ['module "m" declares the route /a but does not serve it']);
});
