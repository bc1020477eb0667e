/** Enum values from their numbers or names ("MESSAGE_ADDED" or "EVENT_TYPE_MESSAGE_ADDED"). */
import { EventType, MailboxState } from "./gen/mailwatch/v1/resources.js";

function enumValue<T extends number>(enumObject: Record<string, string | number>, prefix: string, value: T | string): T {
  if (typeof value === "number") {
    return value;
  }
  let name = value.trim().toUpperCase();
  if (!name.startsWith(prefix)) {
    name = prefix + name;
  }
  const found = enumObject[name];
  if (typeof found !== "number" || found < 0) {
    const known = Object.keys(enumObject)
      .filter((key) => Number.isNaN(Number(key)) && !key.endsWith("UNSPECIFIED") && key !== "UNRECOGNIZED")
      .map((key) => key.slice(prefix.length));
    throw new TypeError(`unknown value ${JSON.stringify(value)}; expected one of ${known.join(", ")}`);
  }
  return found as T;
}

export function eventTypes(values: readonly (EventType | string)[]): EventType[] {
  return values.map((value) => enumValue<EventType>(EventType, "EVENT_TYPE_", value));
}

export function mailboxStates(values: readonly (MailboxState | string)[]): MailboxState[] {
  return values.map((value) => enumValue<MailboxState>(MailboxState, "MAILBOX_STATE_", value));
}
