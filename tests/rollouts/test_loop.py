"""The engine loop (rollouts/vllm/loop.py) on a scripted engine: after a failed engine step the requests that were in flight
run again in halves, bisecting to the one that fails alone, so one bad request costs a few steps, not a solo run of
every request in the batch."""

import queue
from types import SimpleNamespace

from rollouts.vllm.loop import EngineItem, EngineLoop


class ScriptedEngine:
    """Each request finishes after `length` steps; a step with a `poison` request in flight raises. Records the
    requests in flight at every step."""

    def __init__(self, length: int = 3):
        self.length = length
        self.left: dict[str, int] = {}
        self.poison: set[str] = set()
        self.steps: list[set[str]] = []
        self.output_processor = SimpleNamespace(request_states=self.left)

    def step(self):
        self.steps.append(set(self.left))
        if self.poison & set(self.left):
            raise RuntimeError("the model runner failed")
        done = []
        for key in list(self.left):
            self.left[key] -= 1
            if self.left[key] == 0:
                del self.left[key]
                done.append(SimpleNamespace(request_id=key, finished=True))
        return done

    def abort_request(self, keys, internal=False):
        for key in keys:
            self.left.pop(key, None)


def add(llm, item: EngineItem) -> None:
    llm.llm_engine.left[item.key] = llm.llm_engine.length
    if item.prompt.get("poison"):
        llm.llm_engine.poison.add(item.key)


def test_a_failed_step_is_retried_in_halves_down_to_the_request_that_fails_alone():
    engine = ScriptedEngine()
    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=engine), add)
    out: queue.Queue = queue.Queue()
    keys = [f"r{i}" for i in range(16)]
    items = [EngineItem(k, {"poison": k == "r11"}, None, None, out) for k in keys]
    loop.add(items)
    got = dict(out.get(timeout=10) for _ in keys)
    loop.close(lambda: None)
    assert isinstance(got.pop("r11"), RuntimeError)  # the bad one fails, alone
    assert all(getattr(v, "finished", False) for v in got.values()) and len(got) == 15  # the rest finish
    failed = [s for s in engine.steps if "r11" in s]
    assert [len(s) for s in failed] == [16, 8, 4, 2, 1]  # the failed batch, then halves down to the bad one alone
    assert max(len(s) for s in engine.steps if "r11" not in s and len(s) < 16) == 8  # good halves run together
    assert len(engine.steps) == 5 + 4 * engine.length  # 4 good parts run once each (8, 2, 1 and 4 requests): not
    # 15 solo runs of 3 steps each


def test_a_request_that_fails_in_a_step_of_its_own_is_tried_once_more_alone():
    engine = ScriptedEngine()
    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=engine), add)
    out: queue.Queue = queue.Queue()
    loop.add([EngineItem("bad", {"poison": True}, None, None, out)])
    key, error = out.get(timeout=10)
    loop.add([EngineItem("good", {}, None, None, out)])
    assert out.get(timeout=10)[1].finished
    loop.close(lambda: None)
    assert key == "bad" and isinstance(error, RuntimeError) and [len(s) for s in engine.steps[:2]] == [1, 1]
