// How todos' fields are shown and read back from form fields: due days and tags.

const DAY = /^(\d{4}-\d{2}-\d{2})T00:00:00(?:\.0+)?Z$/;

/** A local calendar day, YYYY-MM-DD. */
export function localDay(date = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The day a `due` names, YYYY-MM-DD, or "". A due at exactly 00:00 UTC is a day given alone
 * (that is how the API stores "2026-12-01"): that day, wherever the reader is. Any other
 * instant is the day it falls on here. */
export function dueDay(due) {
  if (!due) return "";
  const day = DAY.exec(due);
  if (day) return day[1];
  const moment = new Date(due);
  return Number.isNaN(moment.getTime()) ? "" : localDay(moment);
}

/** What the API stores for a day alone: optimistic updates show exactly what will come back. */
export function dayAsDue(day) {
  return day ? `${day}T00:00:00Z` : null;
}

const dayFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
});

/** "1 Dec 2026" (in the reader's locale's order) for YYYY-MM-DD. */
export function showDay(day) {
  return dayFormat.format(new Date(`${day}T00:00:00Z`));
}

/** "work, home ,work" → ["work", "home"]. */
export function parseTags(text) {
  const tags = text.split(",").map((t) => t.trim()).filter(Boolean);
  return [...new Set(tags)];
}
