"""The chunked log-prob head computes what the unchunked one computes (log-probs, entropy, gradients w.r.t. the
hidden states and the LM head's weight), with and without temperature / top-k / top-p, for chunk sizes that divide
the token count and sizes that do not; and it needs far less memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from model import MiniCPMV
from model.logprob_head import token_logprobs
from model.processor import collate
from tests.model.test_modeling import COMPLETIONS, prompts

ROOT = Path(__file__).parents[2]
TOL = dict(rtol=1e-6, atol=1e-6)
N, H, V = 300, 16, 500  # N > model.logprob_head.ROWS: a chunk's log-softmax runs in several row blocks


def sampling(n: int, kind: str, g: torch.Generator) -> dict:
    if kind == "plain":
        return {}
    if kind == "temperature":
        return dict(temperature=0.7)
    # per token, as the learner passes them; some tokens with top-k off (0) or top-p off (1)
    k = torch.randint(0, 40, (n,), generator=g)
    k[::4] = 0
    p = torch.rand(n, generator=g) * 0.5 + 0.5
    p[::3] = 1.0
    return dict(temperature=torch.rand(n, generator=g) + 0.5, top_k=k, top_p=p)


def head_run(head, hidden, targets, grad_out, chunk, params):
    """log-probs, entropy, d(sum grad_out x finite log-probs)/d(hidden), d/d(weight)."""
    head.zero_grad()
    h = hidden.clone().requires_grad_()
    lp, ent = token_logprobs(h, head, targets, **params, chunk_tokens=chunk, entropy=True)
    (torch.where(torch.isfinite(lp), lp, 0) * grad_out).sum().backward()
    return lp.detach(), ent, h.grad, head.weight.grad.clone()


@pytest.mark.parametrize("kind", ["plain", "temperature", "top_k_top_p"])
@pytest.mark.parametrize("chunk", [1, 7, 100, 150, 256, 300, 1000], ids=lambda c: f"chunk{c}")
def test_chunked_head_equals_unchunked(kind, chunk):
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=g) / 4)  # logits of std ~1 (fp32 rounding ~1e-7)
    hidden = torch.randn(N, H, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[1] = head(hidden[1]).argmax()  # a target every filter keeps (a finite log-prob and its gradient)
    grad_out = torch.randn(N, generator=g) / N  # a token-mean loss's gradient, as the learner's
    params = sampling(N, kind, g)
    want = head_run(head, hidden, targets, grad_out, None, params)
    got = head_run(head, hidden, targets, grad_out, chunk, params)
    assert torch.equal(torch.isinf(got[0]), torch.isinf(want[0]))  # the same tokens filtered out
    if kind == "top_k_top_p":
        assert torch.isinf(want[0]).any() and torch.isfinite(want[0]).any()
    for name, a, b in zip(("logprobs", "entropy", "grad hidden", "grad weight"), got, want):
        torch.testing.assert_close(a, b, **TOL, msg=name)
        if chunk >= N:  # one chunk: the same kernels on the same tensors, bit for bit
            assert torch.equal(a, b), name
    assert not got[1].requires_grad  # entropy is a metric: no gradient


def test_no_grad_and_frozen_weight():
    g = torch.Generator().manual_seed(1)
    head = nn.Linear(H, V, bias=False).requires_grad_(False)
    hidden = torch.randn(N, H, generator=g, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    with torch.no_grad():
        lp, ent = token_logprobs(hidden, head, targets, chunk_tokens=5)
    assert ent is None and not lp.requires_grad
    token_logprobs(hidden, head, targets, chunk_tokens=5)[0].sum().backward()
    assert hidden.grad is not None and head.weight.grad is None


def forward_and_grads(model, batch, chunk, params):
    """The forward's outputs, the gradient w.r.t. the final hidden states and every parameter's gradient."""
    model.zero_grad()
    kept = {}

    def keep(module, args, output):
        output.retain_grad()
        kept["hidden"] = output

    hook = model.llm.model.norm.register_forward_hook(keep)
    try:
        out = model(**batch, **params, return_entropy=True, logprob_chunk_tokens=chunk)
    finally:
        hook.remove()
    lp = out.logprobs[batch["target_mask"]]
    (torch.where(torch.isfinite(lp), lp, 0) * torch.linspace(-1, 1, lp.numel())).sum().backward()
    return out, kept["hidden"].grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("kind", ["plain", "top_k_top_p"])
def test_forward_chunked_equals_unchunked(tiny_ckpt, processor, packed, kind):
    model = MiniCPMV.from_pretrained(tiny_ckpt)  # fp32
    batch = collate(prompts(processor), COMPLETIONS, processor.tokenizer.pad_token_id, packed=packed)
    params = {}
    if kind != "plain":  # [B, T], each scored token's own values at its position
        shape = batch["input_ids"].shape
        params = dict(temperature=torch.full(shape, 0.5), top_k=torch.full(shape, 20, dtype=torch.long),
                      top_p=torch.full(shape, 0.9))
        params["top_k"][:, ::2] = 0
    want, want_hidden, want_grads = forward_and_grads(model, batch, None, params)
    if kind != "plain":
        assert torch.isinf(want.logprobs).any()  # some targets filtered out
    scale = max(g.abs().max() for g in want_grads.values())
    scored = int(batch["target_mask"][:, 1:].sum())
    assert scored == sum(map(len, COMPLETIONS)) == 14
    for chunk in (3, 7, scored):  # 3 does not divide the scored tokens, 7 does
        out, hidden, grads = forward_and_grads(model, batch, chunk, params)
        torch.testing.assert_close(out.logprobs, want.logprobs, **TOL)
        torch.testing.assert_close(out.entropy, want.entropy, **TOL)
        torch.testing.assert_close(hidden, want_hidden, **TOL)
        torch.testing.assert_close(grads["llm.lm_head.weight"], want_grads["llm.lm_head.weight"], **TOL)
        # every other parameter: the same rounding differences, carried back through the layers
        assert grads.keys() == want_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, want_grads[name], rtol=0, atol=1e-5 * scale, msg=name)


PEAK = """
import json, torch
from model.logprob_head import token_logprobs


def rss(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))


torch.manual_seed(0)
head = torch.nn.Linear(16, 151748, bias=False)
hidden = torch.randn(4096, 16, requires_grad=True)
targets = torch.randint(0, 151748, (4096,))
token_logprobs(hidden[:8], head, targets[:8], chunk_tokens=4)[0].sum().backward()  # warm
peaks = {}
for chunk in (512, None):
    head.zero_grad()
    hidden.grad = None
    open("/proc/self/clear_refs", "w").write("5")  # resets this process's peak RSS (VmHWM) to its current RSS
    before = rss("VmRSS")
    token_logprobs(hidden, head, targets, chunk_tokens=chunk)[0].sum().backward()
    peaks[str(chunk)] = rss("VmHWM") - before
print(json.dumps(peaks))
"""
# Not ru_maxrss: Linux carries the parent's high-water mark into a child across fork/vfork + exec (exec records the
# old mm's peak), so under a pytest process of a few GB the chunked pass read as that process's RSS (CI: 1.9 GB).


def test_chunked_head_peak_memory_is_far_lower():
    """Forward + backward of the head alone, 4096 scored tokens, the release's vocabulary, in a fresh process: peak
    RSS above the RSS before the head, chunked (512 tokens) then unchunked (~3 fp32 copies of [4096, 151748], 2.5 GB
    each)."""
    proc = subprocess.run([sys.executable, "-c", PEAK], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    chunked, unchunked = peaks["512"], peaks["None"]
    assert unchunked > 5e9  # the test measures what it means to
    assert chunked * 4 <= unchunked, (chunked, unchunked)
