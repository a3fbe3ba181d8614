"""The report of a run directory: Markdown (figures linked) and self-contained HTML (figures
inlined as base64 PNG), built from the files the runner wrote, nothing recomputed.

Sections: run summary, then each study's own section (declared in the study's ``stage.py``, in
the order of :func:`langneurons.registry.report_order`: claims, language-specific neurons,
stability, agreement, perplexity change, language steering, fine-tuning, evaluation,
lm-evaluation-harness tasks), then the stages (cached or computed, timings) and how to reproduce.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from langneurons.artefacts import write_text
from langneurons.blocks import Block, fmt_number, read_json
from langneurons.errors import LangNeuronsError
from langneurons.provenance import MANIFEST
from langneurons.registry import report_order
from langneurons.steer.stage import steering_used_builtin_prompts  # noqa: F401 (its earlier home)

# ---------------------------------------------------------------------------------- sections


def _summary(run_dir: Path, manifest: dict) -> list[Block]:
    config = manifest.get("config", {})
    model = manifest.get("model") or {}
    stages = manifest.get("stages", {})
    compute = sum(record.get("compute_seconds", 0.0) for record in stages.values())
    last = manifest.get("last_run", {})
    lines = [
        f"Model: `{model.get('model_id', config.get('model', {}).get('name', '?'))}` "
        f"({model.get('architecture', '?')}, {model.get('num_layers', '?')} layers x "
        f"{model.get('neurons_per_layer', '?')} neurons, weights {model.get('weights_fingerprint', '?')}).",
        f"Languages: {', '.join(config.get('languages', []))}.",
        f"langneurons {manifest.get('tool_version')}; last run {last.get('finished', '?')} took "
        f"{last.get('seconds', 0.0):.0f} s (all stages' compute time: {compute:.0f} s).",
    ]
    blocks: list[Block] = [("h1", f"langneurons report: {config.get('name', run_dir.name)}"), ("p", " ".join(lines))]
    uses_tasks = bool((config.get("finetune") or {}).get("runs")) or bool(config.get("evaluation"))
    uses_builtin = config.get("statistics", {}).get("corpus") == "builtin" or uses_tasks and any(
        (section or {}).get("source") == "builtin" for section in config.get("tasks", {}).values())
    if uses_builtin:
        blocks.append(("p", "**Built-in sample data.** The corpus and task samples shipped with langneurons are "
                            "tiny and hand-made: the numbers below show that the pipeline runs end to end, they are "
                            "not research results. Results on real data: `docs/results/README.md` in the "
                            "langneurons repository (`make replicate` reruns them)."))
    return blocks


def _stages(manifest: dict) -> list[Block]:
    stages = manifest.get("stages", {})
    order = [name for name in manifest.get("stage_order", []) if name in stages]
    stages = {name: stages[name] for name in order + sorted(set(stages) - set(order))}
    versions = manifest.get("versions", {})
    return [
        ("h2", "Stages"),
        ("table", ["stage", "last run", "seconds (last run)", "compute seconds", "compute CPU seconds"],
         [[name, record["status"], fmt_number(record["seconds"]), fmt_number(record["compute_seconds"]),
           fmt_number(record.get("cpu_seconds"))] for name, record in stages.items()]),
        ("h2", "Reproduce"),
        ("p", f"Config hash `{manifest.get('config_hash')}`; the full config is `config.yaml` and `manifest.json` "
              "records every stage's inputs and output hashes. Rerun with `langneurons run config.yaml --run-dir "
              "<this folder>`: finished stages are reused."),
        ("p", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."),
    ]


# ---------------------------------------------------------------------------------- rendering


def _markdown(blocks: list[Block], report_dir: Path) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                                    for row in rows]))
        elif kind == "image":
            relative = Path("..") / block[1].relative_to(report_dir.parent)
            out.append(f"![{block[2]}]({relative.as_posix()})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """HTML of a paragraph: escaped, with `code` and **bold** spans."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f2f2f2}img{max-width:100%;margin:0.5em 0}figure{margin:1em 0}
figcaption{font-size:0.85em;color:#555}code{background:#f5f5f5;padding:0 3px}"""


def _html(blocks: list[Block], title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "image":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def report_blocks(run_dir: str | Path) -> list[Block]:
    """The report's content as blocks (``h1``/``h2``/``h3``, ``p``, ``table``, ``image``)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        raise LangNeuronsError(f"{run_dir} is not a langneurons run directory (no {MANIFEST})")
    manifest = read_json(manifest_path)
    blocks = _summary(run_dir, manifest)
    for stage in report_order():
        blocks += stage.report(run_dir, manifest)
    return blocks + _stages(manifest)


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report/report.md`` and the self-contained ``report/report.html``; return both paths."""
    run_dir = Path(run_dir)
    blocks = report_blocks(run_dir)
    report_dir = run_dir / "report"
    markdown = write_text(report_dir / "report.md", _markdown(blocks, report_dir))
    page = write_text(report_dir / "report.html", _html(blocks, blocks[0][1]))
    return markdown, page
