"""The explorer page served by GET /graphql: a hand-made, self-contained page (no CDN: it must
work on a machine without internet). Run queries and mutations over POST, subscriptions over
``graphql-transport-ws``, with a bearer token; the schema is printed beside the editor.

The page holds a token, so it is served with a Content-Security-Policy that allows only its
own inline script and style (by hash) and connections to this origin."""

from __future__ import annotations

import base64
import hashlib
import html
import re

from graphql import GraphQLSchema, print_schema

EXAMPLE = """query Todos {
  me { email }
  todos(first: 20) {
    nodes { id title done rev }
    pageInfo { hasNextPage endCursor }
    rev
  }
}
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nursery · GraphQL explorer</title>
<style>
  /* minmax(0, ...): a long line scrolls or wraps inside its pane instead of widening it and
     pushing the schema off the right edge. */
  body { font: 14px system-ui, sans-serif; margin: 0; display: grid; height: 100vh;
         grid-template-columns: minmax(0, 1fr) minmax(0, 1fr) minmax(0, 1.3fr);
         grid-template-rows: auto minmax(0, 1fr); }
  header { grid-column: 1 / 4; display: flex; gap: .5em; align-items: center;
           padding: .5em; background: #234; color: #fff; }
  header input { flex: 1; font: inherit; }
  section { display: flex; flex-direction: column; min-height: 0; border-right: 1px solid #ccc; }
  textarea, pre { font: 13px ui-monospace, monospace; margin: 0; padding: .5em; border: 0;
                  flex: 1; overflow: auto; white-space: pre; }
  #variables { flex: 0 0 6em; border-top: 1px solid #ccc; }
  #schema { background: #f6f6f6; white-space: pre-wrap; overflow-wrap: anywhere; }
  h2 { font-size: 12px; margin: 0; padding: .3em .5em; background: #eee; }
</style>
</head>
<body>
<header>
  <strong>nursery GraphQL</strong>
  <label for="token">Bearer token</label>
  <input id="token" placeholder="from register / login (kept in this tab only)">
  <button id="run">Run ▶</button><button id="stop" disabled>Stop</button>
</header>
<section>
  <h2>Operation</h2>
  <textarea id="query" spellcheck="false">__EXAMPLE__</textarea>
  <h2>Variables (JSON)</h2>
  <textarea id="variables" spellcheck="false">{}</textarea>
</section>
<section><h2>Result</h2><pre id="result"></pre></section>
<section><h2>Schema</h2><pre id="schema">__SCHEMA__</pre></section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const out = (value) => { $("result").textContent = typeof value === "string"
  ? value : JSON.stringify(value, null, 2); };
const append = (value) => { $("result").textContent += JSON.stringify(value, null, 2) + "\\n"; };
let socket = null;

function stop() {
  if (socket) socket.close(1000);
  socket = null;
  $("stop").disabled = true;
}

async function run() {
  stop();
  let variables;
  try { variables = JSON.parse($("variables").value || "{}"); }
  catch (e) { return out("Variables are not JSON: " + e.message); }
  const query = $("query").value, token = $("token").value.trim();
  if (/^\\s*subscription\\b/.test(query)) return subscribe(query, variables, token);
  out("…");
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  try {
    const response = await fetch(location.pathname, { method: "POST", headers,
      body: JSON.stringify({ query, variables }) });
    out(await response.json());
  } catch (e) { out("Request failed: " + e.message); }
}

function subscribe(query, variables, token) {
  out("");
  const url = location.href.replace(/^http/, "ws").split("?")[0];
  socket = new WebSocket(url, "graphql-transport-ws");
  $("stop").disabled = false;
  socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init",
    payload: { token } }));
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") socket.send(JSON.stringify({ id: "1",
      type: "subscribe", payload: { query, variables } }));
    else if (message.type === "ping") socket.send(JSON.stringify({ type: "pong" }));
    else if (message.type === "next") append(message.payload);
    else if (message.type === "error") append({ errors: message.payload });
    else if (message.type === "complete") append("complete");
  };
  socket.onclose = (event) => { append("closed: " + event.code + " " + event.reason);
    $("stop").disabled = true; };
}

$("run").onclick = run;
$("stop").onclick = stop;
$("query").onkeydown = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); };
</script>
</body>
</html>
"""


def explorer_page(schema: GraphQLSchema) -> str:
    return PAGE.replace("__EXAMPLE__", html.escape(EXAMPLE)).replace(
        "__SCHEMA__", html.escape(print_schema(schema))
    )


def _hash(tag: str) -> str:
    match = re.search(f"<{tag}>(.*?)</{tag}>", PAGE, re.DOTALL)
    assert match is not None, tag
    digest = hashlib.sha256(match.group(1).encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


CSP = (
    f"default-src 'none'; script-src {_hash('script')}; style-src {_hash('style')}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
