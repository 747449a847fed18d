"""Self-contained HTML reports: ``report.html`` next to the demo's ``report.md``, and ``quintet report``.

A report page needs no network: the CSS is inline, every image is embedded as a base64 ``data:`` URI,
tables are HTML tables, and a Content-Security-Policy forbids the page any other load. Every piece of
text is HTML-escaped. Two sources:

- :func:`markdown_report_html`: a Markdown report (the demo's ``report.md``); each ``## `` heading
  becomes one section of the page, ``![alt](file.png)`` images are read from beside the Markdown file;
- :func:`benchmark_report_html`: ``benchmarks/results/*.json`` (+ ``*.md``, ``*.png``) grouped into one
  section per system (files named ``<system>.json`` / ``<system>_*``; other files each get their own).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintet.cli import Verb
from quintet.io import atomic_write_text

__all__ = [
    "VERB",
    "HtmlSection",
    "ReportJob",
    "benchmark_report_html",
    "image_html",
    "json_to_html",
    "markdown_report_html",
    "markdown_to_html",
    "render_page",
    "write_benchmark_report",
    "write_markdown_report",
]

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;background:#fafbfc}
nav{position:sticky;top:0;background:#24303c;padding:.5em 1.2em;z-index:1}
nav a{color:#e8eef4;margin-right:1.1em;text-decoration:none;white-space:nowrap}nav a:hover{text-decoration:underline}
main{max-width:1150px;margin:0 auto;padding:0 1.2em 3em}
section{background:#fff;border:1px solid #dde3e9;border-radius:6px;padding:.4em 1.2em 1em;margin:1.2em 0}
h1{margin:.8em 0 .2em}h2{border-bottom:1px solid #dde3e9;padding-bottom:.2em}
.scroll{overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #d3dae1;padding:.25em .6em;text-align:left}
th{background:#eef2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#f7f9fb}
code{background:#eef2f6;padding:0 .25em;border-radius:3px}pre{background:#f3f5f7;padding:.7em;overflow-x:auto;font-size:12px}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #e3e8ed}figcaption{font-size:12px;color:#5a6672}
.missing{color:#a3271f}.meta{color:#5a6672;font-size:13px}
"""


@dataclass
class HtmlSection:
    """One section of a report page: ``title`` (plain text) and ``body`` (HTML, already escaped)."""

    title: str
    body: str
    key: str = ""


# ---------------------------------------------------------------------------------------------------- page


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _short(title: str) -> str:
    """The nav label of a section: its title up to a dash or a parenthesis ("DeepRelax — one-shot ...")."""
    return re.split(r"\s+[—–-]\s+|\s+\(", title, maxsplit=1)[0] or title


def render_page(title: str, sections: Iterable[HtmlSection], intro: str = "") -> str:
    """The whole HTML page: a nav with one link per section, then the sections; ``intro`` is HTML."""
    taken: set[str] = set()
    secs = [(s, _slug(s.key or s.title, taken)) for s in sections]
    nav = "".join(f'<a href="#{sid}">{html.escape(_short(s.title))}</a>' for s, sid in secs)
    body = "\n".join(
        f'<section id="{sid}">\n<h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>' for s, sid in secs
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" href="data:,">\n<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n'
        f"</head>\n<body>\n<nav>{nav}</nav>\n<main>\n<h1>{html.escape(title)}</h1>\n{intro}\n{body}\n"
        "</main>\n</body>\n</html>\n"
    )


def image_html(path: Path, caption: str = "") -> str:
    """A ``<figure>`` with the image embedded as a data URI (a missing or unknown file says so instead)."""
    mime = _MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        why = "not found" if mime else "not an image type the report embeds"
        return f'<p class="missing">image {html.escape(str(path))}: {why}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption or path.stem)
    cap = f"<figcaption>{html.escape(caption or path.name)}</figcaption>"
    return f'<figure><img src="data:{mime};base64,{data}" alt="{alt}">{cap}</figure>'


# ---------------------------------------------------------------------------------------------------- markdown

_INLINE = re.compile(r"`([^`]+)`|!\[([^\]]*)\]\(([^)\s]+)\)|\[([^\]]+)\]\(([^)\s]+)\)")
_STRONG = re.compile(r"\*\*(?!\s)(.+?)(?<!\s)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?![\s*])(.+?)(?<![\s*])\*(?![\w*])|(?<![\w])_(?!\s)(.+?)(?<!\s)_(?!\w)")
_SAFE_HREF = re.compile(r"^(https?:|mailto:|#|[^:]*$)", re.IGNORECASE)
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_NUMBER = re.compile(r"^[-+−]?[\d.,]+(e[-+]?\d+)?\s*%?$", re.IGNORECASE)


def _emphasis(escaped: str) -> str:
    escaped = _STRONG.sub(r"<strong>\1</strong>", escaped)
    return _EM.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", escaped)


def _inline(text: str, base: Path) -> str:
    """One line of Markdown inline syntax (code, images, links, bold, italics) to escaped HTML."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_emphasis(html.escape(text[pos : m.start()])))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        elif m.group(3) is not None:
            out.append(image_html(base / m.group(3), m.group(2)))
        elif _SAFE_HREF.match(m.group(5)):
            out.append(f'<a href="{html.escape(m.group(5))}">{_emphasis(html.escape(m.group(4)))}</a>')
        else:
            out.append(_emphasis(html.escape(m.group(4))))
        pos = m.end()
    out.append(_emphasis(html.escape(text[pos:])))
    return "".join(out)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _table(head: list[str], rows: list[list[str]], base: Path) -> str:
    th = "".join(f"<th>{_inline(c, base)}</th>" for c in head)
    body = []
    for row in rows:
        row = (row + [""] * len(head))[: max(len(head), len(row))]
        tds = "".join(
            f'<td class="num">{_inline(c, base)}</td>' if _NUMBER.match(c) else f"<td>{_inline(c, base)}</td>"
            for c in row
        )
        body.append(f"<tr>{tds}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _is_table_start(lines: list[str], i: int) -> bool:
    return lines[i].lstrip().startswith("|") and i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1]))


def _block(lines: list[str], i: int, base: Path) -> tuple[str, int]:
    """The HTML of the block starting at ``lines[i]`` and the index after it."""
    line = lines[i].strip()
    if line.startswith("```"):
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        return f"<pre><code>{html.escape(chr(10).join(lines[i + 1 : j]))}</code></pre>", j + 1
    if m := re.match(r"^(#{1,6})\s+(.*)$", line):
        n = len(m.group(1))
        return f"<h{n}>{_inline(m.group(2).strip(), base)}</h{n}>", i + 1
    if _is_table_start(lines, i):
        j = i + 2
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        return _table(_cells(lines[i]), [_cells(r) for r in lines[i + 2 : j]], base), j
    if m := re.match(r"^([-*+]|\d+[.)])\s+", line):
        tag = "ol" if m.group(1)[0].isdigit() else "ul"
        items, j = [], i
        while j < len(lines) and (mm := re.match(r"^\s*([-*+]|\d+[.)])\s+(.*)$", lines[j])):
            items.append(f"<li>{_inline(mm.group(2), base)}</li>")
            j += 1
        return f"<{tag}>{''.join(items)}</{tag}>", j
    j = i
    while j < len(lines) and lines[j].strip() and (j == i or not _starts_block(lines, j)):
        j += 1
    text = " ".join(ln.strip() for ln in lines[i:j])
    if re.fullmatch(r"!\[[^\]]*\]\([^)\s]+\)", text):
        return _inline(text, base), j
    return f"<p>{_inline(text, base)}</p>", j


def _starts_block(lines: list[str], j: int) -> bool:
    s = lines[j].strip()
    return (
        s.startswith(("```", "#")) or _is_table_start(lines, j) or bool(re.match(r"^([-*+]|\d+[.)])\s+", s))
    )


def markdown_to_html(text: str, base: str | Path = ".") -> str:
    """Markdown (headings, paragraphs, pipe tables, lists, fenced code, inline code/links/emphasis,
    images read from ``base`` and embedded) to escaped HTML; anything else is shown as text."""
    lines, base = text.splitlines(), Path(base)
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        chunk, i = _block(lines, i, base)
        out.append(chunk)
    return "\n".join(out)


def _split_h2(text: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    """(h1 title, lines before the first ``## ``, [(heading, body)]); fenced code is never split."""
    title, intro, secs, fenced = "", [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("# ") and not title and not secs:
            title = line[2:].strip()
        elif not fenced and line.startswith("## "):
            secs.append((line[3:].strip(), ""))
        elif secs:
            secs[-1] = (secs[-1][0], secs[-1][1] + line + "\n")
        else:
            intro.append(line)
    return title, intro, secs


def markdown_report_html(md_path: str | Path) -> str:
    """The page for a Markdown report: its ``# `` title, one section per ``## `` heading, images embedded."""
    md_path = Path(md_path)
    title, intro, secs = _split_h2(md_path.read_text(encoding="utf-8"))
    base = md_path.parent
    sections = [HtmlSection(head, markdown_to_html(body, base)) for head, body in secs]
    return render_page(title or md_path.stem, sections, markdown_to_html("\n".join(intro), base))


def write_markdown_report(md_path: str | Path, out: str | Path | None = None) -> Path:
    """Write :func:`markdown_report_html` of ``md_path`` to ``out`` (default: ``.html`` beside it)."""
    md_path = Path(md_path)
    out = Path(out) if out is not None else md_path.with_suffix(".html")
    atomic_write_text(out, markdown_report_html(md_path))
    return out


# ---------------------------------------------------------------------------------------------------- JSON


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "–"}[v]
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list):
        shown = ", ".join(_fmt(x) for x in v[:12])
        return f"[{shown}{f', … ({len(v)} in all)' if len(v) > 12 else ''}]"
    return str(v)


def _td(v: Any) -> str:
    num = isinstance(v, int | float) and not isinstance(v, bool)
    return f'<td class="num">{html.escape(_fmt(v))}</td>' if num else f"<td>{html.escape(_fmt(v))}</td>"


def _leaf(v: Any) -> bool:
    """A value shown in one table cell: a scalar or a short list of scalars."""
    if isinstance(v, list):
        return len(v) <= 24 and all(not isinstance(x, dict | list) for x in v)
    return not isinstance(v, dict)


def _flat(d: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any] | None:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (two levels at most); None when something is not a leaf."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and depth < 1:
            sub = _flat(v, f"{prefix}{k}.", depth + 1)
            if sub is None:
                return None
            out.update(sub)
        elif _leaf(v):
            out[f"{prefix}{k}"] = v
        else:
            return None
    return out


def _records_table(rows: list[tuple[str, Mapping[str, Any]]], max_rows: int) -> str:
    """One table, a row per record; a few wide records (more than 10 keys, at most 8 records) are
    turned so that each record is a column."""
    cols: dict[str, None] = {}
    for _, r in rows:
        cols.update(dict.fromkeys(r))
    if len(rows) <= 8 and len(cols) > 10:
        rows, cols = (
            [(str(c), {name: r.get(c, "") for name, r in rows}) for c in cols],
            dict.fromkeys(n for n, _ in rows),
        )
    th = "<th></th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    trs = [
        f"<tr><th>{html.escape(name)}</th>" + "".join(_td(r.get(c, "")) for c in cols) + "</tr>"
        for name, r in rows[:max_rows]
    ]
    more = f'<p class="meta">… {len(rows) - max_rows} more rows not shown</p>' if len(rows) > max_rows else ""
    table = f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"
    return f'<div class="scroll">{table}</div>{more}'


def _as_records(v: Any) -> list[tuple[str, Mapping[str, Any]]] | None:
    """Rows for one table when ``v`` is a map or a list of flat records (at least two), else None."""
    items = list(v.items()) if isinstance(v, Mapping) else list(enumerate(v)) if isinstance(v, list) else []
    if len(items) < 2 or not all(isinstance(r, Mapping) for _, r in items):
        return None
    flat = [(str(k), _flat(r)) for k, r in items]
    if any(f is None for _, f in flat):
        return None
    return flat  # type: ignore[return-value]


def _same_key_maps(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Children that are flat maps sharing one key set (at least two): first child -> all of them."""
    by_keys: dict[tuple[str, ...], list[str]] = {}
    for k, v in data.items():
        if isinstance(v, Mapping) and v and all(_leaf(x) for x in v.values()):
            by_keys.setdefault(tuple(v), []).append(k)
    return {names[0]: names for names in by_keys.values() if len(names) > 1}


def json_to_html(data: Any, max_rows: int = 60, depth: int = 0) -> str:
    """A JSON value as HTML: leaves in a key/value table, maps of records (and sibling maps sharing their
    keys) as one table each, the rest as sub-headings (deeper than 4 levels: the JSON text)."""
    rows = _as_records(data)
    if rows is not None:
        return _records_table(rows, max_rows)
    if not isinstance(data, Mapping) or depth > 4:
        return f"<pre>{html.escape(json.dumps(data, indent=1, default=str)[:4000])}</pre>"
    leaves = [(k, v) for k, v in data.items() if _leaf(v)]
    parts = []
    if leaves:
        trs = "".join(f"<tr><th>{html.escape(str(k))}</th>{_td(v)}</tr>" for k, v in leaves)
        parts.append(f'<div class="scroll"><table><tbody>{trs}</tbody></table></div>')
    groups = _same_key_maps(data)
    grouped = {k for names in groups.values() for k in names}
    h = min(3 + depth, 6)
    for k, v in data.items():
        if k in groups:
            names = groups[k]
            keys = list(data[k])
            table = _records_table([(str(key), {n: data[n][key] for n in names}) for key in keys], max_rows)
            parts.append(f"<h{h}>{html.escape(', '.join(map(str, names)))}</h{h}>\n{table}")
        elif not _leaf(v) and k not in grouped:
            parts.append(f"<h{h}>{html.escape(str(k))}</h{h}>\n{json_to_html(v, max_rows, depth + 1)}")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------- benchmarks


def _system_of(stem: str, systems: Iterable[str]) -> str:
    hits = [s for s in systems if stem == s or stem.startswith(s + "_")]
    return max(hits, key=len) if hits else stem


def _group(results: Path) -> dict[str, list[Path]]:
    """Result files by section: the systems (in the CLI's order) first, then every other stem."""
    from quintet.cli import SYSTEMS

    systems = [name for name, s in SYSTEMS.items() if s.extra]
    files = sorted(
        p for p in results.iterdir() if p.is_file() and p.suffix.lower() in {".json", ".md", *_MIME}
    )
    groups: dict[str, list[Path]] = {}
    for p in files:
        groups.setdefault(_system_of(p.stem, systems), []).append(p)
    order = [s for s in systems if s in groups] + sorted(g for g in groups if g not in systems)
    return {g: groups[g] for g in order}


def _file_html(p: Path, max_rows: int) -> str:
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            return f'<h3>{html.escape(p.name)}</h3><p class="missing">not valid JSON: {html.escape(str(exc))}</p>'
        return f"<h3>{html.escape(p.name)}</h3>\n{json_to_html(data, max_rows)}"
    if p.suffix.lower() == ".md":
        return f"<h3>{html.escape(p.name)}</h3>\n{markdown_to_html(p.read_text(encoding='utf-8'), p.parent)}"
    return image_html(p)


def benchmark_report_html(results: str | Path = "benchmarks/results", max_rows: int = 60) -> str:
    """One page for a benchmark results folder: a section per system with its JSON, Markdown and images.

    Raises:
        FileNotFoundError: ``results`` is not a folder or holds no JSON file.
    """
    results = Path(results)
    if not results.is_dir() or not any(results.glob("*.json")):
        raise FileNotFoundError(f"{results}: no benchmark results (*.json) there")
    sections, groups = [], _group(results)
    for name, files in groups.items():
        kinds = [".json", ".md"]
        ordered = sorted(
            files, key=lambda p: (kinds.index(p.suffix.lower()) if p.suffix.lower() in kinds else 2, p.name)
        )
        sections.append(HtmlSection(name, "\n".join(_file_html(p, max_rows) for p in ordered), key=name))
    intro = f'<p class="meta">from {html.escape(str(results))}: {sum(map(len, groups.values()))} files</p>'
    return render_page("quintet benchmark results", sections, intro)


def write_benchmark_report(
    results: str | Path = "benchmarks/results", out: str | Path = "report_out", max_rows: int = 60
) -> Path:
    """Write :func:`benchmark_report_html` of ``results`` to ``<out>/report.html``; return that path."""
    path = Path(out) / "report.html"
    atomic_write_text(path, benchmark_report_html(results, max_rows))
    return path


@dataclass
class ReportJob:
    """``quintet report``: the benchmark results folder ``results`` as one page, ``<out>/report.html``."""

    results: str = "benchmarks/results"
    out: str = "report_out"
    max_rows: int = 60


def _report(job: ReportJob) -> str:
    return f"report written to {write_benchmark_report(job.results, job.out, job.max_rows)}"


VERB = Verb(
    "report", "render benchmark results (JSON, Markdown, PNG) into one self-contained HTML page", ReportJob, _report,
    inputs="results", out="out", example="quintet report benchmarks/results -o report_out  # report_out/report.html",
)  # fmt: skip
