"""Bad input is a bad row, never a crash: images that do not decode (decompression bombs included) and prompts
longer than `data.max_prompt_tokens`, at load and when a row is first drawn (`check_images: lazy`)."""

import io
import warnings

import PIL.Image
import pytest
from datasets import Dataset

from model.processor import DEFAULT_MAX_IMAGE_PIXELS, InputError, load_image
from rl.data import DataConfig, PromptDataset, RowError, load_rows
from rl.data.loader import prompt_tokens

from .conftest import BOMB_SIZE, bilevel_png, png_bytes, write_jsonl

GOOD = {"question": "How many?", "answer": "1", "reward": "number"}


def noise_png(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.frombytes("RGB", size, bytes((i * 37 + i // 7) % 251 for i in range(size[0] * size[1] * 3))).save(
        buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def bomb_data(tmp_path, bomb_bytes):
    """Rows a (good image), b (the 20000x20000 bomb), c (good image)."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "good.png").write_bytes(png_bytes())
    (tmp_path / "img" / "bomb.png").write_bytes(bomb_bytes)
    lines = [dict(GOOD, id=k, images=[f"img/{name}.png"]) for k, name in (("a", "good"), ("b", "bomb"), ("c", "good"))]
    return write_jsonl(tmp_path / "train.jsonl", lines)


@pytest.fixture
def no_bomb_warnings():
    """Fails the test if PIL warned (DecompressionBombWarning) or its process-wide limit changed."""
    limit = PIL.Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, PIL.Image.DecompressionBombWarning)]
    assert PIL.Image.MAX_IMAGE_PIXELS == limit


def test_the_bomb_is_one_to_pil(bomb_bytes):
    assert len(bomb_bytes) < 100_000
    assert DEFAULT_MAX_IMAGE_PIXELS == PIL.Image.MAX_IMAGE_PIXELS == DataConfig(path="x").max_image_pixels
    with pytest.raises(PIL.Image.DecompressionBombError):  # what ended the run before
        PIL.Image.open(io.BytesIO(bomb_bytes))


def bomb_error_ok(message: str, path) -> None:
    assert message.startswith(f"{path}: row 2: field 'images[0]': the image is 20000x20000 = 400000000 pixels, "
                              f"over the limit of {DEFAULT_MAX_IMAGE_PIXELS} pixels"), message
    assert "data.max_image_pixels" in message


def test_bomb_at_load_is_a_bad_row(bomb_data, no_bomb_warnings):
    rows, report = load_rows(bomb_data)  # check_images: load
    assert [r.id for r in rows] == ["a", "c"] and (report.read, report.kept, report.bad) == (3, 2, 1)
    bomb_error_ok(report.errors[0], bomb_data)
    data = PromptDataset.from_config(DataConfig(path=str(bomb_data), shuffle=False))
    assert [r.id for r in data.take(3)] == ["a", "c", "a"] and data.bad_rows == 1  # the run goes on
    with pytest.raises(RowError) as info:
        load_rows(bomb_data, on_bad_row="fail")
    assert (info.value.source, info.value.row, info.value.field) == (str(bomb_data), 2, "images[0]")
    bomb_error_ok(str(info.value), bomb_data)


def test_bomb_drawn_lazily_is_a_bad_row(bomb_data, no_bomb_warnings):
    data = PromptDataset.from_config(DataConfig(path=str(bomb_data), shuffle=False, check_images="lazy"))
    assert len(data) == 3 and data.bad_rows == 0  # exists and is not empty: not decoded at load
    assert [r.id for r in data.take(4)] == ["a", "c", "a", "c"]  # b skipped when first drawn; the run goes on
    assert data.bad_rows == 1
    bomb_error_ok(data.errors[0], bomb_data)
    strict = PromptDataset.from_config(DataConfig(path=str(bomb_data), shuffle=False, check_images="lazy",
                                                  on_bad_row="fail"))
    assert strict.take(1)[0].id == "a"
    with pytest.raises(RowError) as info:
        strict.take(1)
    assert (info.value.source, info.value.row, info.value.field) == (str(bomb_data), 2, "images[0]")
    bomb_error_ok(str(info.value), bomb_data)


def test_bomb_bytes_in_parquet_are_a_bad_row(tmp_path, bomb_bytes, no_bomb_warnings):
    path = tmp_path / "train.parquet"
    Dataset.from_list([dict(GOOD, id="a", images=[png_bytes()]), dict(GOOD, id="b", images=[bomb_bytes])]).to_parquet(
        str(path))
    rows, report = load_rows(path)
    assert [r.id for r in rows] == ["a"] and report.bad == 1
    assert report.errors[0].startswith(f"{path}: row 2: field 'images[0]': the image is 20000x20000"), report.errors


BAD_IMAGES = {  # file bytes -> a fragment of the problem
    "truncated": (lambda: noise_png()[: len(noise_png()) // 2], "cannot decode image"),
    "zero_width": (lambda: bilevel_png(0, 10), "cannot decode image"),
    "not_an_image": (lambda: b"GIF89a but not really" * 3, "cannot decode image"),
    "bomb": (lambda: bilevel_png(*BOMB_SIZE), "over the limit"),
}


@pytest.mark.parametrize("check", ["load", "lazy"])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_every_decode_failure_is_a_row_error(tmp_path, case, check, no_bomb_warnings):
    make, problem = BAD_IMAGES[case]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "good.png").write_bytes(png_bytes())
    (tmp_path / "img" / "bad.png").write_bytes(make())
    path = write_jsonl(tmp_path / "d.jsonl", [dict(GOOD, id="a", images=["img/good.png"]),
                                              dict(GOOD, id="b", images=["img/good.png", "img/bad.png"])])
    for on_bad_row in ("skip", "fail"):
        cfg = DataConfig(path=str(path), shuffle=False, check_images=check, on_bad_row=on_bad_row)
        try:
            data = PromptDataset.from_config(cfg)
            ids = [r.id for r in data.take(3)]
        except RowError as e:
            assert on_bad_row == "fail"
            assert (e.source, e.row, e.field) == (str(path), 2, "images[1]") and problem in e.problem, e
            continue
        assert on_bad_row == "skip" and ids == ["a", "a", "a"] and data.bad_rows == 1
        assert data.errors[0].startswith(f"{path}: row 2: field 'images[1]': ") and problem in data.errors[0]


@pytest.mark.parametrize("check", ["load", "lazy"])
def test_max_image_pixels_is_the_configured_limit(tmp_path, check, no_bomb_warnings):
    (tmp_path / "img").mkdir()
    for name, size in (("small", (16, 16)), ("mid", (40, 40))):  # 256 and 1600 pixels
        (tmp_path / "img" / f"{name}.png").write_bytes(png_bytes(size=size))
    path = write_jsonl(tmp_path / "d.jsonl", [dict(GOOD, id="small", images=["img/small.png"]),
                                              dict(GOOD, id="mid", images=["img/mid.png"])])
    # 1600 is within twice the limit, where PIL would only warn: the configured limit is exact
    data = PromptDataset.from_config(DataConfig(path=str(path), shuffle=False, check_images=check,
                                                max_image_pixels=1000))
    assert [r.id for r in data.take(3)] == ["small"] * 3 and data.bad_rows == 1
    assert "the image is 40x40 = 1600 pixels, over the limit of 1000 pixels" in data.errors[0]
    with pytest.raises(RowError, match="row 2: field 'images\\[0\\]': the image is 40x40"):
        PromptDataset.from_config(DataConfig(path=str(path), shuffle=False, check_images=check,
                                             max_image_pixels=1000, on_bad_row="fail")).take(3)
    for limit in (1600, None):
        data = PromptDataset.from_config(DataConfig(path=str(path), shuffle=False, check_images=check,
                                                    max_image_pixels=limit))
        assert sorted(r.id for r in data.take(2)) == ["mid", "small"] and data.bad_rows == 0


def test_the_limit_is_passed_through_not_left_in_pil(tmp_path, monkeypatch):
    """A process that lowered PIL's own limit: the configured one applies to rows, PIL's is as it was after."""
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    (tmp_path / "img.png").write_bytes(png_bytes(size=(40, 40)))  # 1600 > 2 x 100: PIL alone would refuse it
    path = write_jsonl(tmp_path / "d.jsonl", [dict(GOOD, images=["img.png"])])
    rows, report = load_rows(path, max_image_pixels=10_000, on_bad_row="fail")
    assert len(rows) == 1 and PIL.Image.MAX_IMAGE_PIXELS == 100
    rows[0].check_images(10_000)
    assert PIL.Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(InputError, match="DecompressionBombError"):  # PIL's own limit, untouched by default
        load_image(tmp_path / "img.png")


def test_the_processor_decodes_under_the_configured_limit(tmp_path, monkeypatch, tiny_ckpt):
    """The rollout workers' processor takes `data.max_image_pixels` too: an image the data check let through (over
    PIL's own limit) also decodes there, and one over the configured limit fails there with the limit named."""
    from model.processor import Processor

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    (tmp_path / "img.png").write_bytes(png_bytes(size=(40, 40)))  # 1600 > 2 x 100: PIL alone would refuse it
    messages = [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "img.png")},
                                             {"type": "text", "text": "What is it?"}]}]
    with pytest.raises(InputError, match="DecompressionBombError"):
        Processor.from_pretrained(tiny_ckpt)(messages, "short")  # PIL's limit, as before
    prompt = Processor.from_pretrained(tiny_ckpt, max_image_pixels=10_000)(messages, "short")
    assert len(prompt.pixel_values) >= 1 and PIL.Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(InputError, match=r"messages\[0\]\.content\[0\]\.image: the image is 40x40 = 1600 pixels, "
                                         "over the limit of 1000"):
        Processor.from_pretrained(tiny_ckpt, max_image_pixels=1000)(messages, "short")


def test_load_image_raises_only_input_errors(tmp_path, bomb_bytes):
    bombs = [bomb_bytes, memoryview(bomb_bytes)]
    cases = bombs + [b"", b"junk", noise_png()[:100], bilevel_png(10, 0), PIL.Image.new("RGB", (0, 4)),
                     tmp_path / "missing.png", 3.5]
    for k, source in enumerate(cases):
        for limit in ("pil", None, 10_000, DEFAULT_MAX_IMAGE_PIXELS):
            if limit is None and k < len(bombs):
                continue  # no limit: a bomb is a good image (that would really be decoded: 400M pixels)
            for decode in (True, False) if k != 4 else (True,):  # 4, truncated: its header reads well
                with pytest.raises(InputError, match="^where: "):
                    load_image(source, "where", limit, decode=decode)
    assert load_image(bomb_bytes, "x", None, decode=False).size == BOMB_SIZE  # the header alone
    assert load_image(memoryview(png_bytes()), "x", 256).size == (16, 16)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(png_bytes(), "x", 0)


# ---- prompt length ----

def length_rows(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "small.png").write_bytes(png_bytes(size=(16, 16)))
    (tmp_path / "img" / "wide.png").write_bytes(png_bytes(size=(1500, 500)))  # sliced into a grid
    return [
        dict(GOOD, id="text", question="What is 2 + 2?"),
        dict(GOOD, id="small", images=["img/small.png"]),
        dict(GOOD, id="wide", images=["img/wide.png"], mode="long"),
        dict(GOOD, id="two", images=["img/wide.png", "img/small.png"], mode="short",
             question="Compare the two pictures. " * 20),
        {"id": "chat", "answer": "1", "reward": "number", "images": ["img/small.png"], "mode": "auto",
         "messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]},
    ]


def test_prompt_tokens_are_the_processors(tmp_path, processor):
    path = write_jsonl(tmp_path / "d.jsonl", length_rows(tmp_path))
    rows, _ = load_rows(path, on_bad_row="fail")
    for row in rows:
        counts = {m: len(processor(PromptDataset.to_request(row, m).messages, m).input_ids)
                  for m in ("short", "long", "auto")}
        for m, n in counts.items():
            assert prompt_tokens(row, processor, m) == (n, m), (row.id, m)
        expected = counts[row.mode] if row.mode else max(counts["short"], counts["long"])
        assert prompt_tokens(row, processor)[0] == expected, row.id
    wide = next(r for r in rows if r.id == "wide")
    assert prompt_tokens(wide, processor)[0] > prompt_tokens(rows[1], processor)[0] + 100  # the slices count


def test_max_prompt_tokens_makes_long_prompts_bad_rows(tmp_path, processor):
    path = write_jsonl(tmp_path / "d.jsonl", length_rows(tmp_path))
    rows, _ = load_rows(path)
    tokens = {r.id: prompt_tokens(r, processor)[0] for r in rows}
    limit = tokens["small"]  # the text row and this one fit; the others do not
    assert tokens["text"] <= limit < min(tokens["wide"], tokens["two"], tokens["chat"])
    data = PromptDataset.from_config(DataConfig(path=str(path), shuffle=False, max_prompt_tokens=limit),
                                     processor=processor)
    assert [r.id for r in data.rows] == ["text", "small"] and data.bad_rows == 3
    assert data.errors[0] == (f"{path}: row 3: prompt of {tokens['wide']} tokens > data.max_prompt_tokens={limit} "
                              "(long mode, text and image tokens)")
    with pytest.raises(RowError, match=f"row 3: prompt of {tokens['wide']} tokens > data.max_prompt_tokens="):
        PromptDataset.from_config(DataConfig(path=str(path), max_prompt_tokens=limit, on_bad_row="fail"),
                                  processor=processor)
    lazy = PromptDataset.from_config(DataConfig(path=str(path), check_images="lazy", max_prompt_tokens=limit),
                                     processor=processor)
    assert sorted(r.id for r in lazy.rows) == ["small", "text"]


def test_max_prompt_tokens_needs_the_processor_and_none_skips_it(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", length_rows(tmp_path))
    with pytest.raises(ValueError, match="needs the model's processor"):
        PromptDataset.from_config(DataConfig(path=str(path), max_prompt_tokens=100))

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError("the processor is not used without data.max_prompt_tokens")

    data = PromptDataset.from_config(DataConfig(path=str(path)), processor=Untouchable())
    assert len(data) == 5 and data.bad_rows == 0


def test_prompt_length_check_reads_a_lazy_bomb_header(bomb_data, processor, no_bomb_warnings):
    data = PromptDataset.from_config(DataConfig(path=str(bomb_data), check_images="lazy", max_prompt_tokens=10_000),
                                     processor=processor)
    assert sorted(r.id for r in data.rows) == ["a", "c"] and data.bad_rows == 1
    bomb_error_ok(data.errors[0], bomb_data)


def test_a_prompt_the_engine_could_not_serve_is_a_bad_row_before_anything_starts(tiny_ckpt, tmp_path):
    """Without data.max_prompt_tokens, a run's limit is the engine's context less the longest mode's budget: an
    over-long question is a bad row at load (named under fail), before Ray or an engine starts."""
    import ray

    from rl.config import load
    from rl.trainer import Trainer

    path = write_jsonl(tmp_path / "d.jsonl", [dict(GOOD, id="short"), dict(GOOD, id="huge", question="word " * 3000)])
    cfg = load("configs/tiny_cpu.yaml", [f"model.path={tiny_ckpt}", f"data.path={path}", f"run.dir={tmp_path / 'r'}",
                                         "data.on_bad_row=fail"])
    assert cfg.prompt_token_limit() == 2048 - 48  # tiny_cpu.yaml: max_model_len 2048, long/auto 48 new tokens
    assert cfg.data.max_prompt_tokens is None  # derived where it is used, so overrides of the context still apply
    assert load(None).prompt_token_limit() == 10240 - 8192
    assert load(None, ["data.max_prompt_tokens=1000"]).prompt_token_limit() == 1000
    assert load("configs/tiny_cpu.yaml", ["rollout.max_model_len=60", "rollout.short.max_new_tokens=8",
                                          "rollout.long.max_new_tokens=8", "rollout.auto.max_new_tokens=8"]
                ).prompt_token_limit() == 52
    started = ray.is_initialized()
    with pytest.raises(RowError, match=r"row 2: prompt of \d+ tokens > data.max_prompt_tokens=2000"):
        Trainer(cfg)
    assert ray.is_initialized() == started  # nothing was started for it
