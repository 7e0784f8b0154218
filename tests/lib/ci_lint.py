#!/usr/bin/python3
"""Check the CI recipes of examples/ci (docs/ci.md) with a YAML parser
(Debian's python3-yaml): they parse, they have the shape docs/ci.md
describes (a build job, a matrix of shards that covers 1..N, the cache,
JUnit per shard, a red shard fails the pipeline), and every provium command
line in them uses options that `provium --help` lists.

usage: ci_lint.py PROVIUM_BIN [--github FILE] [--gitlab FILE]
Prints `ok FILE` per good file; otherwise each problem, and exits 1."""
import re
import shlex
import subprocess
import sys

import yaml

problems = []


def problem(path, msg):
    problems.append(f"{path}: {msg}")


def known_options(provium):
    out = subprocess.run([provium, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", out))


SUBCOMMANDS = {"kernel": {"fetch", "list", "path", "ensure"}, "coverage": None}


def expr(text):
    """GitHub's ${{ x }} without its spaces, so a shell word holds it whole."""
    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", r"${{\1}}", str(text))


def provium_lines(script):
    """The provium command lines of a shell script (continuations joined)."""
    text = expr(re.sub(r"\\\n", " ", script))
    for line in text.splitlines():
        for part in re.split(r"&&|\|\||;", line):
            words = shlex.split(part.strip(), posix=True)
            if words and words[0] == "provium":
                yield words[1:]


def check_command(path, args, options):
    """One provium command line; returns its options as a dict."""
    seen = {}
    if args and args[0] in SUBCOMMANDS:
        allowed = SUBCOMMANDS[args[0]]
        if allowed is not None and (len(args) < 2 or args[1] not in allowed):
            problem(path, f"provium {' '.join(args)}: not a `provium {args[0]}` command")
        return seen
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name = a.split("=", 1)[0]
            if name not in options:
                problem(path, f"provium {' '.join(args)}: `{name}` is not an option of provium")
            if name in ("--shard", "--junit", "--timeout", "--filter") and "=" not in a:
                i += 1
                seen[name] = args[i] if i < len(args) else None
            else:
                seen[name] = a
        i += 1
    return seen


def run_scripts_github(job):
    for step in job.get("steps", []):
        if "run" in step:
            yield step["run"]


def check_github(path, doc, options):
    # YAML 1.1 reads the key `on` as true
    if not isinstance(doc, dict) or not (doc.get("on") or doc.get(True)):
        problem(path, "no `on:` triggers")
    jobs = doc.get("jobs") or {}
    shard_jobs = [(n, j) for n, j in jobs.items() if (j.get("strategy") or {}).get("matrix")]
    if len(shard_jobs) != 1:
        problem(path, f"expected one job with a matrix, found {len(shard_jobs)}")
        return
    name, job = shard_jobs[0]
    strategy = job["strategy"]
    shards = strategy["matrix"].get("shard")
    n = int((job.get("env") or {}).get("SHARDS", 0))
    if not isinstance(shards, list) or shards != list(range(1, n + 1)) or n < 2:
        problem(path, f"matrix.shard {shards!r} is not 1..SHARDS (SHARDS = {n})")
    if strategy.get("fail-fast") is not False:
        problem(path, "strategy.fail-fast must be false: every shard reports its failures")
    if "build" not in (job.get("needs") or []) and job.get("needs") != "build":
        problem(path, f"job `{name}` does not need the build job")
    caches = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    if not caches or ".cache/provium" not in str(caches[0].get("with", {}).get("path")):
        problem(path, "no actions/cache step saving .cache/provium")
    if "XDG_CACHE_HOME" not in (doc.get("env") or {}):
        problem(path, "XDG_CACHE_HOME is not set: the cache would not be where it is saved")
    runs = [args for s in run_scripts_github(job) for args in provium_lines(s)]
    t = shard_run(path, runs, options)
    if t is None:
        return
    if t["--shard"] != "${{matrix.shard}}/${{env.SHARDS}}":
        problem(path, f"--shard {t['--shard']}: not the matrix's K/N")
    junit = t.get("--junit")
    if not junit:
        problem(path, "the shard's provium run writes no --junit")
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    if not any(expr(s.get("with", {}).get("path")) == junit and s.get("if") == "always()"
               for s in uploads):
        problem(path, f"no upload of {junit} under `if: always()`")
    gate = [j for j in jobs.values() if name in (j.get("needs") or [])
            or j.get("needs") == name]
    if not gate or gate[0].get("if") != "always()" or \
            f"needs.{name}.result" not in " ".join(run_scripts_github(gate[0])):
        problem(path, f"no job that fails when a `{name}` job failed")
    if "kernel" not in [a[0] for a in runs if a]:
        problem(path, "no `provium kernel ensure` before the run")


def shard_run(path, runs, options):
    """The one provium run with --shard among runs, checked; None (said) if not one."""
    tests = [check_command(path, a, options) for a in runs]
    tests = [t for t in tests if "--shard" in t]
    if len(tests) != 1:
        problem(path, f"expected one provium run with --shard, found {len(tests)}")
        return None
    return tests[0]


def check_gitlab(path, doc, options):
    if not isinstance(doc, dict):
        problem(path, "not a mapping")
        return
    jobs = {n: j for n, j in doc.items() if isinstance(j, dict) and "script" in j}
    par = [(n, j) for n, j in jobs.items() if "parallel" in j]
    if len(par) != 1:
        problem(path, f"expected one job with `parallel`, found {len(par)}")
        return
    name, job = par[0]
    if not isinstance(job["parallel"], int) or job["parallel"] < 2:
        problem(path, f"parallel: {job['parallel']!r} is not a number of jobs")
    if job.get("allow_failure"):
        problem(path, f"job `{name}` may fail without failing the pipeline")
    if ".cache/provium" not in " ".join(job.get("cache", {}).get("paths", [])):
        problem(path, "the cache does not keep .cache/provium")
    if "XDG_CACHE_HOME" not in (doc.get("variables") or {}):
        problem(path, "XDG_CACHE_HOME is not set: the cache would not be where it is saved")
    runs = [args for s in job["script"] for args in provium_lines(s)]
    t = shard_run(path, runs, options)
    if t is None:
        return
    if t["--shard"] != "$CI_NODE_INDEX/$CI_NODE_TOTAL":
        problem(path, f"--shard {t['--shard']}: not CI_NODE_INDEX/CI_NODE_TOTAL")
    art = job.get("artifacts") or {}
    if art.get("when") != "always" or (art.get("reports") or {}).get("junit") != t.get("--junit"):
        problem(path, "the --junit file is not a JUnit report kept `when: always`")
    if "kernel" not in [a[0] for a in runs if a]:
        problem(path, "no `provium kernel ensure` before the run")


def main(argv):
    provium, rest = argv[1], argv[2:]
    options = known_options(provium)
    for kind, path in zip(rest[::2], rest[1::2]):
        before = len(problems)
        try:
            with open(path) as f:
                doc = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            problem(path, f"does not parse: {e}")
            continue
        try:
            {"--github": check_github, "--gitlab": check_gitlab}[kind](path, doc, options)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            problem(path, f"unexpected shape: {type(e).__name__}: {e}")
        if len(problems) == before:
            print(f"ok {path}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
