"""Analytical FLOPs and bytes per operator for Llama-family (GQA) and BERT-family models.

Conventions (also returned in every result under `conventions`, so numbers are never read without
them):

* FLOPs: a fused multiply-add counts 2. Matmuls count 2*M*N*K. Element-wise work (norms, RoPE,
  activations, softmax, residual adds) is counted with the per-element costs in `ELEMENTWISE_FLOPS`;
  it is small next to the matmuls but keeps memory-bound ops off the y=0 axis.
* Causal attention counts the full S x S score matrix by default (what SDPA's math path and
  `torch.utils.flop_counter` count); `causal="half"` counts S*(S+1)/2 as flash kernels do.
* Bytes: each operator reads its inputs and writes its outputs from/to device memory once (no
  cross-operator fusion or cache reuse). Weights are read once per forward, in the weight dtype
  (fp32 4, fp16/bf16 2, int8 1, int4 0.5 bytes). Attention is one fused kernel (flash/SDPA): it
  reads Q, K, V and writes O, never the S x S scores. Decode reads the whole KV cache (context
  length) and writes one new K/V row per layer.
* Q is sized by the query heads and K/V by the KV heads (GQA); the LM head is 2*tokens*h*V FLOPs;
  the MLP activation is sized by the intermediate size. (LLM-Viewer gets each of these wrong.)
* Prefill computes logits for every prompt position (transformers' default, what the runner
  times); `lm_head_positions="last"` counts only the last one. Decode: one new token per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from perfbench.models.arch import ModelArch

#: Bytes per element of each dtype name used in specs and profiles.
DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "float8": 1.0, "int8": 1.0, "int4": 0.5}

#: FLOPs per element of element-wise ops (documented convention, not measured).
ELEMENTWISE_FLOPS = {
    "rmsnorm": 4,      # square, mean-accumulate, rsqrt-scale, weight multiply
    "layernorm": 7,    # mean, centre, square, mean, rsqrt-scale, weight, bias
    "rope": 3,         # x*cos + rotate(x)*sin per element
    "silu_mul": 5,     # silu(x) ~ 4 (exp, add, div, mul) + gate multiply
    "gelu": 8,         # tanh/erf approximation
    "softmax": 5,      # max, subtract, exp, sum, divide (per score)
    "add": 1,
}


@dataclass
class OpCost:
    """One operator of one layer (or of the whole model), with `count` repetitions."""

    name: str
    kind: str  # matmul | attention | elementwise | embedding
    flops: float
    bytes: float
    count: int = 1  # how many layers repeat it
    matmul_flops: float = 0.0  # the part torch.utils.flop_counter counts (matmuls + attention)
    in_layer: bool = False  # part of the repeated decoder/encoder layer
    weight_shape: tuple[int, int] | None = None  # matmuls: (in_features, out_features), to match traces

    @property
    def total_flops(self) -> float:
        return self.flops * self.count

    @property
    def total_bytes(self) -> float:
        return self.bytes * self.count


def _linear(name: str, tokens: int, k: int, n: int, a: float, w: float, bias: bool = False) -> OpCost:
    """y[tokens, n] = x[tokens, k] @ W[k, n] (+ b)."""
    flops = 2.0 * tokens * k * n + (tokens * n if bias else 0)
    by = tokens * k * a + k * n * w + tokens * n * a + (n * w if bias else 0)
    return OpCost(name, "matmul", flops, by, matmul_flops=2.0 * tokens * k * n, weight_shape=(k, n))


def _eltwise(name: str, elems: float, per_elem: int, reads: int, writes: int, a: float,
             weight_elems: float = 0.0, w: float = 0.0) -> OpCost:
    return OpCost(name, "elementwise", float(per_elem * elems), (reads + writes) * elems * a + weight_elems * w)


def _attention(b: int, q_len: int, kv_len: int, hq: int, hkv: int, d: int, a: float, causal: str,
               prefill: bool) -> OpCost:
    """Fused SDPA: scores and PV over `kv_len` keys; GQA shares K/V across hq/hkv query heads."""
    if prefill and causal == "half":
        pairs = q_len * (kv_len + 1) / 2.0
    else:
        pairs = float(q_len * kv_len)
    mm = 2 * (2.0 * b * hq * pairs * d)  # QK^T and PV
    flops = mm + ELEMENTWISE_FLOPS["softmax"] * b * hq * pairs
    by = (b * q_len * hq * d * a        # read Q
          + 2 * b * kv_len * hkv * d * a  # read K and V (the KV cache in decode)
          + b * q_len * hq * d * a)       # write O
    return OpCost("attention", "attention", flops, by, matmul_flops=mm)


def model_ops(arch: ModelArch, *, phase: Literal["prefill", "decode"], batch: int, seq: int,
              dtype: str = "bfloat16", weight_dtype: str | None = None,
              causal: Literal["full", "half"] = "full",
              lm_head_positions: Literal["all", "last"] = "all") -> list[OpCost]:
    """Per-operator costs of one forward pass. Layer ops carry `count = num_hidden_layers`.

    prefill: `seq` prompt tokens per sequence. decode: `seq` is the context already in the KV
    cache, and one new token is produced per sequence.
    """
    if batch <= 0 or seq <= 0:
        raise ValueError("batch and seq must be positive")
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be prefill or decode, got {phase!r}")
    if arch.family == "bert" and phase != "prefill":
        raise ValueError("bert is an encoder: only prefill (a full forward) applies")
    a = DTYPE_BYTES[dtype]
    w = DTYPE_BYTES[weight_dtype or dtype]
    h, inter, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    hq, hkv, d = arch.num_attention_heads, arch.kv_heads, arch.head_size
    L = arch.num_hidden_layers
    q_len = seq if phase == "prefill" else 1
    kv_len = seq if phase == "prefill" else seq + 1
    t = batch * q_len  # tokens processed
    qd, kvd = hq * d, hkv * d

    ops: list[OpCost] = []
    if arch.family == "llama":
        ops.append(OpCost("embedding", "embedding", 0.0, t * h * w + t * h * a + t * 8))
        layer = [
            _eltwise("input_norm", t * h, ELEMENTWISE_FLOPS["rmsnorm"], 1, 1, a, h, w),
            _linear("q_proj", t, h, qd, a, w),
            _linear("k_proj", t, h, kvd, a, w),
            _linear("v_proj", t, h, kvd, a, w),
            _eltwise("rope", t * (qd + kvd), ELEMENTWISE_FLOPS["rope"], 1, 1, a),
            _attention(batch, q_len, kv_len, hq, hkv, d, a, causal, phase == "prefill"),
            _linear("o_proj", t, qd, h, a, w),
            _eltwise("residual_add_1", t * h, ELEMENTWISE_FLOPS["add"], 2, 1, a),
            _eltwise("post_attention_norm", t * h, ELEMENTWISE_FLOPS["rmsnorm"], 1, 1, a, h, w),
            _linear("gate_proj", t, h, inter, a, w),
            _linear("up_proj", t, h, inter, a, w),
            _eltwise("act_mul", t * inter, ELEMENTWISE_FLOPS["silu_mul"], 2, 1, a),
            _linear("down_proj", t, inter, h, a, w),
            _eltwise("residual_add_2", t * h, ELEMENTWISE_FLOPS["add"], 2, 1, a),
        ]
        if phase == "decode":  # append this token's K and V to the cache
            layer.append(OpCost("kv_cache_write", "elementwise", 0.0, 2 * batch * kvd * a * 2))
        for op in layer:
            op.count, op.in_layer = L, True
        ops += layer
        ops.append(_eltwise("final_norm", t * h, ELEMENTWISE_FLOPS["rmsnorm"], 1, 1, a, h, w))
        head_tokens = t if (phase == "prefill" and lm_head_positions == "all") else batch
        ops.append(_linear("lm_head", head_tokens, h, v, a, w))
    else:  # bert
        ops.append(OpCost("embeddings", "embedding", 3.0 * t * h,
                          3 * t * h * w + t * h * a + t * 16))
        ops.append(_eltwise("embedding_norm", t * h, ELEMENTWISE_FLOPS["layernorm"], 1, 1, a, 2 * h, w))
        layer = [
            _linear("query", t, h, qd, a, w, bias=True),
            _linear("key", t, h, qd, a, w, bias=True),
            _linear("value", t, h, qd, a, w, bias=True),
            _attention(batch, q_len, kv_len, hq, hq, d, a, "full", False),
            _linear("attention_output", t, qd, h, a, w, bias=True),
            _eltwise("attention_add_norm", t * h, ELEMENTWISE_FLOPS["add"] + ELEMENTWISE_FLOPS["layernorm"],
                     2, 1, a, 2 * h, w),
            _linear("intermediate", t, h, inter, a, w, bias=True),
            _eltwise("gelu", t * inter, ELEMENTWISE_FLOPS["gelu"], 1, 1, a),
            _linear("output", t, inter, h, a, w, bias=True),
            _eltwise("output_add_norm", t * h, ELEMENTWISE_FLOPS["add"] + ELEMENTWISE_FLOPS["layernorm"],
                     2, 1, a, 2 * h, w),
        ]
        for op in layer:
            op.count, op.in_layer = L, True
        ops += layer
        pool = _linear("pooler", batch, h, h, a, w, bias=True)
        ops.append(pool)
        ops.append(_eltwise("pooler_tanh", batch * h, 5, 1, 1, a))
    return ops


def conventions(*, causal: str = "full", lm_head_positions: str = "all", dtype: str = "bfloat16",
                weight_dtype: str | None = None, family: str = "llama") -> dict[str, Any]:
    """The counting rules behind the numbers, stated in every report (only those that apply)."""
    conv = _conventions(causal, lm_head_positions, dtype, weight_dtype)
    if family == "bert":
        for key in ("gqa", "lm_head", "decode", "kv_cache"):
            conv.pop(key)
        conv["attention"] = "bidirectional: full S*S scores; every head has its own K/V"
        conv.pop("causal_attention")
        conv["pooler"] = "one dense + tanh over the first token"
    return conv


def _conventions(causal: str, lm_head_positions: str, dtype: str, weight_dtype: str | None) -> dict[str, Any]:
    return {
        "fma_flops": 2,
        "causal_attention": ("full S*S scores (as SDPA math and FlopCounterMode count)" if causal == "full"
                             else "half: S*(S+1)/2 scores (as flash kernels compute)"),
        "attention_kernel": "fused (flash/SDPA): reads Q,K,V, writes O; scores never hit memory",
        "bytes": "each operator reads inputs and writes outputs once; no cross-op fusion or cache reuse",
        "weights": f"read once per forward in {weight_dtype or dtype} ({DTYPE_BYTES[weight_dtype or dtype]} B/elem)",
        "activations": f"{dtype} ({DTYPE_BYTES[dtype]} B/elem)",
        "gqa": "Q sized by query heads, K/V by KV heads",
        "lm_head": f"2*tokens*hidden*vocab FLOPs, positions: {lm_head_positions} (prefill)",
        "decode": "--seq is the context length in the KV cache; one new token per sequence",
        "kv_cache": ("appended in place (the ideal floor, and what the StaticCache of the CUDA-graph "
                     "compile modes does); a DynamicCache that re-copies the cache with torch.cat "
                     "every step adds traffic that lands in the measured remainder"),
        "elementwise_flops_per_element": dict(ELEMENTWISE_FLOPS),
        "roofline_time": "per op max(flops/peak, bytes/bandwidth); total = sum over ops",
    }


def dominant_bound(ops: list[OpCost], peak: float, bw: float) -> str:
    """A workload's bound: the one whose operators take most of the roofline floor (one rule for
    `roofline analyze` and `roofline place`)."""
    t_compute = t_memory = 0.0
    for op in ops:
        t_c, t_m = op.total_flops / peak, op.total_bytes / bw
        if t_c >= t_m:
            t_compute += t_c
        else:
            t_memory += t_m
    return "compute" if t_compute >= t_memory else "memory"


def _row(name: str, flops: float, by: float, peak: float, bw: float, **extra: Any) -> dict[str, Any]:
    t_c, t_m = flops / peak, by / bw
    return {"name": name, "flops": flops, "bytes": by,
            "arithmetic_intensity": flops / by if by else float("inf"),
            "bound": "compute" if t_c >= t_m else "memory",
            "roofline_time_s": max(t_c, t_m), "compute_time_s": t_c, "memory_time_s": t_m, **extra}


def analyze(arch: ModelArch, *, phase: str, batch: int, seq: int, peak_flops: float,
            bandwidth: float, dtype: str = "bfloat16", weight_dtype: str | None = None,
            causal: str = "full", lm_head_positions: str = "all") -> dict[str, Any]:
    """The roofline report: conventions, whole-model total, per-layer total and per-op rows."""
    ops = model_ops(arch, phase=phase, batch=batch, seq=seq, dtype=dtype, weight_dtype=weight_dtype,
                    causal=causal, lm_head_positions=lm_head_positions)
    rows = [_row(op.name, op.total_flops, op.total_bytes, peak_flops, bandwidth, kind=op.kind,
                 count=op.count, matmul_flops=op.matmul_flops * op.count) for op in ops]
    tot_f = sum(r["flops"] for r in rows)
    tot_b = sum(r["bytes"] for r in rows)
    total = _row("total", tot_f, tot_b, peak_flops, bandwidth,
                 matmul_flops=sum(r["matmul_flops"] for r in rows))
    # Whole-model aggregate puts the workload as one point; the op sum is the tighter floor.
    total["aggregate_time_s"] = total["roofline_time_s"]
    total["roofline_time_s"] = sum(r["roofline_time_s"] for r in rows)
    total["bound"] = dominant_bound(ops, peak_flops, bandwidth)
    layer_ops = [op for op in ops if op.in_layer]
    per_layer = _row("per_layer", sum(o.flops for o in layer_ops), sum(o.bytes for o in layer_ops),
                     peak_flops, bandwidth)
    per_layer["roofline_time_s"] = sum(max(o.flops / peak_flops, o.bytes / bandwidth) for o in layer_ops)
    tokens = batch * (seq if phase == "prefill" else 1)
    return {
        "conventions": conventions(causal=causal, lm_head_positions=lm_head_positions, dtype=dtype,
                                   family=arch.family,
                                   weight_dtype=weight_dtype),
        "workload": {"phase": phase, "batch": batch, "seq": seq, "dtype": dtype,
                     "weight_dtype": weight_dtype or dtype, "tokens": tokens,
                     "parameters": arch.param_count()},
        "hardware": {"peak_flops": peak_flops, "bandwidth_bytes_per_s": bandwidth,
                     "ridge_point": peak_flops / bandwidth},
        "total": total,
        "per_layer": per_layer,
        "layers": arch.num_hidden_layers,
        "ops": rows,
    }
