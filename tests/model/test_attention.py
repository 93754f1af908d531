"""Varlen attention for packed rows (`model/attention.py`): the same log-probs and gradients as per-sequence forwards
and as the dense-mask SDPA path, without a T x T mask, on the CPU loop and on the CUDA kernel's plumbing (the kernel
replaced by a CPU stand-in); padded batches, gradient checkpointing and a direct call of the LLM still work."""

import pytest
import torch
import torch.nn.functional as F

import model.attention as attention
from model import MiniCPMV
from model.attention import VARLEN, llm_attention, packed_kwargs
from model.processor import collate
from tests.model.test_modeling import COMPLETIONS, prompts

TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_RTOL = 1e-5  # of each gradient tensor's largest entry: fp32 sums taken in another order


@pytest.fixture(scope="module")
def models(tiny_ckpt):
    return {name: MiniCPMV.from_pretrained(tiny_ckpt, dtype=torch.float32, attn_implementation=impl).eval()
            for name, impl in (("sdpa", "sdpa"), ("varlen", VARLEN))}


def run(model, batch, weights=None):
    """Log-probs of the scored tokens (in sequence order) and the gradients of a weighted sum of them."""
    model.zero_grad()
    lp = model(**batch).logprobs[batch["target_mask"]]
    w = weights if weights is not None else torch.linspace(0.5, 1.5, lp.numel())
    (lp * w).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return lp.detach(), grads


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], **TOL)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        scale = float(a[1][name].abs().max())
        torch.testing.assert_close(a[1][name], b[1][name], rtol=0, atol=GRAD_RTOL * scale + 1e-9,
                                   msg=lambda m: f"{name}: {m}")


def singles(model, processor):
    """Each sequence on its own (no packing, no padding), gradients summed: the reference."""
    pad = processor.tokenizer.pad_token_id
    n = sum(map(len, COMPLETIONS))
    w = torch.linspace(0.5, 1.5, n)
    lps, grads, start = [], {}, 0
    for p, c in zip(prompts(processor), COMPLETIONS):
        lp, g = run(model, collate([p], [c], pad), w[start:start + len(c)])
        start += len(c)
        lps.append(lp)
        for k, v in g.items():
            grads[k] = grads[k] + v if k in grads else v
    return torch.cat(lps), grads


def test_llm_attention_setting():
    assert llm_attention("sdpa", "cpu") == "sdpa"
    assert llm_attention("auto", "cpu") == llm_attention("auto", torch.device("cuda")) == VARLEN
    assert llm_attention("varlen", "cpu") == VARLEN
    with pytest.raises(ValueError, match=r"learner.attention='flash'.*auto, sdpa, varlen"):
        llm_attention("flash", "cpu")


def test_packed_kwargs():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    kw = packed_kwargs(pos)
    assert kw["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 10] and kw["cu_seq_lens_q"].dtype == torch.int32
    assert kw["max_length_q"] == kw["max_length_k"] == 4
    two_rows = packed_kwargs(torch.tensor([[0, 1, 2], [0, 1, 0]]))  # a sequence never spans two rows
    assert two_rows["cu_seq_lens_q"].tolist() == [0, 3, 5, 6]


def test_packed_varlen_equals_singles_and_dense_mask(models, processor):
    """fp32, image + video + text sequences: log-probs and every parameter's gradient."""
    packed = collate(prompts(processor), COMPLETIONS, processor.tokenizer.pad_token_id, packed=True)
    varlen = run(models["varlen"], packed)
    assert_same(varlen, run(models["sdpa"], packed))
    assert_same(varlen, singles(models["varlen"], processor))
    assert_same(varlen, singles(models["sdpa"], processor))


def test_padded_batch_still_agrees(models, processor):
    padded = collate(prompts(processor), COMPLETIONS, processor.tokenizer.pad_token_id, packed=False)
    assert padded["attention_mask"].min() == 0
    varlen = run(models["varlen"], padded)
    assert_same(varlen, run(models["sdpa"], padded))
    assert_same(varlen, singles(models["sdpa"], processor))


class Spy:
    """Records what reaches the LLM's attention and the mask builder, and every SDPA call's shapes and mask."""

    def __init__(self, monkeypatch):
        import transformers.models.qwen3.modeling_qwen3 as qwen3
        from transformers import AttentionInterface

        self.masks, self.calls, self.sdpa = [], [], []
        build, attend = qwen3.create_causal_mask, attention.varlen_attention_forward
        sdpa = F.scaled_dot_product_attention

        def spy_mask(**kw):
            self.masks.append(build(**kw))
            return self.masks[-1]

        def spy_attention(module, q, k, v, mask, **kw):
            self.calls.append(dict(mask=mask, cu=kw.get("cu_seq_lens_q"), max_len=kw.get("max_length_q")))
            return attend(module, q, k, v, mask, **kw)

        def spy_sdpa(q, k, v, attn_mask=None, **kw):
            self.sdpa.append((q.shape[-2], k.shape[-2], attn_mask))
            return sdpa(q, k, v, attn_mask=attn_mask, **kw)

        monkeypatch.setattr(qwen3, "create_causal_mask", spy_mask)
        monkeypatch.setitem(AttentionInterface._global_mapping, VARLEN, spy_attention)
        monkeypatch.setattr(F, "scaled_dot_product_attention", spy_sdpa)


def text_packed(processor):
    text = [p for p in prompts(processor) if p.pixel_values is None or not len(p.pixel_values)]
    comps = [[40, 41, 42, 7, 8, 9, 10], [50, 2]]
    return collate(text, comps, processor.tokenizer.pad_token_id, packed=True), text, comps


def test_no_dense_mask_for_a_packed_row_on_the_cpu(models, processor, monkeypatch):
    batch, text, comps = text_packed(processor)
    lengths = [len(p.input_ids) + len(c) for p, c in zip(text, comps)]
    spy = Spy(monkeypatch)
    with torch.no_grad():
        lp = models["varlen"](**batch).logprobs
    layers = models["varlen"].config.num_hidden_layers
    assert spy.masks == [None]
    assert len(spy.calls) == layers and all(c["mask"] is None for c in spy.calls)
    # the boundaries are computed once in the forward and handed to every layer
    assert all(c["cu"] is spy.calls[0]["cu"] for c in spy.calls)
    assert spy.calls[0]["cu"].tolist() == [0, lengths[0], sum(lengths)] and spy.calls[0]["max_len"] == max(lengths)
    # one causal SDPA per sequence and layer, each over that sequence only, never a mask
    assert [(q, k) for q, k, _ in spy.sdpa] == [(n, n) for n in lengths] * layers
    assert all(m is None for *_, m in spy.sdpa)
    # called without the precomputed boundaries (the LLM directly): the same, from each layer's position_ids
    spy.calls.clear()
    with torch.no_grad():
        embeds = models["varlen"].embed(batch["input_ids"])
        hidden = models["varlen"].llm.model(inputs_embeds=embeds, position_ids=batch["position_ids"]).last_hidden_state
        direct = models["varlen"].llm.lm_head(hidden).log_softmax(-1)[0, :-1].gather(
            -1, batch["input_ids"][0, 1:, None])[:, 0]
    assert all(c["cu"] is None and c["mask"] is None for c in spy.calls)
    torch.testing.assert_close(direct[batch["target_mask"][0, 1:]], lp[batch["target_mask"]], **TOL)


@pytest.mark.parametrize("kernel", ["torch", "flash"])
def test_cuda_kernel_path_on_a_cpu_stand_in(models, processor, monkeypatch, kernel):
    """The CUDA path (kernel selection, flattened [tokens, heads, dim] layout, int32 boundaries, GQA, causal) with
    the kernel replaced by a per-sequence SDPA stand-in: same log-probs and gradients, no mask anywhere."""
    seen = []

    def reference(q, k, v, cu, scale):
        out = []
        for s, e in zip(cu.tolist()[:-1], cu.tolist()[1:]):
            qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
            ks, vs = (x.repeat_interleave(q.shape[1] // k.shape[1], 0) for x in (ks, vs))
            out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale).transpose(0, 1))
        return torch.cat(out)

    def torch_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        seen.append((q.shape, k.shape, cu_q, max_q))
        assert cu_q is cu_k and cu_q.dtype == torch.int32 and max_q == max_k
        assert window_size == (-1, 0) and enable_gqa == (q.shape[1] != k.shape[1])
        return reference(q, k, v, cu_q, scale)

    def flash_varlen(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False):
        seen.append((q.shape, k.shape, cu_q, max_q))
        assert causal and cu_q.dtype == torch.int32
        return reference(q, k, v, cu_q, softmax_scale)

    monkeypatch.setattr(attention, "KERNEL_DEVICES", ("cpu",))
    monkeypatch.setattr(attention, "KERNEL_DTYPES", (torch.float32,))
    monkeypatch.setattr(attention, "varlen_attn", torch_varlen if kernel == "torch" else None)
    monkeypatch.setattr(attention, "flash_attn_varlen_func", flash_varlen if kernel == "flash" else None)
    packed = collate(prompts(processor), COMPLETIONS, processor.tokenizer.pad_token_id, packed=True)
    with_kernel = run(models["varlen"], packed)
    cfg = models["varlen"].llm.config
    t = packed["input_ids"].shape[1]
    assert len(seen) == cfg.num_hidden_layers
    assert all(qs == (t, cfg.num_attention_heads, cfg.head_dim) and ks == (t, cfg.num_key_value_heads, cfg.head_dim)
               for qs, ks, _, _ in seen)
    monkeypatch.setattr(attention, "varlen_attn", None)
    monkeypatch.setattr(attention, "flash_attn_varlen_func", None)
    assert_same(with_kernel, run(models["varlen"], packed))  # no kernel: the CPU loop
    assert_same(with_kernel, run(models["sdpa"], packed))


def test_kernel_selection():
    q = torch.zeros(4, 2, 8)
    assert attention._kernel(q) is None  # the CPU: per-sequence SDPA
    assert attention._kernel(q.bfloat16()) is None


def test_gradient_checkpointing(tiny_ckpt, models, processor):
    model = MiniCPMV.from_pretrained(tiny_ckpt, dtype=torch.float32, attn_implementation=VARLEN).train()
    model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    packed = collate(prompts(processor), COMPLETIONS, processor.tokenizer.pad_token_id, packed=True)
    assert_same(run(model, packed), run(models["varlen"], packed))
