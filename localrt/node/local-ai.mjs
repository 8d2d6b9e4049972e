// The AI binding on the local platform: a deterministic text-generation "model".
// `await env.AI.run(model, inputs)` -> {response, usage}, as Workers AI's text models answer.
// The reply is a pure function of (model, prompt, max_tokens) so tests can assert on it.
// A prompt containing "[[fail:<code>]]" fails the way Workers AI does ("AiError: <code>: ..."),
// so tests reach the error path through the real binding.
import { WorkerEntrypoint } from "cloudflare:workers";

const MODEL = /^@cf\/[a-z0-9._-]+\/[a-z0-9._-]+$/;
const WORDS = ["studio", "brand", "launch", "story", "signal", "craft", "audience", "bright", "steady",
  "growth", "local", "search", "design", "clear", "market", "voice"];

function promptOf(inputs) {
  if (inputs === null || typeof inputs !== "object") throw new Error("AiError: 5006: inputs must be an object");
  if (typeof inputs.prompt === "string") return inputs.prompt;
  const messages = inputs.messages;
  if (Array.isArray(messages) && messages.every((m) => m && typeof m.content === "string")) {
    return messages.map((m) => m.content).join("\n");
  }
  throw new Error("AiError: 5006: Error: required properties at '/' are 'prompt' or 'messages'");
}

export class LocalAI extends WorkerEntrypoint {
  async run(model, inputs) {
    if (this.env.LEDGER) await (await this.env.LEDGER.fetch(this.env.LEDGER_PATH)).arrayBuffer();  // test mode: counted
    if (typeof model !== "string" || !MODEL.test(model)) throw new Error(`AiError: 5007: No such model ${model} or task`);
    const prompt = promptOf(inputs);
    const failure = /\[\[fail:(\d{4})\]\]/.exec(prompt);
    if (failure) throw new Error(`AiError: ${failure[1]}: Capacity temporarily exceeded, please try again.`);
    const maxTokens = Number(inputs.max_tokens ?? 256);
    if (!(maxTokens >= 1 && maxTokens <= 4096)) throw new Error("AiError: 5006: max_tokens out of range");
    const seed = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${model}\0${prompt}`)));
    const count = Math.min(maxTokens, 48);
    const words = Array.from({ length: count }, (_, i) => WORDS[seed[i % seed.length] % WORDS.length]);
    const promptTokens = prompt.split(/\s+/).filter(Boolean).length;
    return { response: words.join(" "),
             usage: { prompt_tokens: promptTokens, completion_tokens: count, total_tokens: promptTokens + count } };
  }
}

export default { fetch() { return new Response("local AI: use env.AI.run()", { status: 404 }); } };
