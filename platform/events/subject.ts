/**
 * The subject of an event type, read from its `(switchyard.options.v1.event_subject)`
 * message option: the contract is the only place a subject is written down.
 */
import { getOption, hasOption, type DescMessage } from "@bufbuild/protobuf";
import { event_subject } from "../../gen/switchyard/options/v1/options_pb.js";

/** Every event subject lies under this prefix; the events stream captures `events.>`. */
export const EVENT_SUBJECT_PREFIX = "events.";

const subjectPattern = /^events(\.[a-z0-9_]+){2,}$/;
const cache = new Map<DescMessage, string>();

/**
 * The subject `schema`'s events are published on. Throws when the message
 * has no `event_subject` option or its value is not `events.<domain>.<name>`
 * (lower-case tokens), so a mistake in a contract stops the process at start.
 */
export function eventSubject(schema: DescMessage): string {
  let subject = cache.get(schema);
  if (subject !== undefined) return subject;
  if (!hasOption(schema, event_subject)) {
    throw new Error(`${schema.typeName} is not an event: it has no (switchyard.options.v1.event_subject) option`);
  }
  subject = getOption(schema, event_subject);
  if (!subjectPattern.test(subject)) {
    throw new Error(`${schema.typeName}: event_subject "${subject}" must look like events.<domain>.<name> (lower-case letters, digits, _)`);
  }
  cache.set(schema, subject);
  return subject;
}
