"""Mutation testing of the rules (`make mutation`): mutmut on a copy of the code (mutants/), one worker, a report.

    python .ci/mutation.py                                  every module in SCOPE
    python .ci/mutation.py --modules controlplane/domain/reviews.py ...
    python .ci/mutation.py --since <git ref>                the modules in SCOPE changed since the ref
    python .ci/mutation.py --left                           only the mutants not killed last time (after new tests)
    python .ci/mutation.py --report-only                    rewrite the report from the results kept in mutants/

    python .ci/mutation.py --sample 60                      at most 60 mutants per module, evenly spread

The modules named are checked again in full (with ``--left``, only their mutants that were not killed: a new test
cannot revive a killed mutant, and mutmut itself checks again every function whose code changed); the results of
the others stay in mutants/ and stay in the report.
``--budget`` bounds the run in seconds: mutmut is interrupted then, what it finished is kept and reported, and the
rest reads "not checked". The report (test-artifacts/mutation.md) gives the score per module and every surviving
mutant with its diff; mutants listed in .ci/mutation-equivalents.txt with a reason count as equivalent.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "test-artifacts" / "mutation.md"
EQUIVALENTS = ROOT / ".ci" / "mutation-equivalents.txt"

# Module -> the functions under mutation (None: all of it). The drift engine is mutated in its decision only: the
# verdict, the sample bound, the multiple-testing corrections, the effect size and whether a column counts.
SCOPE: dict[str, tuple[str, ...] | None] = {
    "controlplane/domain/reviews.py": None,
    "controlplane/handlers/reviews.py": None,
    "controlplane/handlers/promotion.py": None,
    "controlplane/domain/promotion.py": None,
    "controlplane/domain/incidents.py": None,
    "controlplane/domain/rollout.py": None,
    "controlplane/domain/windows.py": None,
    "controlplane/domain/ledger.py": None,
    "controlplane/drift/engine.py": ("_verdict", "sample", "_inconclusive", "_calibrated_scores"),
    "controlplane/drift/calibrated.py": ("adjust", "effect_size", "_quantiles"),
    "controlplane/parsing/fields.py": None,
    "controlplane/parsing/eventgrid.py": None,
}
KILLED = {"killed", "timeout", "caught by type check"}


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def globs(path: str) -> list[str]:
    """mutmut's names for a module's mutants: ``<module>.x_<function>__mutmut_<n>``, methods ``xǁClassǁname``."""
    functions = SCOPE[path]
    if functions is None:
        return [f"{module_name(path)}.*"]
    return [f"{module_name(path)}.x_{function}__mutmut_*" for function in functions]


def changed_since(ref: str) -> list[str]:
    """Modules in SCOPE that differ between ``ref`` and the work tree (committed or not)."""
    out = subprocess.run(["git", "diff", "--name-only", ref, "--", *SCOPE], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [path for path in SCOPE if path in out.split()]


def run_mutmut(names: list[str], budget: float) -> int:
    """mutmut on ``names`` with one worker, stopped past ``budget`` (each result is saved as it comes)."""
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *names]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        return process.wait(timeout=max(1.0, budget))
    except subprocess.TimeoutExpired:
        print(f"mutation: budget of {budget:.0f} s spent; stopping mutmut and keeping what it checked", flush=True)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return 0


def sampled(path: str, size: int) -> list[str]:
    """At most ``size`` of the module's mutants, evenly spread over its functions in source order."""
    names = sorted(results(path), key=lambda n: (n.rpartition("__mutmut_")[0], int(n.rpartition("_")[2])))
    if len(names) <= size:
        return names
    return [names[i * len(names) // size] for i in range(size)]


def equivalents() -> dict[str, str]:
    """Mutant name -> why it cannot be told apart from the code (one a line: ``name  reason``)."""
    found = {}
    if EQUIVALENTS.exists():
        for line in EQUIVALENTS.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.strip().partition(" ")
                found[name] = reason.strip()
    return found


def results(path: str) -> dict[str, str]:
    """Mutant name -> status, for the functions of ``path`` in SCOPE, from the results mutmut keeps."""
    from mutmut.stats import status_by_exit_code

    meta = ROOT / "mutants" / f"{path}.meta"
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
    wanted = globs(path)
    return {name: status_by_exit_code[code] for name, code in codes.items()
            if any(fnmatch.fnmatchcase(name, g) for g in wanted)}


def diff(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        lines = get_diff_for_mutant(name, path=path).splitlines()
    except Exception as error:  # a module changed since its mutants were made: say so, keep reporting
        return f"(no diff: {error})"
    finally:
        os.chdir(cwd)
    return "\n".join(line for line in lines[2:] if line[:1] in "+-")


def report(checked: list[str]) -> tuple[str, list[tuple[str, float | None]]]:
    known = equivalents()
    rows, sections, scores = [], [], []
    for path in SCOPE:
        status = results(path)
        counts: dict[str, int] = {}
        for name, s in status.items():
            s = "equivalent" if s in ("survived", "no tests") and name in known else s
            counts[s] = counts.get(s, 0) + 1
        killed = sum(counts.get(s, 0) for s in KILLED)
        judged = sum(counts.values()) - counts.get("equivalent", 0) - counts.get("skipped", 0) \
            - counts.get("not checked", 0)
        score = 100.0 * killed / judged if judged else None
        scores.append((path, score))
        rows.append(f"| {path}{' *' if path in checked else ''} | {len(status)} | {killed} | "
                    f"{counts.get('survived', 0)} | {counts.get('no tests', 0)} | {counts.get('equivalent', 0)} | "
                    f"{counts.get('not checked', 0)} | {'-' if score is None else f'{score:.1f}%'} |")
        left = [n for n, s in status.items() if s in ("survived", "no tests", "suspicious")]
        if left:
            sections.append(f"\n### {path}\n")
            for name in sorted(left):
                reason = known.get(name)
                sections.append(f"- `{name}` ({status[name]}{'; equivalent: ' + reason if reason else ''})\n"
                                f"  ```diff\n  " + diff(name, path).replace("\n", "\n  ") + "\n  ```")
    text = ["# Mutation report", "",
            f"mutmut, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; * = checked in this run. "
            "Score = killed / (mutants - equivalent - not checked).", "",
            "| module | mutants | killed | survived | no tests | equivalent | not checked | score |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, "", "## Mutants left", *sections, ""]
    return "\n".join(text), scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="*", default=None, help="paths of modules in SCOPE")
    parser.add_argument("--since", help="check the modules in SCOPE changed since this git ref")
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds before mutmut is stopped")
    parser.add_argument("--floor", type=float, default=None, help="fail when a checked module scores below it")
    parser.add_argument("--left", action="store_true", help="only the mutants that were not killed last time")
    parser.add_argument("--sample", type=int, default=None,
                        help="check at most this many mutants per module, evenly spread (a quicker estimate)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    if args.modules:
        unknown = [m for m in args.modules if m not in SCOPE]
        if unknown:
            parser.error(f"not under mutation: {', '.join(unknown)} (see SCOPE in {Path(__file__).name})")
        modules = args.modules
    elif args.since:
        modules = changed_since(args.since)
    else:
        modules = list(SCOPE)
    if args.report_only:
        modules = []
    elif not modules:
        print(f"mutation: no module under mutation changed since {args.since}")
    else:
        print(f"mutation: checking {', '.join(modules)}", flush=True)
        names = [g for m in modules for g in globs(m)]
        if args.sample:
            if not all(results(m) for m in modules):  # mutmut names the mutants when it first makes them
                run_mutmut(["mutation.sample.none*"], args.budget)
            names = [n for m in modules for n in sampled(m, args.sample)]
            if args.left:
                names = [n for m in modules for n, s in results(m).items() if n in set(names) and s not in KILLED]
        elif args.left:
            names = [n for m in modules for n, s in (results(m) or dict.fromkeys(globs(m), "")).items()
                     if s not in KILLED]
        code = run_mutmut(names, args.budget) if names else 0
        if code:
            print(f"mutation: mutmut exited {code}", file=sys.stderr)
            return code

    text, scores = report(modules)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(text)
    print(text.split("## Mutants left")[0])
    print(f"mutation: report in {REPORT.relative_to(ROOT)}")
    low = [f"{path} {score:.1f}%" for path, score in scores
           if path in modules and score is not None and args.floor is not None and score < args.floor]
    if low:
        print(f"mutation: below the floor of {args.floor:g}%: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
