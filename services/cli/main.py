"""The `lockgate` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.config import ConfigError
from shared.runtime import NatsUnreachable, install_uvloop

app = typer.Typer(
    name="lockgate",
    help="Lockgate: a production gateway for LLM calls, as a microservice mesh over NATS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Read the durable audit stream.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
jobs_app = typer.Typer(help="Background jobs (a JetStream work queue).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
keys_app = typer.Typer(help="API keys (stored hashed in the JetStream KV bucket).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
approvals_app = typer.Typer(
    help="Requests and answers waiting for a person (human in the loop): list, approve, deny.", no_args_is_help=True
)
app.add_typer(approvals_app, name="approvals")
budget_app = typer.Typer(help="Budgets of a tenant, a user or a key: show them, change them at runtime.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(budget_app, name="budget")

NatsUrl = Annotated[str, typer.Option("--nats", envvar="LOCKGATE_NATS_URL", help="NATS server URL.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", envvar="LOCKGATE_CONFIG", help="TOML config (default: built-in).")
]
Namespace = Annotated[str, typer.Option("--namespace", help="Subject namespace of the mesh ('' in production).")]


def _run(coro: Coroutine[Any, Any, int]) -> None:
    install_uvloop()
    try:
        code = asyncio.run(coro)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        code = 2
    except NatsUnreachable as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 3
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@app.command()
def up(
    config: ConfigOpt = None,
    dev_key: Annotated[
        str | None, typer.Option("--dev-key", help="API key for the dev tenant (default: generate one).")
    ] = None,
    split: Annotated[bool, typer.Option("--split", help="Run each service as its own process.")] = False,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where nats-server keeps JetStream data.")] = Path(
        ".lockgate"
    ),
    nats_port: Annotated[int, typer.Option("--nats-port", help="NATS port (-1: pick a free one).")] = -1,
    simulator_url: Annotated[
        str | None, typer.Option("--simulator-url", help="Use this running simulator instead of starting one.")
    ] = None,
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP door port (-1: pick a free one).")] = -1,
) -> None:
    """Run the whole mesh on the embedded default: nats-server, simulator, all services.

    Prints NATS_URL=, SIMULATOR_URL=, LOCKGATE_API_KEY=, HTTP_URL= and then READY= lines on
    stdout (logs go to stderr). Ctrl-C or SIGTERM stops everything it started.
    """
    from services.cli import up as up_mod  # noqa: PLC0415 - keep `lockgate --help` fast

    data_dir.mkdir(parents=True, exist_ok=True)
    _run(
        up_mod.run(
            up_mod.UpOptions(
                config_path=config,
                dev_key=dev_key,
                split=split,
                data_dir=data_dir,
                nats_port=nats_port,
                simulator_url=simulator_url,
                http_port=http_port,
            )
        )
    )


@app.command()
def serve(
    service: Annotated[
        str,
        typer.Argument(help="guard, router, budgeter, cache, executor, validator, auditor, jobs, http or simulator."),
    ],
    nats_url: Annotated[
        str | None, typer.Option("--nats", envvar="LOCKGATE_NATS_URL", help="NATS URL (default: the config's).")
    ] = None,
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option("--host", help="simulator only: interface to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option("--port", help="simulator only: port (0: any free port).")] = None,
) -> None:
    """Run one service against an existing NATS (what each compose container runs)."""
    from services.cli import serve as serve_mod  # noqa: PLC0415
    from services.registry import SERVICES  # noqa: PLC0415

    if service not in SERVICES and service != "simulator":
        typer.echo(f"unknown service {service!r}; choose one of: {', '.join([*SERVICES, 'simulator'])}", err=True)
        raise typer.Exit(2)
    _run(serve_mod.run(service, nats_url, config, host, port))


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they arrive.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model or route (default: default route).")] = None,
    json_schema: Annotated[
        Path | None, typer.Option("--json-schema", help="File with a JSON Schema the answer must match.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Also print the lockgate block.")] = False,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    api_key: Annotated[str, typer.Option("--api-key", envvar="LOCKGATE_API_KEY", help="Your Lockgate API key.")] = "",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the answer.")] = 60.0,
) -> None:
    """Send one chat request over NATS and print the answer."""
    from services.cli import chat as chat_mod  # noqa: PLC0415

    if not api_key:
        typer.echo("no API key: pass --api-key or set LOCKGATE_API_KEY (lockgate up prints one)", err=True)
        raise typer.Exit(2)
    try:
        req = chat_mod.build_request(
            prompt, model=model, stream=stream, json_schema=json_schema, max_tokens=max_tokens, temperature=temperature
        )
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read --json-schema: {exc}", err=True)
        raise typer.Exit(2) from None
    _run(chat_mod.run(nats_url, api_key, req, verbose=verbose, timeout_s=timeout))


@audit_app.command("tail")
def audit_tail(
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's records.")] = None,
    from_start: Annotated[bool, typer.Option("--from-start/--new", help="Replay from the start of the stream.")] = True,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep following new records.")] = True,
    namespace: Namespace = "",
) -> None:
    """Print audit records as JSON lines (one per request)."""
    from services.cli import audit as audit_mod  # noqa: PLC0415

    _run(audit_mod.tail(nats_url, tenant=tenant, namespace=namespace, from_start=from_start, follow=follow))


@jobs_app.command("submit")
def jobs_submit(
    file: Annotated[Path, typer.Argument(help="JSONL: one chat request (or OpenAI batch line) per line.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results (default: FILE.results.jsonl).")] = None,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    api_key: Annotated[str, typer.Option("--api-key", envvar="LOCKGATE_API_KEY", help="Your Lockgate API key.")] = "",
) -> None:
    """Queue a batch as one background job, show a progress bar, write one result line per request."""
    from services.cli import jobs as jobs_mod  # noqa: PLC0415

    if not api_key:
        typer.echo("no API key: pass --api-key or set LOCKGATE_API_KEY (lockgate up prints one)", err=True)
        raise typer.Exit(2)
    _run(jobs_mod.submit(nats_url, api_key, file, out or file.with_suffix(".results.jsonl")))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for.")],
    tier: Annotated[str, typer.Option("--tier", help="The user tier of the key (free, pro…).")] = "",
    routes: Annotated[
        list[str] | None, typer.Option("--route", help="A route or model the key may use (repeat; default: all).")
    ] = None,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """Create a key: printed once (API_KEY=…), stored only as a hash."""
    from services.cli import keys as keys_mod  # noqa: PLC0415

    _run(keys_mod.create(nats_url, namespace, tenant, tier, routes or []))


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """List keys: id, tenant, tier, routes (never the key)."""
    from services.cli import keys as keys_mod  # noqa: PLC0415

    _run(keys_mod.list_(nats_url, namespace, as_json))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (KEY_ID from create, or from list).")],
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """Revoke a key by id."""
    from services.cli import keys as keys_mod  # noqa: PLC0415

    _run(keys_mod.revoke(nats_url, namespace, key_id))


Decider = Annotated[
    str, typer.Option("--by", envvar="USER", help="Who decides, kept in the record and the audit ($USER, else 'cli').")
]


@approvals_app.command("list")
def approvals_list(
    include_decided: Annotated[
        bool, typer.Option("--all", help="Also approved, denied and expired ones (kept 7 days), with their status.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """List pending approvals: id, tenant, age, time left, what waits (model, tools, a redacted preview)."""
    from services.cli import approvals as approvals_mod  # noqa: PLC0415

    _run(approvals_mod.list_(nats_url, namespace, include_decided=include_decided, as_json=as_json))


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[str, typer.Argument(help="The approval id (ap_..., from list).")],
    by: Decider = "cli",
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """Release a pending request (it runs) or held answer (it is delivered). Exit 1: unknown, decided or expired."""
    from services.cli import approvals as approvals_mod  # noqa: PLC0415

    _run(approvals_mod.decide(nats_url, namespace, approval_id, "approved", by, ""))


@approvals_app.command("deny")
def approvals_deny(
    approval_id: Annotated[str, typer.Argument(help="The approval id (ap_..., from list).")],
    reason: Annotated[str, typer.Option("--reason", help="Told to the client in the approval_denied error.")] = "",
    by: Decider = "cli",
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """Refuse a pending request or held answer: the client gets approval_denied. Exit 1: unknown, decided or expired."""
    from services.cli import approvals as approvals_mod  # noqa: PLC0415

    _run(approvals_mod.decide(nats_url, namespace, approval_id, "denied", by, reason))


TenantOpt = Annotated[str | None, typer.Option("--tenant", help="A tenant's own budget.")]
UserOpt = Annotated[str | None, typer.Option("--user", help="A user's budget: TENANT/USER (the request's user).")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="An API key's budget: its KEY_ID.")]


@budget_app.command("show")
def budget_show(
    tenant: TenantOpt = None,
    user: UserOpt = None,
    key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    config: ConfigOpt = None,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """Limit, spent, reserved, remaining and reset of the daily and monthly windows."""
    from services.cli import budget as budget_mod  # noqa: PLC0415

    _run(budget_mod.show(nats_url, namespace, config, (tenant, user, key), as_json))


@budget_app.command("set")
def budget_set(
    tenant: TenantOpt = None,
    user: UserOpt = None,
    key: KeyOpt = None,
    daily: Annotated[float | None, typer.Option("--daily", help="Daily budget in USD (UTC day).")] = None,
    monthly: Annotated[float | None, typer.Option("--monthly", help="Monthly budget in USD (UTC month).")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="hard (refuse or degrade) or soft (alert).")] = None,
    config: ConfigOpt = None,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    namespace: Namespace = "",
) -> None:
    """Change a budget at runtime (overrides the config; every budgeter applies it within about a second)."""
    from services.cli import budget as budget_mod  # noqa: PLC0415

    _run(budget_mod.set_(nats_url, namespace, config, (tenant, user, key), daily, monthly, mode))


@app.command()
def status(nats_url: NatsUrl = "nats://127.0.0.1:4222", namespace: Namespace = "") -> None:
    """List the services answering $SRV.PING with their request and error counts, and circuit breakers."""
    from services.cli import status as status_mod  # noqa: PLC0415

    _run(status_mod.run(nats_url, namespace=namespace))


@app.command()
def bench(
    requests: Annotated[int, typer.Option("-n", "--requests", help="Requests per run.")] = 2000,
    concurrency: Annotated[
        list[int] | None, typer.Option("-c", "--concurrency", help="Concurrency levels (repeatable).")
    ] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Streamed requests.")] = False,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="mesh (NATS path), http (the HTTP door, streamed and not), resilience (failing providers) "
            "or budget (reserve and settle against budgeter replicas).",
        ),
    ] = "mesh",
) -> None:
    """Measure the mesh against the simulator directly, in the same run (see README)."""
    if scenario == "http":
        from services.cli import bench_http  # noqa: PLC0415

        _run(bench_http.run(requests, concurrency or [1, 32, 128]))
    if scenario == "resilience":
        from services.cli import bench_resilience  # noqa: PLC0415

        _run(bench_resilience.run(requests, (concurrency or [32])[0], hang_seconds=8.0))
    if scenario == "budget":
        from services.cli import bench_budget  # noqa: PLC0415

        _run(bench_budget.run(requests, concurrency or [64], replicas=[1, 3]))
    if scenario != "mesh":
        typer.echo(f"unknown scenario {scenario!r}; choose mesh, http, resilience or budget", err=True)
        raise typer.Exit(2)
    from services.cli import bench as bench_mod  # noqa: PLC0415

    _run(bench_mod.run(requests, concurrency or [1, 32], stream=stream))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)
