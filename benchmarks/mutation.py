"""Mutation testing of the core with cosmic-ray: how many mutants of each module its fast tests kill.

A benchmark-style script, not part of CI (docs/testing.md has the last run's numbers and the survivors).
Each module is mutated in its own copy of the repository (the files git tracks, under `--workdir`), and
every mutant is tested with that module's own fast test selection (`MODULES`: tiny models, SQLite; no
`slow` or `integration` tests), `pytest -x` so that a mutant stops at its first failing test.

    python benchmarks/mutation.py                       # every module, a seeded sample of 60 mutants each
    python benchmarks/mutation.py --modules circuit jobs --sample 0   # every mutant of two modules
    python benchmarks/mutation.py --recheck             # the survivors again, with the tests as they are now
    python benchmarks/mutation.py --report              # the table of the last run, without running

Per module: the tests run in forks of a warm server (imports done once; see `serve`); the unmutated tests
run once first (they must pass; their time sets the per-mutant timeout, 3x plus 30 s), then `cosmic-ray
init` lists every mutant (cosmic-ray's default operators), those inside annotations are left out (never
evaluated: `from __future__ import annotations`), `--sample N` keeps a seeded random N of the rest (the
others are marked skipped in the session; the table says how many were sampled of how many), and
`cosmic-ray exec` runs them one at a time, in random order. cosmic-ray counts a mutant that runs past the
timeout as killed; the table shows those apart. Needs cosmic-ray (the `dev` extra). Threads:
OMP_NUM_THREADS=1 and ATLAS_THREADS=1, and torch's one thread, for every test run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import os
import random
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow and not integration"]
SERVER_DOWN = "MUTATION-SERVER-DOWN"


@dataclass(frozen=True)
class Target:
    sources: tuple[str, ...]  # files to mutate, relative to the repository
    tests: tuple[str, ...]  # the fast tests that cover them: files or node ids
    options: tuple[str, ...] = ()  # more pytest arguments (`-k ...`)


# The fast tests of each module, fastest and broadest first (`-x` stops a mutant at its first failure). Left
# out for time: the brute-force patching comparisons (tests/unit/test_eap_ig_activations.py's first two,
# test_attribution.py's exact-patching one: minutes each here), the PostgreSQL half of the job tests.
A, IG, U = "tests/unit/test_attribution.py", "tests/unit/test_eap_ig_activations.py", "tests/unit/"
MODULES: dict[str, Target] = {
    "attribution": Target(
        (
            "atlas/core/attribution/__init__.py",
            "atlas/core/attribution/base.py",
            "atlas/core/attribution/eap.py",
            "atlas/core/attribution/eap_ig.py",
            "atlas/core/attribution/eap_ig_activations.py",
        ),
        (
            f"{A}::test_no_facts_score_zero_not_nan",
            f"{A}::test_logits_input_is_the_sum_of_all_writers",
            f"{A}::test_scores_are_zero_where_no_edge_exists",
            f"{IG}::test_one_step_is_eap_and_the_input_row_is_eap_ig_over_inputs",
            f"{A}::test_eap_equals_transformer_lens_attribution_patch_on_tiny_models",
            f"{A}::test_eap_ig_scores_equal_integrated_gradients_by_hand[tiny_gpt2-node-zero-logprob-2]",
            f"{A}::test_eap_ig_scores_equal_integrated_gradients_by_hand[tiny_llama-edge-corrupt-logprob-5]",
            f"{A}::test_eap_ig_scores_equal_integrated_gradients_by_hand[tiny_gpt2-edge-mean-logit-diff-3]",
        ),
    ),
    "evaluation": Target(
        ("atlas/core/evaluation.py",),
        (
            f"{U}test_evaluation_values.py::test_hit_at_10_is_uninformative_once_a_random_circuit_hits_half_the_facts",
            f"{U}test_bulk_evaluation.py::test_full_and_empty_are_the_clean_and_corrupt_runs",
            f"{U}test_bulk_evaluation.py::test_bulk_evaluation_equals_one_circuit_at_a_time[logit_difference-edge]",
            f"{U}test_evaluation_values.py::test_edge_level_evaluation_equals_patching_the_kept_edges_by_hand"
            "[corrupt-logprob]",
            f"{U}test_evaluation_values.py::test_node_level_faithfulness_curve_equals_patching_by_hand",
            f"{U}test_evaluation_values.py::test_edge_level_faithfulness_curve_equals_patching_by_hand",
            f"{U}test_sizing.py::test_the_bound_is_a_bootstrap_quantile_and_a_confident_search_is_never_smaller",
            f"{U}test_sizing.py::test_on_a_tiny_model_the_search_agrees_with_a_linear_scan",
        ),
    ),
    "intervention": Target(
        ("atlas/core/intervention.py",),
        (
            f"{U}test_circuit.py::test_the_full_circuit_is_the_model_and_the_empty_one_the_corrupt_run",
            f"{U}test_circuit.py::test_node_patching_matches_edge_patching_of_the_nodes_outputs",
            f"{U}test_bulk_evaluation.py::test_full_and_empty_are_the_clean_and_corrupt_runs",
            f"{U}test_evaluation_values.py::test_edge_level_evaluation_equals_patching_the_kept_edges_by_hand"
            "[corrupt-logprob]",
            f"{U}test_evaluation_values.py::test_node_level_evaluation_equals_patching_the_kept_nodes_by_hand"
            "[corrupt]",
            f"{U}test_bulk_evaluation.py::test_bulk_evaluation_equals_one_circuit_at_a_time[logit_difference-edge]",
        ),
    ),
    "circuit": Target(("atlas/core/circuit.py",), ("tests/unit/test_circuit.py",)),
    "jobs": Target(
        ("atlas/db/jobs.py",),
        (
            "tests/db/test_db_job_index.py",
            "tests/workers/test_job_store.py",
            "tests/workers/test_job_kinds.py",
            "tests/workers/test_reaper.py",  # the orphan queries (needs Redis, as the test says)
        ),
        ("-k", "not postgresql"),  # SQLite only: a second backend doubles the time
    ),
}


def copy_tree(dest: Path) -> None:
    """The files git tracks (and untracked, unignored ones), as they are in the work tree."""
    if dest.exists():
        shutil.rmtree(dest)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


# ------------------------------------------------------------------------------------ the warm test server
# Importing torch, transformer_lens and the rest takes 3 s of CPU (half a minute of wall time on a loaded
# machine) per test run. So each module's tests run in a fork of a server that has imported every
# third-party module its tests import (the project's own modules are dropped from it after, so that each
# fork imports them afresh, mutated), and cosmic-ray's test command is a small client that asks the server
# for one pytest run and exits with its status. A client killed at the timeout closes its connection, and
# the server kills that run's process group.


def serve(socket_path: Path, tree: Path, tests: list[str]) -> None:
    sys.dont_write_bytecode = True
    os.chdir(tree)
    os.environ.update(test_env(tree))
    sys.path[:0] = [str(tree), str(tree / "tests")]
    import pytest
    import torch

    torch.set_num_threads(1)
    for name in imported_modules(tree, tests):
        # A module that fails to import here (one only some tests need) is the fork's to import, or fail.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tree)):
            del sys.modules[name]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        args = json.loads(conn.makefile().readline())
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            os.setsid()
            log = os.open(tree / "last-test.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            torch.set_num_threads = lambda n: None  # tests/conftest.py asks for 2: one thread here
            code = 3
            try:
                code = int(pytest.main(args))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()
                break
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(1):  # the client was killed (timeout): so is its run
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                conn.close()
                break


def imported_modules(tree: Path, tests: list[str]) -> list[str]:
    """Every module the test files, conftests and the mutated package import, top-level statements and
    nested (the project's own included: importing them pulls in their dependencies)."""
    files = [tree / file for file in dict.fromkeys(test.partition("::")[0] for test in tests)]
    files += [*tree.glob("tests/**/conftest.py"), *tree.glob("tests/*.py"), *tree.glob("tests/*/*.py")]
    files += list(tree.glob("atlas/**/*.py"))
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    skip = ("playwright", "atlas.core.gemma3_weights")
    return sorted(name for name in names if not name.startswith(skip))


def client(socket_path: str, args: list[str]) -> int:
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(socket_path)
        conn.sendall((json.dumps(args) + "\n").encode())
        answer = conn.makefile().readline().strip()
    except OSError as error:
        print(f"{SERVER_DOWN}: {error}")
        return 97
    if not answer:
        print(f"{SERVER_DOWN}: no answer")
        return 97
    return int(answer)


def test_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ATLAS_THREADS="1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def cosmic_ray(*args: str, tree: Path) -> None:
    subprocess.run(
        [str(Path(sys.executable).with_name("cosmic-ray")), *args], cwd=tree, env=test_env(tree), check=True
    )


@contextlib.contextmanager
def warm_server(tree: Path, target: Target) -> Iterator[tuple[str, list[str]]]:
    """A warm test server for `tree` while the block runs; cosmic-ray's test command, pytest's arguments."""
    socket_path = tree / "server.sock"
    script = str(tree / "benchmarks" / "mutation.py")  # the copy: edits to this file leave a run alone
    server = subprocess.Popen(
        [sys.executable, script, "--serve", str(socket_path), str(tree), *target.tests],
        cwd=tree,
        env=test_env(tree),
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready", "no test server"
        args = [*PYTEST, *target.options, *target.tests]
        yield shlex.join([sys.executable, "-S", script, "--client", str(socket_path), "--", *args]), args
    finally:
        server.kill()
        server.wait()


def run_module(name: str, target: Target, workdir: Path, sample: int, seed: int) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    tree = workdir / name
    print(f"== {name}: copying the tree to {tree}", flush=True)
    copy_tree(tree)
    with warm_server(tree, target) as (command, args):
        socket_path = tree / "server.sock"
        started = time.perf_counter()
        code = client(str(socket_path), args)
        seconds = time.perf_counter() - started
        if code != 0:
            sys.exit(f"{name}: the unmutated tests fail ({code}); see {tree / 'last-test.log'}")
        timeout = round(3 * seconds + 30)
        print(f"   unmutated tests pass in {seconds:.1f} s; timeout per mutant {timeout} s", flush=True)
        config = tree / "mutation.toml"
        config.write_text(
            "[cosmic-ray]\n"
            f"module-path = {json.dumps(list(target.sources))}\n"
            f"timeout = {timeout}.0\n"
            "excluded-modules = []\n"
            f"test-command = {json.dumps(command)}\n\n"
            '[cosmic-ray.distributor]\nname = "local"\n'
        )
        session = tree / "session.sqlite"
        cosmic_ray("init", str(config), str(session), tree=tree)
        spans = {source: annotation_spans(tree / source) for source in target.sources}
        with use_db(str(session), WorkDB.Mode.open) as db:
            items = sorted(db.work_items, key=lambda item: item.job_id)
            typing = {item.job_id for item in items if in_annotation(item.mutations[0], spans)}
            ids = [item.job_id for item in items if item.job_id not in typing]
            chosen = set(random.Random(seed).sample(ids, sample)) if 0 < sample < len(ids) else set(ids)
            db.set_multiple_results(
                list(typing), WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="annotation")
            )
            db.set_multiple_results(
                [i for i in ids if i not in chosen],
                WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="not sampled"),
            )
        meta: dict[str, object] = {
            "module": name,
            "total": len(ids),
            "annotations": len(typing),
            "sampled": len(chosen),
            "seed": seed,
            "baseline_s": seconds,
            "timeout_s": timeout,
        }
        (tree / "meta.json").write_text(json.dumps(meta))
        print(
            f"   {len(ids)} mutants ({len(typing)} more in annotations left out); running {len(chosen)}",
            flush=True,
        )
        started = time.perf_counter()
        cosmic_ray("exec", str(config), str(session), tree=tree)
        meta["exec_s"] = time.perf_counter() - started
        meta["load"] = os.getloadavg()
        (tree / "meta.json").write_text(json.dumps(meta))


def recheck(name: str, target: Target, workdir: Path, match: str = "") -> None:
    """Test a run's survivors again, against the tests as they are now (in a fresh copy of the tree): which
    of them the tests added since kill. The table then counts those as killed, and says how many."""
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    session = workdir / name / "session.sqlite"
    with use_db(str(session), WorkDB.Mode.open) as db:
        survivors = [
            item
            for item, result in db.completed_work_items
            if result.test_outcome == "survived"
            and match in f"{item.mutations[0].module_path}:{item.mutations[0].start_pos[0]}"
        ]
    tree = workdir / f"{name}-recheck"
    print(f"== {name}: {len(survivors)} survivors, tested again in {tree}", flush=True)
    copy_tree(tree)
    timeout = json.loads((workdir / name / "meta.json").read_text())["timeout_s"]
    killed = []
    here = Path.cwd()
    with warm_server(tree, target) as (command, _):
        os.chdir(tree)  # the mutations' paths are relative to the tree
        try:
            for item in survivors:
                result = mutate_and_test(item.mutations, command, timeout)
                if result.test_outcome == TestOutcome.KILLED and SERVER_DOWN not in (result.output or ""):
                    killed.append(item.job_id)
        finally:
            os.chdir(here)
    print(f"   {len(killed)} of them killed now", flush=True)
    done = workdir / name / "recheck.json"
    before = json.loads(done.read_text())["killed"] if done.exists() else []  # earlier rechecks' kills
    done.write_text(json.dumps({"killed": sorted({*before, *killed})}))


Span = tuple[tuple[int, int], tuple[int, int]]


def annotation_spans(path: Path) -> list[Span]:
    """Where a file's annotations are. With `from __future__ import annotations` they are strings, never
    evaluated (none of these modules reads them back): a mutant inside one cannot change behaviour, so
    such mutants (`int | None` -> `int & None`, a third of cosmic-ray's in atlas/db/jobs.py) are left out."""
    module = ast.parse(path.read_text())
    future = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in module.body
    )
    if not future:
        return []
    spans: list[Span] = []
    for node in ast.walk(module):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.arg | ast.AnnAssign):
            found.append(node.annotation)
        for annotation in found:
            if annotation is not None and annotation.end_lineno is not None:
                spans.append(
                    (
                        (annotation.lineno, annotation.col_offset),
                        (annotation.end_lineno, annotation.end_col_offset or 0),
                    )
                )
    return spans


def in_annotation(mutation: Any, spans: dict[str, list[Span]]) -> bool:
    start = tuple(mutation.start_pos)
    return any(first <= start < last for first, last in spans.get(str(mutation.module_path), []))


def changed_line(diff: str | None) -> str:
    """The mutated line of a unified diff, as `- old` / `+ new`."""
    lines = (diff or "").splitlines()
    old = next(
        (line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")), ""
    )
    new = next(
        (line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")), ""
    )
    return f"{old}  ->  {new}"


def wilson(killed: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a kill rate measured on a sample of n mutants."""
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.96, killed / n
    centre, half = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def report(names: list[str], workdir: Path) -> int:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    rows, survivors, summary = [], [], {}
    for name in names:
        tree = workdir / name
        if not (tree / "session.sqlite").exists():
            continue
        meta = json.loads((tree / "meta.json").read_text())
        rechecked = tree / "recheck.json"
        later = set(json.loads(rechecked.read_text())["killed"]) if rechecked.exists() else set()
        counts = {"killed": 0, "later": 0, "survived": 0, "timeout": 0, "incompetent": 0, "pending": 0}
        with use_db(str(tree / "session.sqlite"), WorkDB.Mode.open) as db:
            done = {item.job_id: result for item, result in db.completed_work_items}
            for item in db.work_items:
                result = done.get(item.job_id)
                if result is None:
                    counts["pending"] += 1
                    continue
                if result.worker_outcome == WorkerOutcome.SKIPPED:
                    continue
                mutation = item.mutations[0]
                if result.test_outcome == TestOutcome.SURVIVED:
                    counts["later" if item.job_id in later else "survived"] += 1
                    survivors.append(
                        (
                            name,
                            f"{mutation.module_path}:{mutation.start_pos[0]}",
                            mutation.operator_name.removeprefix("core/"),
                            changed_line(result.diff),
                            item.job_id in later,
                        )
                    )
                elif result.test_outcome == TestOutcome.INCOMPETENT or SERVER_DOWN in (result.output or ""):
                    counts["incompetent"] += 1
                elif result.output == "timeout":
                    counts["timeout"] += 1
                else:
                    counts["killed"] += 1
        run = counts["killed"] + counts["later"] + counts["survived"] + counts["timeout"]
        dead = run - counts["survived"]
        rate = dead / run if run else float("nan")
        low, high = wilson(dead, run)
        summary[name] = {**meta, **counts, "run": run, "kill_rate": rate, "interval": [low, high]}
        load = meta.get("load")
        rows.append(
            f"{name:<13}{meta['total']:>8}{meta.get('annotations', 0):>7}{meta['sampled']:>8}{run:>6}"
            f"{counts['killed']:>8}{counts['timeout']:>8}{counts['later']:>7}{counts['survived']:>9}"
            f"{counts['incompetent']:>7}{counts['pending']:>8}{rate:>7.1%}  {low:>4.0%}-{high:<4.0%}"
            f"{meta['baseline_s']:>7.0f}{meta.get('exec_s', float('nan')) / 60:>6.0f}"
            f"  {'-' if load is None else f'{load[0]:.1f}'}"
        )
    print(
        f"\n{'module':<13}{'mutants':>8}{'annot':>7}{'sampled':>8}{'run':>6}{'killed':>8}{'timeout':>8}"
        f"{'later':>7}{'survived':>9}{'incomp':>7}{'pending':>8}{'kill':>7}  {'95% CI':<9}{'test s':>7}"
        f"{'min':>6}  load"
    )
    print("\n".join(rows))
    run_all = sum(module["run"] for module in summary.values())
    dead_all = run_all - sum(module["survived"] for module in summary.values())
    if run_all:  # pooled over the modules' samples (of different fractions): the mutants run, not all
        print(f"all: {dead_all} of the {run_all} mutants run killed, {dead_all / run_all:.1%}")
    print(
        "mutants: cosmic-ray's (default operators), less those inside annotations (annot: never evaluated); "
        "sampled < mutants: a seeded random sample, run in random order, so the kill rate is an estimate "
        "from `run` mutants (pending: not reached); kill = (killed + timeout + later) / run; later: a "
        "survivor that the tests added since kill (--recheck); incomp: a mutant the tool could not test, "
        "left out; test s: the unmutated tests, warm; min: the whole run; load: 1-minute load at its end"
    )
    if survivors:
        print("\nSurvivors:")
        for name, where, operator, change, killed in sorted(survivors):
            note = "  (killed by a test added since)" if killed else ""
            print(f"  [{name}] {where}  {operator}: {change}{note}")
    (workdir / "report.json").write_text(json.dumps({"modules": summary, "survivors": survivors}, indent=1))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--client"]:  # cosmic-ray's test command: stdlib only, no site packages
        return client(sys.argv[2], sys.argv[4:])
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(MODULES))
    parser.add_argument("--sample", type=int, default=60, help="mutants per module (0: all of them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=REPO / ".mutation", help="copies, sessions, report")
    parser.add_argument("--report", action="store_true", help="print the last run's table only")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="test the last run's survivors again, with the tests as they are",
    )
    parser.add_argument(
        "--match", default="", help="with --recheck: only survivors at FILE:LINE matching this"
    )
    args = parser.parse_args()
    if args.recheck:
        for name in args.modules:
            if (args.workdir / name / "session.sqlite").exists():
                recheck(name, MODULES[name], args.workdir, args.match)
    elif not args.report:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min)", flush=True)
        for name in args.modules:
            run_module(name, MODULES[name], args.workdir, args.sample, args.seed)
    return report(args.modules, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
