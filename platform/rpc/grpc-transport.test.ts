import assert from "node:assert/strict";
import { test } from "node:test";
import { grpcTarget } from "./grpc-transport.js";

test("base URLs become grpc-js targets: DNS names through the DNS resolver, addresses as they are", () => {
  assert.equal(grpcTarget("http://gateway.switchyard.svc.cluster.local:8080"), "dns:///gateway.switchyard.svc.cluster.local:8080");
  assert.equal(grpcTarget("http://127.0.0.1:9001/"), "ipv4:127.0.0.1:9001");
  assert.equal(grpcTarget("http://[::1]:9001"), "ipv6:[::1]:9001");
  assert.equal(grpcTarget("http://auth"), "dns:///auth:80");
  assert.throws(() => grpcTarget("https://auth:443"), /cleartext/);
});
