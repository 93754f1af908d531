import hashlib
import subprocess
import sys

from model import MiniCPMV
from model.tiny import build_tiny_checkpoint


def digest(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


def test_deterministic_for_a_seed(tmp_path):
    a = digest(build_tiny_checkpoint(tmp_path / "a", seed=3))
    b = digest(build_tiny_checkpoint(tmp_path / "b", seed=3))
    c = digest(build_tiny_checkpoint(tmp_path / "c", seed=4))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["tokenizer.json"] == c["tokenizer.json"]


def test_directory_has_what_vllm_loads(tiny_ckpt):
    names = {f.name for f in tiny_ckpt.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
            "processor_config.json", "configuration_minicpm.py", "image_processing_minicpmv.py",
            "processing_minicpmv.py"} <= names
    model = MiniCPMV.from_pretrained(tiny_ckpt)
    assert model.config.hidden_size % 128 == 0 and model.config.head_dim >= 32


def test_tokenizer_has_the_release_tokens(processor):
    tok = processor.tokenizer
    for t in ("<unk>", "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>", "<think>",
              "</think>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id or t == "<unk>", t
    assert tok.bos_token is not None
    ids = tok.encode("<think>\nreason</think>\n\n42<|im_end|>", add_special_tokens=False)
    text = tok.decode(ids, skip_special_tokens=True)
    assert "<think>" in text and "</think>" in text and "<|im_end|>" not in text


def test_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "model.tiny", str(tmp_path / "cli"), "--seed", "1"],
                         capture_output=True, text=True, check=True)
    assert "random-weight MiniCPM-V 4.5 (preset tiny" in out.stdout
    assert (tmp_path / "cli" / "model.safetensors").is_file()


def test_cli_error_is_one_line(tmp_path, capsys):
    from model.tiny import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(blocker / "ckpt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rl-tiny-model: error: {blocker / 'ckpt'}: ") and "\n" not in err
