"""``ruta rules ...``: validate, test, table and diff rule files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.rules.corpus import CorpusError
from app.rules.engine import DEFAULT_RULES_PATH, RuleSet, load_rule_set
from app.rules.errors import RuleFileError

rules_cli = typer.Typer(
    help="Rule files: validate, test against scenarios, show as a table, diff two versions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

FileArg = Annotated[Path, typer.Argument(help="A rule file (YAML).", show_default=True)]


def _load(path: Path) -> RuleSet:
    try:
        return load_rule_set(path)
    except RuleFileError as exc:
        count = len(exc.problems)
        typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''}; not usable:", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None


@rules_cli.command()
def validate(file: FileArg) -> None:
    """Check a rule file against the screening schema. Exit 1 with every problem found."""
    rule_set = _load(file)
    rules = len(rule_set.rules)
    definitions = len(rule_set.rule_file.definitions)
    typer.echo(
        f"{file}: valid - version {rule_set.version}, {rules} rules, "
        f"{definitions} definitions, sha256 {rule_set.sha256}"
    )


@rules_cli.command("test")
def run_scenarios(
    file: FileArg = DEFAULT_RULES_PATH,
    scenarios: Annotated[
        Path | None,
        typer.Option(help="Directory of scenario files (default: the protocol's scenarios/)."),
    ] = None,
    coverage_gate: Annotated[
        bool,
        typer.Option(
            "--coverage/--no-coverage",
            help="Fail unless every rule fires in a scenario and is silent in a near miss.",
        ),
    ] = True,
) -> None:
    """Run scenario files against a rule file, then the coverage gate."""
    from app.rules.scenarios import (
        DEFAULT_SCENARIOS_DIR,
        PROTOCOL_RULES,
        ScenarioError,
        coverage,
        load_scenario_dir,
        run_scenario,
    )

    rule_set = _load(file)
    directory = scenarios or (
        file.parent / "scenarios" if (file.parent / "scenarios").is_dir() else DEFAULT_SCENARIOS_DIR
    )
    try:
        loaded = load_scenario_dir(directory)
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    results = [run_scenario(rule_set, s) for s in loaded]
    failed = [r for r in results if not r.ok]
    for result in failed:
        typer.echo(f"FAIL {result.scenario.label}", err=True)
        for failure in result.failures:
            typer.echo(f"  {failure}", err=True)
    typer.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed ({directory})")
    ok = not failed
    if coverage_gate:
        protocol = PROTOCOL_RULES if directory.resolve() == DEFAULT_SCENARIOS_DIR.resolve() else ()
        gate = coverage(rule_set, results, protocol)
        if gate.never_fired:
            typer.echo(f"coverage: never fired: {', '.join(gate.never_fired)}", err=True)
        if gate.no_near_miss:
            typer.echo(f"coverage: no silent near miss: {', '.join(gate.no_near_miss)}", err=True)
        if gate.protocol_rules_missing:
            missing = ", ".join(str(d) for d in gate.protocol_rules_missing)
            typer.echo(f"coverage: docs/protocol.md rules without scenarios: {missing}", err=True)
        if gate.ok:
            typer.echo(f"coverage: all {len(rule_set.rules)} rules fire and have a near miss")
        ok = ok and gate.ok
    if not ok:
        raise typer.Exit(1)


@rules_cli.command()
def table(
    file: FileArg = DEFAULT_RULES_PATH,
    format: Annotated[str, typer.Option("--format", help="html, csv or json.")] = "html",
    as_json: Annotated[
        bool, typer.Option("--json", help="The same as --format json: rows as JSON objects.")
    ] = False,
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """The rule file as a decision table: rows are rules, columns are fields."""
    import json

    from app.rules.table import rows, to_csv, to_html

    if as_json:
        format = "json"
    if format not in ("html", "csv", "json"):
        typer.echo("error: --format must be html, csv or json", err=True)
        raise typer.Exit(2)
    rule_set = _load(file)
    if format == "csv":
        text = to_csv(rule_set.rule_file)
    elif format == "json":
        columns, table_rows = rows(rule_set.rule_file)
        document = {
            "version": rule_set.version,
            "sha256": rule_set.sha256,
            "columns": columns,
            "rows": table_rows,
        }
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    else:
        text = to_html(rule_set.rule_file, sha256=rule_set.sha256)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@rules_cli.command()
def diff(
    old: Annotated[Path, typer.Argument(help="The current rule file.")],
    new: Annotated[Path, typer.Argument(help="The proposed rule file.")],
    corpus: Annotated[
        str,
        typer.Option(help="A JSONL file of screenings, or generated[:N] (default N=10000)."),
    ] = "generated",
    seed: Annotated[int, typer.Option(help="Seed for a generated corpus.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write the report here.")] = None,
    limit: Annotated[int, typer.Option(help="List at most this many changed screenings.")] = 50,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    strict: Annotated[
        bool, typer.Option(help="Validate whole JSONL screenings with ScreeningIn (slower).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Replay a corpus through OLD and NEW; report screenings whose referrals change."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from app.rules.diff import diff_rule_sets

    _load(old)
    _load(new)
    console = Console(stderr=True)
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    try:
        with bar:
            task = bar.add_task("replaying", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = diff_rule_sets(
                old, new, corpus, seed=seed, workers=workers, strict=strict, progress=advance
            )
    except CorpusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        text = json.dumps(report.as_json(limit=limit), indent=2, ensure_ascii=False) + "\n"
    else:
        text = _diff_text(report.as_json(limit=limit))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _diff_text(data: dict[str, object]) -> str:
    summary = data["summary"]
    assert isinstance(summary, dict)
    old, new = data["old"], data["new"]
    assert isinstance(old, dict)
    assert isinstance(new, dict)
    lines = [
        f"old: {old['file']} version {old['version']} ({str(old['sha256'])[:12]})",
        f"new: {new['file']} version {new['version']} ({str(new['sha256'])[:12]})",
        f"corpus: {data['corpus']}: {summary['screenings']} screenings, "
        f"{summary['changed_screenings']} with changed referrals "
        f"({data['elapsed_seconds']} s)",
    ]
    for service, kinds in summary["changes_by_service"].items():
        for kind, count in kinds.items():
            lines.append(f"  {service:<13} {kind:<45} {count:>8}")
    changes = data["changes"]
    assert isinstance(changes, list)
    if changes:
        lines.append(f"first {len(changes)} changed screenings:")
    for item in changes:
        parts = []
        for change in item["changes"]:
            label = change.get("service", "")
            kind = change["change"]
            if kind in ("added", "removed"):
                parts.append(f"{label} {kind} ({change['urgency']}, {change['legal_basis']})")
            elif kind == "flags":
                parts.append(f"{label} flags +{change['added']} -{change['removed']}")
            else:
                parts.append(f"{label} {kind} {change['old']} -> {change['new']}".strip())
        lines.append(f"  {item['screening']}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"
