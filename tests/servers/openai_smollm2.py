"""A small OpenAI-compatible streaming server that generates real tokens from SmolLM2-135M on CPU.

It stands in for `trtllm-serve` where no GPU is: AIPerf (and GenAI-Perf) talk to it exactly as
they talk to TensorRT-LLM's OpenAI server. Built on FastAPI + uvicorn (both already installed as
AIPerf dependencies). Run it by hand:

    .venv/bin/python -m tests.servers.openai_smollm2 --port 8011 --save-tokenizer /tmp/smollm2-tok

then `trtq bench --url http://127.0.0.1:8011 --model smollm2-135m --tokenizer /tmp/smollm2-tok ...`.

Endpoints (the subset of the OpenAI API that load generators use, plus TensorRT-LLM's /health):
  GET  /health                 200 once the model is loaded
  GET  /v1/models              the one model
  POST /v1/chat/completions    stream or not; honours max_tokens / max_completion_tokens, ignore_eos
  POST /v1/completions         same, with a text prompt
  GET  /stats                  what the server saw: requests, prompt and output token counts
  POST /stats/reset            forget it

Decoding is greedy. Generation runs one request at a time in a worker thread (2 CPU cores: batching
would not be faster here), token by token with the KV cache, one SSE chunk per generated token.
`/stats` records for every finished request the number of tokens generated and the number of tokens
the tokenizer gives when re-encoding the returned text (what a client-side counter such as AIPerf
computes), so a test can compare either with a load generator's report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# Module level, not inside create_app: FastAPI resolves the `Request` annotation by name.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL_NAME_DEFAULT = "smollm2-135m"


@dataclass
class Stats:
    requests_received: int = 0
    requests_completed: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    prompt_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    output_tokens_retokenized: list[int] = field(default_factory=list)
    max_tokens_requested: list[int | None] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_received": self.requests_received,
            "requests_completed": self.requests_completed,
            "by_endpoint": dict(self.by_endpoint),
            "prompt_tokens": list(self.prompt_tokens),
            "output_tokens": list(self.output_tokens),
            "output_tokens_retokenized": list(self.output_tokens_retokenized),
            "max_tokens_requested": list(self.max_tokens_requested),
        }


class Generator:
    """Greedy token-by-token generation with the KV cache; one request at a time."""

    def __init__(self, model, tokenizer, max_context: int = 2048):
        self.model = model
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.lock = threading.Lock()

    def prompt_ids(self, messages: list[dict] | None, prompt: str | None) -> list[int]:
        if messages is not None:
            flat = [{"role": m.get("role", "user"), "content": _content_text(m.get("content"))} for m in messages]
            try:
                ids = self.tokenizer.apply_chat_template(flat, add_generation_prompt=True, tokenize=True)
                if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
                    ids = ids["input_ids"]
                return list(ids)
            except Exception:  # a tokenizer without a chat template: plain concatenation
                prompt = "\n".join(m["content"] for m in flat)
        return list(self.tokenizer.encode(prompt or "", add_special_tokens=True))

    def generate(self, ids: list[int], max_new_tokens: int, ignore_eos: bool, emit) -> list[int]:
        """Generate greedily, calling emit(token_id, text_delta) per token; returns the new ids."""
        import torch

        eos = self.tokenizer.eos_token_id
        out: list[int] = []
        text_so_far = ""
        with self.lock, torch.inference_mode():
            ids = ids[-(self.max_context - max_new_tokens):] if len(ids) + max_new_tokens > self.max_context else ids
            input_ids = torch.tensor([ids], dtype=torch.long)
            past = None
            for _ in range(max_new_tokens):
                result = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
                past = result.past_key_values
                logits = result.logits[0, -1]
                if ignore_eos and eos is not None:
                    logits[eos] = float("-inf")
                token = int(torch.argmax(logits))
                if not ignore_eos and token == eos:
                    break
                out.append(token)
                text = self.tokenizer.decode(out, skip_special_tokens=True)
                # Hold back a delta that ends inside a multi-byte character.
                if text.endswith("\ufffd"):
                    delta = ""
                else:
                    delta, text_so_far = text[len(text_so_far):], text
                emit(token, delta)
                input_ids = torch.tensor([[token]], dtype=torch.long)
        return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def create_app(generator: Generator, model_name: str):
    app = FastAPI(title="trtq test server (SmolLM2-135M, CPU)")
    stats = Stats()
    stats_lock = threading.Lock()

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "trtq-tests"}]}

    @app.get("/stats")
    async def get_stats():
        with stats_lock:
            return stats.as_dict()

    @app.post("/stats/reset")
    async def reset_stats():
        with stats_lock:
            fresh = Stats()
            for name in vars(fresh):
                setattr(stats, name, getattr(fresh, name))
        return {"reset": True}

    async def handle(request: Request, chat: bool):
        body = await request.json()
        endpoint = "chat" if chat else "completions"
        with stats_lock:
            stats.requests_received += 1
            stats.by_endpoint[endpoint] = stats.by_endpoint.get(endpoint, 0) + 1
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_new = int(max_tokens) if max_tokens is not None else 16
        ignore_eos = bool(body.get("ignore_eos", False))
        stream = bool(body.get("stream", False))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
        if chat:
            ids = generator.prompt_ids(body.get("messages") or [], None)
        else:
            prompt = body.get("prompt", "")
            ids = generator.prompt_ids(None, prompt if isinstance(prompt, str) else "".join(prompt))
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        created = int(time.time())

        def record(new_ids: list[int]):
            text = generator.tokenizer.decode(new_ids, skip_special_tokens=True)
            retokenized = len(generator.tokenizer.encode(text, add_special_tokens=False))
            with stats_lock:
                stats.requests_completed += 1
                stats.prompt_tokens.append(len(ids))
                stats.output_tokens.append(len(new_ids))
                stats.output_tokens_retokenized.append(retokenized)
                stats.max_tokens_requested.append(max_tokens)
            return text

        def usage(n_out: int) -> dict:
            return {"prompt_tokens": len(ids), "completion_tokens": n_out, "total_tokens": len(ids) + n_out}

        def chunk(delta_text: str | None, finish: str | None) -> dict:
            if chat:
                delta = {} if delta_text is None else {"content": delta_text}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                return {"id": request_id, "object": "chat.completion.chunk", "created": created,
                        "model": model_name, "choices": [choice]}
            choice = {"index": 0, "text": delta_text or "", "finish_reason": finish}
            return {"id": request_id, "object": "text_completion", "created": created,
                    "model": model_name, "choices": [choice]}

        if not stream:
            new_ids = await asyncio.to_thread(generator.generate, ids, max_new, ignore_eos, lambda t, d: None)
            text = record(new_ids)
            finish = "length" if len(new_ids) >= max_new else "stop"
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish}
                obj = "text_completion"
            return JSONResponse({"id": request_id, "object": obj, "created": created, "model": model_name,
                                 "choices": [choice], "usage": usage(len(new_ids))})

        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def run():
            try:
                new_ids = generator.generate(
                    ids, max_new, ignore_eos, lambda t, d: loop.call_soon_threadsafe(queue.put_nowait, ("tok", d))
                )
                loop.call_soon_threadsafe(queue.put_nowait, ("done", new_ids))
            except Exception as exc:  # reported to the client as a stream error
                loop.call_soon_threadsafe(queue.put_nowait, ("error", str(exc)))

        async def events():
            worker = asyncio.create_task(asyncio.to_thread(run))
            if chat:
                first = chunk(None, None)
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                yield f"data: {json.dumps(first)}\n\n"
            while True:
                kind, payload = await queue.get()
                if kind == "tok":
                    if payload:
                        yield f"data: {json.dumps(chunk(payload, None))}\n\n"
                elif kind == "done":
                    record(payload)
                    finish = "length" if len(payload) >= max_new else "stop"
                    yield f"data: {json.dumps(chunk(None if chat else '', finish))}\n\n"
                    if include_usage:
                        final = chunk(None, None)
                        final["choices"] = []
                        final["usage"] = usage(len(payload))
                        yield f"data: {json.dumps(final)}\n\n"
                    break
                else:
                    yield f"data: {json.dumps({'error': {'message': payload}})}\n\n"
                    break
            yield "data: [DONE]\n\n"
            await worker

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    return app


def load_generator() -> Generator:
    import torch

    torch.manual_seed(0)
    from trtq.model.zoo import load_pretrained, require_embedded_model

    resolved = require_embedded_model()
    try:
        model, tokenizer = load_pretrained(resolved)
    except Exception as exc:  # the zoo's safetensors cache is optional here: read the GGUF directly
        import sys

        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"openai_smollm2: zoo loader failed ({type(exc).__name__}: {exc}); loading the GGUF directly",
              file=sys.stderr)
        gguf = resolved.weights
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.eval()
    return Generator(model, tokenizer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--model-name", default=MODEL_NAME_DEFAULT, help="the name /v1/models reports")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="write the tokenizer here (for the load generator)")
    args = parser.parse_args(argv)
    generator = load_generator()
    if args.save_tokenizer:
        generator.tokenizer.save_pretrained(args.save_tokenizer)
    import uvicorn

    uvicorn.run(create_app(generator, args.model_name), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
