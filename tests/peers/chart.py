"""Lints and renders charts/mcp-operator with the Helm v4 SDK (PyPI helm-python-sdk), offline.

    chart.py lint CHART VALUES_JSON NAMESPACE
        prints the lint report as JSON
    chart.py render CHART VALUES_JSON NAME NAMESPACE OUT_DIR
        writes every rendered manifest into OUT_DIR (one file per template) and prints
        {"files": [...], "objects": [...], "notes": "..."} as JSON; a values or template error
        exits 3 with Helm's message on stderr

Used by tests/chart.rs.
"""

import json
import pathlib
import sys

import helm_python
import yaml


def lint(chart, values, namespace):
    report = helm_python.lint(chart, values, strict=True, namespace=namespace, kube_version="v1.33.0")
    print(json.dumps(report))


def render(chart, values, name, namespace, out_dir):
    loaded = helm_python.Chart.load(chart)
    try:
        manifests = loaded.render(values, name=name, namespace=namespace, is_install=True)
    except helm_python.HelmError as error:
        print(str(error), file=sys.stderr)
        sys.exit(3)
    out = pathlib.Path(out_dir)
    files, objects, notes = [], [], ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        documents = [d for d in yaml.safe_load_all(text) if d]
        if not documents:
            continue
        path = out / template.replace("/", "_")
        path.write_text(text)
        files.append(str(path))
        objects.extend(documents)
    print(json.dumps({"files": files, "objects": objects, "notes": notes}))


def main():
    command, chart, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if command == "lint":
        lint(chart, values, sys.argv[4])
    elif command == "render":
        render(chart, values, sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        sys.exit(f"unknown command {command!r}: expected lint or render")


if __name__ == "__main__":
    main()
