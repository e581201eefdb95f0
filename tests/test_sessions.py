"""Multi-turn conversations (--turns): history, think time, salts, datasets, errors; on the mock and llama-server."""

import json
import re
import urllib.request

import pytest

from conftest import load_json, tpsload
from tpsload.config import ThinkTime, parse_think_time, parse_turns
from tpsload.render import markdown
from tpsload.workload import datasets
from tpsload.workload.sessions import think_ns, turn_counts

TAG = re.compile(r"^[0-9a-f]{8} Request \d+: ")


def mock_log(m):
    with urllib.request.urlopen(m.base_url.rsplit("/v1", 1)[0] + "/mock/log", timeout=10) as r:
        return json.load(r)


def session_run(m, tmp_path, name, *args, check=0):
    out, rec = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
    p = tpsload("run", "--base-url", m.base_url, "--json", str(out), "--records", str(rec), *args, check=check)
    return load_json(out), [json.loads(line) for line in rec.read_text().splitlines()], p


def test_turns_resend_history_with_replies_after_think_time_salted_once(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1)
    saved = tmp_path / "p.jsonl"
    common = ("--turns", "3", "--input-tokens", "6", "--output-tokens", "4", "-c", "2", "-n", "3", "--seed", "5",
              "--cache-salt", "s1")
    res, recs, p = session_run(m, tmp_path, "a", *common, "--think-time", "150ms", "--save-prompts", str(saved))
    assert sorted((r["session"], r["turn"]) for r in recs) == [(k, t) for k in range(3) for t in (1, 2, 3)]
    by = {(r["session"], r["turn"]): r for r in recs}
    for k in range(3):
        for t in (2, 3):
            prev, cur = by[(k, t - 1)], by[(k, t)]
            # the mock counts words: the history grew by the last reply (4 words) and a new 6-word message
            assert cur["prompt_tokens"] == prev["prompt_tokens"] + prev["output_tokens"] + 6
            # due 150 ms after the last reply ended, and not sent before
            assert cur["t_sched_ms"] - prev["t_end_ms"] == pytest.approx(150, abs=0.01)
            assert cur["t_send_ms"] >= cur["t_sched_ms"]
    # the server saw its own reply (" w0 w1 w2 w3") resent in every later turn's prompt
    prompts = [e["prompt"] for e in mock_log(m)]
    assert sum(" w0 w1 w2 w3 " in pr for pr in prompts) == 6
    # salted once per conversation: each first message opens with its own tag, later messages with none
    convs = [json.loads(line)["messages"] for line in saved.read_text().splitlines()]
    firsts = [c[0]["content"] for c in convs]
    assert all(TAG.match(f) for f in firsts) and len({f[:8] for f in firsts}) == 3
    assert all(not TAG.match(msg["content"]) for c in convs for msg in c[1:])
    # the per-turn table, in the JSON and on the console
    s = res["sessions"]
    assert (s["conversations"], s["conversations_ok"], s["turns"]) == (3, 3, 3)
    assert [(row["turn"], row["ok"], row["prompt_tokens"]["p50"]) for row in s["per_turn"]] == \
        [(1, 3, 6), (2, 3, 16), (3, 3, 26)]
    assert "Conversations: 3 (3 with every turn ok)" in p.stdout and "cache hit" in p.stdout
    # ... in a report, and a session run compares with another
    md = markdown.dumps([("a", res), ("b", res)])
    assert "| turn | ok | TTFT p50 ms |" in md and "| 3 | 3/3 |" in md and "## b vs a" in md
    # the same --seed (and salt) sends the same conversations again; another seed others
    again, other = tmp_path / "q.jsonl", tmp_path / "r.jsonl"
    tpsload("run", "--base-url", m.base_url, *common, "-q", "--save-prompts", str(again), check=0)
    tpsload("run", "--base-url", m.base_url, *common[:-4], "--seed", "6", "-q", "--save-prompts", str(other), check=0)
    assert again.read_text() == saved.read_text() != other.read_text()


def test_dataset_conversations_replay_turn_by_turn(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1)
    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "sure thing"}, {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "fine"}, {"role": "user", "content": "third question"}]}) + "\n")
    res, recs, _ = session_run(m, tmp_path, "d", "--dataset", str(data), "--turns", "2", "--history", "dataset",
                               "-n", "1", "--output-tokens", "dataset", "-q")
    assert [r["turn"] for r in recs] == [1, 2]  # --turns 2 caps the three turns the conversation has
    assert [r["output_tokens"] for r in recs] == [2, 1]  # each turn as long as the dataset's reply to it
    prompts = [e["prompt"] for e in mock_log(m)]
    # the dataset's reply resent, not the mock's own (" w0 w1")
    assert prompts == ["Be brief. first question", "Be brief. first question sure thing second question"]
    assert res["workload"]["sessions"]["history"] == "dataset"


def test_open_loop_starts_conversations_on_the_schedule(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1)
    _, recs, _ = session_run(m, tmp_path, "o", "--turns", "2", "--input-tokens", "6", "--output-tokens", "2",
                             "--rate", "10", "--arrival", "constant", "-n", "3", "-q")
    by = {(r["session"], r["turn"]): r for r in recs}
    assert sorted(by) == [(k, t) for k in range(3) for t in (1, 2)]
    # conversation starts 100 ms apart (--rate 10, constant); each second turn due when its first ended
    starts = [by[(k, 1)]["t_sched_ms"] for k in range(3)]
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [pytest.approx(100, abs=0.01)] * 2
    assert all(by[(k, 2)]["t_sched_ms"] == pytest.approx(by[(k, 1)]["t_end_ms"], abs=0.01) for k in range(3))


def test_think_times_and_turn_counts_are_seeded():
    uniform, expo = parse_think_time("1s-3s"), parse_think_time("exp:500ms")
    assert parse_think_time("250ms") == ThinkTime("fixed", 0.25, 0.25) and parse_turns("2-5") == (2, 5)
    a = [think_ns(uniform, 7, k, 2) for k in range(200)]
    assert a == [think_ns(uniform, 7, k, 2) for k in range(200)] != [think_ns(uniform, 8, k, 2) for k in range(200)]
    assert 1e9 <= min(a) and max(a) <= 3e9 and think_ns(uniform, 7, 0, 1) == 0  # no pause before a first turn
    e = [think_ns(expo, 1, k, t) for k in range(400) for t in (2, 3)]
    assert sum(e) / len(e) == pytest.approx(0.5e9, rel=0.1)
    counts = turn_counts(300, (2, 5), 3)
    assert counts == turn_counts(300, (2, 5), 3) and set(counts) == {2, 3, 4, 5}


def test_sharegpt_conversations_parse_into_turns(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps([{"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "a"},
                                                {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}]},
                             {"conversations": [{"from": "gpt", "value": "no human here"}]}]))
    (c,) = datasets.load_conversations(str(f), "sharegpt")
    assert c.system == ({"role": "system", "content": "sys"},)
    assert [(t.user, t.reply) for t in c.turns] == [("a", "b"), ("c", None)]


@pytest.mark.parametrize("args, message", [
    (("--turns", "2", "--input-tokens", "8", "--endpoint", "completions"), "--turns needs --endpoint chat"),
    (("--input-tokens", "8", "--think-time", "2s"), "--think-time needs --turns"),
    (("--turns", "5-2", "--input-tokens", "8"), "--turns '5-2'"),
    (("--turns", "2", "--input-tokens", "8", "--think-time", "soon"), "--think-time 'soon'"),
    (("--turns", "2", "--input-tokens", "8", "--workers", "2"), "--turns runs in one process"),
])
def test_session_flags_fail_in_one_line(args, message):
    # refused with the flags, before any connection: no server needed (port 9: nothing listens)
    p = tpsload("run", "--base-url", "http://127.0.0.1:9/v1", "-q", *args, check=2)
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and message in p.stderr, p.stderr


def test_slot_affinity_needs_a_server_with_slots(mock_server):
    p = tpsload("run", "--base-url", mock_server().base_url, "-q", "--turns", "2", "--input-tokens", "8",
                "--slot-affinity", check=2)
    assert "--slot-affinity pins conversations" in p.stderr and "Traceback" not in p.stderr


# Gemma 3 uses sliding-window attention: llama-server reuses a cached prefix only with --swa-full
CACHING = ("--swa-full",)


@pytest.mark.llama
@pytest.mark.slow
def test_llama_server_conversations_grow_and_hit_the_prefix_cache(llama_server, tmp_path):
    srv = llama_server(np=2, extra=CACHING)  # the issue's -np 2; Gemma 3 reuses a prefix only with --swa-full
    out, rec = tmp_path / "r.json", tmp_path / "r.jsonl"
    p = tpsload("run", "--base-url", srv.base_url, "--turns", "3", "--input-tokens", "64", "--output-tokens", "32",
                "-c", "2", "-n", "2", "--seed", "3", "--slot-affinity", "--json", str(out), "--records", str(rec),
                check=0, timeout=600)
    res = load_json(out)
    recs = [json.loads(line) for line in rec.read_text().splitlines()]
    by = {(r["session"], r["turn"]): r for r in recs}
    assert len(by) == 6 and all(r["ok"] for r in recs)
    for k in range(2):
        t1, t2, t3 = by[(k, 1)], by[(k, 2)], by[(k, 3)]
        assert {t1["slot"], t2["slot"], t3["slot"]} == {k}  # pinned: conversation k on slot k
        message = t1["prompt_tokens"] - res["workload"]["server_overhead_tokens"]  # a user message's own tokens
        # turn 3 resends turns 1 and 2 with both replies: longer by at least both replies and the second message
        assert t3["prompt_tokens"] - t1["prompt_tokens"] >= t1["output_tokens"] + t2["output_tokens"] + message
        for t in (t2, t3):
            assert t["cached_tokens"] > 0.5 * t["prompt_tokens"], (t["cached_tokens"], t["prompt_tokens"])
    rows = res["sessions"]["per_turn"]
    assert [row["turn"] for row in rows] == [1, 2, 3]
    # turn 1 finds only the chat template's first tokens cached; later turns their whole history
    assert rows[0]["cache_hit_ratio"] < 0.25 and rows[1]["cache_hit_ratio"] > 0.5 and rows[2]["cache_hit_ratio"] > 0.5
    assert "Conversations: 2 (2 with every turn ok)" in p.stdout and "cache hit" in p.stdout


def test_a_thinking_models_history_resends_its_answers_not_its_reasoning(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, reasoning_tokens=3)
    res, recs, _ = session_run(m, tmp_path, "t", "--turns", "2", "--input-tokens", "6", "--output-tokens", "5",
                               "-c", "1", "-n", "1", "-q")
    first, second = sorted(recs, key=lambda r: r["turn"])
    assert (first["reasoning_tokens"], first["answer_tokens"]) == (3, 2)
    # turn 2 resends turn 1's two answer words and a new 6-word message; the 3 reasoning words stay out
    assert second["prompt_tokens"] == first["prompt_tokens"] + 2 + 6
    prompts = [e["prompt"] for e in mock_log(m)]
    assert " r0" not in prompts[-1] and prompts[-1].count(" w") >= 2
