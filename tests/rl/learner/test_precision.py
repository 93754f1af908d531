"""The sharded learner's GPU path on the CPU (FSDP2 with the bf16 mixed-precision policy on a gloo rank): the
log-prob head sees the samples' temperature and top-p in fp32, exactly as drawn (bf16 would round T 0.7 to
0.69921875 and top-p 0.99 to 0.98828125), and the root unit is resharded after a pass without a backward."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[3]

PROBE = textwrap.dedent("""
    import json, sys, tempfile
    import torch, torch.distributed as dist
    import model.modeling as modeling
    from model.processor import Processor
    from rl.config import AlgoConfig, LearnerConfig
    from rl.learner import LocalLearner, TrainSample

    ckpt = sys.argv[1]
    dist.init_process_group("gloo", init_method=f"file://{tempfile.mkdtemp()}/store", rank=0, world_size=1)
    seen = []
    head = modeling.token_logprobs
    def spy(hidden, lm_head, targets, temperature, top_k, top_p, **kw):
        seen.append({"hidden": str(hidden.dtype), "temperature": str(temperature.dtype),
                     "top_p": str(top_p.dtype), "t_values": sorted(set(temperature.tolist())),
                     "p_values": sorted(set(top_p.tolist()))})
        return head(hidden, lm_head, targets, temperature, top_k, top_p, **kw)
    modeling.token_logprobs = spy
    learner = LocalLearner(ckpt, LearnerConfig(lora=False, cpu_bf16=True, entropy_metric=False),
                           AlgoConfig(kl="k3", kl_coef=0.1), device="cpu", sharded=True)
    proc = Processor.from_pretrained(ckpt)
    prompt = proc([{"role": "user", "content": "What is 1+1?"}], "short")
    samples = [TrainSample(prompt, [5, 6, 7, 8], 1.0, None, "short", 0.7, 0, 0.99),
               TrainSample(prompt, [9, 10], -1.0, None, "short", 0.7, 0, 0.99)]
    learner.logprobs(samples, reference=True)
    root_states = {name: m._get_fsdp_state()._fsdp_param_group.is_sharded
                   for name, m in (("reference", learner._ref_model),)}
    learner.step(samples)
    print(json.dumps({"seen": seen, "resharded": root_states,
                      "finite": all(bool(torch.isfinite(p.to_local()).all()) for p in learner.params)}))
    dist.destroy_process_group()
""")


def test_the_head_sees_fp32_sampling_parameters_under_the_bf16_fsdp_policy(tiny_ckpt):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tiny_ckpt)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["seen"], "the log-prob head never ran"
    for call in result["seen"]:
        assert call["hidden"] == "torch.bfloat16"  # the bf16 policy is on
        assert call["temperature"] == call["top_p"] == "torch.float32"
        assert call["t_values"] == [0.699999988079071]  # float32(0.7), not bfloat16's 0.69921875
        assert call["p_values"] == [0.9900000095367432]  # float32(0.99), not 0.98828125
    assert result["resharded"] == {"reference": True}  # the reference's root unit freed after its pass
    assert result["finite"]
