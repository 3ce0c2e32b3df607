"""Command line: ``python -m controlplane <command>``.

    serve [--port 7071] [--bind 127.0.0.1] [--no-timers]   run the functions locally at Core Tools' URLs
    policy check [PATH]                                   validate a policy file, print its version
    policy schema                                         print the policy's JSON schema
    decisions [--model NAME] [--outcome O,O] [--since T] [--until T] [--limit N] [--continuation TOKEN]
                                                          print recorded decisions, newest first, a page at a
                                                          time (the next page's token goes to stderr)
    index backfill [--resume POINT]                       index records written before the indexes (Table
                                                          Storage); idempotent, resumable from a printed point
    tasks list [--state STATE] [--limit N] [--continuation TOKEN]
                                                          print outbox tasks, a page at a time
    tasks show|retry|cancel TASK_ID                       one task; send it again now; give it up
    tasks replay [--limit N]                              every dead-lettered task back to pending
    rollouts list [--state STATE] [--limit N] [--continuation TOKEN]
                                                          progressive rollouts, newest first, a page at a time
    rollouts resume ROLLOUT_ID                            watch a paused rollout's step again
    incidents [--state open|closed] [--limit N] [--continuation TOKEN]
                                                          alert incidents, most recently changed first, a page at
                                                          a time (lists print the next page's token to stderr)
    windows [--state open|closed] [--limit N] [--continuation TOKEN]
                                                          telemetry windows, by model and deployment
    reviews link REVIEW_ID --approver ID                  print an approver's signed approval link
    demo [--port 7071]                                    replay a scenario against a fresh local host, its
                                                          state kept in .controlplane/demo/ to serve afterwards
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import sys

from controlplane.domain.errors import ControlPlaneError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane", description="MLOps control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    # Records print as a table for people; --json prints each as one JSON object a line, for scripts and jq.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")

    serve = commands.add_parser("serve", help="run the functions locally at Core Tools' URLs")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--bind", default="127.0.0.1")
    serve.add_argument("--no-timers", action="store_true", help="do not run timer functions on their schedule")

    policy = commands.add_parser("policy", help="validate the policy or print its schema")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate a policy file")
    check.add_argument("path", nargs="?", default=None)
    policy_commands.add_parser("schema", help="print the JSON schema of the policy file")

    decisions = commands.add_parser("decisions", help="print recorded decisions, newest first", parents=[output])
    decisions.add_argument("--model")
    decisions.add_argument("--outcome", help="outcomes, comma-separated")
    decisions.add_argument("--since", help="decided at or after this ISO 8601 time (with an offset)")
    decisions.add_argument("--until", help="decided before this ISO 8601 time (with an offset)")
    decisions.add_argument("--limit", type=int, default=20)
    decisions.add_argument("--continuation", help="the token a previous page printed")

    index = commands.add_parser("index", help="the store's indexes (decisions; tasks by state on Table Storage)")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    backfill = index_commands.add_parser("backfill", help="index records written before the indexes")
    backfill.add_argument("--resume", help="the point a stopped backfill printed last")

    tasks = commands.add_parser("tasks", help="the outbox: list, show, retry, cancel, replay dead letters")
    task_commands = tasks.add_subparsers(dest="tasks_command", required=True)
    listing = task_commands.add_parser("list", help="print outbox tasks", parents=[output])
    listing.add_argument("--state", choices=["pending", "succeeded", "dead_lettered", "cancelled"])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--continuation", help="the token a previous page printed")
    for name, text in (("show", "print one task"), ("retry", "make a task due now"), ("cancel", "give a task up")):
        task_commands.add_parser(name, help=text, parents=[output]).add_argument("task_id")
    task_commands.add_parser("replay", help="every dead-lettered task back to pending", parents=[output]).add_argument(
        "--limit", type=int, default=100)

    rollouts = commands.add_parser("rollouts", help="progressive rollouts")
    rollout_commands = rollouts.add_subparsers(dest="rollouts_command", required=True)
    rollout_list = rollout_commands.add_parser("list", help="print rollouts, newest first", parents=[output])
    rollout_list.add_argument("--state", choices=["starting", "observing", "paused", "rolled_back", "completed"])
    rollout_list.add_argument("--limit", type=int, default=100)
    rollout_list.add_argument("--continuation", help="the token a previous page printed")
    rollout_commands.add_parser("resume", help="watch a paused rollout's step again",
                                parents=[output]).add_argument("rollout_id")

    incidents = commands.add_parser("incidents", help="alert incidents, most recently changed first",
                                    parents=[output])
    incidents.add_argument("--state", choices=["open", "closed"])
    incidents.add_argument("--limit", type=int, default=50)
    incidents.add_argument("--continuation", help="the token a previous page printed")

    windows = commands.add_parser("windows", help="telemetry windows, by model and deployment", parents=[output])
    windows.add_argument("--state", choices=["open", "closed"])
    windows.add_argument("--limit", type=int, default=50)
    windows.add_argument("--continuation", help="the token a previous page printed")

    reviews = commands.add_parser("reviews", help="approval links for local use")
    review_commands = reviews.add_subparsers(dest="reviews_command", required=True)
    link = review_commands.add_parser("link", help="print an approver's signed, single-use approval link")
    link.add_argument("review_id")
    link.add_argument("--approver", required=True)

    demo = commands.add_parser("demo", help="replay a realistic scenario against a fresh local host")
    demo.add_argument("--port", type=int, default=7071,
                      help="the port its state is served on afterwards (the links it prints point there)")

    args = parser.parse_args(argv)
    from controlplane.settings import load_local_settings

    load_local_settings()  # like Core Tools: local.settings.json Values, the environment wins
    logging.basicConfig(level=logging.WARNING if args.command == "demo" else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from controlplane.dev.localhost import serve

        def announce(server) -> None:
            host, port = server.server_address[:2]
            print(f"Control plane listening on http://{host}:{port}  (GET /api/health, /api/decisions; "
                  f"POST /api/alerts, /runtime/webhooks/EventGrid?functionName=on_registry_event, "
                  f"/admin/functions/<name>)", flush=True)

        try:
            serve(port=args.port, bind=args.bind, timers=not args.no_timers, ready=announce)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            print(f"port {args.port} is in use: stop what listens there or run `make run PORT={args.port + 1}`",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
        return 0
    if args.command == "demo":
        from controlplane.dev.demo import run

        return run(port=args.port)
    if args.command == "policy":
        from controlplane.domain.policy import load_policy, schema
        from controlplane.settings import Settings

        if args.policy_command == "schema":
            print(json.dumps(schema(), indent=2))
            return 0
        policy = load_policy(args.path or Settings.from_env().policy_path)
        print(f"{policy.source}: valid, version {policy.version}, {len(policy.document.models)} model rules")
        return 0

    from controlplane import bootstrap
    from controlplane.domain.ledger import TaskState

    if args.command == "reviews":
        from controlplane.handlers.reviews import approval_link

        print(approval_link(bootstrap.services(), args.review_id, args.approver))
        return 0
    services = bootstrap.services()
    if args.command == "decisions":
        from controlplane.handlers.queries import DecisionQuery, list_decisions

        query = DecisionQuery.parse({"model": args.model, "outcome": args.outcome, "since": args.since,
                                     "until": args.until})
        page = list_decisions(services, query, args.limit, args.continuation)
        _print(page.decisions, args.json)
        if page.continuation:
            print(f"next page: --continuation {page.continuation}", file=sys.stderr)
    elif args.command == "index":
        total, resume = 0, args.resume
        while True:
            indexed, resume = services.store.backfill_indexes(resume)
            total += indexed
            if resume is None:
                break
            print(f"indexed {total} records; to resume: --resume '{resume}'", file=sys.stderr, flush=True)
        print(f"indexed {total} records")
    elif args.command == "windows":
        from controlplane.handlers.queries import list_named

        _print_page(list_named(services, "windows", args.state or "", args.limit, args.continuation), args.json)
    elif args.command == "incidents":
        from controlplane.domain.incidents import IncidentState
        from controlplane.handlers.queries import list_incidents

        _print_page(list_incidents(services, IncidentState(args.state) if args.state else None, args.limit,
                                   args.continuation), args.json)
    elif args.command == "tasks":
        from controlplane.handlers import taskops

        command = args.tasks_command
        if command == "list":
            from controlplane.handlers.queries import list_tasks

            _print_page(list_tasks(services, TaskState(args.state) if args.state else None, args.limit,
                                   args.continuation), args.json)
            return 0
        if command == "replay":
            found = taskops.replay_dead_letters(services, args.limit)
        else:
            found = [taskops.act(services, command, args.task_id)]
        _print(found, args.json)
    else:
        from controlplane.domain.rollout import RolloutState
        from controlplane.handlers.rollout import resume_rollout

        if args.rollouts_command == "list":
            from controlplane.handlers.queries import list_rollouts

            _print_page(list_rollouts(services, [RolloutState(args.state)] if args.state else [], args.limit,
                                      args.continuation), args.json)
            return 0
        _print([resume_rollout(services, args.rollout_id)], args.json)
    return 0


def _print_page(page, as_json: bool) -> None:
    """A list page's items, and the next page's token on stderr when more follow."""
    _print(page.items, as_json)
    if page.continuation:
        print(f"next page: --continuation {page.continuation}", file=sys.stderr)


def _print(records, as_json: bool) -> None:
    """Records as a table with a header, or one JSON object a line with ``--json``; nothing when there are none."""
    records = list(records)
    if as_json:
        for record in records:
            print(json.dumps(record.to_json()))
        return
    if not records:
        return
    headers, columns = _COLUMNS[type(records[0]).__name__]
    rows = [[_cell(column(record)) for column in columns] for record in records]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _cell(value, limit: int = 60) -> str:
    """One cell: times as ``YYYY-MM-DD HH:MM`` (UTC), text on one line and cut to ``limit`` characters."""
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    text = " ".join(str("-" if value in (None, "") else value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _version(record) -> str:
    return f"{record.model or '-'}:{record.version or '-'}"


_COLUMNS = {
    "Decision": (["DECIDED (UTC)", "MODEL", "OUTCOME", "EVENT", "ID", "REASON"],
                 [lambda d: d.decided_at, _version, lambda d: d.outcome.value,
                  lambda d: d.event_type.removeprefix("Microsoft.MachineLearningServices."), lambda d: d.id,
                  lambda d: d.reason]),
    "Task": (["ID", "KIND", "STATE", "ATTEMPTS", "DUE (UTC)", "TARGET", "LAST ERROR"],
             [lambda t: t.id, lambda t: t.kind.value, lambda t: t.state.value, lambda t: t.attempts,
              lambda t: t.due_at, lambda t: t.target, lambda t: t.last_error]),
    "Rollout": (["ID", "MODEL", "ENDPOINT", "DEPLOYMENT", "STATE", "STEP", "CREATED (UTC)"],
                [lambda r: r.id, _version, lambda r: r.endpoint, lambda r: r.deployment, lambda r: r.state.value,
                 lambda r: f"{r.step + 1}/{len(r.steps)} {r.current}" if r.current else f"0/{len(r.steps)}",
                 lambda r: r.created_at]),
    "Window": (["MODEL", "DEPLOYMENT", "WINDOW", "RECORDS", "STATE", "CLOSED BY"],
               [lambda w: w.key.model, lambda w: w.key.deployment, lambda w: f"{w.key.bucket}.{w.key.part}",
                lambda w: w.count, lambda w: "closed" if w.closed else "open", lambda w: w.reason]),
    "Incident": (["ID", "STATE", "SEVERITY", "RULE", "TARGET", "ALERTS", "UPDATED (UTC)"],
                 [lambda i: i.id, lambda i: i.state.value, lambda i: i.severity, lambda i: i.rule,
                  lambda i: i.target, lambda i: i.fired, lambda i: i.updated_at]),
}
