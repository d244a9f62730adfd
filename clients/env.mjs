// Where the tests find the router and which models to use. Set by
// internal/cli/clients_test.go (router + node + fake Ollama) or by
// scripts/e2e-ollama.sh (router + node + real Ollama).
//
//   ROUTER_URL                 router base URL, e.g. http://127.0.0.1:8000 (required)
//   IDLECLAW_MODEL             a model some node serves (default "stories")
//   IDLECLAW_TOOL_MODEL        a model that calls tools; unset skips the tool-call tests
//   ROUTER_URL_LIMITED         a router with --rate-limit-chat-rpm 1; unset skips the 429 test
//   EXPECT_COMPLETION_TOKENS   exact completion tokens of a plain answer (the fake's count)
//   EXPECT_EXACT_USAGE=1       prompt_tokens must equal what the Ollama dialect reports for
//                              the same request (true for the fake; a real Ollama may
//                              count fewer prompt tokens when it reuses its prompt cache)
import { strict as assert } from 'node:assert';

export const routerURL = (process.env.ROUTER_URL ?? '').replace(/\/+$/, '');
assert.ok(routerURL, 'set ROUTER_URL to the router under test (see clients/env.mjs)');
export const model = process.env.IDLECLAW_MODEL || 'stories';
export const toolModel = process.env.IDLECLAW_TOOL_MODEL || '';
export const limitedURL = (process.env.ROUTER_URL_LIMITED ?? '').replace(/\/+$/, '');
export const expectCompletion = process.env.EXPECT_COMPLETION_TOKENS ? Number(process.env.EXPECT_COMPLETION_TOKENS) : undefined;
export const exactUsage = process.env.EXPECT_EXACT_USAGE === '1';

// Sampling that makes a real model repeat itself, so two dialects can be
// compared token for token.
export const seed = 42;
export const maxTokens = 24;
export const prompt = 'Once upon a time';

export const noToolModel = toolModel ? false : 'IDLECLAW_TOOL_MODEL is not set: the model under test cannot call tools';
