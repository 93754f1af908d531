"""The engine loop (rollouts/vllm/loop.py) on a scripted engine: after a failed engine step the requests that were in flight
run again in halves, bisecting to the one that fails alone, so one bad request costs a few steps, not a solo run of
every request in the batch; a dead or hung engine is not retried: what it held fails once and the loop reports it."""

import queue
import threading
from types import SimpleNamespace

import pytest

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
    items = [EngineItem(k, {"poison": k == "r11"}, None, out) for k in keys]
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
    loop.add([EngineItem("bad", {"poison": True}, None, out)])
    key, error = out.get(timeout=10)
    loop.add([EngineItem("good", {}, None, out)])
    assert out.get(timeout=10)[1].finished
    loop.close(lambda: None)
    assert key == "bad" and isinstance(error, RuntimeError) and [len(s) for s in engine.steps[:2]] == [1, 1]


class DyingEngine(ScriptedEngine):
    """A multiprocess engine whose core dies: from `die_at` steps on, a step blocks forever (vLLM's client waiting
    for output that never comes) and vLLM's monitor flags the client dead; `hang` blocks without the flag (a core
    that hangs), `raise_dead` raises vLLM's EngineDeadError instead."""

    def __init__(self, die_at: int, mode: str):
        super().__init__(length=50)
        self.die_at, self.mode = die_at, mode
        self.engine_core = SimpleNamespace(resources=SimpleNamespace(engine_dead=False))

    def step(self):
        if len(self.steps) >= self.die_at:
            if self.mode == "raise_dead":
                from vllm.v1.engine.exceptions import EngineDeadError

                raise EngineDeadError()
            self.engine_core.resources.engine_dead = self.mode == "dead"
            threading.Event().wait()  # never returns
        return super().step()



@pytest.mark.parametrize("mode", ["dead", "hang", "raise_dead"])
def test_a_dead_or_hung_engine_fails_what_it_holds_once_and_reports_itself(mode):
    from rollouts.vllm.loop import EngineLost

    engine = DyingEngine(die_at=2, mode=mode)
    told = []
    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=engine), add, stall_timeout_s=1.0, on_dead=told.append,
                      watch_every_s=0.1)
    out: queue.Queue = queue.Queue()
    loop.add([EngineItem(f"r{i}", {}, None, out) for i in range(4)])
    got = dict(out.get(timeout=20) for _ in range(4))
    assert all(isinstance(v, EngineLost) for v in got.values())  # each once, none retried on the dead engine
    assert len(engine.steps) == 2 and len(told) == 1
    assert {"dead": "engine core died", "hang": "stall_timeout_s=1", "raise_dead": "EngineDeadError"}[mode] in told[0]
    with pytest.raises(EngineLost):
        loop.call(lambda: None)  # a weight load on a lost engine: the same error, at once
    with pytest.raises(EngineLost):
        loop.add([EngineItem("late", {}, None, out)])


def test_an_in_flight_call_runs_between_steps_with_the_requests_kept_and_a_hold_stops_the_steps():
    engine = ScriptedEngine(length=10**9)
    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=engine), add)
    out: queue.Queue = queue.Queue()
    loop.add([EngineItem("long", {}, None, out)])
    while len(engine.steps) < 3:
        pass
    seen = loop.call(lambda: (set(engine.left), loop.unfinished()), in_flight=True, hold=True)
    assert seen == ({"long"}, ({"long"}, set()))  # ran with the request in the engine, and it is still there
    held_at = len(engine.steps)
    threading.Event().wait(0.2)
    assert len(engine.steps) == held_at  # held: no step
    assert loop.call(lambda: "released", in_flight=True, hold=False) == "released"
    while len(engine.steps) < held_at + 3:
        pass
    with pytest.raises(ValueError, match="in-flight"):
        loop.call(lambda: None, hold=True)
    with pytest.raises(RuntimeError, match="failed while held"):
        loop.call(lambda: (_ for _ in ()).throw(RuntimeError("failed while held")), in_flight=True, hold=True)
    steps = len(engine.steps)
    while len(engine.steps) < steps + 3:  # a call that raised released the hold
        pass
    loop.abort(["long"])
    loop.close(lambda: None)


def test_a_control_call_is_not_starved_by_requests_added_while_it_waits():
    """A call waits for an idle engine; requests added meanwhile (a producer that never stops) wait for the call, so
    the engine drains, the call runs, then they start."""
    class Slow(ScriptedEngine):
        def step(self):
            threading.Event().wait(0.01)
            return super().step()

    engine = Slow(length=20)
    loop = EngineLoop(lambda: SimpleNamespace(llm_engine=engine), add)
    out: queue.Queue = queue.Queue()
    loop.add([EngineItem("first", {}, None, out)])
    while not engine.steps:
        pass
    ran = []
    call = threading.Thread(target=lambda: ran.append(loop.call(lambda: (set(engine.left), len(engine.steps)))))
    call.start()
    threading.Event().wait(0.05)
    for k in range(5):  # each would keep the engine busy past the call, were it started at once
        loop.add([EngineItem(f"next{k}", {}, None, out)])
        threading.Event().wait(0.05)
    call.join(10)
    [(in_engine, step)] = ran
    assert in_engine == set() and step == 20  # after "first" alone finished: the later ones waited
    assert {out.get(timeout=10)[0] for _ in range(6)} == {"first", *(f"next{k}" for k in range(5))}
    assert all(not ({"first"} & s and any(k.startswith("next") for k in s)) for s in engine.steps)
    loop.close(lambda: None)
