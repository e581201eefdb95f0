"""Workloads: synthetic prompts of exact length, datasets, seeds, cache busting."""

import asyncio
import json

import pytest

from conftest import load_json, tpsload
from tpsload.config import TpsloadError
from tpsload.workload import datasets
from tpsload.workload.spec import RequestSpec, Workload, WorkloadParams, fit, length_targets, synthesize


async def words(text):
    return len(text.split())


async def chars3(text):  # a tokenizer whose tokens do not line up with words
    return (len(text) + 2) // 3


def run(coro):
    return asyncio.run(coro)


def test_length_targets_are_seeded_and_clipped():
    a = length_targets(100, 500, 50, 450, 520, seed=3)
    assert a == length_targets(100, 500, 50, 450, 520, seed=3)
    assert a != length_targets(100, 500, 50, 450, 520, seed=4)
    assert min(a) >= 450 and max(a) <= 520 and 480 < sum(a) / len(a) < 510
    assert length_targets(3, 64, 0, None, None, 0) == [64, 64, 64]


@pytest.mark.parametrize("counter", [words, chars3])
@pytest.mark.parametrize("target", [1, 7, 64, 512])
def test_fit_hits_the_target_exactly(counter, target):
    text, n = run(fit(counter, "Request 1: ", ["lorem", "ip", "dolorsitamet", "a", "bb"] * 400, target))
    assert n == target == run(counter(text)) or (run(counter("Request 1: ")) > target)


def test_synthesize_seed_cache_bust_and_shared_prefix():
    p1, m1 = run(synthesize(words, [40] * 20, seed=1, shared_prefix=0, cache_bust=True))
    p2, _ = run(synthesize(words, [40] * 20, seed=1, shared_prefix=0, cache_bust=True))
    p3, _ = run(synthesize(words, [40] * 20, seed=2, shared_prefix=0, cache_bust=True))
    assert p1 == p2 and p1 != p3
    assert m1 == [40] * 20 and all(len(p.split()) == 40 for p in p1)
    assert len({p.split()[0] for p in p1}) == 20  # unique from the tag's first word on
    shared, m = run(synthesize(words, [40] * 5, seed=1, shared_prefix=16, cache_bust=True))
    assert m == [40] * 5
    assert len({" ".join(p.split()[:16]) for p in shared}) == 1
    assert len({" ".join(p.split()[:17]) for p in shared}) == 5  # then the tag "<hash> Request i:"
    # the server's own overhead (BOS, chat template) counts towards the target
    _, m = run(synthesize(words, [40], seed=1, shared_prefix=0, cache_bust=True, overhead=6))
    assert m == [40]


def write(path, text):
    path.write_text(text)
    return str(path)


def test_dataset_formats(tmp_path):
    assert [i.prompt for i in datasets.load_text(write(tmp_path / "p.txt", "a\n\nb\n"))] == ["a", "b"]
    jl = write(tmp_path / "d.jsonl", '{"prompt": "hi", "max_tokens": 5}\n\n'
                                     '{"messages": [{"role": "user", "content": "yo"}]}\n')
    items = datasets.load_jsonl(jl)
    assert items[0] == RequestSpec(prompt="hi", max_tokens=5)
    assert items[1].messages == ({"role": "user", "content": "yo"},)
    sg = write(tmp_path / "s.json", json.dumps([
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "Q1"},
                           {"from": "gpt", "value": "A one two"}]},
        {"conversations": [{"from": "human", "value": "Q2"}]},
    ]))
    pairs = datasets.load_sharegpt(sg)
    assert [(s.prompt, r) for s, r in pairs] == [("Q1", "A one two"), ("Q2", "")]


@pytest.mark.parametrize("content,where", [
    ('{"prompt": "ok"}\n{"prompt": \n', ":2: not valid JSON"),
    ('{"prompt": "ok"}\n[1, 2]\n', ":2: expected a JSON object"),
    ('{"text": "x"}\n', ":1: expected a string 'prompt'"),
    ('{"prompt": "x", "max_tokens": -1}\n', ":1: 'max_tokens' must be a positive integer"),
    ('{"messages": [{"content": "x"}]}\n', ":1: each message needs 'role'"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, content, where):
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(TpsloadError, match="bad.jsonl" + where):
        datasets.load_jsonl(path)


def test_malformed_sharegpt_names_the_entry(tmp_path):
    path = write(tmp_path / "bad.json", json.dumps([{"conversations": [{"from": "human"}]}]))
    with pytest.raises(TpsloadError, match="bad.json: entry 0: turn 0"):
        datasets.load_sharegpt(path)


def test_same_seed_same_order(tmp_path):
    items = [RequestSpec(prompt=str(i)) for i in range(50)]
    assert datasets.shuffled(items, 5) == datasets.shuffled(items, 5) != datasets.shuffled(items, 6)


def test_system_prompt_and_per_request_max_tokens():
    w = Workload([RequestSpec(prompt="q", max_tokens=3)], WorkloadParams(model="m", max_tokens=99, system="be brief"),
                 {})
    body = w.request(0)
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]
    assert body["max_tokens"] == 3


def test_cli_synthetic_against_mock_is_exact_and_reproducible(mock_server, tmp_path):
    # the mock counts a prompt's words; the offline word counter is then exact
    m = mock_server(ttft_ms=2, itl_ms=1)
    saved = []
    for name in ("a", "b"):
        out, save = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
        tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "10", "--input-tokens", "64",
                "--input-tokens-stddev", "8", "--output-tokens", "12", "--seed", "7", "--cache-salt", "s",
                "--save-prompts", str(save),
                "--json", str(out), check=0)
        res = load_json(out)
        w = res["workload"]
        assert w["source"] == "synthetic" and w["seed"] == 7
        obs = w["observed"]
        assert obs["input_length_error"]["max"] == 0
        assert obs["output_tokens"]["min"] == obs["output_tokens"]["max"] == 12 and obs["stopped_early"] == 0
        assert res["config"]["ignore_eos"] is True and res["config"]["max_tokens"] == 12
        saved.append(save.read_text())
    assert saved[0] == saved[1] and len(saved[0].splitlines()) == 10
    # the saved prompts are a dataset: the same requests again
    out = tmp_path / "c.json"
    tpsload("run", "--base-url", m.base_url, "-n", "10", "--dataset", str(tmp_path / "a.jsonl"), "--json", str(out),
            check=0)
    assert load_json(out)["summary"]["requests_ok"] == 10


def test_cli_dataset_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    p = tpsload("run", "--mock", "--dataset", str(bad), check=2)
    assert "bad.jsonl:2: not valid JSON" in p.stderr and p.stderr.count("\n") == 1


def test_cli_contradictory_workload_flags():
    p = tpsload("run", "--mock", "--prompt", "x", "--input-tokens", "5", check=2)
    assert "--prompt or --input-tokens" in p.stderr
    p = tpsload("run", "--mock", "--output-tokens", "5", "--max-tokens", "9", check=2)
    assert "--output-tokens or --max-tokens" in p.stderr
    p = tpsload("run", "--mock", "--input-tokens", "10", "--shared-prefix", "20", check=2)
    assert "--shared-prefix" in p.stderr


def test_checks_warn_on_length_error_and_early_stops():
    from tpsload.records import RequestRecord
    from tpsload.workload.checks import workload_checks

    w = Workload([RequestSpec(prompt="p", input_tokens=100)], WorkloadParams(max_tokens=50), {})
    recs = []
    for i, (pt, out) in enumerate([(100, 50), (120, 50), (110, 20)]):
        r = RequestRecord(index=i, t_send=1, t_end=2)
        r.prompt_tokens, r.output_tokens = pt, out
        recs.append(r)
    observed, warnings = workload_checks(recs, w)
    assert observed["input_length_error"]["mean"] == pytest.approx(0.1)
    assert observed["stopped_early"] == 1
    assert any("10% off their requested length" in x for x in warnings)
    assert any("1 of 3 requests stopped before their max_tokens (add --ignore-eos" in x for x in warnings)
