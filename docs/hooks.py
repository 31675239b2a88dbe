"""MkDocs hooks: the tables of operations, made from gradcheck's registry as the site builds, so
the docs list exactly what ``gradcheck.ops`` declares; the command-line reference, made from
the argument parser; the benchmark table, made from the recorded run in docs/bench.json; and
MathJax, copied into the site from its Python package so that formulas render without a
network."""

from __future__ import annotations

import argparse
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from gradcheck import benchmarks, ops
from gradcheck.cli import build_parser

#: The recorded ``gradcheck bench --json`` run the benchmarks page shows (``make chart``).
RECORDED_BENCH = Path(__file__).parent / "bench.json"

#: MathJax's TeX-to-SVG component: one file, the TeX fonts drawn as SVG paths inside it.
MATHJAX = files("mathjax") / "static" / "mathjax" / "es5" / "tex-svg.js"
MATHJAX_URI = "javascripts/mathjax/tex-svg.js"


def _activations() -> str:
    rows = ["| activation | f(z) | layers | JAX | Keras |", "|---|---|---|---|---|"]
    for a in ops.ACTIVATIONS.values():
        layers = "output only" if a.output_only else "any"
        if a.min_units > 1:
            layers += f", at least {a.min_units} units"
        rows.append(f"| `{a.name}` | {a.formula} | {layers} | `jax.{a.jax}` | `{a.keras}` |")
    return "\n".join(rows)


def _activation_names() -> str:
    """The registry's activations as a sentence's list: `sigmoid`, …, `softmax` (output layer
    only)."""
    return ", ".join(
        f"`{a.name}`" + (" (output layer only)" if a.output_only else "")
        for a in ops.ACTIVATIONS.values()
    )


def _losses() -> str:
    rows = ["| loss | C | output | targets | Keras |", "|---|---|---|---|---|"]
    for loss in ops.LOSSES.values():
        output = loss.output or "any"
        targets = "any" if loss.targets is None else f"[{loss.targets[0]:g}, {loss.targets[1]:g}]"
        keras = f"`keras.losses.{loss.keras}`" if loss.keras else "defined by the Keras backend"
        rows.append(f"| `{loss.name}` | {loss.formula} | {output} | {targets} | {keras} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option_table(actions: list[argparse.Action]) -> str:
    rows = ["| option | values | default | meaning |", "|---|---|---|---|"]
    for action in actions:
        flags = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.dest}`"
        if action.choices is not None:
            values = ", ".join(f"`{choice}`" for choice in action.choices)
        elif action.nargs == 0:
            values = ""  # a switch
        else:
            values = f"`{action.metavar or action.dest.upper()}`" + (
                " …" if action.nargs in ("+", "*") else ""
            )
        default = _default(action.default)
        rows.append(f"| {flags} | {_cell(values)} | {default} | {_cell(action.help or '')} |")
    return "\n".join(rows)


def _default(value: Any) -> str:
    """An option's default as the table shows it: nothing when it has none (or is a switch)."""
    if value is None or value is False or value == argparse.SUPPRESS:
        return ""
    return f"`{' '.join(map(str, value)) if isinstance(value, list) else value}`"


def _command_line() -> str:
    """Every subcommand of the argument parser: its description, usage and options by group."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sections = []
    for name, command in commands.choices.items():
        usage = command.format_usage().strip()
        sections += [f"## gradcheck {name}", command.description or "", f"```text\n{usage}\n```"]
        for group in command._action_groups:
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            title = "options" if group.title in ("options", "optional arguments") else group.title
            sections += [f"### {title}", group.description or "", _option_table(actions)]
        sections.append(command.epilog or "")
    return "\n\n".join(sections)


def _fastest(rows: list[benchmarks.Row]) -> str:
    """What the table shows first: the fastest backend per problem and dtype, and how far the
    plain NumPy kernels are from it."""
    said = []
    for problem in sorted({r.problem for r in rows}):
        parts = []
        for dtype in ("float32", "float64"):
            timed = sorted(
                (
                    r
                    for r in rows
                    if (r.problem, r.dtype) == (problem, dtype) and r.backend != benchmarks.FLOOR
                ),
                key=lambda r: r.best_seconds_per_step,
            )
            if timed:
                numpy = next(r for r in timed if r.backend == "numpy")
                slower = numpy.best_seconds_per_step / timed[0].best_seconds_per_step
                parts.append(f"{timed[0].backend} in {dtype} (numpy {slower:.1f}× slower)")
        said.append(f"**{problem}**: {', '.join(parts)}")
    return "Fastest per problem — " + "; ".join(said) + "."


def _recorded() -> tuple[dict[str, Any], list[benchmarks.Row]]:
    """docs/bench.json, and its rows."""
    recorded = json.loads(RECORDED_BENCH.read_text())
    return recorded, [benchmarks.Row(**row) for row in recorded["rows"]]


def _recorded_benchmark() -> str:
    """docs/bench.json as the terminal's table shows it, fastest first within each problem and
    dtype, with the conditions it was recorded under."""
    recorded, rows = _recorded()
    lines = [
        "| " + " | ".join(benchmarks.HEADER) + " |",
        "|" + "---|" * len(benchmarks.HEADER),
        *(
            "| " + " | ".join(_cell(c) for c in benchmarks.cells(r)) + " |"
            for r in sorted(rows, key=lambda r: (r.problem, r.dtype, r.best_seconds_per_step))
        ),
    ]
    conditions = recorded["conditions"]
    lines += ["", _fastest(rows)]
    contended = "contended" if conditions["contended"] else "not contended"
    matmul = ", ".join(f"{d} {g:.1f}" for d, g in recorded["matmul_gflops"].items())
    note = f"Plain matmul GFLOP/s of the run: {matmul}; the run was {contended}."
    return "\n".join(lines) + "\n\n" + note


def _recorded_chart() -> str:
    """docs/bench.json's best times per step as a chart (`benchmarks.times_svg`)."""
    svg = benchmarks.times_svg(_recorded()[1])
    return f'<figure class="bench-chart">\n{svg}\n</figure>'


TABLES = {
    "<!-- recorded benchmark chart -->": _recorded_chart,
    "<!-- recorded benchmark -->": _recorded_benchmark,
    "<!-- registry: activations -->": _activations,
    "<!-- registry: activation names -->": _activation_names,
    "<!-- registry: losses -->": _losses,
    "<!-- command line -->": _command_line,
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    for placeholder, table in TABLES.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, table())
    return markdown


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    files.append(File.generated(config, MATHJAX_URI, abs_src_path=str(MATHJAX)))
    return files
