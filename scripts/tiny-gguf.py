#!/usr/bin/env python3
"""A tiny random-weight GGUF of a chosen llama.cpp architecture (qwen2, llama, ...) that
borrows SmolLM2's tokenizer, to check that the engine loads and serves an architecture we
have no real file for here: the answers are noise, the plumbing (loading, chat template,
KV reuse across turns, streaming) is what is checked.

  PYTHONPATH=~/.cache/moltbot/llama-ref/src/gguf-py python3 scripts/tiny-gguf.py \
      ARCH OUT.gguf CHAT_TEMPLATE [SOURCE.gguf]

gguf-py comes with the llama.cpp source that scripts/build-llama-bench.sh fetches; it needs
numpy and pyyaml. Then serve OUT.gguf with `MOLTBOT_MODEL__LOCAL__PATH=OUT.gguf moltbot
gateway` and send two turns of one conversation (BENCHMARKS.md, issue 5).
"""
import os
import sys

import numpy as np
import gguf

arch, out, template = sys.argv[1], sys.argv[2], sys.argv[3]
default_src = os.path.expanduser("~/.cache/moltbot/data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
src = gguf.GGUFReader(sys.argv[4] if len(sys.argv) > 4 else default_src)
def val(name):
    f = src.fields[name]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]
        return [int(f.parts[i][0]) for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    return f.parts[f.data[0]][0]
tokens = val("tokenizer.ggml.tokens")
n_vocab, n_embd, n_layer, n_head, n_kv, n_ff = len(tokens), 64, 2, 4, 2, 128
w = gguf.GGUFWriter(out, arch)
w.add_context_length(2048); w.add_embedding_length(n_embd); w.add_block_count(n_layer)
w.add_feed_forward_length(n_ff); w.add_head_count(n_head); w.add_head_count_kv(n_kv)
w.add_rope_freq_base(1000000.0 if arch == "qwen2" else 500000.0)
w.add_layer_norm_rms_eps(1e-6)
w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre(val("tokenizer.ggml.pre"))
w.add_token_list(tokens); w.add_token_types(val("tokenizer.ggml.token_type"))
w.add_token_merges(val("tokenizer.ggml.merges"))
w.add_bos_token_id(int(val("tokenizer.ggml.bos_token_id"))); w.add_eos_token_id(int(val("tokenizer.ggml.eos_token_id")))
w.add_chat_template(template)
rng = np.random.default_rng(0)
def t(name, *shape):
    w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))
t("token_embd.weight", n_vocab, n_embd)
hd = n_embd // n_head
for b in range(n_layer):
    w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(n_embd, np.float32))
    t(f"blk.{b}.attn_q.weight", n_embd, n_embd); t(f"blk.{b}.attn_k.weight", n_kv * hd, n_embd)
    t(f"blk.{b}.attn_v.weight", n_kv * hd, n_embd); t(f"blk.{b}.attn_output.weight", n_embd, n_embd)
    if arch == "qwen2":
        t(f"blk.{b}.attn_q.bias", n_embd); t(f"blk.{b}.attn_k.bias", n_kv * hd); t(f"blk.{b}.attn_v.bias", n_kv * hd)
    w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(n_embd, np.float32))
    t(f"blk.{b}.ffn_gate.weight", n_ff, n_embd); t(f"blk.{b}.ffn_up.weight", n_ff, n_embd); t(f"blk.{b}.ffn_down.weight", n_embd, n_ff)
w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
t("output.weight", n_vocab, n_embd)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("wrote", out)
