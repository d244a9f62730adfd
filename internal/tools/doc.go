// Package tools implements the server-side tools the router runs on behalf of
// models (protocol section 4): the web_search tool backed by a SearXNG instance,
// and a streaming parser for the text-form tool calls,
// <tool_call>{"name": ..., "arguments": {...}}</tool_call>, that models without
// native tool support emit.
//
// The package only extracts and executes. Whether a tool is offered at all,
// whether an extracted call may run (never when no tool was offered), per-node
// rate limits and the number of tool rounds are the caller's decisions.
package tools
