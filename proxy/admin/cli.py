"""Admin subcommands: `speedup-proxy memory ...` and `speedup-proxy export-sft ...`.

They talk to a running proxy over HTTP (its /admin endpoints), so they work the same for local
and Redis memory and never race the proxy's in-memory indexes. `--url` defaults to the
configured host and port, `--admin-key` to the configured admin key (SPEEDUP_ADMIN_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from proxy.admin.client import AdminClient, AdminError
from proxy.config import Settings
from proxy.gateway.auth import LOCAL_TENANT


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the running proxy (default: http://HOST:PORT from the settings)")
    parser.add_argument("--admin-key", help="admin key (default: settings / SPEEDUP_ADMIN_KEY)")
    parser.add_argument("--config", type=Path, help="YAML settings file, for the defaults above")
    parser.add_argument("--tenant", default=LOCAL_TENANT, help=f"tenant (default {LOCAL_TENANT!r})")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")


def add_admin_commands(commands: Any) -> None:
    memory = commands.add_parser("memory", help="list, search, show, delete and export a running proxy's memory")
    sub = memory.add_subparsers(dest="memory_command", required=True)

    listing = sub.add_parser("list", help="episodes, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(handler=memory_list)

    search = sub.add_parser("search", help="episodes nearest to a text (semantic, via the embedder)")
    search.add_argument("text")
    search.add_argument("--limit", type=int, default=10)
    search.set_defaults(handler=memory_search)

    show = sub.add_parser("show", help="one episode in full")
    show.add_argument("episode_id")
    show.set_defaults(handler=memory_show)

    delete = sub.add_parser("delete", help="delete one episode")
    delete.add_argument("episode_id")
    delete.set_defaults(handler=memory_delete)

    reflections = sub.add_parser("reflections", help="lessons, most recently updated first")
    reflections.add_argument("--limit", type=int, default=20)
    reflections.add_argument("--offset", type=int, default=0)
    reflections.add_argument("--kind", choices=["reflect", "multi_case_reflect", "reflect_update"])
    reflections.set_defaults(handler=memory_reflections)

    forget = sub.add_parser("delete-reflection", help="delete one lesson")
    forget.add_argument("reflection_id")
    forget.set_defaults(handler=memory_delete_reflection)

    tenants = sub.add_parser("tenants", help="tenants with memory, and their counts")
    tenants.set_defaults(handler=memory_tenants)

    wipe = sub.add_parser("delete-tenant", help="delete all of a tenant's episodes, lessons and response log")
    wipe.add_argument("--yes", action="store_true", help="confirm")
    wipe.set_defaults(handler=memory_delete_tenant)

    export = sub.add_parser("export", help="all episodes as JSONL (to --out or stdout)")
    export.add_argument("--out", type=Path)
    export.set_defaults(handler=memory_export)

    for parser in (listing, search, show, delete, reflections, forget, tenants, wipe, export):
        _connection(parser)

    sft = commands.add_parser(
        "export-sft",
        help="good episodes and corrections as an OpenAI chat fine-tuning file (see docs/FINETUNE.md)",
    )
    _connection(sft)
    sft.add_argument("--out", type=Path, required=True, help="training JSONL")
    sft.add_argument("--holdout", type=float, default=0.0, help="fraction held out for evaluation (e.g. 0.1)")
    sft.add_argument("--holdout-out", type=Path, help="holdout JSONL (required with --holdout)")
    sft.add_argument("--seed", type=int, default=0, help="salt of the deterministic holdout split")
    sft.add_argument("--include-unverified", action="store_true", help="also unrated episodes nobody checked")
    sft.add_argument("--from-export", type=Path, help="read a `memory export` file instead of asking the proxy")
    sft.set_defaults(handler=export_sft_command)


# -- handlers ----------------------------------------------------------------------------------


def _client(args: argparse.Namespace, settings: Settings) -> AdminClient:
    url = args.url
    if url is None:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        url = f"http://{host}:{settings.port}"
    return AdminClient(url, args.admin_key or settings.admin_key)


def _run(args: argparse.Namespace, settings: Settings, path: str, method: str = "get", **params: Any) -> Any:
    with _client(args, settings) as client:
        return client.get(path, **params) if method == "get" else client.delete(path)


def _fail(error: Exception) -> int:
    print(f"speedup-proxy: {error}", file=sys.stderr)
    return 1


def _print_episodes(episodes: list[dict[str, Any]]) -> None:
    for e in episodes:
        flags = ",".join(x for x in (e.get("rating"), e.get("verifier") and f"verifier:{e['verifier']}") if x)
        similarity = f" sim={e['similarity']:.3f}" if "similarity" in e else ""
        print(f"{e['id']}  hits={e['hits']}{similarity}  {flags or '-'}  {_one_line(e['question'], 90)}")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def memory_list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        found = _run(
            args, settings, AdminClient.tenant_path(args.tenant, "episodes"), limit=args.limit, offset=args.offset
        )
    except AdminError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(f"{found['total']} episodes for tenant {args.tenant!r}")
        _print_episodes(found["episodes"])
    return 0


def memory_search(args: argparse.Namespace, settings: Settings) -> int:
    try:
        found = _run(args, settings, AdminClient.tenant_path(args.tenant, "episodes"), q=args.text, limit=args.limit)
    except AdminError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        _print_episodes(found["episodes"])
    return 0


def memory_show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        found = _run(args, settings, AdminClient.tenant_path(args.tenant, "episodes", args.episode_id))
    except AdminError as error:
        return _fail(error)
    print(json.dumps(found, indent=2))
    return 0


def memory_delete(args: argparse.Namespace, settings: Settings) -> int:
    try:
        _run(args, settings, AdminClient.tenant_path(args.tenant, "episodes", args.episode_id), method="delete")
    except AdminError as error:
        return _fail(error)
    print(f"deleted {args.episode_id}")
    return 0


def memory_reflections(args: argparse.Namespace, settings: Settings) -> int:
    path = AdminClient.tenant_path(args.tenant, "reflections")
    try:
        found = _run(args, settings, path, limit=args.limit, offset=args.offset, kind=args.kind)
    except AdminError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{found['total']} lessons for tenant {args.tenant!r}")
    for r in found["reflections"]:
        print(f"{r['id']}  {r['kind']}  rev={r['revisions']} members={r['members']}  {_one_line(r['text'], 100)}")
    return 0


def memory_delete_reflection(args: argparse.Namespace, settings: Settings) -> int:
    try:
        _run(args, settings, AdminClient.tenant_path(args.tenant, "reflections", args.reflection_id), method="delete")
    except AdminError as error:
        return _fail(error)
    print(f"deleted {args.reflection_id}")
    return 0


def memory_tenants(args: argparse.Namespace, settings: Settings) -> int:
    try:
        found = _run(args, settings, "/admin/tenants")
    except AdminError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for row in found["tenants"]:
        print(f"{row['tenant']}  episodes={row['episodes']}  lessons={row['reflections']}")
    return 0


def memory_delete_tenant(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        print(f"this deletes all memory of tenant {args.tenant!r}; add --yes to confirm", file=sys.stderr)
        return 2
    try:
        found = _run(args, settings, AdminClient.tenant_path(args.tenant), method="delete")
    except AdminError as error:
        return _fail(error)
    print(json.dumps(found) if args.json else f"deleted {found['episodes']} episodes, {found['reflections']} lessons")
    return 0


def memory_export(args: argparse.Namespace, settings: Settings) -> int:
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    count = 0
    try:
        with _client(args, settings) as client:
            for line in client.lines(AdminClient.tenant_path(args.tenant, "export")):
                if line.strip():
                    out.write(line + "\n")
                    count += 1
    except AdminError as error:
        return _fail(error)
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"wrote {count} episodes to {args.out}", file=sys.stderr)
    return 0


def export_sft_command(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.learning.export_sft import export_sft

    if args.holdout and args.holdout_out is None:
        return _fail(ValueError("--holdout needs --holdout-out"))
    if not 0.0 <= args.holdout < 1.0:
        return _fail(ValueError("--holdout must be in [0, 1)"))
    try:
        if args.from_export is not None:
            lines = args.from_export.read_text(encoding="utf-8").splitlines()
        else:
            with _client(args, settings) as client:
                lines = list(client.lines(AdminClient.tenant_path(args.tenant, "export")))
        report = export_sft(
            lines, args.out, args.holdout, args.holdout_out, seed=args.seed, include_unverified=args.include_unverified
        )
    except (AdminError, OSError, ValueError) as error:
        return _fail(error)
    if args.json:
        print(report.model_dump_json())
    else:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())) or "none"
        held = f", {report.holdout} held out to {args.holdout_out}" if args.holdout_out else ""
        print(f"read {report.read} episodes: {report.train} examples to {args.out}{held}; skipped: {skipped}")
    return 0
