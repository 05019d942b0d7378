/**
 * Ids in NATS subjects: `subjectToken` lets plain ids through and refuses
 * anything that could widen or split a subject with INVALID_ARGUMENT;
 * `encodeSubjectToken` turns any string into a safe, distinct token. Shown
 * against a real nats-server: a subscription built from a hostile id hears
 * only its own subject.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { decodeSubjectToken, encodeSubjectToken, isSubjectToken, subjectToken } from "../../platform/nats/subject.js";
import { eventSubject } from "../../platform/events/subject.js";
import { TierChangedSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { startNats, type OwnNats } from "../support/infra.js";

const hostile = ["*", ">", "a.b", "user.*", "a >", " alice", "alice\n", "tab\there", "", "x".repeat(65), "ü", "a/b", "\0"];

describe("subject tokens", () => {
  test("plain ids pass unchanged", () => {
    for (const id of ["alice", "u_123-ABC", "x".repeat(64), "0"]) assert.equal(subjectToken(id), id);
  });

  test("wildcards, dots, whitespace, empty and overlong ids answer INVALID_ARGUMENT", () => {
    for (const id of hostile) {
      assert.equal(isSubjectToken(id), false, JSON.stringify(id));
      assert.throws(
        () => subjectToken(id, "user id"),
        (err: unknown) =>
          err instanceof ConnectError && err.code === Code.InvalidArgument && /^\[invalid_argument\] user id .* cannot be used: it must be 1 to 64 letters, digits, "_" or "-"$/.test(err.message),
        JSON.stringify(id),
      );
    }
  });

  test("any non-empty string encodes to a safe token, distinct and reversible", () => {
    const values = hostile.filter((v) => v !== "");
    const tokens = values.map((v) => encodeSubjectToken(v));
    for (const t of tokens) assert.ok(isSubjectToken(t) || /^[A-Za-z0-9_-]+$/.test(t), t);
    assert.equal(new Set(tokens).size, values.length);
    assert.deepEqual(tokens.map(decodeSubjectToken), values);
    assert.throws(() => encodeSubjectToken("", "email"), (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument);
  });

  test("event subjects come from the contract option; a message without it is refused", () => {
    assert.equal(eventSubject(TierChangedSchema), "events.billing.tier_changed");
    assert.throws(() => eventSubject(TestingService.methods[0]!.input), /is not an event: it has no \(switchyard\.options\.v1\.event_subject\) option/);
  });
});

describe("on a real nats-server", () => {
  let nats: OwnNats;
  let nc: NatsConnection;
  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    await nc?.close();
    await nats?.kill();
  });

  test("a subscription built from a hostile id hears only its own subject", async () => {
    const heard: string[] = [];
    for (const id of ["*", ">", "bob.>"]) {
      nc.subscribe(`devices.${encodeSubjectToken(id)}.calls`, { callback: (_e, m) => void heard.push(`${id} <- ${m.subject}`) });
    }
    // Raw use of the same ids would have subscribed to everyone's calls.
    const own = nc.subscribe(`devices.${encodeSubjectToken("*")}.calls`, { max: 1 });
    nc.publish("devices.alice.calls", "for alice");
    nc.publish("devices.bob.x.calls", "for bob");
    nc.publish(`devices.${encodeSubjectToken("*")}.calls`, "for the user whose id is *");
    for await (const m of own) assert.equal(m.string(), "for the user whose id is *");
    await nc.flush();
    assert.deepEqual(heard, [`* <- devices.${encodeSubjectToken("*")}.calls`]);
  });
});
