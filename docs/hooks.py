"""MkDocs hooks: the tables of operations, made from gradcheck's registry as the site builds, so
the docs list exactly what ``gradcheck.ops`` declares; and MathJax, copied into the site from
its Python package so that formulas render without a network."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from gradcheck import ops

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


def _losses() -> str:
    rows = ["| loss | C | output | targets | Keras |", "|---|---|---|---|---|"]
    for loss in ops.LOSSES.values():
        output = loss.output or "any"
        targets = "any" if loss.targets is None else f"[{loss.targets[0]:g}, {loss.targets[1]:g}]"
        keras = f"`keras.losses.{loss.keras}`" if loss.keras else "defined by the Keras backend"
        rows.append(f"| `{loss.name}` | {loss.formula} | {output} | {targets} | {keras} |")
    return "\n".join(rows)


TABLES = {"<!-- registry: activations -->": _activations, "<!-- registry: losses -->": _losses}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    for placeholder, table in TABLES.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, table())
    return markdown


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    files.append(File.generated(config, MATHJAX_URI, abs_src_path=str(MATHJAX)))
    return files
