"""Fuzzing, shared by the tests (small and bounded) and ``bench/reliability.py`` (at volume, into
``docs/RELIABILITY.md``).

- :func:`fuzz_api`: every operation of the REST API's own OpenAPI schema, requests drawn by schemathesis
  (valid ones and, ``negative``, ones that break the schema), sent to a real server over HTTP. What must hold:
  no 5xx, no request without an answer within its timeout, the server still up afterwards.
- :func:`fuzz_prompts`: the prompt parsers (``<hypernet:...>`` tags, emphasis, prompt editing, tokenizing)
  on text drawn by hypothesis from the prompt grammar's own characters. What must hold: no exception other
  than the documented ``ValueError``, each call within :data:`PROMPT_CALL_LIMIT` seconds, for inputs up to
  :data:`MAX_PROMPT` characters.

The fuzz server (:func:`fuzz_server`) is the API alone (``--nowebui``) behind ``--api-auth``, with a test-only
hook that caps every generation at one 32x32 step (what the request asks is still checked in full; only the
work is small, so valid requests for 2048x2048 x 150 steps x 800 images cannot stall the run), and an empty
``--train-data-dir`` so that a drawn training request has nothing to train on.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

MAX_PROMPT = 2000  # characters: the bound on drawn prompts (the UI and the API take longer ones; see the report)
PROMPT_CALL_LIMIT = 5.0  # seconds one parser call may take on the largest input before it counts as a hang
FUZZ_USER = ("fuzz", "fuzz:pass")

CAP_SCRIPT = '''"""Test-only: every generation is capped at one 32x32 step and one image (fuzzing checks answers, not
pictures)."""
import dataclasses

from extension.ui.callbacks import GenerateHook


def register(callbacks):
    @callbacks.on_before_generate
    def cap(ctx, request):
        return GenerateHook(request=dataclasses.replace(request, width=32, height=32, steps=1, batch_size=1,
                                                        n_iter=1))
'''


def fuzz_server(tmp: Path, hypernetwork_dir: Path, **options):
    """An :class:`api_server.ApiServer` for fuzzing (not started)."""
    from api_server import ApiServer

    empty = tmp / "train-root"
    empty.mkdir(parents=True, exist_ok=True)
    (tmp / "scripts").mkdir(parents=True, exist_ok=True)
    server = ApiServer(tmp, hypernetwork_dir, **{"nowebui": True, "api_auth": ":".join(FUZZ_USER),
                                                 "train_data_dir": [str(empty)], **options})
    (tmp / "scripts" / "zz_fuzz_cap.py").write_text(CAP_SCRIPT, encoding="utf-8")
    return server


# -- the REST API -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ApiFuzzResult:
    requests: int = 0
    seconds: float = 0.0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_operation: dict = dataclasses.field(default_factory=dict)  # "POST /sdapi/v1/txt2img" -> Counter
    failures: list = dataclasses.field(default_factory=list)  # (operation, what, curl)
    slowest: tuple[float, str] = (0.0, "")
    alive_after: bool = False

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if isinstance(status, int) and status >= 500)


def fuzz_api(base_url: str, auth=FUZZ_USER, examples: int = 10, seed: int = 0, timeout: float = 60.0,
             modes=("positive", "negative"), operations=None) -> ApiFuzzResult:
    """Send ``examples`` drawn requests per operation and mode; every answer is recorded, none raises."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", auth=auth, timeout=30)
    result = ApiFuzzResult()
    session = requests.Session()
    session.auth = auth
    started = time.monotonic()
    for item in schema.get_all_operations():
        operation = item.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if operations is not None and label not in operations:
            continue
        counts = result.by_operation.setdefault(label, collections.Counter())
        # an operation with a body or parameters has something to vary: four times the examples
        varied = bool(getattr(operation, "body", None)) or any(True for _ in getattr(operation, "query", []) or [])
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

            @hypothesis_seed(seed)
            @settings(max_examples=examples * (4 if varied else 1), deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate])
            @given(case=strategy)
            def run(case):
                sent = time.monotonic()
                try:
                    response = case.call(base_url=base_url, session=session, timeout=timeout)
                    status = response.status_code
                except requests.Timeout:
                    status = "timeout"
                except requests.ConnectionError as exc:
                    status = f"connection error: {type(exc).__name__}"
                took = time.monotonic() - sent
                result.requests += 1
                result.statuses[status] += 1
                counts[status] += 1
                if took > result.slowest[0]:
                    result.slowest = (took, label)
                if not isinstance(status, int) or status >= 500:
                    detail = status if not isinstance(status, int) else f"{status}: {response.text[:300]}"
                    try:
                        curl = case.as_curl_command(base_url=base_url)
                    except Exception:  # noqa: BLE001
                        curl = repr(case)
                    result.failures.append((label, str(detail), curl[:2000]))

            run()
    result.seconds = time.monotonic() - started
    try:
        result.alive_after = session.get(f"{base_url}/sdapi/v1/progress", timeout=30).status_code == 200
    except requests.RequestException:
        result.alive_after = False
    return result


def api_fuzz_report(quick: bool = False) -> str:
    """Start a fuzz server, fuzz every operation, and say what held (Markdown)."""
    import tempfile

    from builders import make_hypernetwork_dir

    examples = 8 if quick else 25
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as folder:
        tmp = Path(folder)
        make_hypernetwork_dir(tmp / "hypernetworks")
        with fuzz_server(tmp, tmp / "hypernetworks") as server:
            result = fuzz_api(server.url, examples=examples, seed=1)
            alive = server.process.poll() is None and result.alive_after
    lines = ["## REST API fuzzed from its OpenAPI schema",
             "",
             f"schemathesis drew {examples} requests per operation and mode (valid, and breaking the schema; "
             f"{4 * examples} for the operations with a body or parameters) for each of the "
             f"{len(result.by_operation)} operations of `/openapi.json` and sent them to a real server "
             "(`--nowebui --api-auth`, the random-weight demo model; generations capped at one 32x32 step by a "
             "test hook, every check of the request still made; an empty `--train-data-dir`).",
             "",
             "| what | figure |", "|---|---|",
             f"| requests sent | {result.requests} |",
             f"| wall time | {result.seconds:.0f} s |",
             f"| 5xx answers | {result.server_errors} |",
             f"| requests with no answer within 60 s | {result.statuses.get('timeout', 0)} |",
             f"| connection errors | {sum(c for s, c in result.statuses.items() if str(s).startswith('connection'))} |",
             f"| slowest answer | {result.slowest[0]:.1f} s ({result.slowest[1]}) |",
             f"| server up and answering afterwards | {'yes' if alive else 'NO'} |",
             "",
             "Answers by status: " + ", ".join(f"{status}: {count}" for status, count in
                                               sorted(result.statuses.items(), key=lambda kv: str(kv[0]))) + ".",
             "",
             "| operation | answers by status |", "|---|---|"]
    for label, counts in sorted(result.by_operation.items()):
        lines.append(f"| `{label}` | " + ", ".join(f"{s}: {c}" for s, c in sorted(counts.items(), key=lambda kv: str(kv[0])))
                     + " |")
    if result.failures:
        lines += ["", "Failures (first 10):", ""]
        lines += [f"- `{label}`: {what}" for label, what, _ in result.failures[:10]]
    return "\n".join(lines)


# -- the prompt parsers ------------------------------------------------------------------------------------------
# The characters the prompt syntaxes give meaning to, plus letters, digits, spaces and some odd code points.
PROMPT_ALPHABET = "<>:[]()|\\,.!{}-+=*0123456789 abcxyzAB:hypernet\n\t\u00e9\u200b\u4e00\U0001f600"


def prompt_strategy(max_size: int = MAX_PROMPT):
    """Text drawn from :data:`PROMPT_ALPHABET`, with the syntaxes' tokens as whole pieces too."""
    from hypothesis import strategies as st

    pieces = st.sampled_from(["<hypernet:", "<hypernet:demo_style:0.5>", "<lora:x:1>", "[", "]", "(", ")", ":",
                              "|", "\\(", "\\[", "BREAK", "AND", ":1.5)", ":0.5]", "[a:b:", "[a|b]", "::", "0.",
                              "1e9", "-1", "nan", "inf", ",", " "])
    chars = st.text(alphabet=PROMPT_ALPHABET, max_size=40)
    short = st.lists(st.one_of(pieces, chars), max_size=24)
    long = st.lists(st.one_of(pieces, chars), min_size=80, max_size=max_size // 6)  # hypothesis favours short text
    return st.one_of(short, long).map("".join).map(lambda s: s[:max_size])


def prompt_parsers():
    """``name -> fn(text)``: every parser a prompt goes through, as generation calls them."""
    from extension.prompt.conditioning import parse_prompt_attention, tokenize_prompt
    from extension.prompt.schedule import prompt_schedule
    from extension.prompt.tags import hypernetwork_requests, parse_prompt
    from extension.tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()

    def tags(text):
        stripped, found = parse_prompt(text)
        hypernetwork_requests(found)
        return stripped

    return {"tags": tags, "schedule": lambda text: prompt_schedule(text, 20), "attention": parse_prompt_attention,
            "tokenize": lambda text: tokenize_prompt(tokenizer, text)}


def whole_prompt_schedule(prompt: str, steps: int):
    """Prompt editing as A1111's grammar gives it on the whole prompt in one parse (the reference the
    group-by-group parse of :func:`extension.prompt.schedule.prompt_schedule` must equal)."""
    from extension.prompt import schedule as sch

    tree = sch._parse(prompt) if sch._may_schedule(prompt) else None
    if tree is None:
        return [(steps, prompt)]
    ends = {steps}
    for node in sch._nodes(tree, "scheduled"):
        when = sch._switch_step(node.children[-2], steps)
        if when >= 1:
            ends.add(when)
    if sch._nodes(tree, "alternate"):
        ends.update(range(1, steps + 1))
    return [(end, sch._render(tree, end, steps)) for end in sorted(ends)]


def prompt_fuzz_report(quick: bool = False) -> str:
    """Fuzz every prompt parser and compare the group-by-group prompt editing with the whole parse (Markdown)."""
    import random

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from extension.prompt.schedule import prompt_schedule

    examples, differential = (100, 300) if quick else (600, 3000)
    parsers = prompt_parsers()
    stats = {name: {"calls": 0, "value_errors": 0, "other_errors": 0, "slowest": 0.0} for name in parsers}
    sizes = []

    @hypothesis_seed(5)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(text=prompt_strategy())
    def run(text):
        sizes.append(len(text))
        for name, parser in parsers.items():
            started = time.monotonic()
            try:
                parser(text)
            except ValueError:
                stats[name]["value_errors"] += 1
            except Exception:  # noqa: BLE001 - counted, the report says so
                stats[name]["other_errors"] += 1
            stats[name]["calls"] += 1
            stats[name]["slowest"] = max(stats[name]["slowest"], time.monotonic() - started)

    run()
    tokens = st.sampled_from(["[a:b:1]", "[a|b]", "(", ")", "[", "]", ":", "|", "a", " ", "\\", "1", ".5",
                              "(a:1.2)", "[b:2]", "[::1]", "\\(", "\n", ","])
    compared = {"prompts": 0, "equal": 0, "refused": 0, "different": []}

    @hypothesis_seed(6)
    @settings(max_examples=differential, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(text=st.one_of(st.lists(tokens, max_size=14).map("".join),
                          st.text(alphabet="[]():|ab 15.\\\n", max_size=22)))
    def compare(text):
        compared["prompts"] += 1
        try:
            got = prompt_schedule(text, 6)
        except ValueError:
            compared["refused"] += 1
            return
        if got == whole_prompt_schedule(text, 6):
            compared["equal"] += 1
        else:
            compared["different"].append(text)

    compare()
    rng = random.Random(0)
    adversarial = {"(x) x200 + [a:b:1]": "(x) " * 200 + "[a:b:1]", "[x] x100 + [a:b:1]": "[x] " * 100 + "[a:b:1]",
                   "[a:b:1] x100": "[a:b:1] " * 100, "60 emphasis groups + [cat:dog:0.5]":
                       "(masterpiece:1.2), (best quality:1.1), " * 30 + "[cat:dog:0.5]",
                   "random 2000 characters of the syntax": "".join(rng.choice("[]():|ab ,.1") for _ in range(2000))}
    timed = []
    for name, text in adversarial.items():
        started = time.monotonic()
        try:
            prompt_schedule(text, 20)
            outcome = "parsed"
        except ValueError:
            outcome = "refused (ValueError)"
        timed.append((name, len(text), outcome, time.monotonic() - started))
    lines = ["## Prompt parsers fuzzed",
             "",
             f"hypothesis drew {examples} prompts of up to {MAX_PROMPT} characters (the syntaxes' characters and "
             f"tokens, odd code points; longest drawn: {max(sizes)}) and gave each to every parser as generation "
             "calls it: tags (`<hypernet:...>` and multipliers), prompt editing (A1111's grammar), emphasis, "
             "tokenizing into 75-token chunks.",
             "",
             "| parser | calls | ValueError (documented) | other exceptions | slowest call |", "|---|---|---|---|---|"]
    for name, row in stats.items():
        lines.append(f"| {name} | {row['calls']} | {row['value_errors']} | {row['other_errors']} | "
                     f"{row['slowest']:.2f} s |")
    lines += ["",
              "A ValueError is prompt editing refusing a prompt with more brackets than it parses in a few seconds "
              "(more than 64 in one group, or in all when they do not balance, or over the budget for all groups: "
              "`extension/prompt/schedule.py`); drawn syntax soup often is. The generation then stops with that "
              "message (the API answers 422 before queueing).",
              "",
              f"Prompt editing parses a prompt group by group (A1111's grammar parsed whole took 152 s on an "
              f"807-character prompt). Compared with the whole parse on {compared['prompts']} drawn prompts small "
              f"enough to parse whole: {compared['equal']} equal, {len(compared['different'])} different, "
              f"{compared['refused']} refused by the bracket budget.",
              "",
              "| prompt | characters | outcome | time |", "|---|---|---|---|"]
    lines += [f"| {name} | {size} | {outcome} | {took:.2f} s |" for name, size, outcome, took in timed]
    if compared["different"]:
        lines += ["", "Different: " + ", ".join(repr(t) for t in compared["different"][:5])]
    return "\n".join(lines)
