"""A small byte-level BPE tokenizer with MiniCPM-V 4.5's special tokens and chat template, built locally.

The released tokenizer (Qwen3's 151k BPE + MiniCPM-V tokens) cannot be downloaded in tests, so the tiny checkpoint
carries this one: the same pre-tokenizer (Qwen2's split regex + byte-level), the same special and added tokens
(ids differ), the same chat template with the `enable_thinking` switch. Deterministic: trained on a fixed corpus.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from core.modes import THINK_CLOSE, THINK_OPEN

PAD, BOS, EOS, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"
# Special tokens of the release (skipped when decoding with skip_special_tokens).
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>",
                  "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>",
                  "<unit>", "</unit>"]
# Added but NOT special: they survive decoding, so the reward can find the end of the thinking.
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML with the thinking switch of MiniCPM-V 4.5 (Qwen3 style):
#   enable_thinking=false -> the assistant turn is pre-filled with an empty think block (short mode)
#   enable_thinking=true  -> the assistant turn is pre-filled with "<think>\n" (long mode)
#   undefined             -> nothing is pre-filled; the model chooses (auto mode)
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if not loop.first %}{{- '\\n' }}{%- endif %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] }}"
    "{%- elif part['type'] == 'image' %}{{- '(<image>./</image>)' }}"
    "{%- elif part['type'] == 'video' %}{{- '(<video>./</video>)' }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- elif enable_thinking is defined and enable_thinking is true %}{{- '<think>\\n' }}{%- endif %}"
    "{%- endif %}"
)

_WORDS = ("the a an of to and in is it that what how many which answer image picture question count number "
          "color red green blue yellow black white shape circle square triangle star left right top bottom "
          "there are shown show think step first then so total sum plus minus times divided equals final "
          "let me look at see each one two three four five six seven eight nine ten chart bar value "
          "option choose correct because therefore wait check again yes no true false box boxed frac sqrt pi "
          "system user assistant you helpful reason carefully").split()


def _corpus() -> list[str]:
    lines = [" ".join(_WORDS[i:i + 7]) for i in range(0, len(_WORDS), 3)]
    lines += [f"{a} + {b} = {a + b}. {a} x {b} = {a * b}." for a in range(0, 40, 3) for b in range(0, 30, 4)]
    lines += [f"The answer is ({c}). Option {c}: {w}." for c in "ABCDE" for w in _WORDS[:30]]
    lines += [string.ascii_letters, string.digits, string.punctuation, "\\boxed{42} \\frac{1}{2} \\sqrt{2} x^2"]
    return lines * 3


def build_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens(THINK_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        chat_template=CHAT_TEMPLATE, model_max_length=8192, clean_up_tokenization_spaces=False,
        add_bos_token=False, add_eos_token=False)


def save_tokenizer(path: str | Path, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tokenizer = build_tokenizer(vocab_size)
    tokenizer.save_pretrained(str(path))
    return tokenizer
