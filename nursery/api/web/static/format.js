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

// A tag typed in a new todo's title: "#" at the start of a word, up to the next space. The
// API's limits: 20 tags of at most 50 characters; a longer one stays in the title.
const TYPED_TAG = /(^|\s)#([^\s#]{1,50})(?=\s|$)/gu;

/** "buy milk #shop #errands" → {title: "buy milk", tags: ["shop", "errands"]}, as Todoist and
 * Things read it. A title of tags only ("#shop") is kept as typed: a todo needs a title. */
export function parseNewTodo(text) {
  const tags = [];
  const title = text.replace(TYPED_TAG, (whole, space, tag) => {
    if (tags.length >= 20) return whole;
    if (!tags.includes(tag)) tags.push(tag);
    return space;
  }).replace(/\s+/g, " ").trim();
  return title ? { title, tags } : { title: text.trim(), tags: [] };
}

/** "work, home ,work" → ["work", "home"]. */
export function parseTags(text) {
  const tags = text.split(",").map((t) => t.trim()).filter(Boolean);
  return [...new Set(tags)];
}
