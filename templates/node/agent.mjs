#!/usr/bin/env node
// {{name}}: POST {"prompt": "..."} and get {"answer": "..."}.
//
// The request arrives on stdin as a CloudEvent (structured JSON): event.data is the caller's
// JSON body. Stdout is the response body; stderr goes to the invocation's logs, never to the
// caller. The HTTP status and Content-Type are set by writing CGI-style lines to the file named
// by $CLRK_METADATA_RESPONSE_HEADERS. No npm dependencies.
//
// Warm start (`spec.warmStart: true`, docs/agents.md in clrk): clrk runs this file before its
// request comes, and writes the request to stdin once a line came on $CLRK_READY_FD. What runs
// before stdin is read (the imports, and whatever you set up at the top: a client, data files)
// is paid then, not by the caller. Per-request metadata (the invocation id, the deadline,
// `traceparent`) is in the envelope, not in the environment, when started ahead.
import { spawnSync } from "node:child_process";
import { appendFileSync, closeSync, readFileSync, writeSync } from "node:fs";

const NAME = "{{name}}";
const SYSTEM = "You are a helpful assistant. Answer briefly.";

class Failure extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function readPrompt(event) {
  const data = event?.data;
  const prompt = data && typeof data === "object" ? data.prompt : undefined;
  if (typeof prompt !== "string" || !prompt.trim()) {
    throw new Failure(400, "bad_input", 'the body must be a JSON object with "prompt": a non-empty string');
  }
  return prompt;
}

function askClaude(prompt) {
  // Print mode, no tools, no session files, no CLAUDE.md from parent folders. The prompt goes on
  // stdin: a prompt starting with "-" would be read as a flag.
  const model = process.env.ANTHROPIC_MODEL || "claude-haiku-4-5";
  const args = ["-p", "--bare", "--no-session-persistence", "--tools", "", "--output-format", "json",
    "--model", model, "--system-prompt", SYSTEM];
  const done = spawnSync("claude", args, { input: prompt, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  process.stderr.write(done.stderr || "");
  let answer = {};
  try {
    answer = JSON.parse(done.stdout);
  } catch {
    // not JSON: reported below
  }
  // The CLI reports API errors with subtype "success" and exit 1: read is_error too.
  if (done.status !== 0 || answer.is_error !== false) {
    process.stderr.write(`${NAME}: claude exited with status ${done.status}: ${done.stdout || done.error}\n`);
    throw new Failure(502, "model_error", `claude failed: ${answer.result || "no answer"}`);
  }
  return String(answer.result ?? "");
}

function respond(status, body) {
  appendFileSync(process.env.CLRK_METADATA_RESPONSE_HEADERS, `Status: ${status}\nContent-Type: application/json\n`);
  process.stdout.write(JSON.stringify(body) + "\n");
}

// Start-up done: say so (warm start; the variable is unset without it), then read the request.
if (process.env.CLRK_READY_FD) {
  const ready = Number(process.env.CLRK_READY_FD);
  writeSync(ready, "ready\n");
  closeSync(ready);
}

let event;
try {
  try {
    event = JSON.parse(readFileSync(0, "utf8"));
  } catch {
    throw new Failure(400, "bad_input", "the request is not a CloudEvent in JSON");
  }
  respond(200, { answer: askClaude(readPrompt(event)) });
} catch (error) {
  if (!(error instanceof Failure)) throw error;
  process.stderr.write(`${NAME}: ${error.message}\n`);
  // The envelope's: started ahead (warm start), the agent has no $CLRK_METADATA_INVOCATION_ID.
  const invocationId = event?.clrkinvocationid || process.env.CLRK_METADATA_INVOCATION_ID || "";
  respond(error.status, { error: { type: error.type, message: error.message, invocationId } });
}
