"""The prompt-cache guard: a fresh cache-busting salt per run, and a warning on cache hits (issue 12)."""

import json
import urllib.request

import pytest

from conftest import load_json, tpsload
from tpsload.records import RequestRecord
from tpsload.workload.checks import workload_checks
from tpsload.workload.spec import RequestSpec, Workload, WorkloadParams


def received(mock):
    """The prompts the mock was sent (the length probe left out), by request number."""
    with urllib.request.urlopen(mock.base_url.rsplit("/v1", 1)[0] + "/mock/log", timeout=10) as r:
        prompts = [e["prompt"] for e in json.load(r) if " Request " in e["prompt"]]
    return sorted(prompts, key=lambda p: int(p.split(" Request ", 1)[1].split(":")[0]))


def test_same_seed_new_salt_each_run_unless_fixed(mock_server, tmp_path):
    runs = []
    for k, salt in enumerate([None, None, "s1", "s1"]):
        m = mock_server(ttft_ms=1, itl_ms=0)
        out = tmp_path / f"{k}.json"
        tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "6", "--input-tokens", "24", "--output-tokens",
                "2", "--seed", "5", "--json", str(out), *(["--cache-salt", salt] if salt else []), check=0)
        runs.append((load_json(out)["workload"], received(m)))
        m.stop()
    (w0, p0), (w1, p1), (w2, p2), (w3, p3) = runs
    assert len(p0) == len(p1) == len(p2) == 6
    # by default: a fresh salt each run, recorded; every prompt starts unlike any of the last run's ...
    assert w0["cache_salt"] != w1["cache_salt"] and w0["cache_salt_fixed"] is False
    assert not {p.split()[0] for p in p0} & {p.split()[0] for p in p1}
    assert len({p.split()[0] for p in p0}) == 6  # ... or like another of its own
    # ... while the text after the tag, and the order, are the seed's
    assert [p.split(" ", 1)[1] for p in p0] == [p.split(" ", 1)[1] for p in p1]
    # a fixed salt: the same bytes again
    assert w2["cache_salt"] == w3["cache_salt"] == "s1" and w2["cache_salt_fixed"] is True
    assert p2 == p3 and p2 != p0


def test_no_cache_bust_has_no_salt(mock_server, tmp_path):
    m = mock_server(ttft_ms=1, itl_ms=0)
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "-n", "2", "--input-tokens", "8", "--output-tokens", "2",
            "--no-cache-bust", "--json", str(out), check=0)
    assert load_json(out)["workload"]["cache_salt"] is None


def records(pairs):
    out = []
    for i, (prompt, cached) in enumerate(pairs):
        r = RequestRecord(index=i, t_send=1, t_end=2)
        r.prompt_tokens, r.cached_tokens, r.output_tokens = prompt, cached, 4
        out.append(r)
    return out


def synthetic(n, shared=0, overhead=1, **desc):
    items = [RequestSpec(prompt=f"p{i}", input_tokens=384) for i in range(n)]
    return Workload(items, WorkloadParams(max_tokens=4), {"source": "synthetic", "cache_bust": True,
                                                          "shared_prefix_tokens": shared,
                                                          "server_overhead_tokens": overhead, **desc})


def cache_warnings(recs, w):
    observed, warnings = workload_checks(recs, w)
    return observed, [x for x in warnings if "prompt cache" in x or "same prompt" in x]


def test_cache_hits_beyond_the_shared_prefix_warn():
    # the case: a rerun of one seed found 251 of 256 prompt tokens cached
    observed, warns = cache_warnings(records([(256, 251)] * 4), synthetic(4, cache_salt_fixed=True))
    assert len(warns) == 1 and "held 1,004 of 1,024 prompt tokens" in warns[0] and "drop --cache-salt" in warns[0]
    assert observed["prompt_cache"]["cached_beyond_intended"] == 4 * 250
    # cached without a fixed salt: the hint fits the cause
    _, warns = cache_warnings(records([(256, 251)] * 4), synthetic(4, cache_bust=False))
    assert "drop --no-cache-bust" in warns[0]
    _, warns = cache_warnings(records([(256, 200)] * 8), synthetic(4))
    assert "reused its 4 prompts" in warns[0]


def test_intended_and_incidental_cache_hits_do_not_warn():
    # --shared-prefix 256 of 384, BOS, and the tag's first few tokens found cached: as intended
    observed, warns = cache_warnings(records([(384, 0)] + [(384, 268)] * 5), synthetic(6, shared=256))
    assert warns == [] and observed["prompt_cache"]["intended_cached_per_request"] == 257
    # a chat template's tokens cached in short prompts: a large share, but a handful of tokens each
    _, warns = cache_warnings(records([(40, 12)] * 6), synthetic(6, overhead=None))
    assert warns == []
    # no cached counts from the server: nothing to judge
    observed, warns = cache_warnings(records([(384, None)] * 6), synthetic(6))
    assert warns == [] and "prompt_cache" not in observed


def test_past_the_tolerance_warns():
    # 31 % of the prompt beyond the shared prefix, 40 tokens a request: over both bars
    _, warns = cache_warnings(records([(384, 257 + 40)] * 6), synthetic(6, shared=256))
    assert len(warns) == 1 and "past the 257 tokens a request shares" in warns[0]
    assert "240 (31% of the rest) were hits" in warns[0]


def test_one_prompt_for_every_request_warns():
    w = Workload([RequestSpec(prompt="the same")], WorkloadParams(max_tokens=4), {"source": "prompt"})
    _, warns = cache_warnings(records([(20, None)] * 3), w)
    assert len(warns) == 1 and "every one of the 3 requests sent the same prompt" in warns[0]
    # with counts that show the hits: one warning, with the numbers and the cause
    _, warns = cache_warnings(records([(200, 0), (200, 199), (200, 199)]), w)
    assert len(warns) == 1 and "398 of 600" in warns[0] and "every request sent the same prompt" in warns[0]
    # counts that show the cache unused (llama-server without prompt reuse): nothing to warn about
    _, warns = cache_warnings(records([(200, 0)] * 3), w)
    assert warns == []
    # one request alone is no repeat
    _, warns = cache_warnings(records([(20, None)]), w)
    assert warns == []


# Gemma 3 uses sliding-window attention: llama-server reuses a cached prompt prefix only with --swa-full
CACHING = ("--swa-full",)


def cached_run(srv, tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    tpsload("run", "--base-url", srv.base_url, "-c", "4", "-n", "4", "--input-tokens", "256", "--output-tokens", "2",
            "--endpoint", "completions", "--seed", "21", "--json", str(out), *args, check=0, timeout=300)
    res = load_json(out)
    return res, res["workload"]["observed"]["prompt_cache"]


@pytest.mark.llama
@pytest.mark.slow
def test_rerun_of_a_seed_finds_no_cache_on_llama_server_or_warns(llama_server, tmp_path):
    srv = llama_server(np=4, extra=CACHING)
    first, c1 = cached_run(srv, tmp_path, "a")
    second, c2 = cached_run(srv, tmp_path, "b")
    # a fresh salt: past the BOS every prompt has, the rerun finds no more in the cache than the first run
    # (a random tag may begin with the same character as a slot's last prompt: a token or two)
    assert c2["intended_cached_per_request"] == 1  # BOS
    assert c2["cached_beyond_intended"] <= c1["cached_beyond_intended"] + 2 * 4, (c1, c2)
    assert not [w for w in first["warnings"] + second["warnings"] if "prompt cache" in w]
    # a fixed salt: the same bytes twice; the second run is served from the cache, and says so
    cached_run(srv, tmp_path, "c", "--cache-salt", "x")
    fixed, c4 = cached_run(srv, tmp_path, "d", "--cache-salt", "x")
    assert c4["cached_tokens"] > 4 * 200, c4
    assert any("prompt cache held" in w and "drop --cache-salt" in w for w in fixed["warnings"]), fixed["warnings"]
